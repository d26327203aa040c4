//! The JWT secret and the audit key ring: from configuration, or generated once into the data
//! dir with mode 0600 so a fresh machine is secure without set-up. Nothing here logs a value.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use horizons_audit::KeyRing;

use crate::config::Config;
use crate::error::AppError;

/// Reads `path`, or creates it with `make()` (mode 0600, never overwriting).
fn read_or_create(path: &Path, make: impl FnOnce() -> String) -> Result<String, AppError> {
    match std::fs::read_to_string(path) {
        Ok(s) => return Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(AppError::io(format!("reading {}", path.display()))(e)),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(AppError::io(format!("creating {}", dir.display())))?;
    }
    let value = make();
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(mut f) => {
            f.write_all(value.as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(AppError::io(format!("writing {}", path.display())))?;
            tracing::info!(path = %path.display(), "generated a secret");
            Ok(value)
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::read_to_string(path).map_err(AppError::io(format!("reading {}", path.display())))
        }
        Err(e) => Err(AppError::io(format!("creating {}", path.display()))(e)),
    }
}

/// The HS256 secret: `portal.jwt_secret`, else `<data_dir>/jwt.secret` (generated).
pub fn jwt_secret(cfg: &Config) -> Result<Vec<u8>, AppError> {
    if !cfg.portal.jwt_secret.is_empty() {
        return Ok(cfg.portal.jwt_secret.expose().as_bytes().to_vec());
    }
    let text = read_or_create(&cfg.data_dir.join("jwt.secret"), || {
        use rand::RngCore;
        let mut b = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut b);
        b.iter().map(|x| format!("{x:02x}")).collect()
    })?;
    Ok(text.trim().as_bytes().to_vec())
}

/// The audit key ring: `portal.audit_keys` with `portal.audit_current_key`, else
/// `<data_dir>/audit.keys` (one `<id>:<base64>` per line, the last one current; generated
/// with one key on first start — append a line to rotate).
pub fn audit_ring(cfg: &Config) -> Result<KeyRing, AppError> {
    let p = &cfg.portal;
    if !p.audit_keys.is_empty() {
        let entries: Vec<&str> = p.audit_keys.iter().map(|k| k.expose()).collect();
        return KeyRing::new(&p.audit_current_key, &entries)
            .map_err(|e| AppError::ConfigInvalid(format!("portal.audit_keys: {e}")));
    }
    let path = cfg.data_dir.join("audit.keys");
    let text = read_or_create(&path, || {
        let entry = KeyRing::generate_entry("k1").expect("k1 is a valid key id");
        format!("{}\n", entry.as_str())
    })?;
    let entries: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    let current = entries
        .last()
        .and_then(|l| l.split(':').next())
        .ok_or_else(|| AppError::ConfigInvalid(format!("{}: no audit key", path.display())))?;
    KeyRing::new(current, &entries).map_err(|e| AppError::ConfigInvalid(format!("{}: {e}", path.display())))
}

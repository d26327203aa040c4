//! What the side-by-side comparisons of `horizons bench pipeline` share ([`super::ducc0`],
//! [`super::aoflagger`]): whether to run a reference implementation ([`CompareMode`]), and
//! running its Python script (compiled into the binary) on inputs written to a temporary
//! directory, with errors that say which step failed.

use std::path::Path;
use std::process::Command;

use serde::de::DeserializeOwned;

use crate::error::AppError;

/// Whether to run a side-by-side comparison with a reference implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CompareMode {
    /// Compare if the reference can be run; otherwise report why not.
    Auto,
    /// Compare, and fail if the reference cannot be run.
    Require,
    /// Skip the comparison.
    Off,
}

/// A reference implementation reached through a Python script in a venv of its own.
#[derive(Debug)]
pub(crate) struct Reference {
    /// Its name in messages.
    pub name: &'static str,
    /// The bench's flags for it: `--<flag>` (the mode) and `--<flag>-python`; its venv is made
    /// by `scripts/<flag>-venv`.
    pub flag: &'static str,
    /// The script's file name.
    pub script: &'static str,
    /// The script's text.
    pub text: &'static str,
}

impl Reference {
    /// Runs `run` as `mode` says: `Ok(Ok(_))` when it ran; `Ok(Err(reason))` when it was
    /// skipped, or failed in `auto` mode; an error when it failed under `require`.
    pub fn decide<T>(
        &self,
        mode: CompareMode,
        run: impl FnOnce() -> Result<T, String>,
    ) -> Result<Result<T, String>, AppError> {
        if mode == CompareMode::Off {
            return Ok(Err(format!("skipped (--{} off)", self.flag)));
        }
        match run() {
            Ok(t) => Ok(Ok(t)),
            Err(reason) if mode == CompareMode::Auto => Ok(Err(reason)),
            Err(reason) => {
                Err(AppError::Bench(format!("{} comparison (--{} require): {reason}", self.name, self.flag)))
            }
        }
    }

    /// Writes `inputs` (file name, bytes) and the script into a fresh temporary directory, runs
    /// the script with `python` on it and parses the one JSON object it prints; the directory
    /// is returned for the files the script wrote.
    pub fn run_script<T: DeserializeOwned>(
        &self,
        python: &Path,
        inputs: Vec<(&str, Vec<u8>)>,
    ) -> Result<(tempfile::TempDir, T), String> {
        let name = self.name;
        if !python.exists() {
            return Err(format!(
                "{name} not available: {} does not exist (create it with `bash scripts/{}-venv`, or pass --{}-python)",
                python.display(),
                self.flag,
                self.flag
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!("horizons-bench-{}-", self.flag))
            .tempdir()
            .map_err(|e| format!("creating a temporary directory: {e}"))?;
        let d = dir.path();
        for (file, bytes) in inputs.into_iter().chain([(self.script, self.text.as_bytes().to_vec())]) {
            std::fs::write(d.join(file), bytes).map_err(|e| format!("writing {file} for {name}: {e}"))?;
        }
        let out = Command::new(python)
            .arg(d.join(self.script))
            .arg(d)
            .output()
            .map_err(|e| format!("{name} not available: running {}: {e}", python.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{name} not available: {} {} exited with {}: {}",
                python.display(),
                self.script,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let parsed = serde_json::from_str(stdout.trim())
            .map_err(|e| format!("{} printed something that is not its JSON ({e}): {stdout:?}", self.script))?;
        Ok((dir, parsed))
    }
}

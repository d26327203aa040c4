//! Configuration layering and validation, data-driven.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::*;

/// Parses and validates `toml`; expects an error mentioning every one of `expected`.
fn check_err(toml: &str, expected: &[&str]) {
    let err = Config::from_toml(toml, Path::new("test.toml")).and_then(|c| c.validate()).unwrap_err();
    let msg = horizons_bus::error_chain(&err);
    for e in expected {
        assert!(msg.contains(e), "{toml:?}: expected {e:?} in {msg}");
    }
}

fn load(flags: &Overrides, env: &[(&str, &str)]) -> Result<Config, AppError> {
    let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Config::load_with_env(flags, |k| env.get(k).cloned())
}

#[test]
fn defaults_parse_and_validate() {
    let cfg = Config::from_toml("", Path::new("empty.toml")).unwrap();
    assert_eq!(cfg, Config::default());
    cfg.validate().unwrap();
    assert_eq!(cfg.data_dir, PathBuf::from("./data"));
    assert_eq!(cfg.embedded_dir(), PathBuf::from("./data/bus"));
    assert_eq!(cfg.http.addr.to_string(), "127.0.0.1:8080");
    assert_eq!(cfg.bus.backend, BackendKind::Embedded);
    assert_eq!(cfg.pipeline_products_dir(), PathBuf::from("./data/pipeline/products"));
    assert_eq!(cfg.pipeline_spool_dir(), PathBuf::from("./data/pipeline/spool"));
    assert!(!cfg.pipeline.in_up);
}

#[test]
fn pipeline_section_parses_and_checks_its_keys() {
    let cfg = Config::from_toml("[pipeline]\nproducts_dir = \"/p\"\nin_up = true\n", Path::new("p.toml")).unwrap();
    assert_eq!(cfg.pipeline_products_dir(), PathBuf::from("/p"));
    assert!(cfg.pipeline.in_up);
    check_err("[pipeline]\nproducts = \"/p\"\n", &["products"]);
    check_err("[pipeline]\nspool_dir = \"\"\n", &["pipeline.spool_dir must not be empty"]);
}

#[test]
fn a_full_file_parses() {
    let cfg = Config::from_toml(
        r#"
        data_dir = "/srv/horizons"
        [http]
        addr = "0.0.0.0:9000"
        shutdown_timeout = "3s"
        [bus]
        backend = "embedded"
        [bus.embedded]
        window = 1024
        flush_interval = "50ms"
        "#,
        Path::new("full.toml"),
    )
    .unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.embedded_dir(), PathBuf::from("/srv/horizons/bus"));
    assert_eq!(cfg.embedded().window, 1024);
    assert_eq!(cfg.http.addr.port(), 9000);
}

#[test]
fn bad_keys_and_values_name_the_key() {
    check_err("bogus = 1", &["test.toml", "bogus"]);
    check_err("[http]\nlisten = \"x\"", &["listen"]);
    check_err("[bus.embedded]\nwindw = 5", &["windw"]);
    check_err("[http]\naddr = \"nowhere\"", &["addr", "nowhere"]);
    check_err("[bus]\nbackend = \"kafkaa\"", &["backend", "kafkaa"]);
    check_err("[bus.embedded]\nflush_interval = \"soon\"", &["flush_interval"]);
    check_err("[bus.embedded]\nwindow = 0", &["bus.embedded.window"]);
    check_err("[bus.embedded]\nsegment_bytes = 10", &["bus.embedded.segment_bytes"]);
    check_err("[http]\nshutdown_timeout = \"0s\"", &["http.shutdown_timeout"]);
    check_err("data_dir = \"\"", &["data_dir"]);
    check_err("[portal]\nworker_nice = 20", &["portal.worker_nice"]);
    check_err("[portal]\nworker_nice = -1", &["portal.worker_nice"]);
}

#[test]
fn environment_overrides_file_and_flags_override_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("h.toml");
    std::fs::write(&file, "data_dir = \"/from-file\"\n[http]\naddr = \"127.0.0.1:1\"\n").unwrap();
    let flags = Overrides { config: Some(file.clone()), ..Default::default() };

    let cfg = load(&flags, &[]).unwrap();
    assert_eq!(cfg.data_dir, PathBuf::from("/from-file"));
    assert_eq!(cfg.http.addr.port(), 1);

    let env = [("HORIZONS_DATA_DIR", "/from-env"), ("HORIZONS_HTTP_ADDR", "127.0.0.1:2")];
    let cfg = load(&flags, &env).unwrap();
    assert_eq!(cfg.embedded_dir(), PathBuf::from("/from-env/bus"));
    assert_eq!(cfg.http.addr.port(), 2);

    let flags = Overrides { data_dir: Some("/from-flag".into()), ..flags };
    let cfg = load(&flags, &env).unwrap();
    assert_eq!(cfg.embedded_dir(), PathBuf::from("/from-flag/bus"));

    let cfg = load(&flags, &[("HORIZONS_BUS_EMBEDDED_DATA_DIR", "/elsewhere")]).unwrap();
    assert_eq!(cfg.embedded_dir(), PathBuf::from("/elsewhere"));
}

#[test]
fn the_config_file_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("h.toml");
    std::fs::write(&file, "[bus]\nbackend = \"nats\"\n").unwrap();
    let cfg = load(&Overrides::default(), &[("HORIZONS_CONFIG", file.to_str().unwrap())]).unwrap();
    assert_eq!(cfg.bus.backend, BackendKind::Nats);
}

#[test]
fn bad_environment_names_the_variable() {
    let err = load(&Overrides::default(), &[("HORIZONS_HTTP_ADDR", "nope")]).unwrap_err().to_string();
    assert!(err.contains("HORIZONS_HTTP_ADDR") && err.contains("nope"), "{err}");
    let err = load(&Overrides::default(), &[("HORIZONS_BUS_BACKEND", "mqtt")]).unwrap_err().to_string();
    assert!(err.contains("HORIZONS_BUS_BACKEND") && err.contains("embedded"), "{err}");
}

#[test]
fn a_missing_explicit_file_is_an_error() {
    let flags = Overrides { config: Some("/definitely/not/here.toml".into()), ..Default::default() };
    let err = load(&flags, &[]).unwrap_err().to_string();
    assert!(err.contains("/definitely/not/here.toml"), "{err}");
}

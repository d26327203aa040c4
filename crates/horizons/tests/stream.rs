//! The ngVLA pipeline on the embedded bus through the real binary: `pipeline ingest`, then each
//! stage as its own `horizons worker --role pipeline:<stage>` process on one shared data dir.
//!
//! The embedded engine holds a lock on its data directory (one process at a time), so the stage
//! processes run one after another: each is started, processes the run it finds on its topic,
//! and is stopped with SIGTERM once its spool says the run is done. (On a broker backend the same
//! processes run side by side.)

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{vla_file, Deployment};

/// Relative tolerance for every number in report.json, gains.json and flags-summary.json. The
/// stages run the same functions on the same blocks and the run context crosses the bus as JSON
/// with exact float round trips, so the products come out identical (measured difference: 0);
/// the tolerance only keeps the test from pinning the last bit of a float.
const REL_TOL: f64 = 1e-12;

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// Compares two JSON trees: same shape and strings, numbers within [`REL_TOL`]; returns the
/// largest relative difference seen.
fn close(a: &serde_json::Value, b: &serde_json::Value, path: &str) -> f64 {
    use serde_json::Value::*;
    match (a, b) {
        (Number(x), Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            let rel = if x == y { 0.0 } else { (x - y).abs() / x.abs().max(y.abs()) };
            assert!(rel <= REL_TOL, "{path}: {x} vs {y} (relative {rel:e})");
            rel
        }
        (Array(x), Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}: lengths");
            x.iter().zip(y).enumerate().map(|(i, (x, y))| close(x, y, &format!("{path}[{i}]"))).fold(0.0, f64::max)
        }
        (Object(x), Object(y)) => {
            assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>(), "{path}: keys");
            x.iter().map(|(k, v)| close(v, &y[k], &format!("{path}.{k}"))).fold(0.0, f64::max)
        }
        _ => {
            assert_eq!(a, b, "{path}");
            0.0
        }
    }
}

/// Runs `worker --role pipeline:<stage>` until `<spool>/<stage>/done/<run>` exists, then stops it.
fn run_stage(d: &Deployment, stage: &str, run: &str) {
    let done = d.dir().join("pipeline/spool").join(stage).join("done").join(run);
    let mut child = d
        .command(&["worker", "--role", &format!("pipeline:{stage}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !done.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!("worker {stage} exited with {status}: {}", String::from_utf8_lossy(&out.stderr));
        }
        assert!(Instant::now() < deadline, "stage {stage} did not finish run {run} within 300 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "worker {stage} did not stop cleanly: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&done).unwrap(), "ok", "stage {stage}'s outcome");
}

fn products_of(d: &Deployment, run: &str) -> PathBuf {
    let root = d.dir().join("pipeline/products");
    let obs = std::fs::read_dir(&root).unwrap().next().expect("one observation directory").unwrap().path();
    obs.join(format!("run-{run}"))
}

#[test]
fn streamed_stages_in_separate_processes_give_pipeline_runs_products() {
    let file = vla_file();
    let d = Deployment::embedded();
    let reference = d.data.path().join("reference");
    let out = d.run(&["pipeline", "run", file.to_str().unwrap(), "--out", reference.to_str().unwrap()]);
    assert!(out.status.success(), "pipeline run: {}", String::from_utf8_lossy(&out.stderr));

    let out = d.run(&["pipeline", "ingest", file.to_str().unwrap(), "--backend", "embedded"]);
    assert!(out.status.success(), "pipeline ingest: {}", String::from_utf8_lossy(&out.stderr));
    let summary = json(&out.stdout);
    let run = summary["run"].as_str().unwrap().to_string();
    assert_eq!(summary["keys"], serde_json::json!(["spw-0"]));
    assert_eq!(summary["wire"]["blocks"], 15);
    assert!(summary["wire"]["max_bytes"].as_u64().unwrap() <= 1 << 20);

    for stage in ["validate", "flag", "calibrate", "image", "archive"] {
        run_stage(&d, stage, &run);
    }
    let streamed = products_of(&d, &run);
    for f in ["dirty.fits", "image.fits", "psf.fits", "residual.fits", "model.fits", "image.png", "alerts.json"] {
        assert!(streamed.join(f).is_file(), "{f} missing from {}", streamed.display());
    }
    let mut worst = BTreeMap::new();
    for f in ["report.json", "gains.json", "flags-summary.json"] {
        let a = json(&std::fs::read(reference.join(f)).unwrap());
        let b = json(&std::fs::read(streamed.join(f)).unwrap());
        worst.insert(f, close(&a, &b, f));
    }
    assert!(worst.values().all(|&w| w == 0.0), "largest relative differences: {worst:?}");
    let report = json(&std::fs::read(streamed.join("report.json")).unwrap());
    for key in ["peak", "rms", "beam", "flag_fraction", "total_flag_fraction"] {
        assert!(!report[key].is_null(), "report.json has {key}");
    }

    // The audit trail: ingest and every stage, in order per spectral window.
    let out = d.run(&["pipeline", "audit", "--until-idle", "1s"]);
    assert!(out.status.success(), "pipeline audit: {}", String::from_utf8_lossy(&out.stderr));
    let records: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| json(l.as_bytes())).collect();
    let stages: Vec<&str> = records.iter().map(|r| r["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["ingest", "validate", "flag", "calibrate", "image", "archive"]);
    for r in &records {
        assert_eq!(r["run"], run.as_str());
        assert_eq!(r["outcome"], "ok", "{}", r["stage"]);
        assert!(r["software"].as_str().unwrap().starts_with("horizons-pipeline "));
        assert!(!r["parameters"].is_null());
        for (key, ok) in r["in_order"].as_object().unwrap() {
            assert_eq!(ok, true, "{} received {key} out of order", r["stage"]);
        }
        let seqs: Vec<u64> = r["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["kind"] == "block")
            .map(|i| i["seq"].as_u64().unwrap())
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "{}: block order {seqs:?}", r["stage"]);
    }
    let ingested: Vec<u64> =
        records[0]["outputs"].as_array().unwrap().iter().filter_map(|o| o["seq"].as_u64()).collect();
    assert_eq!(ingested, (0..15).collect::<Vec<u64>>(), "ingest numbers the blocks in file order");
    let validate_inputs = records[1]["inputs"].as_array().unwrap();
    assert_eq!(validate_inputs.len(), 16, "15 blocks and one end marker");
    assert!(validate_inputs.iter().all(|i| i["position"].as_str().is_some_and(|p| !p.is_empty())));
}

#[test]
fn a_garbage_message_on_the_raw_topic_reaches_the_dlq_with_its_reason() {
    let d = Deployment::embedded();
    let stage = |wait: Duration| {
        let mut worker = d.command(&["worker", "--role", "pipeline:validate"]).stderr(Stdio::null()).spawn().unwrap();
        // The spool directory appears once the topics are declared and the stage is routed.
        let spool = d.dir().join("pipeline/spool/validate");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !spool.exists() {
            assert!(Instant::now() < deadline, "the validate stage did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(wait);
        let _ = std::process::Command::new("kill").arg("-TERM").arg(worker.id().to_string()).status();
        let status = worker.wait().unwrap();
        assert!(status.success(), "worker exited with {status}");
    };
    // First declare the stage's group (a group declared later starts at the end of the topic).
    stage(Duration::ZERO);
    // `bus publish` sends self-checking test payloads without the pipeline's headers.
    let out = d.run(&["bus", "publish", "--topic", "ngvla.raw", "--count", "1"]);
    assert!(out.status.success(), "bus publish: {}", String::from_utf8_lossy(&out.stderr));
    stage(Duration::from_secs(3));
    let out = d.run(&["bus", "dlq", "list", "--topic", "ngvla.raw", "--group", "validate", "--json"]);
    assert!(out.status.success(), "dlq list: {}", String::from_utf8_lossy(&out.stderr));
    let dead = json(&out.stdout);
    let dead = dead.as_array().expect("a JSON array");
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = dead[0]["reason"].as_str().unwrap();
    assert!(reason.contains("not a pipeline frame: missing header ngvla-frame"), "{reason}");
    assert_eq!(dead[0]["attempts"], 1);
}

#[test]
fn horizons_up_runs_the_stages_with_pipeline_in_up() {
    let file = vla_file();
    let d = Deployment::embedded();
    let config = d.data.path().join("horizons.toml");
    std::fs::write(&config, "[pipeline]\nin_up = true\n").unwrap();
    let out = d.run(&["pipeline", "ingest", file.to_str().unwrap()]);
    assert!(out.status.success(), "pipeline ingest: {}", String::from_utf8_lossy(&out.stderr));
    let run = json(&out.stdout)["run"].as_str().unwrap().to_string();
    let server = d.start(&["up"], &[("HORIZONS_CONFIG", config.to_str().unwrap())]);
    let done = d.dir().join("pipeline/spool/archive/done").join(&run);
    let deadline = Instant::now() + Duration::from_secs(300);
    while !done.exists() {
        assert!(Instant::now() < deadline, "horizons up did not finish run {run} within 300 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, stderr) = server.stop();
    assert!(status.success(), "up did not stop cleanly: {stderr}");
    assert!(products_of(&d, &run).join("report.json").is_file());
}

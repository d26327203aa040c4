//! The ngVLA pipeline on the embedded bus through the real binary: `pipeline ingest`, then each
//! stage as its own `horizons worker --role pipeline:<stage>` process on one shared data dir.
//!
//! The embedded engine holds a lock on its data directory (one process at a time), so the stage
//! processes run one after another: each is started, processes the run it finds on its topic,
//! and is stopped with SIGTERM once its spool says the run is done. (On a broker backend the same
//! processes run side by side.)

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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

/// The JSON products of `a` and `b` hold the same numbers exactly, and the `identical` files are
/// the same bytes.
fn assert_same_products(a: &Path, b: &Path, identical: &[&str]) {
    for f in ["report.json", "gains.json", "flags-summary.json"] {
        let x = json(&std::fs::read(a.join(f)).unwrap());
        let y = json(&std::fs::read(b.join(f)).unwrap());
        assert_eq!(close(&x, &y, f), 0.0, "{f}");
    }
    for f in identical {
        assert!(std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(), "{f} differs");
    }
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

    for stage in ["validate", "flag", "calibrate", "image", "archive", "srdp"] {
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
    // Delivery's files: the same thumbnail, and a manifest with the same sizes and checksums.
    for f in ["thumbnail.png", "manifest.json"] {
        assert!(std::fs::read(reference.join(f)).unwrap() == std::fs::read(streamed.join(f)).unwrap(), "{f} differs");
    }
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
    assert_eq!(stages, ["ingest", "validate", "flag", "calibrate", "image", "archive", "srdp"]);
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

/// The same on the Kafka of `scripts/services`: the EVLA file ingested onto Kafka and the five
/// stages as separate `horizons worker` processes give `pipeline run`'s products.
#[test]
fn streamed_stages_on_kafka_give_pipeline_runs_products() {
    stages_on_a_broker(&Deployment::kafka());
}

/// The same on RabbitMQ (with PostgreSQL for the catalog).
#[tokio::test(flavor = "multi_thread")]
async fn streamed_stages_on_rabbitmq_give_pipeline_runs_products() {
    let d = Deployment::amqp_postgres().await;
    let d = tokio::task::spawn_blocking(move || {
        stages_on_a_broker(&d);
        d
    })
    .await
    .unwrap();
    d.delete_amqp_queues();
}

fn stages_on_a_broker(d: &Deployment) {
    let file = vla_file();
    let reference = d.data.path().join("reference");
    let out = d.run(&["pipeline", "run", file.to_str().unwrap(), "--out", reference.to_str().unwrap()]);
    assert!(out.status.success(), "pipeline run: {}", String::from_utf8_lossy(&out.stderr));
    let out = d.run(&["pipeline", "ingest", file.to_str().unwrap()]);
    assert!(out.status.success(), "pipeline ingest on Kafka: {}", String::from_utf8_lossy(&out.stderr));
    let summary = json(&out.stdout);
    assert_eq!(summary["wire"]["blocks"], 15);
    let run = summary["run"].as_str().unwrap().to_string();
    for stage in ["validate", "flag", "calibrate", "image", "archive", "srdp"] {
        run_stage(d, stage, &run);
    }
    let streamed = products_of(d, &run);
    assert_same_products(&reference, &streamed, &["image.fits", "dirty.fits", "psf.fits"]);
    assert!(!d.dir().join("bus").exists(), "nothing went through the embedded bus");
    let out = d.run(&["pipeline", "audit", "--until-idle", "2s"]);
    assert!(out.status.success(), "pipeline audit: {}", String::from_utf8_lossy(&out.stderr));
    // Records are keyed by stage, so a partitioned topic gives them back per key: order by time.
    let mut records: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| json(l.as_bytes()))
        .filter(|r| r["run"] == run.as_str())
        .collect();
    records.sort_by_key(|r| r["finished_ms"].as_i64());
    let stages: Vec<&str> = records.iter().map(|r| r["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["ingest", "validate", "flag", "calibrate", "image", "archive", "srdp"]);
    // Per spectral window, every stage received its blocks in order from the broker.
    for r in &records {
        for (key, ok) in r["in_order"].as_object().unwrap() {
            assert_eq!(ok, true, "{} received {key} out of order", r["stage"]);
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// `pipeline replay` of the time range a run was ingested in publishes it again as a new run,
/// and the stages rebuild the same products from it; a range after the run replays nothing.
#[test]
fn replaying_a_time_range_reproduces_its_products() {
    let file = vla_file();
    let d = Deployment::embedded();
    let t0 = now_ms();
    let out = d.run(&["pipeline", "ingest", file.to_str().unwrap()]);
    assert!(out.status.success(), "pipeline ingest: {}", String::from_utf8_lossy(&out.stderr));
    let run = json(&out.stdout)["run"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(20));
    let t1 = now_ms();
    for stage in ["validate", "flag", "calibrate", "image", "archive", "srdp"] {
        run_stage(&d, stage, &run);
    }

    let replay = |from: u64, to: Option<u64>| {
        let (from, to) = (from.to_string(), to.map(|t| t.to_string()));
        let mut args = vec!["pipeline", "replay", "--from-time", &from, "--until-idle", "1s"];
        if let Some(to) = &to {
            args.extend(["--to-time", to.as_str()]);
        }
        let out = d.run(&args);
        assert!(out.status.success(), "pipeline replay: {}", String::from_utf8_lossy(&out.stderr));
        json(&out.stdout)
    };
    let nothing = replay(t1, None);
    assert_eq!(
        (nothing["frames"].as_u64(), nothing["replayed"].as_array().map(Vec::len)),
        (Some(0), Some(0)),
        "{nothing}"
    );

    let again = replay(t0, Some(t1));
    assert_eq!(again["frames"], 16, "15 blocks and an end marker: {again}");
    assert_eq!(again["partial"], serde_json::json!([]));
    let replayed = again["replayed"].as_array().unwrap();
    assert_eq!(replayed.len(), 1, "{again}");
    assert_eq!(replayed[0]["replay_of"], run.as_str());
    let new_run = replayed[0]["run"]["run"].as_str().unwrap().to_string();
    assert_ne!(new_run, run);
    assert_eq!(replayed[0]["run"]["wire"]["blocks"], 15);
    for stage in ["validate", "flag", "calibrate", "image", "archive", "srdp"] {
        run_stage(&d, stage, &new_run);
    }
    let (original, rebuilt) = (products_of(&d, &run), products_of(&d, &new_run));
    assert_same_products(&original, &rebuilt, &["image.fits", "dirty.fits", "psf.fits", "image.png"]);

    let out = d.run(&["pipeline", "replay", "--from-time", &t1.to_string(), "--to-time", &t0.to_string()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--to-time must be after --from-time"));
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
    let done = d.dir().join("pipeline/spool/srdp/done").join(&run);
    let deadline = Instant::now() + Duration::from_secs(300);
    while !done.exists() {
        assert!(Instant::now() < deadline, "horizons up did not finish run {run} within 300 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, stderr) = server.stop();
    assert!(status.success(), "up did not stop cleanly: {stderr}");
    for f in ["report.json", "thumbnail.png", "manifest.json"] {
        assert!(products_of(&d, &run).join(f).is_file(), "{f}");
    }
}

/// Angular distance, arcseconds (small angles).
fn separation_arcsec(ra1: f64, dec1: f64, ra2: f64, dec2: f64) -> f64 {
    let dra = (ra1 - ra2) * dec1.to_radians().cos();
    dra.hypot(dec1 - dec2) * 3600.0
}

#[test]
fn a_simulated_run_goes_through_the_stage_workers_and_matches_its_truth() {
    let d = Deployment::embedded();
    let truth = d.data.path().join("truth");
    #[rustfmt::skip]
    let out = d.run(&[
        "pipeline", "simulate", "--backend", "embedded",
        "--antennas", "12", "--channels", "8", "--integrations", "4", "--max-radius-m", "3000",
        "--noise-jy", "0.01", "--source", "2.0,-1.5,1.0", "--seed", "3", "--rate", "20", "--no-rfi",
        "--npix", "128", "--cell-arcsec", "0.1", "--solint", "10",
        "--truth", truth.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "pipeline simulate: {}", String::from_utf8_lossy(&out.stderr));
    let summary = json(&out.stdout);
    let run = summary["run"].as_str().unwrap().to_string();
    let sim = &summary["simulation"];
    assert_eq!((sim["antennas"].as_u64(), sim["baselines"].as_u64()), (Some(12), Some(66)), "{summary}");
    assert_eq!(summary["keys"], serde_json::json!(["spw-0"]));
    // 66 baselines x 8 channels x 4 products: each integration is one block on the wire.
    assert_eq!(summary["wire"]["blocks"], 4, "{summary}");
    assert_eq!(summary["messages"], 5, "4 blocks and one end marker");
    assert_eq!(sim["rfi_cells"], 0, "--no-rfi: {summary}");
    // At 20 integrations a second, the fourth is published no earlier than 0.15 s after the first.
    assert!(summary["seconds"].as_f64().unwrap() >= 0.15, "--rate not kept: {summary}");

    for stage in ["validate", "flag", "calibrate", "image", "archive", "srdp"] {
        run_stage(&d, stage, &run);
    }
    let products = products_of(&d, &run);
    let read = |p: PathBuf| json(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
    let report = read(products.join("report.json"));
    for f in ["image.fits", "dirty.fits", "psf.fits", "image.png", "gains.json", "flags-summary.json"] {
        assert!(products.join(f).is_file(), "{f} missing from {}", products.display());
    }

    // The truth describes the run that was published …
    let simulation = read(truth.join("simulation.json"));
    assert_eq!(simulation["run"], run.as_str());
    assert_eq!(simulation["observation_id"], report["observation_id"]);
    assert_eq!((simulation["antennas"].as_u64(), simulation["integrations"].as_u64()), (Some(12), Some(4)));
    let rfi = read(truth.join("rfi.json"));
    assert_eq!((rfi["rfi_cells"].as_u64(), rfi["cells"].as_u64()), (Some(0), Some(4 * 66 * 8)));

    // … the point source is where the sky model put it …
    let sky = read(truth.join("sky.json"));
    let source = &sky["sources"][0];
    assert_eq!((source["ra_offset_arcsec"].as_f64(), source["flux_jy"].as_f64()), (Some(2.0), Some(1.0)));
    let (peak, f) = (&report["peak"], |v: &serde_json::Value| v.as_f64().unwrap());
    let off = separation_arcsec(f(&peak["ra_deg"]), f(&peak["dec_deg"]), f(&source["ra_deg"]), f(&source["dec_deg"]));
    assert!(off <= 0.1, "peak {peak} is {off:.3}\" from the source {source}");
    assert!((f(&peak["value"]) - 1.0).abs() < 0.1, "peak {peak} of a 1 Jy source");

    // … and the true gains are recovered at SNR 100 per visibility (one solution per
    // integration, phases referred to the pipeline's reference antenna). Without --no-rfi, the
    // RFI the flagger misses on so small an array (4 x 8 cells per baseline) biases the gains by
    // a few per cent: measured 5.7 % and 4.6 deg at this seed.
    let (solved, true_gains) = (read(products.join("gains.json")), read(truth.join("gains.json")));
    assert_eq!(solved["antennas"], true_gains["antennas"]);
    let reference = solved["antennas"].as_array().unwrap().iter().position(|a| *a == solved["reference_antenna"]);
    let reference = reference.expect("a reference antenna");
    // Complex numbers as (re, im); `g · conj(t)` carries the amplitude ratio and phase error.
    let c = |v: &serde_json::Value| (f(&v[0]), f(&v[1]));
    let times_conj = |a: (f64, f64), b: (f64, f64)| (a.0 * b.0 + a.1 * b.1, a.1 * b.0 - a.0 * b.1);
    let (mut worst_amp, mut worst_deg) = (0.0f64, 0.0f64);
    let intervals = solved["solution_intervals"].as_array().unwrap();
    assert_eq!(intervals.len(), 4, "--solint 10: one solution per integration");
    for (s, t) in intervals.iter().zip(true_gains["solution_intervals"].as_array().unwrap()) {
        for feed in 0..2 {
            let r = c(&t["gains"][feed][reference]);
            for (a, g) in s["gains"][feed].as_array().unwrap().iter().enumerate() {
                assert_eq!(s["flags"][feed][a], false, "antenna {a} feed {feed} has a solution");
                // Referred to the reference antenna's phase: t · conj(r) / |r|.
                let t = times_conj(c(&t["gains"][feed][a]), r);
                let t = (t.0 / r.0.hypot(r.1), t.1 / r.0.hypot(r.1));
                let (g, q) = (c(g), times_conj(c(g), t));
                worst_amp = worst_amp.max((g.0.hypot(g.1) / t.0.hypot(t.1) - 1.0).abs());
                worst_deg = worst_deg.max(q.1.atan2(q.0).to_degrees().abs());
            }
        }
    }
    eprintln!(
        "simulated run: peak {off:.3}\" off; gains worst {:.3} % amplitude, {worst_deg:.3} deg",
        100.0 * worst_amp
    );
    assert!(worst_amp <= 0.01 && worst_deg <= 1.0, "gain errors {worst_amp} (amplitude), {worst_deg} deg");

    // The archive's catalog row, and the products delivered through the real server.
    let server = d.start(&["up"], &[]);
    tokio::runtime::Runtime::new().unwrap().block_on(products_are_served(&server, &run, &products, &report));
    let (status, stderr) = server.stop();
    assert!(status.success(), "up did not stop cleanly: {stderr}");
}

async fn products_are_served(server: &support::Server, run: &str, dir: &std::path::Path, report: &serde_json::Value) {
    let http = reqwest::Client::new();
    let get = |path: String| {
        let req = http.get(server.url(&path));
        async move { req.send().await.unwrap() }
    };
    let as_json = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        (status, r.json::<serde_json::Value>().await.unwrap())
    };
    let (status, list) = as_json(get("/api/products".into()).await).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "one archived run: {list}");
    let row = &list[0];
    assert_eq!(row["run"], run);
    for (column, field) in [
        ("observation", &report["observation_id"]),
        ("object", &report["object"]),
        ("peak", &report["peak"]["value"]),
        ("peak_ra_deg", &report["peak"]["ra_deg"]),
        ("peak_dec_deg", &report["peak"]["dec_deg"]),
        ("rms", &report["rms"]),
        ("bmaj_arcsec", &report["beam"]["bmaj_arcsec"]),
        ("bpa_deg", &report["beam"]["bpa_deg"]),
        ("time_start_mjd_s", &report["time_range_mjd_s"][0]),
        ("time_end_mjd_s", &report["time_range_mjd_s"][1]),
        ("freq_min_hz", &report["freq_range_hz"][0]),
        ("freq_max_hz", &report["freq_range_hz"][1]),
        ("ra_deg", &report["phase_centre"]["ra_deg"]),
    ] {
        assert_eq!(&row[column], field, "catalog column {column}");
    }
    assert_eq!(row["products_dir"], dir.to_str().unwrap());
    assert!(row["delivered_at"].as_i64().unwrap() >= row["created_at"].as_i64().unwrap(), "delivered: {row}");
    let observation = row["observation"].as_str().unwrap();
    let (_, same) = as_json(get(format!("/api/products?observation={observation}&limit=10")).await).await;
    assert_eq!(same.as_array().map(Vec::len), Some(1));
    let (_, other) = as_json(get("/api/products?observation=elsewhere".into()).await).await;
    assert_eq!(other, serde_json::json!([]));
    let (status, body) = as_json(get("/api/products?limit=0".into()).await).await;
    assert_eq!((status, body["error"].as_str().is_some()), (400, true), "{body}");

    let (status, detail) = as_json(get(format!("/api/products/{run}")).await).await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(&detail["product"], row);
    let files: BTreeMap<&str, &serde_json::Value> =
        detail["files"].as_array().unwrap().iter().map(|f| (f["name"].as_str().unwrap(), f)).collect();
    for (name, ctype, magic) in [
        ("image.png", "image/png", &b"\x89PNG"[..]),
        ("image.fits", "application/fits", &b"SIMPLE  ="[..]),
        ("dirty.fits", "application/fits", &b"SIMPLE  ="[..]),
        ("report.json", "application/json", &b"{"[..]),
        ("thumbnail.png", "image/png", &b"\x89PNG"[..]),
        ("manifest.json", "application/json", &b"{"[..]),
    ] {
        assert_eq!(files[name]["content_type"], ctype, "{name}");
        let r = get(format!("/api/products/{run}/files/{name}")).await;
        assert_eq!(r.status().as_u16(), 200, "{name}");
        assert_eq!(r.headers()["content-type"], ctype, "{name}");
        let bytes = r.bytes().await.unwrap();
        assert!(bytes.starts_with(magic), "{name} starts with {:?}", &bytes[..8.min(bytes.len())]);
        assert_eq!(bytes.len() as u64, files[name]["bytes"].as_u64().unwrap(), "{name}");
        assert_eq!(&bytes[..], &std::fs::read(dir.join(name)).unwrap()[..], "{name}");
    }
    let (_, doc) = as_json(get("/openapi.json".into()).await).await;
    for path in ["/api/products", "/api/products/{run}", "/api/products/{run}/files/{name}"] {
        assert!(doc["paths"][path]["get"]["responses"]["404"].is_object() || path == "/api/products", "{path}");
    }
    let mut ids: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|p| p.as_object().unwrap().values().filter_map(|op| op["operationId"].as_str()))
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "operation ids are unique");

    for path in [
        "/api/products/no-such-run".to_string(),
        "/api/products/a%00b".to_string(),
        "/api/products/no-such-run/files/report.json".to_string(),
        format!("/api/products/{run}/files/nothing.fits"),
        // Only listed names are served: no way out of the products directory.
        format!("/api/products/{run}/files/..%2F..%2F..%2Fhorizons.db"),
        format!("/api/products/{run}/files/%2Fetc%2Fpasswd"),
    ] {
        let (status, body) = as_json(get(path.clone()).await).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body["error"].as_str().is_some(), "{path}: {body}");
    }
}

#[test]
fn simulated_rfi_and_settings_are_recorded_as_truth_and_in_the_audit_trail() {
    let d = Deployment::embedded();
    let truth = d.data.path().join("truth");
    #[rustfmt::skip]
    let out = d.run(&[
        "pipeline", "simulate", "--antennas", "20", "--channels", "16", "--integrations", "6",
        "--seed", "9", "--truth", truth.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "pipeline simulate: {}", String::from_utf8_lossy(&out.stderr));
    let summary = json(&out.stdout);
    let rfi = json(&std::fs::read(truth.join("rfi.json")).unwrap());
    let cells = summary["simulation"]["rfi_cells"].as_u64().unwrap();
    assert!(cells > 0, "RFI is injected by default: {summary}");
    assert_eq!(rfi["rfi_cells"], cells);
    assert_eq!(rfi["cells"], 6 * 190 * 16);
    let by_integration: Vec<u64> =
        rfi["by_integration"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect();
    assert_eq!((by_integration.len(), by_integration.iter().sum::<u64>()), (6, cells));
    // Each RFI cell is on one baseline, so counted for both of its antennas.
    let by_antenna: u64 = rfi["by_antenna"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(by_antenna, 2 * cells);
    let events = rfi["events"].as_array().unwrap();
    assert!(events.len() >= 6, "4 lines, 2 bursts and spikes by default: {}", events.len());
    for e in events {
        for pair in e["baselines"].as_array().unwrap() {
            let (a, b) = (pair[0].as_u64().unwrap(), pair[1].as_u64().unwrap());
            assert!(1 <= a && a < b && b <= 20, "antenna pair {pair}");
        }
    }
    let gains = json(&std::fs::read(truth.join("gains.json")).unwrap());
    assert_eq!(gains["schema"], "horizons.gains/1");
    assert_eq!(gains["solution_intervals"].as_array().unwrap().len(), 6);
    assert_eq!(gains["solution_intervals"][0]["gains"][1].as_array().unwrap().len(), 20);
    let sky = json(&std::fs::read(truth.join("sky.json")).unwrap());
    assert_eq!(sky["sources"][0]["flux_jy"], 1.0, "the default sky: 1 Jy at the phase centre");

    // The ingest audit record carries the simulation's settings.
    let out = d.run(&["pipeline", "audit", "--until-idle", "1s"]);
    assert!(out.status.success(), "pipeline audit: {}", String::from_utf8_lossy(&out.stderr));
    let record = json(String::from_utf8(out.stdout).unwrap().lines().next().expect("the ingest record").as_bytes());
    assert_eq!((record["stage"].as_str(), record["run"].as_str()), (Some("ingest"), summary["run"].as_str()));
    let simulation = &record["parameters"]["simulation"];
    assert_eq!((simulation["antennas"].as_u64(), simulation["seed"].as_u64()), (Some(20), Some(9)), "{record}");
    assert_eq!(record["outputs"].as_array().unwrap().len(), summary["messages"].as_u64().unwrap() as usize);
}

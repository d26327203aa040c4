//! The binary as users run it: real processes, a temporary data directory, a real socket.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn horizons() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_horizons"));
    // Keep the tests independent of the caller's environment.
    for var in [
        "HORIZONS_CONFIG",
        "HORIZONS_DATA_DIR",
        "HORIZONS_HTTP_ADDR",
        "HORIZONS_BUS_BACKEND",
        "HORIZONS_DATABASE_URL",
        "HORIZONS_NAMESPACE",
        "HORIZONS_JWT_SECRET",
        "RUST_LOG",
    ] {
        c.env_remove(var);
    }
    c
}

fn run(args: &[&str]) -> Output {
    horizons().args(args).output().expect("running horizons")
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{args:?} failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    stdout.into_owned()
}

fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert!(!out.status.success(), "{args:?} should fail; stdout: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
}

fn dir_arg(d: &Path) -> &str {
    d.to_str().unwrap()
}

#[test]
fn publish_then_consume_from_the_beginning_checks_the_sequence() {
    let tmp = tempfile::tempdir().unwrap();
    let d = dir_arg(tmp.path());
    let out = ok(&["bus", "publish", "--data-dir", d, "--topic", "seq", "--count", "5000", "--size", "64"]);
    let totals: Vec<u64> = out.lines().map(|l| l.strip_prefix("acked ").unwrap().parse().unwrap()).collect();
    assert_eq!(totals.last(), Some(&5000), "{out}");
    assert!(totals.windows(2).all(|w| w[0] < w[1]), "{totals:?}");

    let summary = ok(&[
        "bus",
        "consume",
        "--data-dir",
        d,
        "--topic",
        "seq",
        "--from-beginning",
        "--until-idle",
        "2s",
        "--check-sequence",
    ]);
    assert_eq!(
        json(&summary),
        serde_json::json!({"count": 5000, "first_seq": 0, "last_seq": 4999, "gaps": 0, "duplicates": 0, "corrupt": 0})
    );

    // Everything was acked: the group has nothing left.
    let topics = json(&ok(&["bus", "topics", "--data-dir", d, "--json"]));
    assert_eq!(topics[0]["groups"][0]["pending"], 0, "{topics}");

    // Replay the tail by offset.
    ok(&["bus", "replay", "--data-dir", d, "--topic", "seq", "--group", "cli", "--from-offset", "4990"]);
    let tail = ok(&["bus", "consume", "--data-dir", d, "--topic", "seq", "--until-idle", "1s", "--check-sequence"]);
    let tail = json(&tail);
    assert_eq!((tail["count"].as_u64(), tail["first_seq"].as_u64()), (Some(10), Some(4990)), "{tail}");

    // Replay a time range: two more batches with a time taken between them; only the first
    // comes back.
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis().to_string();
    let mut marks = Vec::new();
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(100));
        marks.push(now());
        std::thread::sleep(Duration::from_millis(100));
        ok(&["bus", "publish", "--data-dir", d, "--topic", "seq", "--count", "20", "--size", "64"]);
        let got =
            json(&ok(&["bus", "consume", "--data-dir", d, "--topic", "seq", "--until-idle", "1s", "--check-sequence"]));
        assert_eq!(got["count"].as_u64(), Some(20), "{got}");
    }
    let (t1, t2) = (marks[0].as_str(), marks[1].as_str());
    let out =
        ok(&["bus", "replay", "--data-dir", d, "--topic", "seq", "--group", "cli", "--from-time", t1, "--to-time", t2]);
    assert!(out.contains("20 messages"), "{out}");
    let again =
        json(&ok(&["bus", "consume", "--data-dir", d, "--topic", "seq", "--until-idle", "1s", "--check-sequence"]));
    assert_eq!((again["count"].as_u64(), again["duplicates"].as_u64()), (Some(20), Some(0)), "{again}");

    let err = fails(&[
        "bus",
        "replay",
        "--data-dir",
        d,
        "--topic",
        "seq",
        "--group",
        "cli",
        "--from-time",
        t2,
        "--to-time",
        t1,
    ]);
    assert!(err.contains("--to-time must be after --from-time"), "{err}");
    assert_eq!(ok(&["bus", "dlq", "list", "--data-dir", d, "--topic", "seq", "--group", "cli", "--json"]).trim(), "[]");
    assert_eq!(ok(&["bus", "dlq", "redrive", "--data-dir", d, "--topic", "seq", "--group", "cli"]).trim(), "moved 0");
}

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A raw HTTP/1.1 GET; returns (status, body).
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let status = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Ok((status, body))
}

#[test]
fn up_serves_health_and_metrics_and_stops_cleanly_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let d = dir_arg(tmp.path());
    ok(&["bus", "publish", "--data-dir", d, "--topic", "orders", "--count", "10", "--batch", "5"]);

    let addr = free_port();
    let mut child = horizons()
        .args(["up", "--data-dir", d, "--http", &addr.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let health = loop {
        match get(addr, "/healthz") {
            Ok(r) => break r,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                let _ = child.kill();
                panic!("up did not listen on {addr}: {e}");
            }
        }
    };
    assert_eq!(health.0, 200, "{health:?}");
    assert_eq!(json(&health.1), serde_json::json!({"status": "ok", "backend": "embedded"}));

    let (status, metrics) = get(addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    for needle in [
        "horizons_bus_published_total{topic=\"orders\"}",
        "horizons_bus_settled_total{topic=\"orders\",group=\"cli\",result=\"ack\"}",
        "horizons_bus_dead_lettered_total{topic=\"orders\"}",
        "horizons_bus_pending{topic=\"orders\",group=\"cli\"} 10",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }
    let (status, body) = get(addr, "/nope").unwrap();
    assert_eq!((status, json(&body)), (404, serde_json::json!({"error": "no route for /nope"})));

    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("up did not exit within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "exit {status}; stderr:\n{stderr}");
    assert!(stderr.contains("shut down cleanly"), "{stderr}");

    // The directory is released: the CLI can open it again.
    ok(&["bus", "topics", "--data-dir", d]);
}

#[test]
fn a_bad_configuration_fails_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("horizons.toml");
    std::fs::write(&file, "data_dir = \"x\"\n[http]\nbogus_key = 1\n").unwrap();
    let err = fails(&["--config", file.to_str().unwrap(), "bus", "topics"]);
    assert!(err.contains("bogus_key") && err.contains("horizons.toml"), "{err}");

    std::fs::write(&file, "[bus.embedded]\nwindow = 0\n").unwrap();
    let err = fails(&["--config", file.to_str().unwrap(), "bus", "topics"]);
    assert!(err.contains("bus.embedded.window"), "{err}");

    let out = horizons().args(["bus", "topics"]).env("HORIZONS_HTTP_ADDR", "not-an-address").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("HORIZONS_HTTP_ADDR"), "{err}");
}

#[test]
fn unbuilt_backends_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = dir_arg(tmp.path());
    // RabbitMQ and Kafka are built (their crates test them against the real brokers); NATS is not.
    for args in [
        vec!["bus", "--backend", "nats", "topics", "--data-dir", d],
        vec!["bus", "publish", "--backend", "nats", "--topic", "t", "--count", "1", "--data-dir", d],
        vec!["bench", "bus", "--backend", "nats", "--messages", "10", "--data-dir", d],
    ] {
        let err = fails(&args);
        assert!(err.contains("backend is not built yet") && err.contains("embedded"), "{args:?}: {err}");
    }
}

#[test]
fn bench_prints_one_json_object_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let d = dir_arg(tmp.path());
    let out =
        ok(&["bench", "bus", "--data-dir", d, "--messages", "3000", "--size", "64", "--baseline", "raw", "--json"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let r = json(&out);
    let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    let mut expected = vec![
        "backend",
        "messages",
        "size",
        "publish_msgs_per_sec",
        "consume_msgs_per_sec",
        "end_to_end_msgs_per_sec",
        "mb_per_sec",
        "latency_ms",
        "baseline",
        "ratio",
    ];
    let mut got = keys.clone();
    got.sort_unstable();
    expected.sort_unstable();
    assert_eq!(got, expected);
    assert_eq!((r["backend"].as_str(), r["messages"].as_u64()), (Some("embedded"), Some(3000)));
    assert!(r["end_to_end_msgs_per_sec"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["latency_ms"]["p99"].as_f64().unwrap() >= r["latency_ms"]["p50"].as_f64().unwrap(), "{r}");
    assert_eq!(r["baseline"]["name"], "raw");
    assert!(r["ratio"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "the bench's temporary directory was left behind");

    let plain = json(&ok(&["bench", "bus", "--data-dir", d, "--messages", "500", "--size", "16", "--json"]));
    assert!(plain["baseline"].is_null() && plain["ratio"].is_null(), "{plain}");
}

/// On the Kafka of `scripts/services`: `--baseline raw` measures bare rdkafka twice in the same
/// run (the payload alone; the adapter's records, payload and `hz` header read back) and
/// reports the adapter's ratio to each; every message arrives, none corrupt.
#[test]
fn kafka_bench_reports_both_bare_rdkafka_baselines() {
    let tmp = tempfile::tempdir().unwrap();
    let d = dir_arg(tmp.path());
    let args = ["bench", "bus", "--backend", "kafka", "--data-dir", d, "--messages", "20000", "--baseline", "raw"];
    let r = json(&ok(&[&args[..], &["--json"]].concat()));
    assert_eq!((r["backend"].as_str(), r["messages"].as_u64()), (Some("kafka"), Some(20000)), "{r}");
    assert_eq!(r["baseline"]["name"], "raw-rdkafka", "{r}");
    assert_eq!(r["baseline_same_records"]["name"], "raw-rdkafka-hz-header", "{r}");
    for k in ["ratio", "ratio_same_records"] {
        assert!(r[k].as_f64().is_some_and(|x| x > 0.0), "{k}: {r}");
    }
    for b in ["baseline", "baseline_same_records"] {
        assert!(r[b]["msgs_per_sec"].as_f64().is_some_and(|x| x > 0.0), "{b}: {r}");
    }
    let text = ok(&args);
    assert!(text.contains("bare rdkafka with the same records"), "{text}");
}

/// A tiny simulated input: every stage runs, in well under a second.
const TINY_SIM: [&str; 10] =
    ["--simulate", "--antennas", "8", "--channels", "8", "--integrations", "4", "--npix", "64", "--json"];

#[test]
fn bench_pipeline_prints_one_json_object_with_every_stage() {
    let mut args = vec!["bench", "pipeline"];
    args.extend(TINY_SIM);
    args.extend(["--ducc0", "off", "--aoflagger", "off"]);
    let out = ok(&args);
    assert_eq!(out.lines().count(), 1, "{out}");
    let r = json(&out);
    for key in ["mb_definition", "cpu", "cores", "repeats", "input", "stages", "ducc0", "aoflagger"] {
        assert!(r.get(key).is_some(), "missing {key}: {r}");
    }
    // 8 antennas: 28 baselines x 8 channels x 4 products x 4 integrations, 8 bytes each.
    assert_eq!(r["input"]["visibilities"], 28 * 8 * 4 * 4, "{r}");
    assert_eq!(r["input"]["kind"], "simulated");
    let stages: Vec<&str> = r["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["wire", "validate", "flag", "calibrate", "image", "grid", "fft", "clean"]);
    for s in r["stages"].as_array().unwrap() {
        for field in ["seconds", "mb_per_sec", "threads", "mb_per_sec_per_core"] {
            assert!(s[field].as_f64().is_some_and(|x| x > 0.0), "{field} of {s}");
        }
    }
    assert!(r["stages"][5]["samples_per_sec"].as_f64().is_some_and(|x| x > 0.0), "{r}");
    // Validation and flagging together: slower than either alone.
    let per_core = |i: usize| r["stages"][i]["mb_per_sec_per_core"].as_f64().unwrap();
    let both = r["validate_and_flag_mb_per_sec_per_core"].as_f64().unwrap();
    assert!(both > 0.0 && both < per_core(1).min(per_core(2)), "{r}");
    assert_eq!(r["ducc0"]["available"], false);
    assert_eq!(r["ducc0"]["reason"], "skipped (--ducc0 off)");
    assert_eq!(r["aoflagger"]["reason"], "skipped (--aoflagger off)");

    // Without a ducc0 venv, `auto` (the default) reports why and still succeeds …
    let mut args = vec!["bench", "pipeline"];
    args.extend(TINY_SIM);
    args.extend(["--ducc0-python", "/nonexistent/python", "--aoflagger", "off"]);
    let r = json(&ok(&args));
    assert_eq!(r["ducc0"]["available"], false);
    let reason = r["ducc0"]["reason"].as_str().unwrap();
    assert!(reason.contains("ducc0 not available") && reason.contains("/nonexistent/python"), "{reason}");
    // … and `require` fails naming it.
    args.extend(["--ducc0", "require"]);
    let err = fails(&args);
    assert!(err.contains("ducc0 not available") && err.contains("/nonexistent/python"), "{err}");
}

/// The flagging comparison against the real AOFlagger (`scripts/test` installs it with
/// `bash scripts/aoflagger-venv`; a missing venv fails here, it is not skipped).
#[test]
fn bench_pipeline_flags_side_by_side_with_aoflagger() {
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/venv-aoflagger/bin/python");
    assert!(python.exists(), "{} is missing: run `bash scripts/aoflagger-venv`", python.display());
    let python = python.to_str().unwrap();
    let sim = ["--simulate", "--antennas", "8", "--channels", "32", "--integrations", "16", "--npix", "64", "--json"];
    let mut args = vec!["bench", "pipeline"];
    args.extend(sim);
    args.extend(["--ducc0", "off", "--aoflagger", "require", "--aoflagger-python", python]);
    let r = json(&ok(&args));
    let a = &r["aoflagger"];
    assert_eq!(a["available"], true, "{a}");
    assert!(a["version"].as_str().is_some_and(|v| v.starts_with('3')), "{a}");
    assert_eq!(a["strategy"], "generic-default.lua", "{a}");
    // 28 baselines x 32 channels x 16 integrations.
    assert_eq!(a["cells"], 28 * 32 * 16, "{a}");
    for field in ["cpu_seconds", "mb_per_sec_per_core", "ours_mb_per_sec_per_core", "speed_ratio"] {
        assert!(a[field].as_f64().is_some_and(|x| x > 0.0), "{field} of {a}");
    }
    // The simulator injects RFI on most baselines: both flaggers find some of it, and each
    // flagger's score is the one its own flags give against the truth.
    let frac = |k: &str| a[k].as_f64().unwrap();
    assert!(frac("ours_flagged_fraction") > 0.0 && frac("aoflagger_flagged_fraction") > 0.0, "{a}");
    assert!((0.0..=1.0).contains(&frac("agreement")), "{a}");
    let truth = &a["truth"];
    for who in ["ours", "aoflagger"] {
        assert!(truth[who]["true_positives"].as_u64().unwrap() > 0, "{who}: {truth}");
    }
    assert!(truth["ours"]["recall"].as_f64().unwrap() >= 0.9, "{truth}");

    // A strategy file that does not exist is AOFlagger's error, named.
    args.extend(["--aoflagger-strategy", "/nonexistent.lua"]);
    let err = fails(&args);
    assert!(err.contains("AOFlagger not available") && err.contains("nonexistent.lua"), "{err}");
}

#[test]
fn bench_pipeline_bad_flags_fail_clearly() {
    for (args, expected) in [
        (vec!["bench", "pipeline"], "--source"),
        (vec!["bench", "pipeline", "--source", "x.uvfits", "--simulate"], "cannot be used with"),
        (vec!["bench", "pipeline", "--source", "x.uvfits", "--antennas", "8"], "they need --simulate"),
        (vec!["bench", "pipeline", "--simulate", "--npix", "30"], "--npix must be even and 32..=16384"),
        (vec!["bench", "pipeline", "--simulate", "--antennas", "2"], "--antennas must be 4..=1000"),
        (vec!["bench", "pipeline", "--simulate", "--ducc0", "maybe"], "maybe"),
        (vec!["bench", "pipeline", "--simulate", "--aoflagger", "perhaps"], "perhaps"),
        (vec!["bench", "pipeline", "--source", "/nonexistent.uvfits"], "reading /nonexistent.uvfits"),
    ] {
        let err = fails(&args);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

#[test]
fn pipeline_simulate_bad_flags_fail_naming_the_flag() {
    for (args, expected) in [
        (vec!["--antennas", "3"], "--antennas must be 5..=1000"),
        (vec!["--integrations", "0"], "--integrations must be 1..=1000000"),
        (vec!["--rate=-1"], "--rate must be a number >= 0"),
        (vec!["--noise-jy", "loud"], "--noise-jy"),
        (vec!["--source", "1,2"], "--source \"1,2\": three numbers needed"),
        (vec!["--source", "-1,2,-0.5"], "the flux must be positive"),
        (vec!["--max-radius-m", "10"], "--max-radius-m must be over"),
        (vec!["--weighting", "heavy"], "heavy"),
        (vec!["--rfi-refits", "9"], "--rfi-refits must be 0..=8, got 9"),
        (vec!["--rfi-polarisations", "both"], "expected combined or each"),
    ] {
        let mut all = vec!["pipeline", "simulate"];
        all.extend(&args);
        let err = fails(&all);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

/// `pipeline simulate --score DIR` runs the pipeline in this process, writes the products and
/// `score.json`, and fails naming the target a run misses: here the gain amplitudes of one
/// solution over four integrations whose phases drift 20° apart from each other (the averaged
/// data decorrelate), against one solution per integration.
#[test]
fn pipeline_simulate_score_checks_the_targets() {
    let dir = tempfile::tempdir().unwrap();
    #[rustfmt::skip]
    let base = [
        "pipeline", "simulate", "--antennas", "12", "--channels", "8", "--integrations", "4",
        "--max-radius-m", "3000", "--noise-jy", "0.01", "--source", "2.0,-1.5,1.0", "--no-rfi",
        "--npix", "128", "--cell-arcsec", "0.1", "--phase-drift-deg", "20",
    ];
    let good = dir.path().join("good");
    let mut args = base.to_vec();
    args.extend(["--solint", "10", "--score", dir_arg(&good)]);
    let out = json(&ok(&args));
    assert_eq!(out["pass"], true, "{out}");
    assert_eq!(out["snr"], 100.0);
    assert!(out["gains"]["worst_phase_deg"].as_f64().unwrap() <= 1.0, "{out}");
    let source = &out["sources"][0];
    assert_eq!((source["ra_offset_arcsec"].as_f64(), source["flux_jy"].as_f64()), (Some(2.0), Some(1.0)));
    assert!(source["position_error_arcsec"].as_f64().unwrap() <= 0.05, "{out}");
    assert!(out["not_checked"]["flag_precision_and_recall"].as_str().unwrap().contains("--no-rfi"));
    for f in ["score.json", "report.json", "gains.json", "image.fits", "thumbnail.png", "manifest.json"] {
        assert!(good.join(f).is_file(), "{f}");
    }
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(good.join("score.json")).unwrap()).unwrap();
    assert_eq!(written["checks"], out["checks"]);

    let bad = dir.path().join("bad");
    let mut args = base.to_vec();
    args.extend(["--score", dir_arg(&bad)]);
    let err = fails(&args);
    assert!(err.contains("targets missed: gain_amplitude_error"), "{err}");
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(bad.join("score.json")).unwrap()).unwrap();
    assert_eq!(written["checks"]["gain_amplitude_error"]["pass"], false);
    // Publishing options make no sense without a bus.
    let err = fails(&["pipeline", "simulate", "--score", dir_arg(&bad), "--backend", "embedded"]);
    assert!(err.contains("--backend"), "{err}");
}

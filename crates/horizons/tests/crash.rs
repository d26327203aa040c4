//! Crash safety from outside the process: `horizons bus publish` on the embedded backend is
//! killed with SIGKILL at a random moment, 20 times; each time a fresh `horizons bus consume`
//! must find every sequence number the publisher printed as acked, and no corrupt record.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

const ROUNDS: usize = 20;

fn horizons(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_horizons"));
    c.arg("--data-dir").arg(dir).env("RUST_LOG", "warn");
    c
}

/// Publishes until killed after `kill_after`; returns the last `acked N` it printed.
fn publish_and_kill(dir: &Path, kill_after: Duration) -> u64 {
    let mut child = horizons(dir)
        .args(["bus", "publish", "--backend", "embedded", "--topic", "crash", "--count", "1000000000", "--size", "100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start publisher");
    let acked = Arc::new(AtomicU64::new(0));
    let stdout = child.stdout.take().expect("piped");
    let reader = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("acked ").and_then(|n| n.trim().parse::<u64>().ok()) {
                    acked.store(n, Ordering::SeqCst);
                }
            }
        })
    };
    std::thread::sleep(kill_after);
    child.kill().expect("SIGKILL the publisher"); // std sends SIGKILL on Unix
    let status = child.wait().expect("reap publisher");
    assert!(!status.success(), "the publisher was killed, it cannot have finished: {status:?}");
    reader.join().expect("reader thread");
    acked.load(Ordering::SeqCst)
}

fn consume_summary(dir: &Path, acked: u64) -> serde_json::Value {
    let out = horizons(dir)
        .args(["bus", "consume", "--backend", "embedded", "--topic", "crash", "--from-beginning"])
        .args(["--until-idle", "1s", "--check-sequence", "--acked", &acked.to_string()])
        .output()
        .expect("run consumer");
    assert!(out.status.success(), "consume failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("summary {stdout:?}: {e}"))
}

#[test]
fn sigkill_mid_stream_never_loses_an_acked_message() {
    let mut rng = rand::thread_rng();
    let mut total_acked = 0;
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().expect("temp dir");
        let kill_after = Duration::from_millis(rng.gen_range(150..1500));
        let acked = publish_and_kill(dir.path(), kill_after);
        let s = consume_summary(dir.path(), acked);
        eprintln!("round {round}: killed after {kill_after:?}, acked {acked}, consumed {s}");
        assert_eq!(s["missing_below_acked"], 0, "round {round}: acked messages lost: {s}");
        assert_eq!(s["corrupt"], 0, "round {round}: corrupt records served: {s}");
        assert_eq!(s["duplicates"], 0, "round {round}: {s}");
        assert!(s["count"].as_u64().unwrap() >= acked, "round {round}: {s}");
        total_acked += acked;
    }
    assert!(total_acked > 0, "no round got as far as an acknowledged batch; the test proved nothing");
}

//! Start-up failures are quick and clear: a wrong password, a closed port and a server that
//! never answers each fail within the connect timeout, naming the URL without the password.

use std::time::{Duration, Instant};

use horizons_amqp::{AmqpBus, AmqpConfig, SecretUrl};

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out = format!("{out}: {s}");
        cur = s.source();
    }
    out
}

/// Connects to `url` and expects a failure within `limit` that mentions `hostport` and
/// `expected`, and never the password `hunter2`.
async fn check_fails(url: &str, hostport: &str, expected: &str, limit: Duration) {
    let cfg = AmqpConfig { url: SecretUrl::new(url), connect_timeout: Duration::from_secs(3), ..AmqpConfig::default() };
    let started = Instant::now();
    let err = match AmqpBus::connect(cfg).await {
        Ok(_) => panic!("connecting to {url} must fail"),
        Err(e) => chain(&e),
    };
    let took = started.elapsed();
    println!("{url}: {err} (after {took:?})");
    assert!(took < limit, "{url}: failing took {took:?}");
    assert!(err.contains(hostport) && err.contains("***"), "the error names the URL, password redacted: {err}");
    assert!(!err.contains("hunter2"), "the password leaked: {err}");
    assert!(err.to_lowercase().contains(expected), "expected {expected:?} in: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_fails_at_start_up() {
    let real = AmqpConfig::from_env().url.expose().to_string();
    let url = match real.split_once('@') {
        Some((_, host)) => format!("amqp://horizons:hunter2@{host}"),
        None => panic!("HORIZONS_AMQP_URL has no credentials: {}", AmqpConfig::from_env().url),
    };
    let hostport = url.split('@').nth(1).and_then(|h| h.split('/').next()).unwrap_or_default().to_string();
    check_fails(&url, &hostport, "access", Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_port_fails_at_start_up() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    check_fails("amqp://horizons:hunter2@127.0.0.1:1/%2f", "127.0.0.1:1", "refused", Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_fails_at_start_up() {
    // Accepts TCP connections and never speaks AMQP.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let url = format!("amqp://horizons:hunter2@127.0.0.1:{port}/%2f");
    check_fails(&url, &format!("127.0.0.1:{port}"), "within", Duration::from_secs(6)).await;
    drop(listener);
}

//! Shared by the portal tests: start `horizons` processes on a fresh data dir and talk to them.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_horizons");

/// Where and how a test's processes run: one data dir, one environment.
pub struct Deployment {
    pub data: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl Deployment {
    /// The embedded default: SQLite and the embedded bus in the data dir.
    pub fn embedded() -> Self {
        Self { data: tempfile::tempdir().unwrap(), env: vec![("HORIZONS_BUS_BACKEND".into(), "embedded".into())] }
    }

    /// RabbitMQ and a fresh PostgreSQL database, in a namespace of their own.
    pub async fn amqp_postgres() -> Self {
        let amqp =
            std::env::var("HORIZONS_AMQP_URL").unwrap_or_else(|_| "amqp://horizons:horizons@127.0.0.1:5672/%2f".into());
        let tag = format!("t{}", &uuid_like()[..12]);
        let url = horizons_comments::store::fresh_postgres_url_for_tests("hz").await;
        // Every run declares its own queues (a namespace per run); let the broker drop them a
        // while after the run ends, so test runs do not pile up quorum queues.
        let data = tempfile::tempdir().unwrap();
        let config = data.path().join("horizons.toml");
        std::fs::write(&config, "[bus.amqp]\nqueue_expires = \"5m\"\n").unwrap();
        Self {
            data,
            env: vec![
                ("HORIZONS_CONFIG".into(), config.display().to_string()),
                ("HORIZONS_BUS_BACKEND".into(), "amqp".into()),
                ("HORIZONS_AMQP_URL".into(), amqp),
                ("HORIZONS_DATABASE_URL".into(), url),
                ("HORIZONS_NAMESPACE".into(), format!("{tag}.")),
            ],
        }
    }

    /// The Kafka of `scripts/services` (`HORIZONS_KAFKA_BROKERS`), in a namespace of its own,
    /// with SQLite in the data dir.
    pub fn kafka() -> Self {
        let brokers = std::env::var("HORIZONS_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
        let tag = format!("t{}", &uuid_like()[..12]);
        Self {
            data: tempfile::tempdir().unwrap(),
            env: vec![
                ("HORIZONS_BUS_BACKEND".into(), "kafka".into()),
                ("HORIZONS_KAFKA_BROKERS".into(), brokers),
                ("HORIZONS_NAMESPACE".into(), format!("{tag}.")),
            ],
        }
    }

    /// Deletes this deployment's RabbitMQ queues (a test that declared many quorum queues
    /// leaves the broker as it found it instead of waiting for them to expire).
    pub fn delete_amqp_queues(&self) {
        let (_, ns) = self.env.iter().find(|(k, _)| k == "HORIZONS_NAMESPACE").expect("a namespaced deployment");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/services");
        let status = Command::new("bash")
            .arg(script)
            .args(["rabbitmq-delete-queues", &format!("hz:{ns}")])
            .status()
            .unwrap_or_else(|e| panic!("running {script}: {e}"));
        assert!(status.success(), "deleting the queues of namespace {ns}: {status}");
    }

    /// Adds TOML to this deployment's configuration file (broker deployments have one).
    pub fn append_config(&self, toml: &str) {
        let (_, path) = self.env.iter().find(|(k, _)| k == "HORIZONS_CONFIG").expect("a deployment with a config file");
        let mut text = std::fs::read_to_string(path).unwrap();
        text.push_str(toml);
        std::fs::write(path, text).unwrap();
    }

    pub fn dir(&self) -> PathBuf {
        self.data.path().join("data")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args).arg("--data-dir").arg(self.dir()).env("RUST_LOG", "warn");
        // Only what this deployment sets: CI exports the services' URLs for every test.
        for var in [
            "HORIZONS_CONFIG",
            "HORIZONS_DATA_DIR",
            "HORIZONS_HTTP_ADDR",
            "HORIZONS_BUS_BACKEND",
            "HORIZONS_DATABASE_URL",
            "HORIZONS_NAMESPACE",
            "HORIZONS_JWT_SECRET",
            "HORIZONS_SMTP_URL",
            "HORIZONS_FAILPOINT",
        ] {
            c.env_remove(var);
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn token(&self, user: &str, role: &str) -> String {
        let out = self.run(&["token", "--user", user, "--role", role, "--email", &format!("{user}@example.org")]);
        assert!(out.status.success(), "token: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Starts `horizons <args> --http ADDR` and waits for /healthz.
    pub fn start(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Server {
        let addr = free_port();
        let mut c = self.command(args);
        c.arg("--http").arg(addr.to_string()).stdout(Stdio::null()).stderr(Stdio::piped());
        for (k, v) in extra_env {
            c.env(k, v);
        }
        let child = c.spawn().unwrap();
        let server = Server { child, addr };
        server.wait_healthy();
        server
    }

    /// Starts `horizons worker --role …` in the background.
    pub fn worker(&self, roles: &str) -> Child {
        self.command(&["worker", "--role", roles]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
    }

    /// The database URL the processes use.
    pub fn database_url(&self) -> String {
        self.env
            .iter()
            .find(|(k, _)| k == "HORIZONS_DATABASE_URL")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| format!("sqlite://{}", self.dir().join("horizons.db").display()))
    }
}

pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "horizons did not start listening on {}", self.addr);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM and wait; returns the exit status and stderr.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let out = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap()).wait_with_output().unwrap();
        (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub fn uuid_like() -> String {
    use rand::Rng;
    let mut r = rand::thread_rng();
    (0..32).map(|_| char::from_digit(r.gen_range(0..16), 16).unwrap()).collect()
}

/// Polls `f` until it returns `Some`, for up to `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Files in `dir` (none if it does not exist).
pub fn files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default()
}

/// The real EVLA test file (`HORIZONS_VLA_FILE`, else where `scripts/fetch-vla-data` puts it).
#[allow(dead_code)]
pub fn vla_file() -> PathBuf {
    let path = std::env::var_os("HORIZONS_VLA_FILE").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/vla/day2_TDEM0003_10s_norx_1src_1spw.uvfits")
    });
    assert!(
        path.is_file(),
        "the real EVLA test file is missing at {}: run `scripts/fetch-vla-data` from the repository root",
        path.display()
    );
    path
}

/// GET `url` with a bearer token; the body as JSON.
#[allow(dead_code)]
pub async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> serde_json::Value {
    http.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}

/// POST `body` (or nothing) to `url` with a bearer token; the answer as JSON.
#[allow(dead_code)]
pub async fn post_json(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut r = http.post(url).bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    r.send().await.unwrap().json().await.unwrap()
}

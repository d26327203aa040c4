//! The stages on the embedded bus in this process: the real EVLA file streamed through every
//! stage gives `pipeline run`'s products, and bad messages reach the dead-letter queue with their
//! reason. (The same through separate `horizons` processes: `crates/horizons/tests/stream.rs`.)

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use horizons_bus::{Backend, Envelope, Router};
use horizons_embedded::{EmbeddedBus, EmbeddedConfig};
use horizons_ngvla::pipeline::{self, Options};
use horizons_pipeline::catalog::CatalogError;
use horizons_pipeline::frame::{H_FRAME, H_OBSERVATION, H_RUN, H_SEQ};
use horizons_pipeline::ingest::RunPublisher;
use horizons_pipeline::{ingest, Archived, Catalog, Service, ServiceConfig, Stage, Topics};
use tokio_util::sync::CancellationToken;

fn vla_file() -> PathBuf {
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

struct Running {
    bus: Arc<dyn Backend>,
    service: Service,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

async fn start(stages: &[Stage]) -> Running {
    start_with(stages, None).await
}

async fn start_with(stages: &[Stage], catalog: Option<Arc<dyn Catalog>>) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let bus: Arc<dyn Backend> = Arc::new(EmbeddedBus::open(EmbeddedConfig::in_dir(dir.path().join("bus"))).unwrap());
    let cfg = ServiceConfig {
        spool_dir: dir.path().join("spool"),
        products_dir: dir.path().join("products"),
        max_block_bytes: Options::default().max_block_bytes,
    };
    let mut service = Service::new(bus.clone(), Topics::new("").unwrap(), cfg);
    if let Some(c) = catalog {
        service = service.with_catalog(c);
    }
    service.declare().await.unwrap();
    let router = service.routes(Router::new(bus.clone()), stages).unwrap();
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let task = tokio::spawn(async move { router.run(c).await.unwrap() });
    Running { bus, service, cancel, task, dir }
}

impl Running {
    async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap();
        self.bus.close().await.unwrap();
    }
}

async fn wait_for(path: &Path, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} did not appear within {secs} s", path.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_run_writes_the_products_of_pipeline_run() {
    let file = vla_file();
    let r = start(&Stage::ALL).await;
    let summary = ingest::ingest(&r.service, &file, Options::default()).await.unwrap();
    // 15 blocks, 9.5 KB to 479 KB: the file's first integration is spread over four stamps, so
    // a few raw blocks are small; they stay as they are, because `pipeline run` validates them so.
    assert!(summary.wire.max_bytes <= 1 << 20, "{:?}", summary.wire);
    assert_eq!(
        summary.wire.total_bytes,
        pipeline::wire_round_trip(horizons_ngvla::uvfits::UvFits::open(&file).unwrap().to_blocks(), 1 << 20)
            .unwrap()
            .1
            .total_bytes
    );
    let obs_dir = r.dir.path().join("products");
    let reference = pipeline::run_file(&file, &Options::default()).unwrap();
    let ref_dir = r.dir.path().join("reference");
    horizons_ngvla::archive::write_delivered(&reference, &ref_dir).unwrap();
    // Delivery marks the run done after adding the thumbnail and the manifest.
    wait_for(&r.dir.path().join("spool/srdp/done").join(&summary.run), 300).await;
    let obs = std::fs::read_dir(&obs_dir).unwrap().next().expect("one observation directory").unwrap();
    let out = obs.path().join(format!("run-{}", summary.run));
    for name in ["report.json", "gains.json", "flags-summary.json", "alerts.json"] {
        let (a, b) = (std::fs::read(ref_dir.join(name)).unwrap(), std::fs::read(out.join(name)).unwrap());
        assert!(a == b, "{name} differs between pipeline run and the stream");
    }
    for name in
        ["dirty.fits", "psf.fits", "image.fits", "residual.fits", "model.fits", "thumbnail.png", "manifest.json"]
    {
        let (a, b) = (std::fs::read(ref_dir.join(name)).unwrap(), std::fs::read(out.join(name)).unwrap());
        assert!(a == b, "{name} differs between pipeline run and the stream");
    }
    r.stop().await;
}

/// Delivery checks the products against the archive's manifest: a file changed in between is
/// a permanent failure, dead-lettered with the file named, and nothing is announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_refuses_products_changed_since_they_were_archived() {
    let upstream = [Stage::Validate, Stage::Flag, Stage::Calibrate, Stage::Image, Stage::Archive];
    let r = start(&upstream).await;
    let summary = publish_small_simulated_run(&r.service).await;
    wait_for(&r.dir.path().join("spool/archive/done").join(&summary.run), 300).await;
    let obs = std::fs::read_dir(r.dir.path().join("products")).unwrap().next().unwrap().unwrap();
    let products = obs.path().join(format!("run-{}", summary.run));
    std::fs::write(products.join("gains.json"), b"{}").unwrap();

    let deliver = r.service.routes(Router::new(r.bus.clone()), &[Stage::Deliver]).unwrap();
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let c = cancel.clone();
        async move { deliver.run(c).await.unwrap() }
    });
    let archived = r.service.topics().archived.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    let dead = loop {
        let dead = r.bus.dlq_list(&archived, "srdp", 10).await.unwrap();
        if !dead.is_empty() {
            break dead;
        }
        assert!(Instant::now() < deadline, "no dead letter from delivery after 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(dead[0].reason.contains("changed since they were archived: gains.json"), "{}", dead[0].reason);
    assert!(!products.join("manifest.json").exists(), "nothing delivered");
    cancel.cancel();
    task.await.unwrap();
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_bad_blocks_reach_the_dead_letter_queue_with_their_reason() {
    let r = start(&[Stage::Validate]).await;
    let raw = r.service.topics().raw.clone();
    let frame = |payload: Vec<u8>| {
        Envelope::new(raw.clone(), payload)
            .with_key("spw-0")
            .with_header(H_FRAME, "block")
            .with_header(H_RUN, "run-1")
            .with_header(H_OBSERVATION, "obs")
            .with_header(H_SEQ, "0")
    };
    r.bus.publish(Envelope::new(raw.clone(), b"hello".to_vec())).await.unwrap();
    r.bus.publish(frame(vec![0xff, 0xff, 0xff])).await.unwrap();
    let expected = ["missing header ngvla-frame", "undecodable block"];
    let deadline = Instant::now() + Duration::from_secs(30);
    let dead = loop {
        let dead = r.bus.dlq_list(&raw, "validate", 10).await.unwrap();
        if dead.len() >= expected.len() {
            break dead;
        }
        assert!(Instant::now() < deadline, "only {} dead letters after 30 s", dead.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (d, want) in dead.iter().zip(expected) {
        assert!(d.reason.contains(want), "reason {:?} should say {want:?}", d.reason);
        assert_eq!(d.attempts, 1, "a permanent failure is not retried");
    }
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_a_nan_block_and_a_misshapen_block_dead_letters_them_and_still_completes() {
    use horizons_pipeline::frame::RunWriter;
    use horizons_pipeline::RunContext;

    let file = vla_file();
    let r = start(&Stage::ALL).await;
    let uv = horizons_ngvla::uvfits::UvFits::open(&file).unwrap();
    let mut blocks = uv.to_blocks();
    blocks[3].time_mjd_s = f64::NAN;
    blocks[5].vis.truncate(10);
    let ctx = RunContext::new(
        "run-with-bad-blocks".into(),
        "edited".into(),
        uv.observation.clone(),
        Options::default(),
        Default::default(),
    );
    let raw = r.service.topics().raw.clone();
    let mut w = RunWriter::new(raw.clone(), ctx.clone(), 1 << 20);
    for b in &blocks {
        w.blocks_as_cut(b);
    }
    r.bus.publish_batch(w.finish().unwrap()).await.unwrap();

    let report = r.dir.path().join("products").join("EVLA_J1008+0730_2010-04-26T03_21_56_000000");
    let report = report.join("run-run-with-bad-blocks").join("report.json");
    wait_for(&r.dir.path().join("spool/archive/done/run-with-bad-blocks"), 300).await;
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["validation"]["rejected_blocks"], 2);
    let dead = r.bus.dlq_list(&raw, "validate", 10).await.unwrap();
    let reasons: Vec<&str> = dead.iter().map(|d| d.reason.as_str()).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("block 3 (key spw-0)") && reasons[0].contains("time is not finite"), "{reasons:?}");
    assert!(
        reasons[1].contains("block 5 (key spw-0)")
            && reasons[1].contains("undecodable block: block shape: 4896 flag bytes for 10 samples"),
        "{reasons:?}"
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_half_spooled_before_a_restart_completes_after_it() {
    use horizons_pipeline::frame::RunWriter;
    use horizons_pipeline::RunContext;

    let file = vla_file();
    let uv = horizons_ngvla::uvfits::UvFits::open(&file).unwrap();
    let ctx = RunContext::new(
        "restarted-run".into(),
        "restart".into(),
        uv.observation.clone(),
        Options::default(),
        Default::default(),
    );
    let r = start(&[Stage::Validate]).await;
    let raw = r.service.topics().raw.clone();
    let mut w = RunWriter::new(raw.clone(), ctx.clone(), 1 << 20);
    for b in &uv.to_blocks() {
        w.blocks_as_cut(b);
    }
    let mut frames = w.finish().unwrap();
    let rest = frames.split_off(8);
    r.bus.publish_batch(frames).await.unwrap();
    let spooled = r.dir.path().join("spool/validate/runs/restarted-run");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&spooled).map_or(0, |d| d.count()) < 9 {
        assert!(Instant::now() < deadline, "the first 8 frames were not spooled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Stop everything (the stage has acked 8 frames), then reopen the same directories.
    let dir = r.dir;
    r.cancel.cancel();
    r.task.await.unwrap();
    r.bus.close().await.unwrap();
    let bus: Arc<dyn Backend> = Arc::new(EmbeddedBus::open(EmbeddedConfig::in_dir(dir.path().join("bus"))).unwrap());
    let cfg = ServiceConfig {
        spool_dir: dir.path().join("spool"),
        products_dir: dir.path().join("products"),
        max_block_bytes: 1 << 20,
    };
    let service = Service::new(bus.clone(), Topics::new("").unwrap(), cfg);
    service.declare().await.unwrap();
    let router = service.routes(Router::new(bus.clone()), &Stage::ALL).unwrap();
    let cancel = CancellationToken::new();
    let task = tokio::spawn(router.run(cancel.clone()));
    bus.publish_batch(rest).await.unwrap();
    let out = dir.path().join("products/EVLA_J1008+0730_2010-04-26T03_21_56_000000/run-restarted-run");
    wait_for(&dir.path().join("spool/archive/done/restarted-run"), 300).await;
    let reference = pipeline::run_file(&file, &Options::default()).unwrap();
    let ours: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(ours, serde_json::to_value(&reference.report).unwrap(), "the restarted run gives the same report");
    cancel.cancel();
    task.await.unwrap().unwrap();
    bus.close().await.unwrap();
}

/// Publishes a simulated run of 10 antennas, 8 channels and 4 integrations (a point source at
/// the phase centre) block by block, as `pipeline simulate` does.
async fn publish_small_simulated_run(service: &Service) -> horizons_pipeline::ingest::IngestSummary {
    let sim = horizons_ngvla::sim::Simulator::new(horizons_ngvla::sim::SimConfig {
        n_ant: 10,
        n_chan: 8,
        n_int: 4,
        max_radius_m: 3000.0,
        noise_jy: 0.01,
        ..Default::default()
    });
    // A 3 km array resolves ~0.4": pixels of 0.1" so the PSF's main lobe can be fitted.
    let mut opts = Options::default();
    (opts.imaging.npix, opts.imaging.cell_arcsec) = (128, 0.1);
    let mut run = RunPublisher::new(service, "simulated".into(), sim.observation().clone(), opts);
    for k in 0..4 {
        run.publish(&sim.block(k).0).await.unwrap();
    }
    run.finish().await.unwrap()
}

/// A catalog in memory whose first call fails, as a database that is briefly unavailable.
#[derive(Default)]
struct FlakyCatalog {
    calls: std::sync::atomic::AtomicUsize,
    rows: std::sync::Mutex<Vec<(String, String, f64, PathBuf)>>,
    delivered: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Catalog for FlakyCatalog {
    async fn record(&self, a: Archived<'_>) -> Result<(), CatalogError> {
        if self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            return Err("the database is unavailable".into());
        }
        assert!(a.products_dir.join("report.json").is_file(), "the products exist before the catalog row");
        let row = (a.run.to_string(), a.observation.id.clone(), a.report.peak.value, a.products_dir.to_path_buf());
        self.rows.lock().unwrap().push(row);
        Ok(())
    }

    async fn delivered(&self, run: &str, _at_ms: i64) -> Result<(), CatalogError> {
        assert!(self.rows.lock().unwrap().iter().any(|r| r.0 == run), "delivered after it was recorded");
        self.delivered.lock().unwrap().push(run.to_string());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_run_is_archived_recorded_after_a_failed_try_and_delivered() {
    let catalog = Arc::new(FlakyCatalog::default());
    let r = start_with(&Stage::ALL, Some(catalog.clone())).await;
    let summary = publish_small_simulated_run(&r.service).await;
    assert_eq!((summary.wire.blocks, summary.messages, summary.keys.clone()), (4, 5, vec!["spw-0".to_string()]));
    wait_for(&r.dir.path().join("spool/archive/done").join(&summary.run), 300).await;
    assert_eq!(catalog.calls.load(std::sync::atomic::Ordering::SeqCst), 2, "the failed try is retried once");
    let rows = catalog.rows.lock().unwrap().clone();
    assert_eq!(rows.len(), 1);
    let (run_id, observation, peak, dir) = &rows[0];
    assert_eq!((run_id, observation), (&summary.run, &summary.observation));
    assert!((peak - 1.0).abs() < 0.1, "a 1 Jy source at the phase centre: peak {peak}");
    assert!(dir.ends_with(format!("run-{}", summary.run)) && dir.join("image.png").is_file());

    // Delivery: marked in the catalog, thumbnail and manifest written, announced on srdp.
    wait_for(&r.dir.path().join("spool/srdp/done").join(&summary.run), 60).await;
    assert_eq!(*catalog.delivered.lock().unwrap(), std::slice::from_ref(&summary.run));
    let manifest: horizons_ngvla::archive::srdp::Manifest =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    horizons_ngvla::archive::srdp::verify(dir, &manifest).unwrap();
    let srdp = r.service.topics().srdp.clone();
    let sub = r.bus.subscribe(&srdp, horizons_pipeline::topology::PRODUCTS_READER, Default::default()).await.unwrap();
    let d = sub.next_timeout(Duration::from_secs(10)).await.expect("a product announced on srdp");
    let ready: horizons_pipeline::service::ProductReady = serde_json::from_slice(&d.envelope.payload).unwrap();
    assert_eq!((ready.run.as_str(), ready.observation.as_str()), (summary.run.as_str(), summary.observation.as_str()));
    assert_eq!(ready.files, manifest.files);
    assert!(ready.files.iter().any(|f| f.name == "thumbnail.png"));
    assert_eq!(ready.links["thumbnail"], format!("/api/products/{}/files/thumbnail.png", summary.run));
    d.ack().await.unwrap();
    r.stop().await;
}

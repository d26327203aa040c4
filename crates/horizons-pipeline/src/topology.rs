//! The stages and their topics: each stage is one consumer group on its input topic.

use std::time::Duration;

use horizons_bus::{GroupSpec, OrderingMode, RetryPolicy, Topic, TopicSpec, Topology};

/// A stage of the streaming pipeline (a closed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Shape, NaN/Inf, time grid, dead antennas.
    Validate,
    /// RFI flagging and anomaly alerts.
    Flag,
    /// Gain calibration.
    Calibrate,
    /// Imaging, CLEAN and the report.
    Image,
    /// Products on disk.
    Archive,
    /// Science-ready data products (SRDP): delivered to the portal.
    Deliver,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 6] =
        [Stage::Validate, Stage::Flag, Stage::Calibrate, Stage::Image, Stage::Archive, Stage::Deliver];

    /// The name used in roles (`pipeline:<name>`), group names and audit records.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Validate => "validate",
            Stage::Flag => "flag",
            Stage::Calibrate => "calibrate",
            Stage::Image => "image",
            Stage::Archive => "archive",
            Stage::Deliver => "srdp",
        }
    }

    /// Whether the stage writes to the [`crate::Catalog`] (archive: a row per run; delivery:
    /// marks it delivered).
    pub fn uses_catalog(self) -> bool {
        matches!(self, Stage::Archive | Stage::Deliver)
    }

    /// The stage called `name`.
    pub fn parse(name: &str) -> Option<Stage> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The topic the stage consumes.
    pub fn input(self, t: &Topics) -> &Topic {
        match self {
            Stage::Validate => &t.raw,
            Stage::Flag => &t.valid,
            Stage::Calibrate => &t.flagged,
            Stage::Image => &t.calibrated,
            Stage::Archive => &t.images,
            Stage::Deliver => &t.archived,
        }
    }

    /// The topic the stage publishes its output run on (`None`: delivery ends the chain; it
    /// announces each delivered product on [`Topics::srdp`]).
    pub fn output(self, t: &Topics) -> Option<&Topic> {
        match self {
            Stage::Validate => Some(&t.valid),
            Stage::Flag => Some(&t.flagged),
            Stage::Calibrate => Some(&t.calibrated),
            Stage::Image => Some(&t.images),
            Stage::Archive => Some(&t.archived),
            Stage::Deliver => None,
        }
    }
}

/// The pipeline's topic names under a deployment namespace (`<ns>ngvla.raw`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Raw visibilities, from `pipeline ingest`.
    pub raw: Topic,
    /// Validated visibilities.
    pub valid: Topic,
    /// Flagged visibilities.
    pub flagged: Topic,
    /// Calibrated visibilities.
    pub calibrated: Topic,
    /// Images and the report.
    pub images: Topic,
    /// Archived runs: where each run's products are, and their manifest.
    pub archived: Topic,
    /// Delivered products (JSON [`crate::service::ProductReady`], one per run), for the portal.
    pub srdp: Topic,
    /// Anomaly alerts (JSON, one per alert).
    pub alerts: Topic,
    /// Audit records (JSON, one per stage and run).
    pub audit: Topic,
}

impl Topics {
    /// The topics in `namespace` (a prefix such as `""` or `"t1."`).
    pub fn new(namespace: &str) -> Result<Topics, horizons_bus::BusError> {
        let t = |name: &str| Topic::new(format!("{namespace}ngvla.{name}"));
        Ok(Topics {
            raw: t("raw")?,
            valid: t("valid")?,
            flagged: t("flagged")?,
            calibrated: t("calibrated")?,
            images: t("images")?,
            archived: t("archive")?,
            srdp: t("srdp")?,
            alerts: t("alerts")?,
            audit: t("audit")?,
        })
    }

    /// The group spec of a stage: per-key order under retries (BlockKey), and a visibility
    /// timeout long enough for the message that completes a run, whose handler runs the stage's
    /// science over the whole run (seconds to minutes) before it is acked.
    pub fn group(stage: Stage) -> GroupSpec {
        GroupSpec::new(stage.name())
            .ordering(OrderingMode::BlockKey)
            .retry(RetryPolicy::default())
            .visibility_timeout(Duration::from_secs(600))
    }

    /// Every topic with its stage group; alerts and audit have no group of their own (readers
    /// add theirs).
    pub fn topology(&self) -> Topology {
        let mut top = Topology::new();
        for s in Stage::ALL {
            top = top.topic(TopicSpec::new(s.input(self).clone()).group(Self::group(s)));
        }
        // A reader group on each side topic, so that brokers that drop what no queue takes
        // (RabbitMQ) keep the records for `pipeline audit` and for alert consumers. Per-key
        // order (the stage, the spectral window) is what a reader wants, and on RabbitMQ it
        // costs fewer queues than the priority bands.
        let reader = |name: &str| GroupSpec::new(name).ordering(OrderingMode::BlockKey);
        top.topic(TopicSpec::new(self.alerts.clone()).group(reader(ALERTS_READER)))
            .topic(TopicSpec::new(self.audit.clone()).group(reader(AUDIT_READER)))
            .topic(TopicSpec::new(self.srdp.clone()).group(reader(PRODUCTS_READER)))
    }
}

/// The audit topic's reader group (`horizons pipeline audit`).
pub const AUDIT_READER: &str = "cli-audit";
/// The alerts topic's reader group.
pub const ALERTS_READER: &str = "alerts";
/// The delivered-products topic's reader group.
pub const PRODUCTS_READER: &str = "portal";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_chain_topics() {
        let t = Topics::new("x.").unwrap();
        assert_eq!(t.raw.as_str(), "x.ngvla.raw");
        for w in Stage::ALL.windows(2) {
            assert_eq!(w[0].output(&t), Some(w[1].input(&t)), "{:?} feeds {:?}", w[0], w[1]);
        }
        assert_eq!(Stage::Deliver.output(&t), None);
        assert_eq!(t.archived.as_str(), "x.ngvla.archive");
        for s in Stage::ALL {
            assert_eq!(Stage::parse(s.name()), Some(s));
        }
        t.topology().validate().unwrap();
    }
}

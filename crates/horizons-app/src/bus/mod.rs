//! `horizons bus …`: an operator's kcat over any backend.
//!
//! Each command opens the configured backend, does one thing and closes it, so the embedded
//! engine saves consumer positions before the process exits. Results go to stdout (tables, or
//! JSON where asked); logs go to stderr.

pub mod admin;
pub mod consume;
pub mod publish;

use std::io::Write;

use horizons_bus::{Backend, BusError, GroupSpec, Topic, TopicSpec, Topology};

use crate::backend::BackendKind;
use crate::error::AppError;

/// The group `publish` declares and `consume` uses unless told otherwise.
pub const DEFAULT_GROUP: &str = "cli";

/// `horizons bus`.
#[derive(Debug, clap::Args)]
pub struct BusArgs {
    /// Backend to talk to; defaults to `bus.backend` from the configuration (embedded).
    #[arg(long, global = true, value_enum)]
    pub backend: Option<BackendKind>,
    /// What to do.
    #[command(subcommand)]
    pub command: BusCommand,
}

/// The `bus` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BusCommand {
    /// List topics with their consumer groups, pending and dead-letter counts.
    Topics(admin::TopicsArgs),
    /// Publish self-checking test messages and print `acked <total>` after each durable batch.
    Publish(publish::PublishArgs),
    /// Consume and ack messages of a group; optionally check their sequence numbers.
    Consume(consume::ConsumeArgs),
    /// Inspect or redrive a group's dead-letter queue.
    #[command(subcommand)]
    Dlq(admin::DlqCommand),
    /// Rewind a group to an offset or a time.
    Replay(admin::ReplayArgs),
}

/// Runs `command` against `backend`.
pub async fn run(backend: &dyn Backend, command: BusCommand) -> Result<(), AppError> {
    match command {
        BusCommand::Topics(a) => admin::topics(backend, a).await,
        BusCommand::Publish(a) => publish::run(backend, a).await,
        BusCommand::Consume(a) => consume::run(backend, a).await,
        BusCommand::Dlq(c) => admin::dlq(backend, c).await,
        BusCommand::Replay(a) => admin::replay(backend, a).await,
    }
}

/// Parses a `--topic` value.
pub(crate) fn topic(name: &str) -> Result<Topic, AppError> {
    Topic::new(name).map_err(AppError::bus("invalid --topic"))
}

/// Declares `topic` with `group` (defaults otherwise), idempotently. A topic that exists with
/// other settings is left alone as long as it has the group.
pub(crate) async fn ensure_topic(backend: &dyn Backend, topic: &Topic, group: &str) -> Result<(), AppError> {
    let topology = Topology::new().topic(TopicSpec::new(topic.clone()).group(GroupSpec::new(group)));
    match backend.declare(&topology).await {
        Ok(()) => Ok(()),
        Err(BusError::TopologyConflict { .. }) => {
            let topics = backend.topics().await.map_err(AppError::bus("listing topics"))?;
            let has_group = topics.iter().any(|t| t.name == topic.as_str() && t.groups.iter().any(|g| g.name == group));
            if has_group {
                Ok(())
            } else {
                Err(AppError::Usage(format!(
                    "topic {topic} exists with non-default settings and has no group {group:?}; declare the group \
                     in the service's topology, or pass --group with an existing one"
                )))
            }
        }
        Err(e) => Err(AppError::bus(format!("declaring topic {topic} with group {group}"))(e)),
    }
}

/// Writes one line to stdout and flushes it, so a reader sees it at once.
pub(crate) fn println_flush(line: impl std::fmt::Display) -> Result<(), AppError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").and_then(|_| out.flush()).map_err(AppError::io("writing to stdout"))
}

/// Formats rows as left-aligned columns separated by two spaces.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &mut dyn Iterator<Item = String>, out: &mut String| {
        let cells: Vec<String> = cells.zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut header.iter().map(|h| h.to_string()), &mut out);
    for r in rows {
        line(&mut r.iter().cloned(), &mut out);
    }
    out
}

//! `bus topics`, `bus dlq list|redrive` and `bus replay`: inspection and repair.

use horizons_bus::envelope::{from_millis, to_millis};
use horizons_bus::{Backend, BusError, DeadLetter, Millis, ReplayFrom};
use serde::Serialize;

use crate::bus::{println_flush, table, topic};
use crate::error::AppError;

/// `bus topics`.
#[derive(Debug, clap::Args)]
pub struct TopicsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Lists topics.
pub async fn topics(backend: &dyn Backend, args: TopicsArgs) -> Result<(), AppError> {
    let topics = backend.topics().await.map_err(AppError::bus("listing topics"))?;
    if args.json {
        return println_flush(serde_json::to_string(&topics).expect("topics serialise"));
    }
    let opt = |n: Option<u64>| n.map_or_else(|| "-".to_string(), |n| n.to_string());
    let mut rows = Vec::new();
    for t in &topics {
        if t.groups.is_empty() {
            rows.push(vec![t.name.clone(), opt(t.messages), "-".into(), "-".into(), "-".into()]);
        }
        for g in &t.groups {
            rows.push(vec![t.name.clone(), opt(t.messages), g.name.clone(), opt(g.pending), opt(g.dead)]);
        }
    }
    print!("{}", table(&["TOPIC", "MESSAGES", "GROUP", "PENDING", "DEAD"], &rows));
    Ok(())
}

/// `bus dlq`.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead letters of a group, oldest first, without removing them.
    List(DlqListArgs),
    /// Move dead letters back to their topic (same ids, attempts reset); prints how many moved.
    Redrive(DlqRedriveArgs),
}

/// `bus dlq list`.
#[derive(Debug, clap::Args)]
pub struct DlqListArgs {
    /// The topic.
    #[arg(long)]
    pub topic: String,
    /// The consumer group whose dead letters to list.
    #[arg(long)]
    pub group: String,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `bus dlq redrive`.
#[derive(Debug, clap::Args)]
pub struct DlqRedriveArgs {
    /// The topic.
    #[arg(long)]
    pub topic: String,
    /// The consumer group whose dead letters to redrive.
    #[arg(long)]
    pub group: String,
    /// At most this many; all when absent.
    #[arg(long)]
    pub limit: Option<usize>,
}

/// A dead letter as `dlq list --json` prints it.
#[derive(Debug, Serialize)]
struct DeadLetterView {
    id: String,
    key: Option<String>,
    reason: String,
    attempts: u32,
    first_error: Option<String>,
    last_error: Option<String>,
    dead_at: Millis,
    source_position: Option<String>,
    size: usize,
    headers: std::collections::BTreeMap<String, String>,
}

impl From<DeadLetter> for DeadLetterView {
    fn from(d: DeadLetter) -> Self {
        Self {
            id: d.envelope.id.to_string(),
            key: d.envelope.key,
            reason: d.reason,
            attempts: d.attempts,
            first_error: d.first_error,
            last_error: d.last_error,
            dead_at: d.dead_at,
            source_position: d.source_position,
            size: d.envelope.payload.len(),
            headers: d.envelope.headers,
        }
    }
}

/// Runs a `bus dlq` command.
pub async fn dlq(backend: &dyn Backend, command: DlqCommand) -> Result<(), AppError> {
    match command {
        DlqCommand::List(a) => {
            let t = topic(&a.topic)?;
            let list = backend
                .dlq_list(&t, &a.group, a.limit)
                .await
                .map_err(AppError::bus(format!("listing dead letters of group {} on {t}", a.group)))?;
            let views: Vec<DeadLetterView> = list.into_iter().map(Into::into).collect();
            if a.json {
                return println_flush(serde_json::to_string(&views).expect("dead letters serialise"));
            }
            let rows: Vec<Vec<String>> = views
                .iter()
                .map(|v| {
                    vec![
                        v.id.clone(),
                        humantime::format_rfc3339_millis(from_millis(v.dead_at)).to_string(),
                        v.attempts.to_string(),
                        v.reason.clone(),
                        v.last_error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            print!("{}", table(&["ID", "DEAD_AT", "ATTEMPTS", "REASON", "LAST_ERROR"], &rows));
            Ok(())
        }
        DlqCommand::Redrive(a) => {
            let t = topic(&a.topic)?;
            let moved = backend
                .dlq_redrive(&t, &a.group, a.limit)
                .await
                .map_err(AppError::bus(format!("redriving dead letters of group {} on {t}", a.group)))?;
            println_flush(format_args!("moved {moved}"))
        }
    }
}

/// `bus replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The topic.
    #[arg(long)]
    pub topic: String,
    /// The consumer group to rewind.
    #[arg(long)]
    pub group: String,
    /// Deliver again from this offset on.
    #[arg(long, required_unless_present = "from_time", conflicts_with = "from_time")]
    pub from_offset: Option<u64>,
    /// Deliver again from the first message stored at or after this time: RFC 3339 in UTC
    /// (`2025-01-31T12:00:00Z`) or milliseconds since the epoch.
    #[arg(long, value_parser = parse_time)]
    pub from_time: Option<Millis>,
    /// Deliver again only what was stored before this time (same formats as `--from-time`);
    /// messages stored from then on keep their state (settled ones stay settled).
    #[arg(long, value_parser = parse_time)]
    pub to_time: Option<Millis>,
    /// Stay and show a progress bar until the group's members have settled the replayed range
    /// (needs `--to-time`; the members run elsewhere, e.g. `horizons worker`).
    #[arg(long, requires = "to_time")]
    pub wait: bool,
}

/// Parses RFC 3339 (UTC) or epoch milliseconds.
pub fn parse_time(s: &str) -> Result<Millis, String> {
    if let Ok(ms) = s.parse::<Millis>() {
        return Ok(ms);
    }
    humantime::parse_rfc3339_weak(s)
        .map(to_millis)
        .map_err(|e| format!("{e}; expected RFC 3339 in UTC (2025-01-31T12:00:00Z) or milliseconds since the epoch"))
}

/// Rewinds a group.
pub async fn replay(backend: &dyn Backend, args: ReplayArgs) -> Result<(), AppError> {
    let t = topic(&args.topic)?;
    let caps = backend.capabilities();
    let (from, what, capable) = match (args.from_offset, args.from_time) {
        (Some(o), _) => (ReplayFrom::Offset(o), "replay by offset", caps.replay_offset),
        (None, Some(ms)) => (ReplayFrom::Time(ms), "replay by time", caps.replay_time),
        (None, None) => return Err(AppError::Usage("give --from-offset or --from-time".into())),
    };
    let (what, capable) = match args.to_time {
        Some(_) => ("replay of a time range (--to-time)", capable && caps.replay_time),
        None => (what, capable),
    };
    let unsupported = || AppError::bus("replaying")(BusError::Unsupported { backend: backend.name(), what });
    let replay = backend.replay().filter(|_| capable).ok_or_else(unsupported)?;
    let start = match from {
        ReplayFrom::Offset(o) => format!("offset {o}"),
        ReplayFrom::Time(ms) => {
            format!("the first message stored at or after {}", humantime::format_rfc3339_millis(from_millis(ms)))
        }
    };
    let Some(to) = args.to_time else {
        replay
            .replay(&t, &args.group, from)
            .await
            .map_err(AppError::bus(format!("replaying group {} on {t}", args.group)))?;
        return println_flush(format_args!("group {} on {t} rewound: next deliveries start at {start}", args.group));
    };
    if let ReplayFrom::Time(f) = from {
        if to <= f {
            return Err(AppError::Usage("--to-time must be after --from-time".into()));
        }
    }
    let count = replay
        .replay_range(&t, &args.group, from, to)
        .await
        .map_err(AppError::bus(format!("replaying a range of group {} on {t}", args.group)))?;
    println_flush(format_args!(
        "group {} on {t} rewound: {count} messages from {start} up to {} are delivered again; later ones keep their state",
        args.group,
        humantime::format_rfc3339_millis(from_millis(to))
    ))?;
    if args.wait && count > 0 {
        wait_for_range(backend, &t, &args.group, count).await?;
    }
    Ok(())
}

/// Follows the group's pending count until the `count` replayed messages are settled.
async fn wait_for_range(
    backend: &dyn Backend,
    t: &horizons_bus::Topic,
    group: &str,
    count: u64,
) -> Result<(), AppError> {
    let pending = || async {
        let topics = backend.topics().await.map_err(AppError::bus("reading the group's progress"))?;
        let p = topics
            .iter()
            .find(|i| i.name == t.as_str())
            .and_then(|i| i.groups.iter().find(|g| g.name == group))
            .and_then(|g| g.pending);
        p.ok_or_else(|| {
            AppError::Usage(format!(
                "the {} backend does not report pending counts; --wait cannot follow",
                backend.name()
            ))
        })
    };
    let after = pending().await?;
    let baseline = after.saturating_sub(count);
    let bar = indicatif::ProgressBar::new(count);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} {bar:40} {pos}/{len} settled ({per_sec}, eta {eta})")
            .expect("template"),
    );
    bar.set_prefix(format!("replay {group}"));
    loop {
        let now = pending().await?;
        bar.set_position(after.saturating_sub(now).min(count));
        if now <= baseline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    bar.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Ok(1000));
        assert_eq!(parse_time("1970-01-01T00:00:01.250Z"), Ok(1250));
        assert!(parse_time("yesterday").is_err());
    }
}

//! The side-by-side flagging comparison of `horizons bench pipeline` against AOFlagger (the
//! reference implementation of SumThreshold + SIR that BRIEF names), on the very planes our flag
//! stage flagged.
//!
//! The bench writes the flag stage's input (the validated blocks) as AOFlagger image sets: per
//! spectral window and baseline, the real and imaginary planes of every polarisation (channels ×
//! integrations, as our flagger sees them) and the entry mask (a sample with every polarisation
//! flagged). `scripts/aoflagger-flag.py` (compiled into the binary) runs a strategy on each
//! baseline not fully flagged on entry — our flagger skips those too — timing wall and CPU time,
//! and writes the flags back. The report gives both speeds in the bench's MB (our flag stage's
//! wall time, one thread, against AOFlagger's CPU time, so a strategy that used a second core
//! would not look faster per core), how far the two agree on what they newly flagged, and, on
//! simulated data, both flaggers' precision and recall against the injected RFI.
//!
//! AOFlagger is optional, as ducc0 is: `auto` reports why it did not run, `require` fails.

use horizons_ngvla::model::VisBlock;
use horizons_ngvla::rfi;
use horizons_ngvla::sim::{score, Simulator};
use num_complex::Complex32;
use serde::{Deserialize, Serialize};

use super::pipeline::BenchPipelineArgs;
use super::reference::Reference;
use crate::error::AppError;

/// AOFlagger through `scripts/aoflagger-flag.py`, compiled in so that the bench runs from any
/// directory.
const AOFLAGGER: Reference = Reference {
    name: "AOFlagger",
    flag: "aoflagger",
    script: "aoflagger-flag.py",
    text: include_str!("../../../../scripts/aoflagger-flag.py"),
};

/// Our side of the comparison.
#[derive(Debug)]
pub struct Ours<'a> {
    /// The flag stage's input.
    pub input: &'a [VisBlock],
    /// Its output (same blocks, same order).
    pub output: &'a [VisBlock],
    /// Our flag stage's time, seconds (one thread).
    pub seconds: f64,
    /// The bench's MB of the input.
    pub mb: f64,
    /// The simulation, when the input is simulated (for scoring against its truth).
    pub sim: Option<&'a Simulator>,
    /// The strategy when `--aoflagger-strategy` is not given.
    pub default_strategy: &'static str,
}

/// Both flaggers against the simulation's injected RFI.
#[derive(Debug, Serialize)]
pub struct TruthScores {
    /// Ours.
    pub ours: score::FlagScore,
    /// AOFlagger's.
    pub aoflagger: score::FlagScore,
}

/// The comparison's outcome.
#[derive(Debug, Default, Serialize)]
pub struct AoflaggerReport {
    /// Whether AOFlagger ran.
    pub available: bool,
    /// Why not, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// AOFlagger's version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The strategy file it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// Our flag stage, seconds (wall, one thread).
    pub ours_seconds: f64,
    /// Our flag stage, MB/s per core.
    pub ours_mb_per_sec_per_core: f64,
    /// AOFlagger's fastest pass, wall seconds.
    pub seconds: f64,
    /// AOFlagger's fastest pass, CPU seconds of its process.
    pub cpu_seconds: f64,
    /// AOFlagger, MB per CPU second.
    pub mb_per_sec_per_core: f64,
    /// Our MB/s per core over AOFlagger's: above 1, ours is faster.
    pub speed_ratio: f64,
    /// Cells (integration × baseline × channel) compared.
    pub cells: usize,
    /// Cells flagged on entry (left out of the fractions below).
    pub entry_flagged: usize,
    /// Cells we flagged, of those not flagged on entry.
    pub ours_flagged_fraction: f64,
    /// Cells AOFlagger flagged, of those not flagged on entry.
    pub aoflagger_flagged_fraction: f64,
    /// Cells both flagged over cells either flagged (not counting entry flags).
    pub agreement: f64,
    /// On simulated data, both flaggers scored against the injected RFI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truth: Option<TruthScores>,
}

#[derive(Debug, Deserialize)]
struct ScriptOutput {
    version: String,
    strategy: String,
    seconds: f64,
    cpu_seconds: f64,
}

/// The planes of one spectral window: its blocks (indices into the input, by integration).
struct Group {
    blocks: Vec<usize>,
    cols: usize,
    npol: usize,
    baselines: usize,
}

impl Group {
    fn rows(&self) -> usize {
        self.blocks.len()
    }

    fn cells(&self) -> usize {
        self.rows() * self.cols * self.baselines
    }
}

/// The planes our flagger works on ([`rfi::planes`]), with their shapes.
fn groups(blocks: &[VisBlock]) -> Vec<Group> {
    rfi::planes(blocks)
        .into_iter()
        .map(|idx| {
            let first = &blocks[idx[0]];
            Group { cols: first.n_chan, npol: first.pols.len(), baselines: first.baselines.len(), blocks: idx }
        })
        .collect()
}

/// Runs the comparison as `args.aoflagger` says.
pub fn compare(args: &BenchPipelineArgs, ours: &Ours<'_>) -> Result<AoflaggerReport, AppError> {
    let per_sec = |secs: f64| ours.mb / secs.max(1e-12);
    let mut report = AoflaggerReport {
        ours_seconds: ours.seconds,
        ours_mb_per_sec_per_core: per_sec(ours.seconds),
        ..AoflaggerReport::default()
    };
    let groups = groups(ours.input);
    match AOFLAGGER.decide(args.aoflagger, || run_aoflagger(args, ours, &groups))? {
        Ok((out, flags)) => {
            report.available = true;
            report.version = Some(out.version);
            report.strategy = Some(out.strategy);
            report.seconds = out.seconds;
            report.cpu_seconds = out.cpu_seconds;
            report.mb_per_sec_per_core = per_sec(out.cpu_seconds);
            report.speed_ratio = report.ours_mb_per_sec_per_core / report.mb_per_sec_per_core.max(1e-12);
            let theirs = with_flags(ours.input, &groups, &flags);
            agreement(ours.input, ours.output, &theirs, &mut report);
            report.truth = ours
                .sim
                .map(|sim| TruthScores { ours: score::flags(sim, ours.output), aoflagger: score::flags(sim, &theirs) });
        }
        Err(reason) => report.reason = Some(reason),
    }
    Ok(report)
}

/// Whether every polarisation of (baseline `bl`, channel `c`) is flagged.
fn cell_flagged(b: &VisBlock, bl: usize, c: usize) -> bool {
    let i = b.idx(bl, c, 0);
    b.flags[i..i + b.pols.len()].iter().all(|&f| f)
}

/// Writes the inputs, runs the script, reads its flags (one byte per cell, the layout of
/// `entry.u8`); the error says what failed.
fn run_aoflagger(
    args: &BenchPipelineArgs,
    ours: &Ours<'_>,
    groups: &[Group],
) -> Result<(ScriptOutput, Vec<u8>), String> {
    let cells: usize = groups.iter().map(Group::cells).sum();
    let (mut planes, mut entry) = (Vec::new(), Vec::with_capacity(cells));
    for g in groups {
        let blocks: Vec<&VisBlock> = g.blocks.iter().map(|&i| &ours.input[i]).collect();
        for bl in 0..g.baselines {
            for p in 0..g.npol {
                let parts: [fn(Complex32) -> f32; 2] = [|z| z.re, |z| z.im];
                for part in parts {
                    for c in 0..g.cols {
                        for b in &blocks {
                            planes.extend_from_slice(&part(b.vis[b.idx(bl, c, p)]).to_le_bytes());
                        }
                    }
                }
            }
            for c in 0..g.cols {
                entry.extend(blocks.iter().map(|b| u8::from(cell_flagged(b, bl, c))));
            }
        }
    }
    let strategy = args.aoflagger_strategy.as_deref().unwrap_or(ours.default_strategy);
    let params = serde_json::json!({
        "strategy": strategy,
        "repeats": args.repeats,
        "groups": groups.iter().map(|g| serde_json::json!({
            "rows": g.rows(), "cols": g.cols, "npol": g.npol, "baselines": g.baselines,
        })).collect::<Vec<_>>(),
    });
    let inputs = vec![("params.json", params.to_string().into_bytes()), ("planes.f32", planes), ("entry.u8", entry)];
    let (dir, parsed): (_, ScriptOutput) = AOFLAGGER.run_script(&args.aoflagger_python, inputs)?;
    let flags = std::fs::read(dir.path().join("flags.u8")).map_err(|e| format!("reading AOFlagger's flags.u8: {e}"))?;
    if flags.len() != cells {
        return Err(format!("AOFlagger's flags.u8 has {} bytes, expected {cells}", flags.len()));
    }
    Ok((parsed, flags))
}

/// `input` with AOFlagger's flags added: a flagged cell flags every polarisation, as ours does.
fn with_flags(input: &[VisBlock], groups: &[Group], flags: &[u8]) -> Vec<VisBlock> {
    let mut out = input.to_vec();
    let mut at = 0;
    for g in groups {
        let rows = g.rows();
        for bl in 0..g.baselines {
            for c in 0..g.cols {
                for (r, &k) in g.blocks.iter().enumerate() {
                    if flags[at + c * rows + r] != 0 {
                        let b = &mut out[k];
                        let i = b.idx(bl, c, 0);
                        b.flags[i..i + g.npol].fill(true);
                    }
                }
            }
            at += rows * g.cols;
        }
    }
    out
}

/// Fractions newly flagged by each and their overlap, over cells not flagged on entry; a cell
/// counts as flagged when its first polarisation is (both flaggers flag a cell's polarisations
/// together).
fn agreement(input: &[VisBlock], ours: &[VisBlock], theirs: &[VisBlock], report: &mut AoflaggerReport) {
    let (mut cells, mut entry, mut a, mut b, mut both) = (0usize, 0usize, 0usize, 0usize, 0usize);
    for ((i, o), t) in input.iter().zip(ours).zip(theirs) {
        for bl in 0..i.baselines.len() {
            for c in 0..i.n_chan {
                cells += 1;
                if cell_flagged(i, bl, c) {
                    entry += 1;
                    continue;
                }
                let k = i.idx(bl, c, 0);
                let (x, y) = (o.flags[k], t.flags[k]);
                a += usize::from(x);
                b += usize::from(y);
                both += usize::from(x && y);
            }
        }
    }
    let fresh = (cells - entry).max(1) as f64;
    report.cells = cells;
    report.entry_flagged = entry;
    report.ours_flagged_fraction = a as f64 / fresh;
    report.aoflagger_flagged_fraction = b as f64 / fresh;
    let either = a + b - both;
    report.agreement = if either == 0 { 1.0 } else { both as f64 / either as f64 };
}

/// The comparison as text.
pub fn text(r: &AoflaggerReport) -> String {
    if !r.available {
        return format!("aoflagger: {}\n", r.reason.as_deref().unwrap_or("not run"));
    }
    let mut t = format!(
        "flagging, ours (flag stage, 1 thread) {:.4} s = {:.1} MB/s per core vs AOFlagger {} ({}) {:.4} s CPU ({:.4} s wall) = {:.1} MB/s per core: ours {:.2}x\n\
         \x20 newly flagged: ours {:.2}%, AOFlagger {:.2}% of {} cells ({} flagged on entry); both / either {:.3}\n",
        r.ours_seconds,
        r.ours_mb_per_sec_per_core,
        r.version.as_deref().unwrap_or("?"),
        r.strategy.as_deref().unwrap_or("?"),
        r.cpu_seconds,
        r.seconds,
        r.mb_per_sec_per_core,
        r.speed_ratio,
        100.0 * r.ours_flagged_fraction,
        100.0 * r.aoflagger_flagged_fraction,
        r.cells,
        r.entry_flagged,
        r.agreement,
    );
    if let Some(s) = &r.truth {
        t += &format!(
            "  against the injected RFI ({} cells): ours precision {:.3} recall {:.3}, AOFlagger precision {:.3} recall {:.3}\n",
            s.ours.rfi_cells, s.ours.precision, s.ours.recall, s.aoflagger.precision, s.aoflagger.recall
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use horizons_ngvla::sim::SimConfig;

    use super::*;

    fn small() -> (Simulator, Vec<VisBlock>) {
        let sim = Simulator::new(SimConfig { n_ant: 5, n_chan: 6, n_int: 3, ..SimConfig::default() });
        let (blocks, _) = sim.run();
        (sim, blocks)
    }

    #[test]
    fn flags_written_back_land_on_their_cells() {
        let (_, mut blocks) = small();
        for b in &mut blocks {
            b.flags.fill(false);
        }
        let gs = groups(&blocks);
        let cells: usize = gs.iter().map(Group::cells).sum();
        assert_eq!(cells, blocks.iter().map(|b| b.baselines.len() * b.n_chan).sum::<usize>());
        // Flag (baseline 2, channel 4) of the second integration only, in the script's layout.
        let g = &gs[0];
        let mut flags = vec![0u8; cells];
        flags[2 * g.rows() * g.cols + 4 * g.rows() + 1] = 1;
        let out = with_flags(&blocks, &gs, &flags);
        let k = g.blocks[1];
        for (i, b) in out.iter().enumerate() {
            let n = b.flags.iter().filter(|&&f| f).count();
            if i == k {
                assert_eq!(n, b.pols.len());
                assert!(cell_flagged(b, 2, 4));
            } else {
                assert_eq!(n, 0, "block {i}");
            }
        }
    }

    #[test]
    fn agreement_counts_only_new_flags() {
        let (_, mut input) = small();
        for b in &mut input {
            b.flags.fill(false);
        }
        let cells: usize = input.iter().map(|b| b.baselines.len() * b.n_chan).sum();
        let np = input[0].pols.len();
        input[0].flags[..np].fill(true); // one cell flagged on entry
        let (mut ours, mut theirs) = (input.clone(), input.clone());
        ours[1].flags[..2 * np].fill(true); // cells (0,0) and (0,1) of block 1
        theirs[1].flags[np..3 * np].fill(true); // cells (0,1) and (0,2)
        let mut r = AoflaggerReport::default();
        agreement(&input, &ours, &theirs, &mut r);
        assert_eq!((r.cells, r.entry_flagged), (cells, 1));
        assert!((r.ours_flagged_fraction - 2.0 / (cells - 1) as f64).abs() < 1e-12);
        assert!((r.agreement - 1.0 / 3.0).abs() < 1e-12);
    }
}

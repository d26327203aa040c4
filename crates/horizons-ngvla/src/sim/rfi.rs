//! Injected RFI for the simulator: narrowband lines (a few channels over a stretch of time),
//! broadband bursts (all channels, one or two integrations) and single-sample spikes, each on a
//! random subset of baselines with a random strength, recorded as truth.
//!
//! Lines rise and fade: the `wing` integrations before and after the plateau carry amplitudes
//! halving at each step (½, ¼, …) — a transmitter drifting into the band, a satellite rising.
//! Real RFI has such faint wings, and they are what the SIR operator exists to catch; a
//! sharp-edged rectangle would make SIR look like pure over-flagging. The wings are part of the
//! truth. (`leak` can add spectral leakage into neighbouring channels; the default is none.)

use rand::Rng;
use serde::{Deserialize, Serialize};

/// How much RFI to inject.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RfiInjection {
    /// Narrowband lines.
    pub lines: usize,
    /// Broadband bursts.
    pub bursts: usize,
    /// Single-sample spikes per baseline (expected number, over the whole run).
    pub spikes_per_baseline: f64,
    /// Fraction of baselines a line or burst touches.
    pub baseline_fraction: f64,
    /// Weakest RFI amplitude, in units of the per-sample noise rms `σ·√2`.
    pub min_amp: f64,
    /// Strongest.
    pub max_amp: f64,
}

impl Default for RfiInjection {
    fn default() -> Self {
        RfiInjection {
            lines: 4,
            bursts: 2,
            spikes_per_baseline: 0.5,
            baseline_fraction: 0.3,
            min_amp: 5.0,
            max_amp: 50.0,
        }
    }
}

/// One event: a rectangle in (integration, channel) on some baselines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RfiEvent {
    /// Integrations `[start, end)`.
    pub ints: (usize, usize),
    /// Channels `[start, end)`.
    pub chans: (usize, usize),
    /// Affected baseline indices, sorted.
    pub baselines: Vec<usize>,
    /// Amplitude, in units of the per-sample noise rms.
    pub amp: f64,
    /// Integrations of fading amplitude (½, ¼, …) before `ints.0` and after `ints.1`.
    pub wing: usize,
    /// Channels of leakage (¼ amplitude) on each side of `chans`.
    pub leak: usize,
}

impl RfiEvent {
    /// Amplitude factor at channel `c` relative to the line (0 outside the event).
    pub fn spectral(&self, c: usize) -> f64 {
        if (self.chans.0..self.chans.1).contains(&c) {
            1.0
        } else if c + self.leak >= self.chans.0 && c < self.chans.0 || c >= self.chans.1 && c < self.chans.1 + self.leak
        {
            0.25
        } else {
            0.0
        }
    }

    /// Amplitude factor at integration `k` (0 outside the event).
    pub fn profile(&self, k: usize) -> f64 {
        let d = if k < self.ints.0 {
            self.ints.0 - k
        } else if k >= self.ints.1 {
            k + 1 - self.ints.1
        } else {
            0
        };
        if d > self.wing {
            0.0
        } else {
            0.5f64.powi(d as i32)
        }
    }
}

/// Draws the events for `n_bl` baselines, `n_int` integrations, `n_chan` channels.
pub fn draw_events(inj: &RfiInjection, n_bl: usize, n_int: usize, n_chan: usize, rng: &mut impl Rng) -> Vec<RfiEvent> {
    let mut out = Vec::new();
    let amp = |rng: &mut dyn rand::RngCore| {
        let (lo, hi) = (inj.min_amp.max(0.0), inj.max_amp.max(inj.min_amp));
        // Log-uniform: as many weak events as strong ones.
        (lo.max(1e-3).ln() + rng.gen::<f64>() * (hi.max(1e-3).ln() - lo.max(1e-3).ln())).exp()
    };
    let subset = |rng: &mut dyn rand::RngCore| -> Vec<usize> {
        (0..n_bl).filter(|_| rng.gen::<f64>() < inj.baseline_fraction).collect()
    };
    for _ in 0..inj.lines {
        let width = rng.gen_range(1..=3.min(n_chan).max(1));
        let c0 = rng.gen_range(0..=n_chan - width);
        let len = rng.gen_range((n_int / 3).max(1)..=n_int);
        let t0 = rng.gen_range(0..=n_int - len);
        let (chans, baselines, amp) = ((c0, c0 + width), subset(rng), amp(rng));
        out.push(RfiEvent { ints: (t0, t0 + len), chans, baselines, amp, wing: 2, leak: 0 });
    }
    for _ in 0..inj.bursts {
        let len = rng.gen_range(1..=2.min(n_int));
        let t0 = rng.gen_range(0..=n_int - len);
        out.push(RfiEvent {
            ints: (t0, t0 + len),
            chans: (0, n_chan),
            baselines: subset(rng),
            amp: amp(rng),
            wing: 0,
            leak: 0,
        });
    }
    let n_spikes = (inj.spikes_per_baseline * n_bl as f64).round() as usize;
    for _ in 0..n_spikes {
        let (t, c) = (rng.gen_range(0..n_int), rng.gen_range(0..n_chan));
        let bl = vec![rng.gen_range(0..n_bl)];
        out.push(RfiEvent { ints: (t, t + 1), chans: (c, c + 1), baselines: bl, amp: amp(rng), wing: 0, leak: 0 });
    }
    out
}

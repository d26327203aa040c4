//! The correlator simulator: an ngVLA-like array (214 antennas by default) observing a sky of
//! point sources, with thermal noise, antenna gain errors and injected RFI — the last two recorded
//! as truth so that flagging and calibration can be scored.
//!
//! `V_pq^{ab} = g_p^a · conj(g_q^b) · M_pq · [a = b] + n + RFI`: an unpolarised sky (so RL and LR
//! hold noise only), complex Gaussian noise of σ per real and imaginary part, gains of amplitude
//! `1 + N(0, gain_amp_sigma)` and random phase drifting linearly per integration, and RFI added to
//! all four products of a sample. Blocks come one integration at a time ([`Simulator::block`]),
//! each reproducible on its own (the noise generator is seeded per integration), so a streaming
//! source can emit them at any rate.

pub mod array;
pub mod rfi;
pub mod score;

use num_complex::{Complex32, Complex64};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::model::{Antenna, Baseline, Observation, Polarization, SpectralWindow, VisBlock};
use crate::sky::SkyModel;
pub use rfi::{RfiEvent, RfiInjection};

/// Time stamp of integration 0, seconds since MJD 0 (MJD 60 000); integration `k` is stamped
/// `T0_MJD_S + k · interval`.
pub const T0_MJD_S: f64 = 60_000.0 * 86_400.0;

/// Simulator settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Antennas.
    pub n_ant: usize,
    /// Core σ, metres.
    pub core_radius_m: f64,
    /// Outermost arm station, metres.
    pub max_radius_m: f64,
    /// Site latitude, degrees (ngVLA: ~34° N).
    pub lat_deg: f64,
    /// Phase centre RA, degrees.
    pub ra_deg: f64,
    /// Phase centre Dec, degrees.
    pub dec_deg: f64,
    /// Frequency of channel 0, Hz.
    pub first_freq_hz: f64,
    /// Channel width, Hz.
    pub chan_width_hz: f64,
    /// Channels.
    pub n_chan: usize,
    /// Integrations.
    pub n_int: usize,
    /// Integration time, s.
    pub interval_s: f64,
    /// The sky.
    pub sky: SkyModel,
    /// Noise σ per real and imaginary part, Jy.
    pub noise_jy: f64,
    /// Gain amplitude scatter.
    pub gain_amp_sigma: f64,
    /// Largest gain phase drift per integration, degrees.
    pub phase_drift_deg: f64,
    /// RFI to inject (`None`: clean data).
    pub rfi: Option<RfiInjection>,
    /// Seed of every random draw.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            n_ant: 214,
            core_radius_m: 500.0,
            max_radius_m: 30_000.0,
            lat_deg: 34.08,
            ra_deg: 150.0,
            dec_deg: 20.0,
            first_freq_hz: 27.0e9,
            chan_width_hz: 1.0e6,
            n_chan: 32,
            n_int: 8,
            interval_s: 10.0,
            sky: SkyModel::point_at_centre(1.0),
            noise_jy: 0.1,
            gain_amp_sigma: 0.1,
            phase_drift_deg: 2.0,
            rfi: Some(RfiInjection::default()),
            seed: 42,
        }
    }
}

/// A standard normal pair (Box–Muller).
pub(crate) fn gauss_pair(rng: &mut impl Rng) -> (f64, f64) {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen();
    let r = (-2.0 * u1.ln()).sqrt();
    let t = 2.0 * std::f64::consts::PI * u2;
    (r * t.cos(), r * t.sin())
}

/// The simulator.
#[derive(Debug, Clone)]
pub struct Simulator {
    cfg: SimConfig,
    observation: Observation,
    positions: Vec<[f64; 3]>,
    baselines: Vec<Baseline>,
    gains0: Vec<Vec<Complex64>>,
    drift: Vec<Vec<f64>>,
    events: Vec<RfiEvent>,
}

impl Simulator {
    /// Lays out the array and draws gains and RFI events.
    pub fn new(cfg: SimConfig) -> Simulator {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let positions = array::ngvla_like_layout(cfg.n_ant, cfg.core_radius_m, cfg.max_radius_m, &mut rng);
        let antennas: Vec<Antenna> = positions
            .iter()
            .enumerate()
            .map(|(i, p)| Antenna { number: i as u32 + 1, name: format!("ng{:03}", i + 1), position_m: *p })
            .collect();
        let mut baselines = Vec::new();
        for p in 1..=cfg.n_ant as u32 {
            for q in p + 1..=cfg.n_ant as u32 {
                baselines.push(Baseline::new(p, q));
            }
        }
        let mut gains0 = vec![vec![Complex64::new(1.0, 0.0); cfg.n_ant]; 2];
        let mut drift = vec![vec![0.0; cfg.n_ant]; 2];
        for f in 0..2 {
            for a in 0..cfg.n_ant {
                let amp = (1.0 + cfg.gain_amp_sigma * gauss_pair(&mut rng).0).max(0.3);
                gains0[f][a] = Complex64::from_polar(amp, rng.gen_range(-std::f64::consts::PI..std::f64::consts::PI));
                drift[f][a] = rng.gen_range(-cfg.phase_drift_deg..=cfg.phase_drift_deg).to_radians();
            }
        }
        let events = match &cfg.rfi {
            Some(inj) => rfi::draw_events(inj, baselines.len(), cfg.n_int, cfg.n_chan, &mut rng),
            None => vec![],
        };
        let observation = Observation {
            id: format!("SIM:{}:{}", cfg.n_ant, cfg.seed),
            object: "SIMULATED".into(),
            telescope: "ngVLA-sim".into(),
            date_obs: "2030-01-01T00:00:00".into(),
            ra_deg: cfg.ra_deg,
            dec_deg: cfg.dec_deg,
            antennas,
            spws: vec![SpectralWindow {
                id: 0,
                first_freq_hz: cfg.first_freq_hz,
                chan_width_hz: cfg.chan_width_hz,
                n_chan: cfg.n_chan,
            }],
            pols: vec![Polarization::RR, Polarization::LL, Polarization::RL, Polarization::LR],
        };
        Simulator { cfg, observation, positions, baselines, gains0, drift, events }
    }

    /// The observation (antenna table) the blocks refer to.
    pub fn observation(&self) -> &Observation {
        &self.observation
    }

    /// The settings.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// The baselines, in block order.
    pub fn baselines(&self) -> &[Baseline] {
        &self.baselines
    }

    /// The injected RFI events (baselines as indices into [`Simulator::baselines`]).
    pub fn rfi_events(&self) -> &[RfiEvent] {
        &self.events
    }

    /// True gain of antenna index `a` (0-based) and feed `f` (0 = R, 1 = L) at integration `k`.
    pub fn true_gain(&self, k: usize, f: usize, a: usize) -> Complex64 {
        self.gains0[f][a] * Complex64::from_polar(1.0, self.drift[f][a] * k as f64)
    }

    /// Integration `k` and its RFI truth (`[baseline][channel]`, true = RFI injected).
    pub fn block(&self, k: usize) -> (VisBlock, Vec<bool>) {
        let c = &self.cfg;
        let mut rng = StdRng::seed_from_u64(c.seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(k as u64 + 1)));
        let time_mjd_s = T0_MJD_S + k as f64 * c.interval_s;
        let h = ((k as f64 - (c.n_int as f64 - 1.0) / 2.0) * c.interval_s) * 2.0 * std::f64::consts::PI / 86_164.1;
        let (dec, lat) = (c.dec_deg.to_radians(), c.lat_deg.to_radians());
        let n = self.baselines.len() * c.n_chan * 4;
        let mut b = VisBlock {
            observation_id: self.observation.id.clone(),
            spw: 0,
            integration: k as u64,
            time_mjd_s,
            interval_s: c.interval_s,
            first_freq_hz: c.first_freq_hz,
            chan_width_hz: c.chan_width_hz,
            n_chan: c.n_chan,
            pols: self.observation.pols.clone(),
            baselines: self.baselines.clone(),
            uvw_m: Vec::with_capacity(self.baselines.len()),
            vis: Vec::with_capacity(n),
            weights: vec![1.0; n],
            flags: vec![false; n],
        };
        let mut truth = vec![false; self.baselines.len() * c.n_chan];
        let gains: Vec<Vec<Complex64>> =
            (0..2).map(|f| (0..c.n_ant).map(|a| self.true_gain(k, f, a)).collect()).collect();
        for bl in &self.baselines {
            let (p, q) = (bl.ant1 as usize - 1, bl.ant2 as usize - 1);
            let d = [0, 1, 2].map(|i| self.positions[q][i] - self.positions[p][i]);
            let uvw = array::uvw(d, h, dec, lat);
            b.uvw_m.push(uvw);
            for ch in 0..c.n_chan {
                let m = c.sky.visibility(uvw, c.first_freq_hz + ch as f64 * c.chan_width_hz);
                for (fa, fb) in [(0, 0), (1, 1), (0, 1), (1, 0)] {
                    let signal =
                        if fa == fb { gains[fa][p] * gains[fb][q].conj() * m } else { Complex64::new(0.0, 0.0) };
                    let (nr, ni) = gauss_pair(&mut rng);
                    let v = signal + Complex64::new(nr, ni) * c.noise_jy;
                    b.vis.push(Complex32::new(v.re as f32, v.im as f32));
                }
            }
        }
        let rms = c.noise_jy * std::f64::consts::SQRT_2;
        for e in self.events.iter().filter(|e| e.profile(k) > 0.0) {
            let amp = e.amp * e.profile(k) * rms;
            let (c0, c1) = (e.chans.0.saturating_sub(e.leak), (e.chans.1 + e.leak).min(c.n_chan));
            for &bi in &e.baselines {
                for ch in c0..c1 {
                    truth[bi * c.n_chan + ch] = true;
                    let a = amp * e.spectral(ch);
                    let r = Complex64::from_polar(a, rng.gen_range(0.0..2.0 * std::f64::consts::PI));
                    for p in 0..4 {
                        let i = b.idx(bi, ch, p);
                        b.vis[i] += Complex32::new(r.re as f32, r.im as f32);
                    }
                }
            }
        }
        (b, truth)
    }

    /// The RFI truth of integration `k` (`[baseline][channel]`, true = RFI injected), as
    /// [`Simulator::block`] gives it, without making the visibilities.
    pub fn rfi_truth(&self, k: usize) -> Vec<bool> {
        let n_chan = self.cfg.n_chan;
        let mut truth = vec![false; self.baselines.len() * n_chan];
        for e in self.events.iter().filter(|e| e.profile(k) > 0.0) {
            let (c0, c1) = (e.chans.0.saturating_sub(e.leak), (e.chans.1 + e.leak).min(n_chan));
            for &bi in &e.baselines {
                truth[bi * n_chan + c0..bi * n_chan + c1].fill(true);
            }
        }
        truth
    }

    /// Every integration, in order, with its truth.
    pub fn run(&self) -> (Vec<VisBlock>, Vec<Vec<bool>>) {
        (0..self.cfg.n_int).map(|k| self.block(k)).unzip()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfi_truth_is_the_blocks() {
        let sim = Simulator::new(SimConfig {
            n_ant: 10,
            n_chan: 24,
            n_int: 8,
            rfi: Some(RfiInjection { spikes_per_baseline: 1.0, ..Default::default() }),
            seed: 9,
            ..Default::default()
        });
        let mut cells = 0;
        for k in 0..8 {
            let truth = sim.rfi_truth(k);
            assert_eq!(truth, sim.block(k).1, "integration {k}");
            cells += truth.iter().filter(|&&t| t).count();
        }
        assert!(cells > 0);
    }
}

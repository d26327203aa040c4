//! Measuring the moderator: confusion counts and precision/recall/F1/accuracy on labelled
//! examples, and the cross-validated threshold sweep that chose [`crate::DEFAULT_THRESHOLD`].
//!
//! "Positive" means spam throughout: precision is the share of flagged comments that really
//! were spam (moderator time not wasted), recall the share of spam that got flagged.
//!
//! The threshold is chosen by k-fold cross-validation *inside the training split* and only
//! then reported on the held-out split, so the held-out numbers are not tuned on the test set.

use std::fmt;

use crate::bayes::{NaiveBayes, DEFAULT_ALPHA};
use crate::dataset::{Example, Label};
use crate::{ModerationError, Moderator};

/// Confusion counts with spam as the positive class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Metrics {
    /// Spam flagged.
    pub tp: usize,
    /// Ham flagged.
    pub fp: usize,
    /// Ham passed.
    pub tn: usize,
    /// Spam passed.
    pub fn_: usize,
}

impl Metrics {
    /// Counts one prediction.
    pub fn record(&mut self, flagged: bool, truth: Label) {
        match (flagged, truth) {
            (true, Label::Spam) => self.tp += 1,
            (true, Label::Ham) => self.fp += 1,
            (false, Label::Ham) => self.tn += 1,
            (false, Label::Spam) => self.fn_ += 1,
        }
    }

    /// Counts for `scores` flagged at `score >= threshold`.
    pub fn at_threshold(scores: &[(f64, Label)], threshold: f64) -> Self {
        let mut m = Metrics::default();
        for &(s, label) in scores {
            m.record(s >= threshold, label);
        }
        m
    }

    /// tp / (tp + fp); 1 when nothing was flagged (no flag was wrong).
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp, 1.0)
    }

    /// tp / (tp + fn); 1 when there was no spam to find.
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_, 1.0)
    }

    /// Harmonic mean of precision and recall.
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }

    /// (tp + tn) / all.
    pub fn accuracy(&self) -> f64 {
        ratio(self.tp + self.tn, self.total(), 0.0)
    }

    /// Number of examples counted.
    pub fn total(&self) -> usize {
        self.tp + self.fp + self.tn + self.fn_
    }
}

fn ratio(num: usize, den: usize, if_empty: f64) -> f64 {
    if den == 0 {
        if_empty
    } else {
        num as f64 / den as f64
    }
}

impl fmt::Display for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "precision {:.3} recall {:.3} F1 {:.3} accuracy {:.3} (tp {} fp {} tn {} fn {}, n {})",
            self.precision(),
            self.recall(),
            self.f1(),
            self.accuracy(),
            self.tp,
            self.fp,
            self.tn,
            self.fn_,
            self.total()
        )
    }
}

/// Evaluates `moderator` (rules + classifier, its own threshold) on `examples`.
pub fn evaluate(moderator: &Moderator, examples: &[Example]) -> Metrics {
    let mut m = Metrics::default();
    for ex in examples {
        m.record(moderator.score(&ex.text).flagged, ex.label);
    }
    m
}

/// Combined scores of `moderator` for each example, with the true label.
pub fn scores(moderator: &Moderator, examples: &[Example]) -> Vec<(f64, Label)> {
    examples.iter().map(|ex| (moderator.score(&ex.text).score, ex.label)).collect()
}

/// Thresholds the sweep considers: 0.05, 0.10, …, 0.95.
pub fn candidate_thresholds() -> Vec<f64> {
    // Divided rather than multiplied by 0.05 so that 0.7 is exactly 0.7, not 0.7000000000000001.
    (1..20).map(|i| f64::from(i) / 20.0).collect()
}

/// Out-of-fold combined scores for `train`: example *i* goes to fold *i mod k*, each fold is
/// scored by a model trained on the other folds.
pub fn out_of_fold_scores(train: &[Example], folds: usize) -> Result<Vec<(f64, Label)>, ModerationError> {
    let folds = folds.max(2);
    let mut out = Vec::with_capacity(train.len());
    for k in 0..folds {
        let (fit, held): (Vec<_>, Vec<_>) = train.iter().enumerate().partition(|(i, _)| i % folds != k);
        let fit: Vec<Example> = fit.into_iter().map(|(_, e)| e.clone()).collect();
        let held: Vec<Example> = held.into_iter().map(|(_, e)| e.clone()).collect();
        let m = Moderator::new(NaiveBayes::train(&fit, DEFAULT_ALPHA)?, 0.5)?;
        out.extend(scores(&m, &held));
    }
    Ok(out)
}

/// The threshold with the best out-of-fold F1 over [`candidate_thresholds`], ties going to the
/// higher threshold (fewer false alarms for the moderators), with that F1.
pub fn select_threshold(train: &[Example], folds: usize) -> Result<(f64, Metrics), ModerationError> {
    let oof = out_of_fold_scores(train, folds)?;
    let mut best = (0.5, Metrics::at_threshold(&oof, 0.5));
    for t in candidate_thresholds() {
        let m = Metrics::at_threshold(&oof, t);
        if m.f1() >= best.1.f1() {
            best = (t, m);
        }
    }
    Ok(best)
}

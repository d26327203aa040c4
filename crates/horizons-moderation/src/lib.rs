//! Spam and abuse scoring for portal comments: deterministic rules plus a multinomial naive
//! Bayes classifier, combined into one score and a flag for the moderation queue.
//!
//! The moderation consumer calls [`Moderator::score`] on every new or edited comment; a
//! flagged [`Verdict`] (with its reasons) goes to the human moderators' queue. The library is
//! synchronous, allocation-light and has no I/O: the default model is trained once, lazily,
//! from the training split of the labelled set compiled into the crate.
//!
//! ```
//! use horizons_moderation::Moderator;
//!
//! let m = Moderator::default_trained();
//! let spam = m.score("Cheap viagra, no prescription, order at http://pills.biz");
//! assert!(spam.flagged);
//! assert!(spam.reasons.iter().any(|r| r == "blocked_term"));
//! let ham = m.score("Did you self-calibrate before imaging the HI cube?");
//! assert!(!ham.flagged && ham.reasons.is_empty());
//! ```
//!
//! Modules, in the order data flows: [`tokenize`] (normalisation shared by everything) →
//! [`rules`] (named, explainable checks) and [`bayes`] (the classifier) → [`Moderator`] (the
//! combination) → [`eval`] (precision/recall and the threshold choice), over [`dataset`] (the
//! embedded labelled set and its split).
//!
//! # How rules and classifier combine
//!
//! Noisy-OR: `score = 1 − (1 − p_classifier) · Π (1 − w_rule)` over the rules that fired.
//! Each source is treated as independent evidence that can on its own make a comment spam, so
//! one strong signal is enough, several weak ones add up, the result stays in [0, 1] and only
//! grows as evidence is added. A comment is flagged when `score ≥ threshold`.
//!
//! # The default threshold
//!
//! [`DEFAULT_THRESHOLD`] was chosen by [`eval::select_threshold`]: 5-fold cross-validation of
//! the combined score within the training split, sweeping 0.05…0.95, taking the best F1 (ties
//! to the higher threshold). A test re-runs the selection and fails if the constant stops
//! being the optimum. The held-out split is used only to report the final numbers.
//!
//! # How well it works
//!
//! Measured by `tests/held_out.rs` (see `data/README.md` for the data):
//!
//! | set | precision | recall | F1 | accuracy |
//! | --- | --- | --- | --- | --- |
//! | held-out 20 % of the labelled set (n 100) | 1.000 | 0.979 | 0.989 | 0.990 |
//! | hand-written challenge set (n 80) | 0.878 | 0.900 | 0.889 | 0.887 |
//!
//! The first row is optimistic (most of the labelled set is generated from templates shared by
//! both halves); the second, on comments written after the model was fixed, is the better
//! guide. Its misses show the known weaknesses: insults and threats in words the training set
//! lacks ("boring", "garbage", "kill yourself") pass; ham that shares vocabulary with spam
//! ("Bitcoin mining", "free-free", two links, "telegram") or is a bare generic reply ("no
//! idea, sorry") can be flagged. Flagging only queues a comment for a human, so the threshold
//! favours F1 rather than certainty; raise it with [`Moderator::with_threshold`] to flag less.

pub mod bayes;
pub mod dataset;
pub mod eval;
pub mod rules;
pub mod tokenize;

use std::sync::OnceLock;

pub use bayes::NaiveBayes;
pub use dataset::{Example, Label};
pub use rules::RuleHit;

/// The flag threshold of [`Moderator::default_trained`]; see the crate docs for how it was set.
pub const DEFAULT_THRESHOLD: f64 = 0.7;

/// Reason name added to [`Verdict::reasons`] when the classifier alone reaches the threshold.
pub const CLASSIFIER_REASON: &str = "classifier";

/// Errors from building a moderator or reading labelled data.
#[derive(Debug, thiserror::Error)]
pub enum ModerationError {
    /// A threshold must be a number in (0, 1]: 0 would flag everything.
    #[error("threshold must be in (0, 1], got {0}")]
    InvalidThreshold(f64),
    /// The smoothing constant must be positive and finite.
    #[error("smoothing alpha must be positive and finite, got {0}")]
    InvalidAlpha(f64),
    /// Training needs at least one example of each class.
    #[error("training data must contain both ham and spam examples")]
    EmptyClass,
    /// A labelled-data line that is not `ham<TAB>text` or `spam<TAB>text`.
    #[error("labelled data line {line} is not `ham|spam<TAB>text`: {content:?}")]
    BadDataLine {
        /// 1-based line number.
        line: usize,
        /// The start of the offending line.
        content: String,
    },
}

/// The outcome of scoring one comment.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    /// Combined spam score in [0, 1] (noisy-OR of classifier and rules).
    pub score: f64,
    /// The classifier's P(spam) alone, in [0, 1].
    pub classifier: f64,
    /// Names of the rules that fired (see [`rules`]), plus [`CLASSIFIER_REASON`] if the
    /// classifier alone is at or above the threshold. Empty when nothing stands out.
    pub reasons: Vec<String>,
    /// `score >= threshold`: send to the moderation queue.
    pub flagged: bool,
}

/// Scores comments. Immutable, `Send + Sync`; share one (e.g. [`Moderator::default_trained`])
/// across threads.
#[derive(Debug, Clone)]
pub struct Moderator {
    classifier: NaiveBayes,
    threshold: f64,
}

fn check_threshold(threshold: f64) -> Result<f64, ModerationError> {
    if threshold > 0.0 && threshold <= 1.0 {
        Ok(threshold)
    } else {
        // Also rejects NaN, for which both comparisons are false.
        Err(ModerationError::InvalidThreshold(threshold))
    }
}

impl Moderator {
    /// A moderator from a trained classifier and a threshold in (0, 1].
    pub fn new(classifier: NaiveBayes, threshold: f64) -> Result<Self, ModerationError> {
        Ok(Moderator { classifier, threshold: check_threshold(threshold)? })
    }

    /// Trains a classifier on `examples` (default smoothing) and wraps it.
    pub fn train(examples: &[Example], threshold: f64) -> Result<Self, ModerationError> {
        Self::new(NaiveBayes::train(examples, bayes::DEFAULT_ALPHA)?, threshold)
    }

    /// The shared default moderator: trained on the embedded training split, with
    /// [`DEFAULT_THRESHOLD`]. Trained on first call (sub-millisecond), then reused.
    pub fn default_trained() -> &'static Moderator {
        static DEFAULT: OnceLock<Moderator> = OnceLock::new();
        DEFAULT.get_or_init(|| {
            // The embedded file is checked by this crate's tests, so failing here means the
            // crate was built from a broken data file: a build defect, not a runtime condition.
            let train = dataset::train_split().expect("embedded labelled.tsv parses");
            Moderator::train(&train, DEFAULT_THRESHOLD).expect("embedded set has both classes")
        })
    }

    /// A copy of this moderator with another threshold in (0, 1] (lower flags more).
    pub fn with_threshold(&self, threshold: f64) -> Result<Moderator, ModerationError> {
        Ok(Moderator { classifier: self.classifier.clone(), threshold: check_threshold(threshold)? })
    }

    /// The flag threshold.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// The underlying classifier, e.g. to inspect token weights.
    pub fn classifier(&self) -> &NaiveBayes {
        &self.classifier
    }

    /// Scores one comment. Never panics; `""` scores the classifier's prior and no rules.
    pub fn score(&self, text: &str) -> Verdict {
        self.score_with_hits(text).0
    }

    /// Like [`Moderator::score`], also returning the rule hits with their details and weights.
    pub fn score_with_hits(&self, text: &str) -> (Verdict, Vec<RuleHit>) {
        let classifier = self.classifier.probability(text);
        let hits = rules::check(text);
        let keep = hits.iter().fold(1.0 - classifier, |acc, h| acc * (1.0 - h.weight));
        let score = (1.0 - keep).clamp(0.0, 1.0);
        let mut reasons: Vec<String> = hits.iter().map(|h| h.name.to_owned()).collect();
        if classifier >= self.threshold {
            reasons.push(CLASSIFIER_REASON.to_owned());
        }
        let verdict = Verdict { score, classifier, reasons, flagged: score >= self.threshold };
        (verdict, hits)
    }
}

impl Default for Moderator {
    /// A clone of [`Moderator::default_trained`].
    fn default() -> Self {
        Moderator::default_trained().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn moderator_is_send_sync() {
        assert_send_sync::<Moderator>();
        assert_send_sync::<Verdict>();
    }

    #[test]
    fn empty_and_odd_input_do_not_panic_or_flag() {
        let m = Moderator::default_trained();
        for text in ["", " ", "\n\t", "🛰️", "\u{0}", "a"] {
            let v = m.score(text);
            assert!((0.0..=1.0).contains(&v.score), "{v:?}");
            assert!(!v.flagged, "{text:?} flagged: {v:?}");
            assert!(v.reasons.is_empty(), "{text:?}: {v:?}");
        }
    }

    #[test]
    fn thresholds_are_validated() {
        let m = Moderator::default_trained();
        for bad in [0.0, -0.1, 1.01, f64::NAN, f64::INFINITY] {
            assert!(m.with_threshold(bad).is_err(), "{bad}");
        }
        let strict = m.with_threshold(1.0).unwrap();
        assert_eq!(strict.threshold(), 1.0);
        assert_eq!(Moderator::default().threshold(), DEFAULT_THRESHOLD);
    }

    #[test]
    fn obvious_cases() {
        let m = Moderator::default_trained();
        let spam = m.score("Cheap viagra, no prescription! http://pills.biz http://a.top http://b.xyz");
        assert!(spam.flagged, "{spam:?}");
        assert!(spam.reasons.contains(&"blocked_term".to_owned()));
        assert!(spam.reasons.contains(&"many_links".to_owned()));
        let ham = m.score("Which weighting did you use for the VLA image of the HI cube?");
        assert!(!ham.flagged, "{ham:?}");
        assert!(ham.score < 0.2, "{ham:?}");
    }

    #[test]
    fn score_is_noisy_or_and_monotone_in_threshold() {
        let m = Moderator::default_trained();
        let (v, hits) = m.score_with_hits("FREE MONEY FREE MONEY FREE MONEY FREE MONEY whatsapp");
        let expect = 1.0 - hits.iter().fold(1.0 - v.classifier, |a, h| a * (1.0 - h.weight));
        assert!((v.score - expect).abs() < 1e-12);
        assert!(v.score >= v.classifier);
        let lo = m.with_threshold(0.05).unwrap();
        let hi = m.with_threshold(1.0).unwrap();
        for ex in dataset::labelled().unwrap() {
            assert!(lo.score(&ex.text).flagged >= hi.score(&ex.text).flagged);
        }
    }

    #[test]
    fn verdict_serialises() {
        let v = Moderator::default_trained().score("buy backlinks http://x.biz");
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["flagged"], true);
        assert!(json["reasons"].as_array().unwrap().iter().any(|r| r == "blocked_term"));
        let back: Verdict = serde_json::from_value(json).unwrap();
        assert_eq!(back, v);
    }
}

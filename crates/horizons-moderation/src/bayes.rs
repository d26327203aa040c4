//! Multinomial naive Bayes over normalised tokens and bigrams ([`crate::tokenize::features`]).
//!
//! Why this model: the labelled set is a few hundred comments, far too little for anything
//! with many free parameters, and naive Bayes is the classic, well-understood baseline for
//! exactly this task — Sahami, Dumais, Heckerman & Horvitz, "A Bayesian Approach to Filtering
//! Junk E-Mail" (AAAI workshop, 1998), and Paul Graham, "A Plan for Spam" (2002). It trains in
//! one counting pass (microseconds here), scores in time linear in the comment, is exactly
//! deterministic, and is interpretable: every token's contribution is a single log-likelihood
//! ratio that [`NaiveBayes::token_weight`] exposes, so a moderator can be told *which words*
//! pushed a comment up.
//!
//! The model: P(w | c) = (count(w, c) + α) / (total(c) + α·|V|) with Laplace/Lidstone
//! smoothing α, class priors from the training frequencies, all in log space. Tokens not seen
//! in training are ignored (they carry no evidence either way). The output is the posterior
//! P(spam | tokens) = σ(log prior ratio + Σ log-likelihood ratios), a probability in [0, 1].
//! Naive Bayes is known to be over-confident (its independence assumption double-counts
//! correlated tokens), so the probability is best read as a ranking score; the threshold is
//! chosen on data, not assumed to be 0.5.

use std::collections::HashMap;

use crate::dataset::{Example, Label};
use crate::tokenize::features;
use crate::ModerationError;

/// Default smoothing: classic add-one (Laplace).
pub const DEFAULT_ALPHA: f64 = 1.0;

/// A trained multinomial naive Bayes spam classifier. Immutable after training, so it is
/// `Send + Sync` and can be shared freely.
#[derive(Debug, Clone)]
pub struct NaiveBayes {
    /// log P(spam) − log P(ham) from the training class frequencies.
    log_prior_ratio: f64,
    /// Per vocabulary token: log P(w | spam) − log P(w | ham).
    llr: HashMap<String, f64>,
    /// Training examples per class, `[ham, spam]`, kept for reporting.
    class_counts: [usize; 2],
}

impl NaiveBayes {
    /// Trains on labelled examples with smoothing `alpha` (> 0).
    ///
    /// Fails if `alpha` is not a positive finite number or if either class has no examples
    /// (a one-class model would output a constant).
    pub fn train(examples: &[Example], alpha: f64) -> Result<Self, ModerationError> {
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(ModerationError::InvalidAlpha(alpha));
        }
        let mut class_counts = [0usize; 2];
        let mut token_totals = [0u64; 2];
        let mut counts: HashMap<String, [u64; 2]> = HashMap::new();
        for ex in examples {
            let c = ex.label.index();
            class_counts[c] += 1;
            for tok in features(&ex.text) {
                counts.entry(tok).or_default()[c] += 1;
                token_totals[c] += 1;
            }
        }
        if class_counts.contains(&0) {
            return Err(ModerationError::EmptyClass);
        }
        let vocab = counts.len() as f64;
        // Denominators of the smoothed per-class token distributions.
        let denom = [token_totals[0] as f64 + alpha * vocab, token_totals[1] as f64 + alpha * vocab];
        let llr = counts
            .into_iter()
            .map(|(tok, [ham, spam])| {
                let p_spam = (spam as f64 + alpha) / denom[1];
                let p_ham = (ham as f64 + alpha) / denom[0];
                (tok, p_spam.ln() - p_ham.ln())
            })
            .collect();
        let log_prior_ratio = (class_counts[1] as f64).ln() - (class_counts[0] as f64).ln();
        Ok(NaiveBayes { log_prior_ratio, llr, class_counts })
    }

    /// The log-odds of spam for `text`: prior ratio plus the sum of the log-likelihood ratios
    /// of every known token occurrence (multinomial: repeats count again).
    pub fn log_odds(&self, text: &str) -> f64 {
        self.log_prior_ratio + features(text).iter().filter_map(|t| self.llr.get(t)).sum::<f64>()
    }

    /// P(spam | text) in [0, 1]. A text with no known tokens (including `""`) gets the prior.
    pub fn probability(&self, text: &str) -> f64 {
        sigmoid(self.log_odds(text))
    }

    /// A token's log-likelihood ratio log P(w|spam) − log P(w|ham), if it was seen in training.
    /// Positive means the token is evidence of spam.
    pub fn token_weight(&self, token: &str) -> Option<f64> {
        self.llr.get(token).copied()
    }

    /// The prior P(spam) the model falls back to when it has no evidence.
    pub fn prior(&self) -> f64 {
        sigmoid(self.log_prior_ratio)
    }

    /// Number of distinct features (unigrams and bigrams) seen in training.
    pub fn vocabulary_size(&self) -> usize {
        self.llr.len()
    }

    /// Training examples per class.
    pub fn class_count(&self, label: Label) -> usize {
        self.class_counts[label.index()]
    }
}

/// Numerically stable logistic function: never overflows, always in [0, 1].
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset;

    fn ex(label: Label, text: &str) -> Example {
        Example { label, text: text.to_owned() }
    }

    fn toy() -> NaiveBayes {
        NaiveBayes::train(
            &[
                ex(Label::Ham, "the vla image is lovely"),
                ex(Label::Ham, "calibration of the vla data"),
                ex(Label::Spam, "buy cheap pills now"),
                ex(Label::Spam, "cheap pills at http://x.biz"),
            ],
            DEFAULT_ALPHA,
        )
        .unwrap()
    }

    #[test]
    fn toy_model_separates_classes() {
        let m = toy();
        assert!(m.probability("cheap pills") > 0.9);
        assert!(m.probability("vla calibration image") < 0.1);
        assert!(m.token_weight("cheap").unwrap() > 0.0);
        assert!(m.token_weight("vla").unwrap() < 0.0);
        assert_eq!(m.token_weight("never-seen"), None);
        assert_eq!(m.class_count(Label::Spam), 2);
        // No known tokens: exactly the prior (balanced here).
        assert_eq!(m.probability(""), m.prior());
        assert!((m.prior() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn output_is_a_probability_even_for_extreme_inputs() {
        let m = NaiveBayes::train(&dataset::train_split().unwrap(), DEFAULT_ALPHA).unwrap();
        let huge_spam = "cheap viagra http://x.biz ".repeat(5000);
        let huge_ham = "calibration of the vla image ".repeat(5000);
        for text in ["", "x", "🛰️📡", huge_spam.as_str(), huge_ham.as_str()] {
            let p = m.probability(text);
            assert!((0.0..=1.0).contains(&p), "{p} for {:.20}", text);
            assert!(p.is_finite());
        }
        assert!(m.probability(&huge_spam) > 0.99);
        assert!(m.probability(&huge_ham) < 0.01);
    }

    #[test]
    fn training_is_deterministic() {
        let train = dataset::train_split().unwrap();
        let a = NaiveBayes::train(&train, DEFAULT_ALPHA).unwrap();
        let b = NaiveBayes::train(&train, DEFAULT_ALPHA).unwrap();
        assert_eq!(a.vocabulary_size(), b.vocabulary_size());
        for ex in dataset::labelled().unwrap() {
            // Same counts give bit-identical parameters; the score sums them in text order.
            assert_eq!(a.probability(&ex.text).to_bits(), b.probability(&ex.text).to_bits());
        }
    }

    #[test]
    fn rejects_bad_training_input() {
        assert!(matches!(NaiveBayes::train(&[ex(Label::Ham, "a b")], 1.0), Err(ModerationError::EmptyClass)));
        let both = [ex(Label::Ham, "aa"), ex(Label::Spam, "bb")];
        for alpha in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(NaiveBayes::train(&both, alpha).is_err(), "{alpha}");
        }
    }
}

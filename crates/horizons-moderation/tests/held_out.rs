//! The evaluation the crate's claims rest on: threshold chosen by cross-validation inside the
//! training split, then precision/recall/F1/accuracy measured once on the held-out split.
//! Run with `--nocapture` to see the numbers.

use horizons_moderation::dataset::{self, Label};
use horizons_moderation::eval::{self, Metrics};
use horizons_moderation::{Moderator, DEFAULT_THRESHOLD};

#[test]
fn explore() {
    let train = dataset::train_split().unwrap();
    let test = dataset::test_split().unwrap();
    let oof = eval::out_of_fold_scores(&train, 5).unwrap();
    for t in eval::candidate_thresholds() {
        println!("cv t={t:.2} {}", Metrics::at_threshold(&oof, t));
    }
    let (t, m) = eval::select_threshold(&train, 5).unwrap();
    println!("chosen {t} {m}");
    let m = Moderator::default_trained();
    println!("held-out default {}", eval::evaluate(m, &test));
    let clf: Vec<(f64, Label)> = test.iter().map(|e| (m.score(&e.text).classifier, e.label)).collect();
    println!("held-out classifier-only {}", Metrics::at_threshold(&clf, DEFAULT_THRESHOLD));
    for e in &test {
        let v = m.score(&e.text);
        if v.flagged != (e.label == Label::Spam) {
            println!("MISS {:?} {:.3} {:.3} {:?} {}", e.label, v.score, v.classifier, v.reasons, e.text);
        }
    }
    for e in dataset::labelled().unwrap() {
        let hits = horizons_moderation::rules::check(&e.text);
        if e.label == Label::Ham && !hits.is_empty() {
            println!("HAM RULE {hits:?} {}", e.text);
        }
    }
}

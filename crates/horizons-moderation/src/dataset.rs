//! The embedded labelled set (`data/labelled.tsv`) and its deterministic train/test split.
//!
//! The file is compiled into the crate with `include_str!`, so the default model needs no file
//! system and always matches the code it ships with. See `data/README.md` for how the set was
//! built, its licence and its class balance.
//!
//! The split is stratified and positional: within each class, in file order, every fifth
//! example (the 5th, 10th, …) is held out for testing and the rest are for training. That is
//! exactly 20 % of each class, needs no random number generator, and — because the file was
//! shuffled once when it was generated — is not biased by how the examples were written.
//! Editing the file changes the split, which is why the held-out numbers are re-measured by a
//! test rather than written down only in prose.

use crate::ModerationError;

/// The labelled set as committed: one `label<TAB>text` line per example, label `ham` or `spam`.
pub const LABELLED_TSV: &str = include_str!("../data/labelled.tsv");

/// A second, smaller held-out set written by hand *after* the model was built, in phrasing the
/// generator's fragments never use (see `data/README.md`). Never used for training or for the
/// threshold; it estimates how the model does on comments unlike its training data.
pub const CHALLENGE_TSV: &str = include_str!("../data/challenge.tsv");

/// Every `TEST_EVERY`-th example of each class is held out.
pub const TEST_EVERY: usize = 5;

/// Whether a comment is acceptable (`Ham`) or spam/abuse (`Spam`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    /// A genuine comment, however short, misspelt or critical.
    Ham,
    /// Spam, scams, abuse, flooding or shouting: something a moderator should look at.
    Spam,
}

impl Label {
    /// Index used for per-class arrays: `Ham` = 0, `Spam` = 1.
    pub fn index(self) -> usize {
        match self {
            Label::Ham => 0,
            Label::Spam => 1,
        }
    }
}

/// One labelled comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// The label a human (or the documented generator) gave it.
    pub label: Label,
    /// The comment body.
    pub text: String,
}

/// Parses `label<TAB>text` lines. Blank lines are skipped; anything else that is not a known
/// label followed by a tab is an error carrying its 1-based line number.
pub fn parse(tsv: &str) -> Result<Vec<Example>, ModerationError> {
    let mut out = Vec::new();
    for (i, line) in tsv.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || ModerationError::BadDataLine { line: i + 1, content: line.chars().take(80).collect() };
        let (label, text) = line.split_once('\t').ok_or_else(bad)?;
        let label = match label {
            "ham" => Label::Ham,
            "spam" => Label::Spam,
            _ => return Err(bad()),
        };
        out.push(Example { label, text: text.to_owned() });
    }
    Ok(out)
}

/// The embedded labelled set, parsed.
pub fn labelled() -> Result<Vec<Example>, ModerationError> {
    parse(LABELLED_TSV)
}

/// The hand-written challenge set, parsed.
pub fn challenge() -> Result<Vec<Example>, ModerationError> {
    parse(CHALLENGE_TSV)
}

/// Splits examples into `(train, test)`: within each class, every [`TEST_EVERY`]-th example in
/// order goes to test. Order within each half is preserved.
pub fn split(examples: &[Example]) -> (Vec<Example>, Vec<Example>) {
    let mut seen = [0usize; 2];
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for ex in examples {
        let n = &mut seen[ex.label.index()];
        *n += 1;
        if *n % TEST_EVERY == 0 {
            test.push(ex.clone());
        } else {
            train.push(ex.clone());
        }
    }
    (train, test)
}

/// The training split of the embedded set.
pub fn train_split() -> Result<Vec<Example>, ModerationError> {
    Ok(split(&labelled()?).0)
}

/// The held-out test split of the embedded set.
pub fn test_split() -> Result<Vec<Example>, ModerationError> {
    Ok(split(&labelled()?).1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_set_parses_and_is_roughly_balanced() {
        let all = labelled().unwrap();
        let spam = all.iter().filter(|e| e.label == Label::Spam).count();
        let ham = all.len() - spam;
        assert!(all.len() >= 400, "only {} examples", all.len());
        // "Roughly balanced": neither class under 40 %.
        assert!(spam * 10 >= all.len() * 4 && ham * 10 >= all.len() * 4);
        assert!(all.iter().all(|e| !e.text.trim().is_empty()));
        let mut texts: Vec<&str> = all.iter().map(|e| e.text.as_str()).collect();
        texts.sort_unstable();
        texts.dedup();
        assert_eq!(texts.len(), all.len(), "duplicate texts in labelled.tsv");
    }

    #[test]
    fn split_is_stratified_disjoint_and_deterministic() {
        let all = labelled().unwrap();
        let (train, test) = split(&all);
        assert_eq!(train.len() + test.len(), all.len());
        for label in [Label::Ham, Label::Spam] {
            let n = all.iter().filter(|e| e.label == label).count();
            let t = test.iter().filter(|e| e.label == label).count();
            assert_eq!(t, n / TEST_EVERY, "{label:?}");
        }
        assert!(test.iter().all(|e| !train.contains(e)));
        assert_eq!(split(&all), (train, test));
    }

    #[test]
    fn parse_rejects_bad_lines() {
        assert!(parse("ham\thi\n\nspam\tbuy\n").unwrap().len() == 2);
        assert!(matches!(parse("ham\tok\neggs\tbad"), Err(ModerationError::BadDataLine { line: 2, .. })));
        assert!(parse("ham no tab").is_err());
    }
}

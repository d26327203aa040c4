//! Deterministic, explainable rules. Each rule that fires yields a [`RuleHit`] with a stable
//! name (what a moderator sees as the reason), a weight and a human-readable detail.
//!
//! The rules catch what a bag-of-words classifier structurally cannot see (capitalisation,
//! repetition, length, phone-number shapes, link counts) and give a floor that does not depend
//! on the training set. They are tuned for precision on an astronomy forum: scientific text is
//! full of numbers, acronyms in capitals and words like "signal" or "free-free emission", so
//! nothing here fires on those.
//!
//! A rule's weight is the hand-set probability that a comment firing *only* that rule is
//! spam; [`crate::Moderator`] combines weights and the classifier by noisy-OR. Weights at or
//! above the default threshold mean "this alone sends the comment to the queue" (blocked
//! terms, contact-info scams, link farms, flooding, shouting); `long_body` is deliberately
//! below it and only adds to other evidence.

use std::collections::HashMap;

use crate::tokenize::{count_links, is_email, is_url, words};

/// One rule that fired.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RuleHit {
    /// Stable rule name, one of the `*` constants in this module.
    pub name: &'static str,
    /// Probability that a comment firing only this rule is spam, in (0, 1).
    pub weight: f64,
    /// What exactly triggered it, for moderators and logs.
    pub detail: String,
}

/// Three or more links: link farms and SEO spam; genuine comments cite one paper or page.
pub const MANY_LINKS: &str = "many_links";
/// A term from [`BLOCKED_TERMS`].
pub const BLOCKED_TERM: &str = "blocked_term";
/// Long text in (almost) all capitals.
pub const SHOUTING: &str = "shouting";
/// A letter or `!`/`?` repeated [`CHAR_FLOOD_RUN`] times or more in a row.
pub const CHAR_FLOOD: &str = "char_flood";
/// One word repeated over and over.
pub const WORD_FLOOD: &str = "word_flood";
/// Body longer than [`LONG_BODY_CHARS`] characters.
pub const LONG_BODY: &str = "long_body";
/// A messenger handle/link or phone number: the hallmark of "contact me" scams.
pub const CONTACT_INFO: &str = "contact_info";

/// Links at which [`MANY_LINKS`] fires.
pub const MANY_LINKS_MIN: usize = 3;
/// Run length at which [`CHAR_FLOOD`] fires. Six, so "sooo cool" and "!!!" pass.
pub const CHAR_FLOOD_RUN: usize = 6;
/// Characters above which [`LONG_BODY`] fires.
pub const LONG_BODY_CHARS: usize = 4000;
/// Minimum cased letters before [`SHOUTING`] is judged: short "VLA rocks" or "OK" never is.
pub const SHOUTING_MIN_LETTERS: usize = 12;
/// Share of upper-case among cased letters at which [`SHOUTING`] fires.
pub const SHOUTING_RATIO: f64 = 0.8;

/// Blocked terms, matched as whole normalised words or word sequences. Kept short and
/// high-precision on purpose: each is (almost) never legitimate on an astronomy portal. Terms
/// that are merely *likely* spam ("free", "crypto", "bitcoin", "money") are left to the
/// classifier, because "free-free emission" and "the crypto-currency mining RFI" are real talk.
pub const BLOCKED_TERMS: &[&str] = &[
    "viagra",
    "cialis",
    "tramadol",
    "xanax",
    "casino",
    "backlinks",
    "payday loan",
    "free spins",
    "forex signals",
    "crypto signals",
    "binary options",
    "replica watches",
    "male enhancement",
    "crypto giveaway",
    "hot singles",
    "no prescription",
    "onlyfans",
];

/// Messenger names/links that scam comments use to move the victim off the portal.
const MESSENGERS: &[&str] = &["whatsapp", "telegram", "wechat", "viber", "icq", "kik"];
/// Link prefixes of the same messengers.
const MESSENGER_LINKS: &[&str] = &["wa.me/", "t.me/"];

/// Words too common to count as flooding ("the the the" in a long post is normal).
const STOPWORDS: &[&str] = &["the", "a", "an", "of", "and", "to", "in", "is", "it", "on", "for", "at", "with", "that"];

/// Weights, see the module docs.
const W_BLOCKED: f64 = 0.9;
const W_CONTACT: f64 = 0.8;
const W_MANY_LINKS: f64 = 0.8;
const W_WORD_FLOOD: f64 = 0.8;
const W_SHOUTING: f64 = 0.7;
const W_CHAR_FLOOD: f64 = 0.7;
const W_LONG_BODY: f64 = 0.3;

/// Runs every rule on `text` and returns those that fired, in a fixed order.
pub fn check(text: &str) -> Vec<RuleHit> {
    let mut hits = Vec::new();
    let toks = words(text);
    let hit = |name, weight, detail: String| RuleHit { name, weight, detail };

    let links = count_links(text);
    if links >= MANY_LINKS_MIN {
        hits.push(hit(MANY_LINKS, W_MANY_LINKS, format!("{links} links")));
    }
    if let Some(term) = blocked_term(&toks) {
        hits.push(hit(BLOCKED_TERM, W_BLOCKED, term.to_owned()));
    }
    if let Some(ratio) = shouting(text) {
        hits.push(hit(SHOUTING, W_SHOUTING, format!("{:.0}% capitals", ratio * 100.0)));
    }
    if let Some((c, n)) = char_flood(text) {
        hits.push(hit(CHAR_FLOOD, W_CHAR_FLOOD, format!("{c:?} x{n}")));
    }
    if let Some(detail) = word_flood(&toks) {
        hits.push(hit(WORD_FLOOD, W_WORD_FLOOD, detail));
    }
    let chars = text.chars().count();
    if chars > LONG_BODY_CHARS {
        hits.push(hit(LONG_BODY, W_LONG_BODY, format!("{chars} characters")));
    }
    if let Some(detail) = contact_info(text, &toks) {
        hits.push(hit(CONTACT_INFO, W_CONTACT, detail));
    }
    hits
}

/// The first blocked term present as a whole word sequence in the normalised tokens.
fn blocked_term(toks: &[String]) -> Option<&'static str> {
    BLOCKED_TERMS.iter().copied().find(|term| {
        let parts: Vec<&str> = term.split(' ').collect();
        toks.windows(parts.len()).any(|w| w.iter().zip(&parts).all(|(a, b)| a == b))
    })
}

/// Share of capitals among cased letters outside links, if the text is long enough to judge
/// and at or above [`SHOUTING_RATIO`].
fn shouting(text: &str) -> Option<f64> {
    let (mut upper, mut cased) = (0usize, 0usize);
    for chunk in text.split_whitespace().filter(|c| !is_url(c) && !is_email(c)) {
        for ch in chunk.chars() {
            if ch.is_uppercase() {
                upper += 1;
                cased += 1;
            } else if ch.is_lowercase() {
                cased += 1;
            }
        }
    }
    if cased < SHOUTING_MIN_LETTERS {
        return None;
    }
    let ratio = upper as f64 / cased as f64;
    (ratio >= SHOUTING_RATIO).then_some(ratio)
}

/// The first letter, `!` or `?` repeated at least [`CHAR_FLOOD_RUN`] times in a row (case
/// folded). Digits are excluded: 1000000 is a number, not flooding.
fn char_flood(text: &str) -> Option<(char, usize)> {
    let mut prev: Option<char> = None;
    let mut run = 0usize;
    for ch in text.chars().flat_map(char::to_lowercase) {
        if Some(ch) == prev {
            run += 1;
        } else {
            if let Some(p) = prev.filter(|_| run >= CHAR_FLOOD_RUN) {
                return Some((p, run));
            }
            prev = Some(ch);
            run = 1;
        }
        if !(ch.is_alphabetic() || ch == '!' || ch == '?') {
            prev = None;
            run = 0;
        }
    }
    prev.filter(|_| run >= CHAR_FLOOD_RUN).map(|p| (p, run))
}

/// One non-stopword, non-placeholder word repeated 4+ times in a row, or making up 40 % or more of a comment of at
/// least 8 words ("click here click here click here …").
fn word_flood(toks: &[String]) -> Option<String> {
    // Placeholders (`__num__`, `__url__`) are excluded: a phone number or a date is several
    // numbers in a row, and link counts have their own rule.
    let content = |t: &&String| !STOPWORDS.contains(&t.as_str()) && !t.starts_with("__");
    let mut run = 1usize;
    for pair in toks.windows(2) {
        if pair[0] == pair[1] && content(&&pair[0]) {
            run += 1;
            if run >= 4 {
                return Some(format!("{:?} repeated {run}+ times in a row", pair[0]));
            }
        } else {
            run = 1;
        }
    }
    if toks.len() >= 8 {
        let mut freq: HashMap<&str, usize> = HashMap::new();
        for t in toks.iter().filter(content) {
            *freq.entry(t.as_str()).or_default() += 1;
        }
        // Ties broken by the word itself so the detail text is deterministic.
        let (word, n) = freq.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)))?;
        if n * 10 >= toks.len() * 4 {
            return Some(format!("{word:?} is {n} of {} words", toks.len()));
        }
    }
    None
}

/// A messenger name or link, or a phone number.
fn contact_info(text: &str, toks: &[String]) -> Option<String> {
    if let Some(m) = MESSENGERS.iter().find(|m| toks.iter().any(|t| t == *m)) {
        return Some((*m).to_owned());
    }
    let lower = text.to_lowercase();
    if let Some(l) = MESSENGER_LINKS.iter().find(|l| lower.contains(*l)) {
        return Some((*l).to_owned());
    }
    phone_number(text).map(|p| format!("phone number {p}"))
}

/// A phone-number shape: `+` then 9–15 digits (spaces, dashes, dots and brackets allowed
/// between them), or North-American `NXX-NXX-XXXX` / `(NXX) NXX-XXXX` / `1-800-NXX-XXXX`.
/// Astronomical names and values (PSR J1745-2900, 1420.405751 MHz, 2019-2021) do not match:
/// they have no `+`, and at most two dash-separated groups.
fn phone_number(text: &str) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    let sep = |c: char| matches!(c, ' ' | '-' | '.' | '(' | ')');
    for start in 0..chars.len() {
        // International: '+' followed by digits and separators.
        if chars[start] == '+' && chars.get(start + 1).is_some_and(char::is_ascii_digit) {
            let mut end = start + 1;
            let mut digits = 0;
            while end < chars.len() && (chars[end].is_ascii_digit() || sep(chars[end])) {
                digits += usize::from(chars[end].is_ascii_digit());
                end += 1;
            }
            if (9..=15).contains(&digits) {
                return Some(chars[start..end].iter().collect::<String>().trim().to_owned());
            }
        }
        // North American: digit groups 3-3-4 (optionally preceded by "1-"), the first
        // possibly in brackets, separated by one '-', '.' or ' ' (after ')' a space).
        let at_boundary = start == 0 || !chars[start - 1].is_alphanumeric();
        if at_boundary && (chars[start] == '(' || chars[start].is_ascii_digit()) {
            if let Some(len) = north_american(&chars[start..]) {
                return Some(chars[start..start + len].iter().collect());
            }
        }
    }
    None
}

/// Length of a North-American number at the start of `s`, if there is one.
fn north_american(s: &[char]) -> Option<usize> {
    let mut i = 0;
    let digits = |i: &mut usize, n: usize| -> bool {
        let ok = s.len() >= *i + n && s[*i..*i + n].iter().all(char::is_ascii_digit);
        if ok {
            *i += n;
        }
        ok
    };
    let one_sep = |i: &mut usize| -> bool {
        let ok = s.get(*i).is_some_and(|c| matches!(c, '-' | '.' | ' '));
        if ok {
            *i += 1;
        }
        ok
    };
    // Optional country code "1-".
    if s.len() > 2 && s[0] == '1' && matches!(s[1], '-' | ' ' | '.') && s[2] != '1' {
        i = 2;
    }
    if s.get(i) == Some(&'(') {
        i += 1;
        if !digits(&mut i, 3) || s.get(i) != Some(&')') {
            return None;
        }
        i += 1;
        if s.get(i) == Some(&' ') {
            i += 1;
        }
    } else if !(digits(&mut i, 3) && one_sep(&mut i)) {
        return None;
    }
    if !(digits(&mut i, 3) && one_sep(&mut i) && digits(&mut i, 4)) {
        return None;
    }
    // The number must end there, not run on into more digits.
    (!s.get(i).is_some_and(char::is_ascii_digit)).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts exactly which rules fire on `input`, by name, in [`check`]'s order.
    fn check_rules(input: &str, expected: &[&str]) {
        let names: Vec<&str> = check(input).iter().map(|h| h.name).collect();
        assert_eq!(names, expected, "rules on {input:?}");
    }

    #[test]
    fn genuine_astronomy_fires_nothing() {
        for text in [
            "",
            "ok",
            "VLA rocks",
            "The HI line is at 1420.405751 MHz, observed 2019-2021.",
            "PSR J1745-2900 and 3C286 in the same field, rms 12 microJy",
            "See https://arxiv.org/abs/2301.01234 and https://science.nrao.edu",
            "free-free emission dominates below 10 GHz; the signal is real",
            "sooo cool!!!",
            "NRAO, VLA, ALMA, CASA and ngVLA are acronyms",
            "Flux 1000000 Jy? No way, check the units.",
            "the the the quick fix",
            "Call for proposals 2025-2026 is open until 1 Feb",
        ] {
            check_rules(text, &[]);
        }
    }

    #[test]
    fn many_links() {
        check_rules("a http://x.biz b www.y.top", &[]);
        check_rules("a http://x.biz b www.y.top c z.ru/offer", &[MANY_LINKS]);
    }

    #[test]
    fn blocked_terms() {
        check_rules("Buy Viagra today", &[BLOCKED_TERM]);
        check_rules("cheap pills, NO PRESCRIPTION needed", &[BLOCKED_TERM]);
        check_rules("a payday-loan for you", &[BLOCKED_TERM]);
        // Whole words only: "casinos" and "prescription" alone are not blocked.
        check_rules("the casinos of Las Vegas", &[]);
        check_rules("my prescription glasses", &[]);
        assert_eq!(check("VIAGRA here")[0].detail, "viagra");
    }

    #[test]
    fn shouting() {
        check_rules("THIS PORTAL IS USELESS", &[SHOUTING]);
        check_rules("THIS PORTAL IS TOTALLY USELESS, fix it", &[SHOUTING]);
        check_rules("THIS PORTAL IS USELESS, fix it", &[]); // 79 % capitals
        check_rules("SHORT ONE", &[]);
        check_rules("The VLA and ALMA data for NGC 1068 are in CASA", &[]);
        // Capitals in a link do not count.
        check_rules("see HTTP://WWW.EXAMPLE.COM/ABCDEFGHIJKL please", &[]);
    }

    #[test]
    fn char_flood() {
        check_rules("aaaaaaaaa", &[CHAR_FLOOD]);
        check_rules("lmaoooooo", &[CHAR_FLOOD]);
        check_rules("what!!!!!!", &[CHAR_FLOOD]);
        check_rules("sooooo good", &[]);
        check_rules("1000000000 Jy", &[]);
        check_rules("......", &[]);
    }

    #[test]
    fn word_flood() {
        check_rules("spam spam spam spam", &[WORD_FLOOD]);
        check_rules("spam spam spam", &[]);
        check_rules("click here click here click here click here now", &[WORD_FLOOD]);
        check_rules("the data and the image and the beam and the noise", &[]);
        check_rules("FREE FREE FREE FREE FREE FREE FREE", &[SHOUTING, WORD_FLOOD]);
    }

    #[test]
    fn long_body() {
        let long = "A careful description of the calibration. ".repeat(100);
        check_rules(&long, &[LONG_BODY]);
        check_rules(&long[..LONG_BODY_CHARS], &[]);
    }

    #[test]
    fn contact_info() {
        check_rules("message me on WhatsApp", &[CONTACT_INFO]);
        check_rules("join t.me/moneymaker", &[CONTACT_INFO]);
        check_rules("text +44 7700 900123 now", &[CONTACT_INFO]);
        check_rules("call (555) 123-4567", &[CONTACT_INFO]);
        check_rules("call 1-800-555-0199", &[CONTACT_INFO]);
        check_rules("call 555.123.4567 today", &[CONTACT_INFO]);
        check_rules("the +5 sigma peak", &[]);
        check_rules("J1745-2900 and 2019-2021", &[]);
        check_rules("12345-678-9012", &[]);
        assert_eq!(check("ring +1 202 555 0147")[0].detail, "phone number +1 202 555 0147");
    }

    #[test]
    fn weights_are_probabilities() {
        let all = check(&format!(
            "VIAGRA!!!!!! BUY BUY BUY BUY WHATSAPP http://a.biz http://b.biz http://c.biz {}",
            "X".repeat(5000)
        ));
        assert_eq!(all.len(), 7, "{all:?}");
        assert!(all.iter().all(|h| h.weight > 0.0 && h.weight < 1.0));
    }
}

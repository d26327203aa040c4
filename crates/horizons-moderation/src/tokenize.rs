//! Text normalisation shared by the classifier and the rules.
//!
//! Comments are short and noisy, so the tokenizer is deliberately simple and predictable:
//! lowercase everything, collapse things whose exact spelling carries no signal (every URL,
//! every e-mail address, every number) into one placeholder token each, and split the rest on
//! anything that is not a letter or digit. Spammers vary URLs and amounts endlessly; what
//! generalises is *that* a comment has a link or a sum of money, not which one.
//!
//! [`features`] adds word bigrams to the unigrams: phrases like "click here" or "no prescription"
//! are far more telling than their words apart, and with a few hundred examples the extra
//! sparse features cost nothing.

/// Placeholder for any URL or bare domain (`http://…`, `www.…`, `example.biz/offer`).
pub const URL_TOKEN: &str = "__url__";
/// Placeholder for any run of digits.
pub const NUM_TOKEN: &str = "__num__";
/// Placeholder for any e-mail address.
pub const EMAIL_TOKEN: &str = "__email__";
/// Emitted once per whitespace-separated chunk that contains a currency sign (`$5000`, `€20`).
pub const MONEY_TOKEN: &str = "__money__";

/// Top-level domains that make a bare `name.tld` chunk count as a link. A closed list, because
/// "data.Thanks" (a missing space after a full stop) must not look like a domain.
const KNOWN_TLDS: &[&str] = &[
    "com", "net", "org", "edu", "gov", "io", "ru", "cn", "biz", "xyz", "top", "info", "online", "shop", "club", "win",
    "me", "ly", "co", "uk", "de", "us", "app", "xxx", "site", "live", "fr", "nl", "au", "in", "tk", "pw", "cc", "ws",
    "store", "link", "click", "vip", "bet",
];

/// Strips the punctuation that commonly wraps a link or word in prose: `(see http://x.org).`
fn trim_wrapping(chunk: &str) -> &str {
    chunk.trim_matches(|c: char| {
        matches!(c, '(' | ')' | '[' | ']' | '<' | '>' | '"' | '\'' | ',' | '.' | ';' | ':' | '!' | '?')
    })
}

/// Whether a whitespace-separated chunk is a link: it has a scheme, starts with `www.`, or is
/// a bare host whose last label is a known TLD (optionally followed by a path).
pub fn is_url(chunk: &str) -> bool {
    let c = trim_wrapping(chunk).to_lowercase();
    if c.starts_with("http://") || c.starts_with("https://") || c.starts_with("www.") {
        return true;
    }
    if c.contains('@') {
        return false;
    }
    let host = c.split(['/', '?', '#']).next().unwrap_or("");
    let mut labels = host.split('.');
    let Some(first) = labels.next() else {
        return false;
    };
    let rest: Vec<&str> = labels.collect();
    let Some(tld) = rest.last() else {
        return false;
    };
    let host_chars_ok = host.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.');
    host_chars_ok && !first.is_empty() && rest.iter().all(|l| !l.is_empty()) && KNOWN_TLDS.contains(tld)
}

/// Whether a chunk is an e-mail address (`local@domain.tld`).
pub fn is_email(chunk: &str) -> bool {
    let c = trim_wrapping(chunk);
    match c.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        }
        None => false,
    }
}

/// Number of links in `text`, by the same definition the tokenizer uses for [`URL_TOKEN`].
pub fn count_links(text: &str) -> usize {
    text.split_whitespace().filter(|c| is_url(c)).count()
}

/// Normalised unigram tokens, in order.
///
/// Apostrophes are removed before splitting so that "don't" becomes `dont` rather than `don`
/// and `t`; single letters are dropped because they are mostly noise from that kind of split.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in text.split_whitespace() {
        if is_url(chunk) {
            out.push(URL_TOKEN.to_owned());
            continue;
        }
        if is_email(chunk) {
            out.push(EMAIL_TOKEN.to_owned());
            continue;
        }
        if chunk.contains(['$', '€', '£', '¥', '₿']) {
            out.push(MONEY_TOKEN.to_owned());
        }
        let lowered: String = chunk.chars().filter(|c| *c != '\'' && *c != '’').flat_map(char::to_lowercase).collect();
        for piece in lowered.split(|c: char| !c.is_alphanumeric()) {
            if piece.is_empty() {
                continue;
            }
            if piece.chars().all(|c| c.is_ascii_digit()) {
                out.push(NUM_TOKEN.to_owned());
            } else if piece.chars().count() > 1 {
                out.push(piece.to_owned());
            }
        }
    }
    out
}

/// Classifier features: the unigrams of [`words`] followed by their adjacent bigrams
/// (`"click here"`, joined by one space, which no unigram can contain).
pub fn features(text: &str) -> Vec<String> {
    let uni = words(text);
    let mut out = Vec::with_capacity(uni.len() * 2);
    for pair in uni.windows(2) {
        out.push(format!("{} {}", pair[0], pair[1]));
    }
    out.splice(0..0, uni);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &[&str]) {
        assert_eq!(words(input), expected, "words({input:?})");
    }

    #[test]
    fn words_normalise() {
        check("", &[]);
        check("   \t\n ", &[]);
        check("Hello World", &["hello", "world"]);
        check("Don't panic!", &["dont", "panic"]);
        check("I saw it", &["saw", "it"]);
        check("see http://x.biz/offer now", &["see", URL_TOKEN, "now"]);
        check("(https://arxiv.org/abs/2301.01234).", &[URL_TOKEN]);
        check("www.pharma-deals.ru", &[URL_TOKEN]);
        check("visit t.me/moneymaker", &["visit", URL_TOKEN]);
        check("mail anna88@mail.ru", &["mail", EMAIL_TOKEN]);
        check("earn $5000", &["earn", MONEY_TOKEN, NUM_TOKEN]);
        check("47 pointings", &[NUM_TOKEN, "pointings"]);
        check("3C286 at 1.4GHz", &["3c286", "at", NUM_TOKEN, "4ghz"]);
        check("Jy/beam", &["jy", "beam"]);
        check("ÜBER straße", &["über", "straße"]);
        // A missing space after a full stop is not a domain: "thanks" is no TLD.
        check("data.Thanks", &["data", "thanks"]);
        check("e.g. this", &["this"]);
    }

    #[test]
    fn links_and_emails() {
        for (chunk, url) in [
            ("http://a.b", true),
            ("HTTPS://EXAMPLE.COM", true),
            ("www.x", true),
            ("nrao.edu", true),
            ("science.nrao.edu/facilities/vla", true),
            ("1.3", false),
            ("e.g.", false),
            ("i.e.", false),
            ("end.", false),
            ("data.thanks", false),
            ("a@b.com", false),
        ] {
            assert_eq!(is_url(chunk), url, "is_url({chunk:?})");
        }
        assert!(is_email("x@y.ru"));
        assert!(!is_email("@cryptoqueen"));
        assert!(!is_email("x@y"));
        assert_eq!(count_links("a http://x.biz b www.y.top nrao.edu"), 3);
    }

    #[test]
    fn features_add_bigrams() {
        assert_eq!(features("Click here now"), ["click", "here", "now", "click here", "here now"]);
        assert!(features("").is_empty());
        assert_eq!(features("one"), ["one"]);
    }
}

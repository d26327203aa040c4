//! Turning a comment body into the HTML snippet shown under a search hit.
//!
//! tantivy's `SnippetGenerator` picks the best fragment and the byte ranges to highlight; the
//! HTML is rendered here rather than with `Snippet::to_html` so that escaping is ours to see
//! and test: comment bodies are user input, and the snippet goes straight into a page, so every
//! byte of the body is escaped and the only markup in the output is our own `<mark>`/`</mark>`.

use tantivy::snippet::{collapse_overlapped_ranges, Snippet};

/// Opening highlight tag (the HTML element meant for it; the front end styles it).
pub(crate) const MARK_OPEN: &str = "<mark>";
/// Closing highlight tag.
pub(crate) const MARK_CLOSE: &str = "</mark>";
/// Longest snippet, in characters of the original text (not counting tags or entities).
pub(crate) const MAX_SNIPPET_CHARS: usize = 200;
/// Shown where the snippet cuts the body.
const ELLIPSIS: &str = "…";

/// Renders `snippet` (cut from `text`) as escaped HTML with highlights wrapped in `<mark>`.
///
/// When nothing in the body matched (the hit came from the author field, say), the snippet is
/// the escaped start of the body, so a hit never shows an empty line.
pub(crate) fn render(snippet: &Snippet, text: &str) -> String {
    if snippet.highlighted().is_empty() {
        return leading_text(text);
    }
    let fragment = snippet.fragment();
    let range = snippet.fragment_range();
    let mut html = String::with_capacity(fragment.len() + 32);
    if range.start > 0 {
        html.push_str(ELLIPSIS);
    }
    let mut from = 0;
    for hl in collapse_overlapped_ranges(snippet.highlighted()) {
        escape_into(&mut html, &fragment[from..hl.start]);
        html.push_str(MARK_OPEN);
        escape_into(&mut html, &fragment[hl.clone()]);
        html.push_str(MARK_CLOSE);
        from = hl.end;
    }
    escape_into(&mut html, &fragment[from..]);
    if range.end < text.len() {
        // tantivy ends the fragment at the last token, which would cut "centre." to "centre…";
        // a short tail without words is kept instead.
        let tail = &text[range.end..];
        if tail.len() <= MAX_WORDLESS_TAIL && !tail.chars().any(char::is_alphanumeric) {
            escape_into(&mut html, tail.trim_end());
        } else {
            html.push_str(ELLIPSIS);
        }
    }
    html
}

/// Longest run of trailing punctuation (in bytes) appended to a snippet instead of an ellipsis.
const MAX_WORDLESS_TAIL: usize = 16;

/// The first [`MAX_SNIPPET_CHARS`] characters of `text`, escaped, with an ellipsis if cut.
fn leading_text(text: &str) -> String {
    let text = text.trim();
    let cut = text.char_indices().nth(MAX_SNIPPET_CHARS).map_or(text.len(), |(i, _)| i);
    let mut html = String::with_capacity(cut + 8);
    escape_into(&mut html, &text[..cut]);
    if cut < text.len() {
        html.push_str(ELLIPSIS);
    }
    html
}

/// Appends `s` to `out` with the five HTML-significant characters replaced by entities, which
/// makes it safe both as element text and inside a quoted attribute.
pub(crate) fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escape(s: &str) -> String {
        let mut out = String::new();
        escape_into(&mut out, s);
        out
    }

    #[test]
    fn escapes_all_html_significant_characters() {
        assert_eq!(
            escape(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
    }

    #[test]
    fn empty_snippet_falls_back_to_escaped_leading_text() {
        let long = format!("<b>{}", "é".repeat(300));
        let html = render(&Snippet::empty(), &long);
        assert!(html.starts_with("&lt;b&gt;é"));
        assert!(html.ends_with(ELLIPSIS));
        // 3 chars of "<b>" + 197 "é", counted in characters, not bytes.
        assert_eq!(html.matches('é').count(), MAX_SNIPPET_CHARS - 3);
        assert_eq!(render(&Snippet::empty(), "short"), "short");
    }
}

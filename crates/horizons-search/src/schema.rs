//! The index schema: which fields a comment becomes, and how each is analysed.
//!
//! Changing anything here changes the schema, and [`crate::SearchIndex::open`] then refuses
//! existing index directories with [`crate::SearchError::SchemaMismatch`] (by design: silently
//! mixing analysers would make old and new documents match differently). Such a change ships
//! with a rebuild.

use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, FAST, STORED, STRING,
};

/// tantivy's built-in English analyser: simple tokenizer, lowercasing, Snowball stemmer, so
/// "telescopes" finds "telescope". It ships with the `stemmer` feature.
const BODY_TOKENIZER: &str = "en_stem";

/// Names are not English words; stemming "Jansky" or "Reber" would only add false matches.
const AUTHOR_TOKENIZER: &str = "default";

/// Field handles of the schema, resolved once at open.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields {
    /// Comment id, raw (`STRING`): one token, so `delete_term` on it removes exactly that doc.
    pub id: Field,
    /// Post id, raw: lets users type `post_id:abc` and a later API filter by post.
    pub post_id: Field,
    /// Author display name, tokenised (searchable) and stored (shown in hits).
    pub author: Field,
    /// Comment text, stemmed, with positions (phrase queries) and stored (snippets).
    pub body: Field,
    /// Creation time, stored for display and a fast field for a future sort-by-date.
    pub created_at_ms: Field,
}

/// Builds the schema and the handles of its fields.
pub(crate) fn build() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let id = b.add_text_field("id", STRING | STORED);
    let post_id = b.add_text_field("post_id", STRING | STORED);
    let text = |tokenizer: &str| {
        TextOptions::default().set_stored().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(tokenizer)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
    };
    let author = b.add_text_field("author", text(AUTHOR_TOKENIZER));
    let body = b.add_text_field("body", text(BODY_TOKENIZER));
    let created_at_ms = b.add_i64_field("created_at_ms", NumericOptions::from(STORED) | NumericOptions::from(FAST));
    let fields = Fields { id, post_id, author, body, created_at_ms };
    (b.build(), fields)
}

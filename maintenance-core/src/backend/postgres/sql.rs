//! Talking SQL: literals quoted for the simple-query protocol (one round
//! trip for a whole pipeline of statements — several statements, one
//! message), and the rows each statement returned, as text.
//!
//! Every connection sets `standard_conforming_strings=on` at startup, so a
//! literal is `'…'` with `'` doubled and nothing else special. Text that
//! cannot be stored (a NUL) never reaches a literal: records are JSON,
//! whose strings escape it.

use tokio_postgres::{Client, SimpleQueryMessage};

/// One statement's rows; each row's columns as text (`None` for NULL).
pub(super) type Rows = Vec<Vec<Option<String>>>;

/// `text` as a SQL string literal; a NUL (which PostgreSQL text cannot
/// hold) becomes U+FFFD.
pub(super) fn lit(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('\'');
    for c in text.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `name` as a SQL identifier: `"…"`, with `"` doubled and a NUL dropped.
pub(super) fn ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        match c {
            '"' => out.push_str("\"\""),
            '\0' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Runs `sql` (one or more statements) in one round trip; returns each
/// row-returning statement's rows, in order.
pub(super) async fn run(client: &Client, sql: &str) -> Result<Vec<Rows>, tokio_postgres::Error> {
    #[cfg(test)]
    super::runtime::trips::sent();
    let mut out = Vec::new();
    let mut current: Rows = Vec::new();
    let mut has_rows = false;
    for message in client.simple_query(sql).await? {
        match message {
            SimpleQueryMessage::RowDescription(_) => has_rows = true,
            SimpleQueryMessage::Row(row) => {
                has_rows = true;
                current.push(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_owned))
                        .collect(),
                );
            }
            SimpleQueryMessage::CommandComplete(_) => {
                if has_rows {
                    out.push(std::mem::take(&mut current));
                }
                has_rows = false;
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Column `i` of `row` as text, or "".
pub(super) fn text(row: &[Option<String>], i: usize) -> &str {
    row.get(i).and_then(|c| c.as_deref()).unwrap_or("")
}

/// The first column of the first result's rows, each read as JSON; a row
/// that does not parse is left out.
pub(super) fn json_column<T: serde::de::DeserializeOwned>(results: &[Rows]) -> Vec<T> {
    results
        .first()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| serde_json::from_str(text(r, 0)).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Column `i` of `row` as a number, or 0.
pub(super) fn int(row: &[Option<String>], i: usize) -> i64 {
    text(row, i).parse().unwrap_or(0)
}

/// Column `i` of `row` as a boolean (`t`).
pub(super) fn boolean(row: &[Option<String>], i: usize) -> bool {
    text(row, i) == "t"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_double_quotes_and_drop_nothing_else() {
        assert_eq!(lit("it's"), "'it''s'");
        assert_eq!(lit(r"a\b"), r"'a\b'");
        assert_eq!(lit("x'); DROP TABLE t; --"), "'x''); DROP TABLE t; --'");
        assert_eq!(lit("a\0b"), "'a\u{FFFD}b'");
    }

    #[test]
    fn identifiers_double_their_quotes() {
        assert_eq!(ident("manage_0a"), "\"manage_0a\"");
        assert_eq!(
            ident("a\"; DROP TABLE t; --"),
            "\"a\"\"; DROP TABLE t; --\""
        );
        assert_eq!(ident("a\0b"), "\"ab\"");
    }
}

//! The master's log: a line per event, fields as `key=value`. Any value
//! with a space, a quote, an `=` or a control character in it is written
//! quoted and escaped, so no text from outside (a user name, a worker's
//! message, a header) can forge a line or send escape sequences to a
//! terminal; colours only when the log goes to one.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

/// Formats fields safely (see the module's comment).
#[derive(Debug, Clone, Copy, Default)]
pub struct SafeFields;

/// A value as written: plain when it is a plain word, else quoted and
/// escaped.
fn safe(text: &str) -> String {
    let plain = !text.is_empty() && !text.chars().any(|c| hidden(c) || c.is_whitespace() || c == '"' || c == '=');
    if !plain {
        return format!("{:?}", text)
            .chars()
            .map(|c| if hidden(c) { c.escape_unicode().to_string() } else { c.to_string() })
            .collect();
    }
    text.to_string()
}

/// A character a reader of the log would not see as itself: control
/// characters, and the invisible ones that reorder or hide text (bidi
/// overrides, zero-width characters), which Rust's `Debug` leaves alone.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// A message: hidden characters escaped, no quotes.
fn escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if hidden(c) {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

struct Visitor<'w> {
    writer: Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Visitor<'_> {
    fn write(&mut self, field: &Field, text: &str) {
        if self.result.is_err() {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            write!(self.writer, "{sep}{}", escaped(text))
        } else {
            write!(self.writer, "{sep}{}={}", field.name(), safe(text))
        };
    }
}

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, &format!("{value:?}"));
    }
}

impl<'w> FormatFields<'w> for SafeFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = Visitor { writer, first: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Logs to standard error, filtered by `RUST_LOG` (default: `info`, quiet
/// libraries).
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn,tower_http=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .fmt_fields(SafeFields)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `emit` logs through `SafeFields`.
    fn logged(emit: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(SafeFields)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        String::from_utf8(buffer.0.lock().expect("lock").clone()).expect("utf-8")
    }

    #[test]
    fn text_from_outside_cannot_forge_a_line_or_colour_one() {
        let log = logged(|| {
            let user = "eve\n2026-12-01T00:00:00Z  INFO logged in user=admin";
            let header = "\u{1b}[31mred";
            tracing::warn!(user = %user, agent = ?header, plain = "w1", "refused \u{1b}[2J");
        });
        assert_eq!(log.lines().count(), 1, "one event, one line: {log}");
        assert!(!log.contains('\u{1b}'), "no escape sequence reaches the log: {log:?}");
        assert!(log.contains(r#"user="eve\n2026"#), "{log}");
        assert!(log.contains("plain=w1"), "plain words stay plain: {log}");
    }

    #[test]
    fn invisible_characters_are_escaped() {
        let spoof = "admin\u{202E}nimda";
        let log = logged(|| tracing::warn!(user = %spoof, "x\u{200B}y"));
        assert!(!log.contains('\u{202E}') && !log.contains('\u{200B}'), "{log}");
        assert!(log.contains("\\u{202e}"), "{log}");
    }
}

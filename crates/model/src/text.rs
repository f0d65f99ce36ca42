//! Text from outside (a webhook, a form, a query) made fit to store, the
//! same way for both stores: PostgreSQL refuses NUL in text and index
//! entries of more than about 2.7 kB, SQLite takes both, so the limits are
//! decided here, per field, before either sees the text.

use std::fmt;

/// The longest branch (or tag) name taken.
pub const REF_MAX: usize = 255;
/// The longest repository URL taken.
pub const URL_MAX: usize = 1000;
/// The longest `owner/name` (GitHub's own are at most 140).
pub const PROJECT_MAX: usize = 255;
/// Names and e-mail addresses are cut to this.
pub const NAME_MAX: usize = 200;
/// Commit messages are cut to this.
pub const MESSAGE_MAX: usize = 64 * 1024;
/// The longest file path taken.
pub const PATH_MAX: usize = 4096;
/// The longest delivery or hook id taken.
pub const DELIVERY_MAX: usize = 200;
/// Short free text (a reason, a label) is cut to this.
pub const REASON_MAX: usize = 1000;

/// What is wrong with a field's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A NUL or another control character.
    Control,
    /// Longer than this many bytes.
    TooLong(usize),
    /// Not a commit id (4 to 64 hexadecimal digits).
    NotARevision,
    /// Not a GitHub login (letters, digits, dashes; a bot's `[bot]`).
    NotALogin,
    /// A number outside what it may be.
    OutOfRange,
}

/// A field that cannot be taken, by its name in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field, as the sender names it (`commits[0].id`, `branch`).
    pub field: String,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            Problem::Control => write!(f, "{}: contains a control character", self.field),
            Problem::TooLong(max) => write!(f, "{}: longer than {max} bytes", self.field),
            Problem::NotARevision => write!(f, "{}: not a commit id (4 to 64 hexadecimal digits)", self.field),
            Problem::NotALogin => write!(f, "{}: not a GitHub login", self.field),
            Problem::OutOfRange => write!(f, "{}: out of range", self.field),
        }
    }
}

impl std::error::Error for FieldError {}

fn error(field: &str, problem: Problem) -> FieldError {
    FieldError { field: field.to_string(), problem }
}

/// A name-like value (a branch, a URL, an id): no control characters, at
/// most `max` bytes.
pub fn name_like(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.chars().any(char::is_control) {
        return Err(error(field, Problem::Control));
    }
    if value.len() > max {
        return Err(error(field, Problem::TooLong(max)));
    }
    Ok(())
}

/// A value that may hold anything but NUL (a path), at most `max` bytes.
pub fn no_nul(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    if value.contains('\0') {
        return Err(error(field, Problem::Control));
    }
    if value.len() > max {
        return Err(error(field, Problem::TooLong(max)));
    }
    Ok(())
}

/// A commit id: 4 to 64 hexadecimal digits.
pub fn revision(field: &str, value: &str) -> Result<(), FieldError> {
    if (4..=64).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(error(field, Problem::NotARevision))
    }
}

/// A GitHub login: 1 to 39 letters, digits and dashes, and a bot's `[bot]`.
pub fn login(field: &str, value: &str) -> Result<(), FieldError> {
    let plain = value.strip_suffix("[bot]").unwrap_or(value);
    let ok = (1..=39).contains(&plain.len()) && plain.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok { Ok(()) } else { Err(error(field, Problem::NotALogin)) }
}

/// A number from 1 to `max`.
pub fn positive(field: &str, value: u64, max: u64) -> Result<(), FieldError> {
    if (1..=max).contains(&value) { Ok(()) } else { Err(error(field, Problem::OutOfRange)) }
}

/// Free text made fit: NUL and other control characters but tab and
/// newline dropped, cut at `max` bytes (on a character boundary).
pub fn clean(value: &str, max: usize) -> String {
    let mut out = String::with_capacity(value.len().min(max));
    for c in value.chars().filter(|c| !c.is_control() || matches!(c, '\t' | '\n')) {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// `value` if it is an `http` or `https` URL fit to be a link (never
/// `javascript:` and the like), else nothing.
pub fn http_link(value: &str) -> Option<&str> {
    let lower = value.get(..8).map(str::to_ascii_lowercase).unwrap_or_default();
    let scheme_ok = lower.starts_with("https://") || lower.starts_with("http://");
    (scheme_ok && value.len() <= URL_MAX * 2 && !value.chars().any(|c| c.is_control() || c.is_whitespace()))
        .then_some(value)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn fields_are_checked_by_kind() {
        assert!(name_like("ref", "refs/heads/main", REF_MAX).is_ok());
        assert_eq!(
            name_like("ref", "a\0b", REF_MAX).map_err(|e| e.to_string()),
            Err("ref: contains a control character".into())
        );
        assert_eq!(
            name_like("ref", &"x".repeat(256), REF_MAX).map_err(|e| e.to_string()),
            Err("ref: longer than 255 bytes".into())
        );
        assert!(no_nul("file", "Lib/\ttab.py", PATH_MAX).is_ok(), "a tab is a legal path");
        assert!(no_nul("file", "a\0", PATH_MAX).is_err());
        assert!(revision("after", "0123abcd").is_ok());
        assert!(revision("after", &"a".repeat(64)).is_ok());
        for bad in ["abc", "xyz123", &"a".repeat(65), "0123 abc"] {
            assert!(revision("after", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn free_text_loses_controls_and_is_cut_on_a_boundary() {
        assert_eq!(clean("Ann\0 \u{1b}[31mRed\r\n\tok", 100), "Ann [31mRed\n\tok");
        assert_eq!(clean("ééé", 5), "éé", "never half a character");
        assert_eq!(clean("short", 100), "short");
    }

    #[test]
    fn only_web_links_are_links() {
        assert_eq!(
            http_link("https://github.com/python/cpython/commit/abc"),
            Some("https://github.com/python/cpython/commit/abc")
        );
        assert!(http_link("HTTP://example.org/").is_some());
        for bad in
            ["javascript:alert(1)", "JavaScript:alert(1)", "data:text/html,x", "//evil.example", "https://a b", "http"]
        {
            assert_eq!(http_link(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn cleaned_text_is_always_fit(s in ".{0,300}", max in 0usize..200) {
            let c = clean(&s, max);
            prop_assert!(c.len() <= max);
            prop_assert!(!c.contains('\0'));
            prop_assert!(no_nul("f", &c, max).is_ok());
        }
    }
}

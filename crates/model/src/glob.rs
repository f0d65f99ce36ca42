//! Path globs for `ignore_files` and friends.
//!
//! Semantics follow `.gitignore`, which is what people write in such lists:
//! a pattern without `/` matches a file's name in any directory (`*.rst`);
//! a pattern with `/` matches the whole path from the repository root
//! (`Doc/**`). `*` and `?` stay inside one path segment, `**` crosses them,
//! `[abc]`, `[a-z]` and `[!x]` are character classes.

use thiserror::Error;

/// A pattern `Glob::new` could not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid glob {pattern:?}: {reason}")]
pub struct GlobError {
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyChar,
    /// Any run of characters other than `/`.
    Star,
    /// Any run of characters, `/` included.
    DoubleStar,
    /// `**/`: zero or more whole directories.
    AnyDirs,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled path glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    tokens: Vec<Token>,
    basename_only: bool,
}

impl Glob {
    /// Compiles `pattern`; empty patterns, unclosed classes and trailing backslashes are errors.
    pub fn new(pattern: &str) -> Result<Glob, GlobError> {
        let err = |reason| GlobError { pattern: pattern.to_string(), reason };
        if pattern.is_empty() {
            return Err(err("empty pattern"));
        }
        let anchored = pattern.trim_start_matches('/');
        let basename_only = !anchored.contains('/');
        let chars: Vec<char> = anchored.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' if chars.get(i + 1) == Some(&'*') => {
                    if chars.get(i + 2) == Some(&'/') {
                        tokens.push(Token::AnyDirs);
                        i += 3;
                    } else {
                        tokens.push(Token::DoubleStar);
                        i += 2;
                    }
                }
                '*' => {
                    tokens.push(Token::Star);
                    i += 1;
                }
                '?' => {
                    tokens.push(Token::AnyChar);
                    i += 1;
                }
                '[' => {
                    let mut j = i + 1;
                    let negated = matches!(chars.get(j), Some('!') | Some('^'));
                    if negated {
                        j += 1;
                    }
                    let mut ranges = Vec::new();
                    let mut closed = false;
                    while j < chars.len() {
                        let c = chars[j];
                        if c == ']' && !ranges.is_empty() {
                            closed = true;
                            break;
                        }
                        if chars.get(j + 1) == Some(&'-') && chars.get(j + 2).is_some_and(|&e| e != ']') {
                            ranges.push((c, chars[j + 2]));
                            j += 3;
                        } else {
                            ranges.push((c, c));
                            j += 1;
                        }
                    }
                    if !closed {
                        return Err(err("unclosed character class"));
                    }
                    tokens.push(Token::Class { negated, ranges });
                    i = j + 1;
                }
                '\\' => {
                    let Some(&next) = chars.get(i + 1) else {
                        return Err(err("trailing backslash"));
                    };
                    tokens.push(Token::Literal(next));
                    i += 2;
                }
                c => {
                    tokens.push(Token::Literal(c));
                    i += 1;
                }
            }
        }
        Ok(Glob { pattern: pattern.to_string(), tokens, basename_only })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether `path` (relative to the repository root) matches.
    pub fn matches(&self, path: &str) -> bool {
        let path = path.trim_start_matches('/');
        let subject = if self.basename_only { path.rsplit('/').next().unwrap_or(path) } else { path };
        let text: Vec<char> = subject.chars().collect();
        matches_tokens(&self.tokens, &text)
    }
}

/// Dynamic programming over (token, character): linear in pattern × path,
/// so a hostile pattern cannot make matching explode.
fn matches_tokens(tokens: &[Token], text: &[char]) -> bool {
    let n = text.len();
    // reach[j]: the tokens consumed so far can match text[..j].
    let mut reach = vec![false; n + 1];
    reach[0] = true;
    for token in tokens {
        let mut next = vec![false; n + 1];
        match token {
            Token::Star | Token::DoubleStar => {
                let crosses = matches!(token, Token::DoubleStar);
                let mut open = false;
                for j in 0..=n {
                    if reach[j] {
                        open = true;
                    }
                    next[j] = open;
                    if j < n && text[j] == '/' && !crosses {
                        open = false;
                    }
                }
            }
            Token::AnyDirs => {
                for j in 0..=n {
                    if !reach[j] {
                        continue;
                    }
                    next[j] = true;
                    for k in j..n {
                        if text[k] == '/' {
                            next[k + 1] = true;
                        }
                    }
                }
            }
            single => {
                for j in 0..n {
                    if reach[j] && single_matches(single, text[j]) {
                        next[j + 1] = true;
                    }
                }
            }
        }
        reach = next;
        if !reach.iter().any(|&r| r) {
            return false;
        }
    }
    reach[n]
}

fn single_matches(token: &Token, c: char) -> bool {
    match token {
        Token::Literal(l) => *l == c,
        Token::AnyChar => c != '/',
        Token::Class { negated, ranges } => {
            let inside = ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi);
            c != '/' && inside != *negated
        }
        Token::Star | Token::DoubleStar | Token::AnyDirs => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, path: &str) -> bool {
        Glob::new(p).expect("valid glob").matches(path)
    }

    #[test]
    fn basename_patterns_match_in_any_directory() {
        assert!(m("*.rst", "README.rst"));
        assert!(m("*.rst", "Doc/library/os.rst"));
        assert!(!m("*.rst", "Lib/os.py"));
        assert!(!m("*.rst", "Doc/x.rst/file.py"));
    }

    #[test]
    fn anchored_patterns() {
        assert!(m("Doc/**", "Doc/library/os.rst"));
        assert!(m("Doc/**", "Doc/conf.py"));
        assert!(!m("Doc/**", "Lib/Doc/x"));
        assert!(!m("Doc/**", "Documentation/x"));
        assert!(m("Misc/NEWS.d/*", "Misc/NEWS.d/next"));
        assert!(!m("Misc/NEWS.d/*", "Misc/NEWS.d/next/Library/x.rst"));
        assert!(m("/Lib/*.py", "Lib/os.py"));
    }

    #[test]
    fn any_dirs() {
        assert!(m("**/test_*.py", "test_os.py"));
        assert!(m("**/test_*.py", "Lib/test/test_os.py"));
        assert!(m("Lib/**/README", "Lib/README"));
        assert!(m("Lib/**/README", "Lib/a/b/README"));
        assert!(!m("Lib/**/README", "Lib/a/b/README.txt"));
    }

    #[test]
    fn classes_and_wildcards() {
        assert!(m("file[0-9].txt", "file3.txt"));
        assert!(!m("file[0-9].txt", "filex.txt"));
        assert!(m("file[!0-9].txt", "filex.txt"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "a/c"));
        assert!(m("a\\*c", "a*c"));
        assert!(!m("a\\*c", "abc"));
    }

    #[test]
    fn invalid_patterns_are_errors() {
        assert!(Glob::new("").is_err());
        assert!(Glob::new("[abc").is_err());
        assert!(Glob::new("abc\\").is_err());
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let p = "*a*a*a*a*a*a*a*a*a*a*a*a*b";
        let text = "a".repeat(5000);
        assert!(!m(p, &text));
    }
}

//! JUnit XML (`<testsuites>`/`<testsuite>`/`<testcase>`), as regrtest's
//! `--junit-xml` and most other runners write it.
//!
//! A test case seen a second time (regrtest appends the verbose re-run's
//! suites) is a re-run: its outcome goes in `rerun`.

use std::collections::HashMap;

use crate::report::{FileResult, MethodResult, Outcome, TestReport, TestRunner};
use crate::xml::{Reader, Token, XmlError};

/// Largest file read.
pub const MAX_BYTES: usize = 64 * 1024 * 1024;
/// Longest failure text kept per test case.
const MAX_TRACEBACK: usize = 16 * 1024;
/// Most test cases read.
const MAX_CASES: usize = 200_000;
/// Longest class or test name kept (names are indexed where they are stored).
const MAX_NAME: usize = 500;

/// Why a file is not a JUnit report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JunitError {
    /// It is not well-formed XML.
    Malformed {
        /// Byte offset of the problem.
        at: usize,
        /// What was wrong.
        what: &'static str,
    },
    /// The root element is neither `testsuites` nor `testsuite`.
    NotJunit,
    /// It is larger than [`MAX_BYTES`].
    TooLarge,
}

impl std::fmt::Display for JunitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JunitError::Malformed { at, what } => write!(f, "not well-formed XML at byte {at}: {what}"),
            JunitError::NotJunit => f.write_str("the root element is not testsuites or testsuite"),
            JunitError::TooLarge => write!(f, "larger than {MAX_BYTES} bytes"),
        }
    }
}

impl std::error::Error for JunitError {}

impl From<XmlError> for JunitError {
    fn from(e: XmlError) -> Self {
        JunitError::Malformed { at: e.at, what: e.what }
    }
}

/// One `<testcase>` as it is read.
struct Case {
    file: String,
    method: String,
    outcome: Outcome,
    seconds: Option<f64>,
    text: String,
    in_failure: bool,
}

/// Reads a JUnit file into a report.
pub fn parse(xml: &str) -> Result<TestReport, JunitError> {
    if xml.len() > MAX_BYTES {
        return Err(JunitError::TooLarge);
    }
    let mut reader = Reader::new(xml);
    let mut report = TestReport::new(TestRunner::Junit);
    let mut index = Index::default();
    let mut case: Option<Case> = None;
    let mut root_seen = false;
    let mut cases = 0usize;
    while let Some(token) = reader.next_token()? {
        match token {
            Token::Start(name, attrs) => {
                if !root_seen {
                    root_seen = true;
                    if name != "testsuites" && name != "testsuite" {
                        return Err(JunitError::NotJunit);
                    }
                }
                match (name.as_str(), case.as_mut()) {
                    ("testcase", None) => case = Some(new_case(&attrs)),
                    ("failure" | "error", Some(c)) => {
                        c.outcome = Outcome::Failed;
                        c.in_failure = true;
                        c.text = cut(attr(&attrs, "message").unwrap_or_default(), MAX_TRACEBACK);
                    }
                    ("skipped", Some(c)) if c.outcome == Outcome::Passed => c.outcome = Outcome::Skipped,
                    _ => {}
                }
            }
            Token::Text(text) => {
                if let Some(c) = case.as_mut().filter(|c| c.in_failure) {
                    // The body (a traceback) says more than the message attribute.
                    if !text.trim().is_empty() {
                        c.text = cut(&text, MAX_TRACEBACK);
                    }
                }
            }
            Token::End(name) => match name.as_str() {
                "failure" | "error" => {
                    if let Some(c) = case.as_mut() {
                        c.in_failure = false;
                    }
                }
                "testcase" => {
                    if let Some(c) = case.take() {
                        cases += 1;
                        if cases > MAX_CASES {
                            report.truncated = true;
                        } else {
                            add_case(&mut report, &mut index, c);
                        }
                    }
                }
                _ => {}
            },
        }
    }
    if !root_seen {
        return Err(JunitError::NotJunit);
    }
    report.files.iter_mut().for_each(settle);
    Ok(report)
}

fn attr<'a>(attrs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A test case's file and method names: with a `classname`, the class is
/// the file; without (regrtest's), the module is the name's first part.
fn new_case(attrs: &[(String, String)]) -> Case {
    let name = cut(attr(attrs, "name").unwrap_or("").trim(), MAX_NAME);
    let (file, method) = match attr(attrs, "classname").map(str::trim).filter(|c| !c.is_empty()) {
        Some(class) => (cut(class, MAX_NAME), format!("{}.{name}", cut(class, MAX_NAME))),
        None => (name.split('.').next().unwrap_or(&name).to_string(), name.clone()),
    };
    let seconds = attr(attrs, "time").and_then(|t| t.parse::<f64>().ok()).filter(|t| t.is_finite() && *t >= 0.0);
    Case { file, method, outcome: Outcome::Passed, seconds, text: String::new(), in_failure: false }
}

/// Where each file and method is in the report, so a case is placed in constant time.
#[derive(Default)]
struct Index {
    files: HashMap<String, usize>,
    methods: HashMap<(usize, String), usize>,
}

fn add_case(report: &mut TestReport, index: &mut Index, case: Case) {
    let i = *index.files.entry(case.file.clone()).or_insert_with(|| {
        report.files.push(FileResult::new(&case.file));
        report.files.len() - 1
    });
    let file = &mut report.files[i];
    let ms = case.seconds.map(|s| (s * 1000.0).round() as u64);
    let known = index.methods.get(&(i, case.method.clone())).copied();
    match known.map(|m| &mut file.methods[m]) {
        Some(seen) => {
            seen.rerun = Some(case.outcome);
            if seen.traceback.is_empty() {
                seen.traceback = case.text;
            }
        }
        None => {
            if let Some(ms) = ms {
                let total = file.duration_ms.get_or_insert(0);
                *total = total.saturating_add(ms);
            }
            index.methods.insert((i, case.method.clone()), file.methods.len());
            file.methods.push(MethodResult {
                name: case.method,
                outcome: case.outcome,
                rerun: None,
                traceback: case.text,
            });
        }
    }
}

/// A file's outcomes from its methods': failed if any failed, skipped if all were.
fn settle(file: &mut FileResult) {
    let failed = file.methods.iter().any(|m| m.outcome.is_failure());
    let all_skipped = file.methods.iter().all(|m| m.outcome == Outcome::Skipped);
    file.outcome = Some(if failed {
        Outcome::Failed
    } else if all_skipped {
        Outcome::Skipped
    } else {
        Outcome::Passed
    });
    let reruns: Vec<Outcome> = file.methods.iter().filter_map(|m| m.rerun).collect();
    file.rerun = (!reruns.is_empty()).then(|| {
        let still_failing =
            file.methods.iter().any(|m| m.outcome.is_failure() && m.rerun.is_none_or(Outcome::is_failure));
        if still_failing { Outcome::Failed } else { Outcome::Passed }
    });
}

fn cut(s: &str, max: usize) -> String {
    crate::regrtest::cut(s, max).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_failures_skips_and_reruns() {
        let xml = r#"<testsuites><testsuite><testcase name="test_a.T.test_x" time="0.5"><failure message="m">Traceback
boom</failure></testcase><testcase name="test_a.T.test_y"/></testsuite>
<testsuite><testcase classname="pkg.TestB" name="test_s"><skipped/></testcase></testsuite>
<testsuite><testcase name="test_a.T.test_x"/></testsuite></testsuites>"#;
        let r = parse(xml).expect("valid JUnit");
        let a = r.file("test_a").expect("test_a");
        assert_eq!(a.methods[0].traceback, "Traceback\nboom");
        assert_eq!(a.methods[0].rerun, Some(Outcome::Passed));
        assert!(a.flaky() && !a.failed());
        assert_eq!(a.duration_ms, Some(500));
        assert_eq!(r.file("pkg.TestB").and_then(|f| f.outcome), Some(Outcome::Skipped));
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        #[test]
        fn arbitrary_documents_never_panic(parts in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::string::string_regex("[\\PC<>&;'\"=/]{0,12}").expect("regex"),
                proptest::sample::select(vec![
                    "<testsuites>", "</testsuites>", "<testsuite>", "</testsuite>", "<testcase name=\"t.a\">",
                    "<testcase classname='c' name='b'/>", "</testcase>", "<failure message=\"m\">", "</failure>",
                    "<error/>", "<skipped/>", "<![CDATA[x]]>", "<!-- c -->", "<?xml version='1.0'?>", "&amp;", "&#x41;",
                    "&#1114112;", "&bogus;", "<!DOCTYPE x [<!ENTITY a 'b'>]>",
                ]).prop_map(str::to_string),
            ], 0..40)) {
            let text: String = parts.concat();
            let _ = parse(&text);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse(&String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn names_are_cut_to_an_indexable_length() {
        let long = "x".repeat(5_000);
        let r =
            parse(&format!("<testsuite><testcase classname=\"{long}\" name=\"{long}\"/></testsuite>")).expect("valid");
        assert_eq!(r.files[0].name.len(), MAX_NAME);
        assert_eq!(r.files[0].methods[0].name.len(), 2 * MAX_NAME + 1);
    }

    #[test]
    fn other_documents_are_refused() {
        assert_eq!(parse("<html></html>"), Err(JunitError::NotJunit));
        assert!(matches!(parse("<testsuites>"), Err(JunitError::Malformed { .. })));
        assert_eq!(parse(""), Err(JunitError::NotJunit));
    }
}

//! CPython's regrtest (`python -m test`) output, read line by line as it
//! streams in. Memory is bounded whatever the input: lines, names,
//! tracebacks and lists are capped, and `truncated` says when a cap cut.
//!
//! Formats from CPython 3.10 to 3.14 are understood: progress lines with or
//! without a clock and load average (`0:00:01 load avg: 1.03 [ 2/30/1]
//! test_os failed (1 failure)`), the serial form whose result comes as a
//! trailer on the next line (`[3/3/1] test_b -- test_a failed`), the
//! verbose re-run of failed tests, the closing lists (`2 tests failed:`),
//! `== Tests result: … ==`, refleaks, crashes and timeouts.

use std::collections::HashMap;

use crate::report::{FileResult, Leak, MethodResult, Outcome, TestReport, TestRunner};

/// Longest line looked at; the rest of a longer line is ignored.
const MAX_LINE: usize = 8 * 1024;
/// Most test files tracked.
const MAX_FILES: usize = 50_000;
/// Most methods tracked per file, and over the whole run.
const MAX_METHODS: usize = 1_000;
const MAX_METHODS_TOTAL: usize = 100_000;
/// Longest method name kept.
const MAX_NAME: usize = 500;
/// Longest traceback (or detail) kept per test.
const MAX_TRACEBACK: usize = 16 * 1024;
/// Most traceback text kept over the whole run.
const MAX_DETAIL_TOTAL: usize = 4 * 1024 * 1024;
/// Most leak and fatal lines kept.
const MAX_NOTES: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    First,
    Rerun,
}

/// A closing list: `2 tests failed:` and the indented names under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Failed,
    Skipped,
    EnvChanged,
    NoTests,
    Rerun,
    Slowest,
    Other,
}

/// Which text is being collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    None,
    /// After a `=====` rule: `FAIL: name (dotted)` may follow.
    Header,
    /// After the header: a `-----` rule, then the traceback.
    Rule(usize, usize),
    /// A method's traceback, up to the next rule.
    Traceback(usize, usize),
    /// `test test_x failed -- Traceback…` up to a blank line.
    Detail(usize),
}

/// The streaming parser: feed it every line of output, then `finish`.
#[derive(Debug)]
pub struct Parser {
    report: TestReport,
    index: HashMap<String, usize>,
    phase: Phase,
    current: Option<usize>,
    block: Option<Block>,
    capture: Capture,
    detail_bytes: usize,
    rerun_files: Vec<usize>,
    final_list_seen: bool,
    methods: usize,
}

impl Default for Parser {
    fn default() -> Self {
        Parser::new()
    }
}

impl Parser {
    /// A parser that has seen nothing.
    pub fn new() -> Parser {
        Parser {
            report: TestReport::new(TestRunner::Regrtest),
            index: HashMap::new(),
            phase: Phase::First,
            current: None,
            block: None,
            capture: Capture::None,
            detail_bytes: 0,
            rerun_files: Vec::new(),
            final_list_seen: false,
            methods: 0,
        }
    }

    /// Reads a whole text (tests, benchmarks): every line, then `finish`.
    pub fn parse(text: &str) -> TestReport {
        let mut parser = Parser::new();
        text.lines().for_each(|line| parser.line(line));
        parser.finish()
    }

    /// What has been read so far (the run may still be going).
    pub fn report(&self) -> &TestReport {
        &self.report
    }

    /// Reads one line of output (without its `\n`).
    pub fn line(&mut self, line: &str) {
        let line = cut(line, MAX_LINE).trim_end_matches('\r');
        let plain;
        let line = if line.contains('\x1b') {
            plain = strip_ansi(line);
            plain.as_str()
        } else {
            line
        };
        if self.collecting(line) {
            return;
        }
        let text = strip_clock(line);
        if self.in_block(text) {
            return;
        }
        if text.starts_with('[') && self.progress(text) {
            return;
        }
        self.statement(text);
    }

    /// The report, once the output has ended (or been cut off).
    pub fn finish(mut self) -> TestReport {
        let ended = self.report.summary.is_some();
        let rerun_done = self.final_list_seen;
        for &i in &self.rerun_files {
            let file = &mut self.report.files[i];
            // Listed as re-run, not listed as failing at the end: it passed.
            if rerun_done && file.rerun.is_none() {
                file.rerun = Some(Outcome::Passed);
            }
        }
        if ended {
            for file in &mut self.report.files {
                file.outcome.get_or_insert(Outcome::Passed);
            }
        }
        self.report
    }

    /// Goes on with a traceback being collected; false when the line is not part of one.
    fn collecting(&mut self, line: &str) -> bool {
        match self.capture {
            Capture::None => false,
            Capture::Header => {
                self.capture = Capture::None;
                match failure_header(line) {
                    Some((outcome, name)) => {
                        if let Some(m) = self.method(&name, outcome) {
                            self.capture = Capture::Rule(m.0, m.1);
                        }
                        true
                    }
                    None => false,
                }
            }
            Capture::Rule(f, m) => {
                self.capture = if is_rule(line, '-') { Capture::Traceback(f, m) } else { Capture::None };
                matches!(self.capture, Capture::Traceback(..))
            }
            Capture::Traceback(f, m) => {
                if is_rule(line, '=') {
                    self.capture = Capture::Header;
                } else if is_rule(line, '-') {
                    self.capture = Capture::None;
                } else {
                    let keep = self.phase == Phase::First || self.report.files[f].methods[m].traceback.is_empty();
                    if keep {
                        let budget = self.budget();
                        self.detail_bytes +=
                            append_capped(&mut self.report.files[f].methods[m].traceback, line, budget);
                    }
                }
                true
            }
            Capture::Detail(f) => {
                if line.trim().is_empty() {
                    self.capture = Capture::None;
                    return true;
                }
                if strip_clock(line).starts_with('[') {
                    self.capture = Capture::None;
                    return false;
                }
                let budget = self.budget();
                self.detail_bytes += append_capped(&mut self.report.files[f].detail, line, budget);
                true
            }
        }
    }

    fn budget(&mut self) -> usize {
        let left = MAX_DETAIL_TOTAL.saturating_sub(self.detail_bytes);
        if left == 0 {
            self.report.truncated = true;
        }
        left
    }

    /// The indented names under a closing list, and the list's end.
    fn in_block(&mut self, text: &str) -> bool {
        let Some(block) = self.block else { return false };
        if text.trim().is_empty() {
            self.block = None;
            return true;
        }
        if block == Block::Slowest {
            if let Some((name, took)) = text.strip_prefix("- ").and_then(|t| t.split_once(": ")) {
                let ms = duration_ms(took);
                if let Some(i) = self.index.get(name.trim()).copied() {
                    self.report.files[i].duration_ms = ms;
                }
                return true;
            }
        } else if text.starts_with("    ") {
            for name in text.split_whitespace() {
                self.listed(block, name);
            }
            return true;
        }
        self.block = None;
        false
    }

    fn listed(&mut self, block: Block, name: &str) {
        let outcome = match block {
            Block::Failed => Outcome::Failed,
            Block::Skipped => Outcome::Skipped,
            Block::EnvChanged => Outcome::EnvChanged,
            Block::NoTests => Outcome::NoTests,
            Block::Rerun => {
                if let Some(i) = self.file(name) {
                    self.mark_rerun(i);
                }
                return;
            }
            Block::Slowest | Block::Other => return,
        };
        let Some(i) = self.file(name) else { return };
        let file = &mut self.report.files[i];
        if self.phase == Phase::Rerun && block == Block::Failed {
            file.rerun = Some(file.rerun.filter(|r| r.is_failure()).unwrap_or(Outcome::Failed));
        } else if file.outcome.is_none_or(|o| o == Outcome::Passed && outcome.is_failure()) {
            file.outcome = Some(outcome);
        }
    }

    fn mark_rerun(&mut self, i: usize) {
        if !self.rerun_files.contains(&i) {
            self.rerun_files.push(i);
        }
    }

    /// `[ n/N(/fails)] test_x (result)( -- test_prev result)`; false if the line is not one.
    fn progress(&mut self, text: &str) -> bool {
        let Some((counter, rest)) = text[1..].split_once(']') else { return false };
        if counter.is_empty() || !counter.chars().all(|c| c.is_ascii_digit() || c == '/' || c == ' ') {
            return false;
        }
        let rest = rest.trim_start();
        let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
        if !looks_like_test(name) {
            return false;
        }
        let tail = tail.split(" -- running").next().unwrap_or("").trim();
        let (own, trailer) = match tail.strip_prefix("-- ") {
            Some(t) => ("", Some(t)),
            None => match tail.split_once(" -- ") {
                Some((own, t)) => (own, Some(t)),
                None => (tail, None),
            },
        };
        if let Some((prev, result)) = trailer.and_then(|t| t.split_once(' '))
            && let (Some(i), Some(outcome)) = (self.index.get(prev).copied(), parse_outcome(result))
        {
            self.set_outcome(i, outcome);
        }
        self.finish_serial_test();
        let Some(i) = self.file(name) else { return true };
        if let Some(outcome) = parse_outcome(own) {
            self.set_outcome(i, outcome);
        }
        if self.phase == Phase::Rerun {
            self.mark_rerun(i);
        }
        self.current = Some(i);
        true
    }

    /// In a serial run a passing test says nothing: the next start means it passed.
    fn finish_serial_test(&mut self) {
        if self.report.parallel || self.phase == Phase::Rerun {
            return;
        }
        if let Some(i) = self.current {
            self.report.files[i].outcome.get_or_insert(Outcome::Passed);
        }
    }

    fn set_outcome(&mut self, i: usize, outcome: Outcome) {
        let file = &mut self.report.files[i];
        match self.phase {
            Phase::First => file.outcome = Some(outcome),
            Phase::Rerun => file.rerun = Some(outcome),
        }
    }

    /// The index of file `name`, added if new (and if there is room).
    fn file(&mut self, name: &str) -> Option<usize> {
        if let Some(&i) = self.index.get(name) {
            return Some(i);
        }
        if self.report.files.len() >= MAX_FILES || !looks_like_test(name) {
            self.report.truncated |= self.report.files.len() >= MAX_FILES;
            return None;
        }
        self.report.files.push(FileResult::new(name));
        self.index.insert(name.to_string(), self.report.files.len() - 1);
        Some(self.report.files.len() - 1)
    }

    /// The method `dotted` of the current file, with how it ended in this phase.
    fn method(&mut self, dotted: &str, outcome: Outcome) -> Option<(usize, usize)> {
        let f = self.current.or_else(|| {
            let module = dotted.split('.').find(|part| part.starts_with("test"))?;
            self.index.get(module).copied()
        })?;
        let phase = self.phase;
        let methods = &mut self.report.files[f].methods;
        let m = match methods.iter().position(|m| m.name == dotted) {
            Some(m) => m,
            None if methods.len() < MAX_METHODS && self.methods < MAX_METHODS_TOTAL && dotted.len() <= MAX_NAME => {
                self.methods += 1;
                let first = if phase == Phase::First { outcome } else { Outcome::Failed };
                methods.push(MethodResult {
                    name: dotted.to_string(),
                    outcome: first,
                    rerun: None,
                    traceback: String::new(),
                });
                methods.len() - 1
            }
            None => {
                self.report.truncated = true;
                return None;
            }
        };
        match phase {
            Phase::First => methods[m].outcome = outcome,
            Phase::Rerun => methods[m].rerun = Some(outcome),
        }
        Some((f, m))
    }

    /// Any other line: headers, the seed, phases, results, lists, leaks, crashes.
    fn statement(&mut self, text: &str) {
        if self.header(text) || self.phase_change(text) || self.results(text) {
            return;
        }
        if let Some((name, outcome)) = verbose_result(text) {
            if outcome != Outcome::Passed || self.current.is_some() {
                self.method(&name, outcome);
            }
        } else if is_rule(text, '=') {
            self.capture = Capture::Header;
        } else if let Some(leak) = leak(text) {
            if self.report.leaks.len() < MAX_NOTES {
                self.report.leaks.push(leak);
            }
        } else if text.contains("Fatal Python error:") || (text.starts_with("Timeout (") && text.ends_with(")!")) {
            let test = self.current.map(|i| self.report.files[i].name.clone()).unwrap_or_default();
            let what = text.find("Fatal Python error").map_or(text, |at| &text[at..]).trim();
            let note = format!("{test}: {what}");
            if self.report.fatal.len() < MAX_NOTES && !self.report.fatal.contains(&note) {
                self.report.fatal.push(note);
            }
        } else {
            self.result_statement(text);
        }
    }

    /// The command line, `== …` headers and the seed.
    fn header(&mut self, text: &str) -> bool {
        if let Some(cmd) = text.strip_prefix("+ ") {
            if self.report.command.is_none() && (cmd.contains(" -m test") || cmd.contains("regrtest")) {
                self.report.command = Some(cmd.trim().to_string());
            }
            return true;
        }
        if let Some(version) = text.strip_prefix("== CPython ") {
            self.report.python.get_or_insert_with(|| version.trim().to_string());
            return true;
        }
        if let Some(seed) = text.strip_prefix("Using random seed").map(|s| s.trim_start_matches(':').trim()) {
            if self.report.seed.is_none() && !seed.is_empty() && seed.len() <= 64 {
                self.report.seed = Some(seed.to_string());
            }
            return true;
        }
        false
    }

    /// `Run N tests in parallel …`, `Re-running … in verbose mode`.
    fn phase_change(&mut self, text: &str) -> bool {
        if text.starts_with("Run ") && (text.contains(" in parallel") || text.contains("sequentially")) {
            if self.phase == Phase::First {
                self.report.parallel = text.contains(" in parallel");
            }
            return true;
        }
        let Some(rest) = text.strip_prefix("Re-running ") else { return false };
        if rest.contains("failed tests in verbose mode") {
            self.finish_serial_test();
            self.phase = Phase::Rerun;
            self.current = None;
            self.block = None;
        } else if let Some(name) = rest.split(' ').next().filter(|_| rest.contains(" in verbose mode")) {
            self.phase = Phase::Rerun;
            if let Some(i) = self.file(name) {
                self.mark_rerun(i);
                self.current = Some(i);
            }
        }
        true
    }

    /// `== Tests result: … ==`, `Result: …`, and the start of a closing list.
    fn results(&mut self, text: &str) -> bool {
        let summary = text
            .strip_prefix("== Tests result: ")
            .or_else(|| text.strip_prefix("Tests result: "))
            .map(|s| s.trim_end_matches('=').trim())
            .or_else(|| text.strip_prefix("Result: ").map(str::trim));
        if let Some(summary) = summary {
            self.finish_serial_test();
            self.current = None;
            // The re-run's own failures are all known by its summary.
            self.final_list_seen |= self.phase == Phase::Rerun;
            self.report.summary = Some(cut(summary, 200).to_string());
            return true;
        }
        let Some(block) = block_header(text) else { return false };
        if self.phase == Phase::Rerun && block == Block::Failed {
            self.final_list_seen = true;
        }
        self.block = Some(block);
        true
    }

    /// `test test_x failed -- Traceback…`, and a serial run's last `test_x failed (…)`.
    fn result_statement(&mut self, text: &str) {
        if let Some(rest) = text.strip_prefix("test ") {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let Some(i) = self.index.get(name).copied() else { return };
            let (result, detail) = tail.split_once(" -- ").unwrap_or((tail, ""));
            if let Some(outcome) = parse_outcome(result) {
                self.set_outcome(i, outcome);
            }
            if !detail.is_empty() && self.phase == Phase::First {
                let budget = self.budget();
                self.detail_bytes += append_capped(&mut self.report.files[i].detail, detail, budget);
                self.capture = Capture::Detail(i);
            }
            return;
        }
        let (name, tail) = text.split_once(' ').unwrap_or((text, ""));
        if let (Some(i), Some(outcome)) = (self.index.get(name).copied(), parse_outcome(tail)) {
            self.set_outcome(i, outcome);
        }
    }
}

/// The line without ANSI colour sequences (`ESC [ … letter`), as 3.14 prints on a terminal.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        }
    }
    out
}

/// The line without regrtest's clock and load average.
fn strip_clock(line: &str) -> &str {
    let Some((head, rest)) = line.split_once(' ') else { return line };
    let is_clock =
        head.len() >= 7 && head.matches(':').count() == 2 && head.bytes().all(|b| b.is_ascii_digit() || b == b':');
    if !is_clock {
        return line;
    }
    match rest.strip_prefix("load avg: ") {
        Some(load) => load.split_once(' ').map_or("", |(_, r)| r),
        None => rest,
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Appends a line within both the per-test and the overall budget; returns the bytes added.
fn append_capped(into: &mut String, line: &str, budget: usize) -> usize {
    let room = MAX_TRACEBACK.saturating_sub(into.len()).min(budget);
    if room == 0 {
        return 0;
    }
    let piece = cut(line, room.saturating_sub(1));
    let before = into.len();
    if !into.is_empty() {
        into.push('\n');
    }
    into.push_str(piece);
    into.len() - before
}

fn is_rule(line: &str, c: char) -> bool {
    let line = line.trim_end();
    line.len() >= 20 && line.chars().all(|x| x == c)
}

/// A regrtest test name: `test_os`, `test.test_os`, `test_asyncio.test_tasks`.
fn looks_like_test(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name.split('.').any(|p| p.starts_with("test"))
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

/// The outcome a result text starts with: `passed`, `failed (1 failure)`, `crashed (Exit code -6)`.
fn parse_outcome(text: &str) -> Option<Outcome> {
    let text = text.trim();
    let outcome = if text.starts_with("passed") {
        Outcome::Passed
    } else if text.starts_with("failed (env changed)") || text.starts_with("env changed") {
        Outcome::EnvChanged
    } else if text.starts_with("failed") {
        Outcome::Failed
    } else if text.starts_with("skipped") || text.starts_with("resource denied") {
        Outcome::Skipped
    } else if text.starts_with("crashed") || text.starts_with("worker non-zero exit code") {
        Outcome::Crashed
    } else if text.starts_with("timed out") || text.starts_with("TIMEOUT") {
        Outcome::TimedOut
    } else if text.starts_with("run no tests") {
        Outcome::NoTests
    } else if text.starts_with("interrupted") {
        Outcome::Interrupted
    } else {
        return None;
    };
    Some(outcome)
}

/// `2 tests failed:`, `1 test failed again:`, `3 tests skipped:`, `10 slowest tests:`.
fn block_header(text: &str) -> Option<Block> {
    let body = text.strip_suffix(':')?;
    let (count, what) = body.split_once(' ')?;
    if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let block = if what.contains("slowest") {
        Block::Slowest
    } else if what.contains("re-run") {
        Block::Rerun
    } else if what.contains("env changed") || what.contains("altered the execution environment") {
        Block::EnvChanged
    } else if what.contains("failed") {
        Block::Failed
    } else if what.contains("skipped") {
        Block::Skipped
    } else if what.contains("run no tests") {
        Block::NoTests
    } else if what.starts_with("test") {
        Block::Other
    } else {
        return None;
    };
    Some(block)
}

/// `FAIL: test_bad (test_fail.T.test_bad)` → (Failed, `test_fail.T.test_bad`).
fn failure_header(line: &str) -> Option<(Outcome, String)> {
    let (kind, rest) = line.split_once(": ")?;
    let outcome = match kind {
        "FAIL" | "ERROR" | "UNEXPECTED SUCCESS" => Outcome::Failed,
        _ => return None,
    };
    Some((outcome, method_name(rest)?))
}

/// `test_bad (test_fail.T.test_bad)` (3.11+) or `test_bad (test_fail.T)` (3.10) → the dotted name.
fn method_name(text: &str) -> Option<String> {
    let (method, rest) = text.split_once(" (")?;
    let (inner, _) = rest.split_once(')')?;
    if method.contains(' ') || inner.contains(' ') || method.is_empty() || inner.is_empty() {
        return None;
    }
    if inner == method || inner.ends_with(&format!(".{method}")) {
        Some(inner.to_string())
    } else {
        Some(format!("{inner}.{method}"))
    }
}

/// unittest's verbose line: `test_bad (test_fail.T.test_bad) ... FAIL`.
fn verbose_result(text: &str) -> Option<(String, Outcome)> {
    let (test, result) = text.rsplit_once(" ... ")?;
    let outcome = match result.trim() {
        "ok" | "expected failure" => Outcome::Passed,
        "FAIL" | "ERROR" | "unexpected success" => Outcome::Failed,
        r if r.starts_with("skipped") => Outcome::Skipped,
        _ => return None,
    };
    Some((method_name(test)?, outcome))
}

/// `test_x leaked [1, 1, 1] references, sum=3`.
fn leak(text: &str) -> Option<Leak> {
    let (test, rest) = text.split_once(" leaked [")?;
    let (_, what) = rest.split_once("] ")?;
    let what = what.split(", sum=").next()?.trim();
    if !looks_like_test(test) || what.is_empty() {
        return None;
    }
    Some(Leak { test: test.to_string(), what: what.to_string(), line: text.trim().to_string() })
}

/// `689 ms`, `1.2 sec`, `2 min 3 sec`, `1 hour 5 min` → milliseconds.
fn duration_ms(text: &str) -> Option<u64> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut total = 0.0_f64;
    for pair in words.chunks(2) {
        let [value, unit] = pair else { return None };
        let value: f64 = value.parse().ok()?;
        let scale = match unit.trim_end_matches(',') {
            "ms" => 1.0,
            "sec" | "s" => 1_000.0,
            "min" => 60_000.0,
            "hour" | "hours" => 3_600_000.0,
            _ => return None,
        };
        total += value * scale;
    }
    (total.is_finite() && total >= 0.0).then_some(total.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_and_load_averages_are_stripped() {
        assert_eq!(strip_clock("0:00:00 load avg: 1.03 [1/3/1] test_a failed"), "[1/3/1] test_a failed");
        assert_eq!(strip_clock("1:02:03 [ 1/3] test_a"), "[ 1/3] test_a");
        assert_eq!(strip_clock("[ 1/3] test_a"), "[ 1/3] test_a");
        assert_eq!(strip_clock("10 slowest tests:"), "10 slowest tests:");
    }

    #[test]
    fn result_words_name_their_outcomes() {
        assert_eq!(parse_outcome("failed (1 failure)"), Some(Outcome::Failed));
        assert_eq!(parse_outcome("failed (env changed)"), Some(Outcome::EnvChanged));
        assert_eq!(parse_outcome("crashed (Exit code -6)"), Some(Outcome::Crashed));
        assert_eq!(parse_outcome("timed out (2 sec)"), Some(Outcome::TimedOut));
        assert_eq!(parse_outcome("skipped (resource denied)"), Some(Outcome::Skipped));
        assert_eq!(parse_outcome("whatever"), None);
    }

    #[test]
    fn method_names_of_both_unittest_spellings() {
        assert_eq!(method_name("test_bad (test_fail.T.test_bad)").as_deref(), Some("test_fail.T.test_bad"));
        assert_eq!(method_name("test_bad (test_fail.T)").as_deref(), Some("test_fail.T.test_bad"));
        assert_eq!(method_name("nonsense"), None);
    }

    #[test]
    fn durations_in_regrtest_spelling() {
        assert_eq!(duration_ms("689 ms"), Some(689));
        assert_eq!(duration_ms("1.5 sec"), Some(1500));
        assert_eq!(duration_ms("2 min 3 sec"), Some(123_000));
        assert_eq!(duration_ms("soon"), None);
    }

    #[test]
    fn a_flood_of_output_stays_bounded() {
        let mut p = Parser::new();
        p.line("0:00:00 load avg: 1.00 Run 2 tests in parallel using 2 worker processes");
        p.line("[1/2/1] test_big failed (1 failure)");
        let long = "x".repeat(2_000);
        for i in 0..60_000 {
            p.line(&format!("[{i}/9/9] test_{i} failed"));
            p.line("======================================================================");
            p.line(&format!("FAIL: test_x (test_{i}.T.test_x)"));
            p.line("----------------------------------------------------------------------");
            p.line(&long);
        }
        let r = p.finish();
        assert!(r.truncated);
        assert!(r.files.len() <= MAX_FILES);
        let text: usize = r.files.iter().flat_map(|f| &f.methods).map(|m| m.traceback.len()).sum();
        assert!(text <= MAX_DETAIL_TOTAL + MAX_FILES, "{text}");
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        #[test]
        fn arbitrary_output_never_panics(lines in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::string::string_regex("[\\PC\\x1b\\r]{0,40}").expect("regex"),
                proptest::sample::select(vec![
                    "[1/3/1] test_a failed (1 failure)", "[ 2/3] test_b", "[3/3] test_c -- test_b crashed",
                    "Re-running 2 failed tests in verbose mode", "Re-running test_a in verbose mode",
                    "== Tests result: FAILURE ==", "2 tests failed:", "    test_a test_b", "10 slowest tests:",
                    "- test_a: 1 min 2 sec", "=====================", "FAIL: t (test_a.T.t)", "---------------------",
                    "test test_a failed -- Traceback", "test_a leaked [1] references, sum=1", "Using random seed: 7",
                    "+ python -m test -j2", "Fatal Python error: x", "", "\u{1b}[1;31m", "Result: FAILURE then SUCCESS",
                ]).prop_map(str::to_string),
            ], 0..60)) {
            let mut p = Parser::new();
            for line in &lines {
                p.line(line);
            }
            let r = p.finish();
            proptest::prop_assert!(r.files.len() <= lines.len() * 2 + 2);
        }
    }

    #[test]
    fn leaks_are_read() {
        let l = leak("test_x leaked [1, 1, 1] references, sum=3").expect("a leak");
        assert_eq!((l.test.as_str(), l.what.as_str()), ("test_x", "references"));
        assert_eq!(leak("test_y leaked [2, 2] memory blocks, sum=4").map(|l| l.what), Some("memory blocks".into()));
        assert!(leak("something leaked").is_none());
    }
}

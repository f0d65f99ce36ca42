//! The parsers on real output of CPython 3.10 to 3.14 (captured by running
//! those interpreters over `tests/regrtest`; `fixtures/regrtest/SOURCES.md`
//! says how each file was made).

use std::path::PathBuf;

use cascade_diagnosis::regrtest::Parser;
use cascade_diagnosis::{Outcome, TestReport, junit, reproduce};

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/regrtest").join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    String::from_utf8_lossy(&bytes).into_owned()
}

fn parse(name: &str) -> TestReport {
    Parser::parse(&fixture(name))
}

fn names<'a>(files: impl Iterator<Item = &'a cascade_diagnosis::FileResult>) -> Vec<&'a str> {
    let mut v: Vec<&str> = files.map(|f| f.name.as_str()).collect();
    v.sort_unstable();
    v
}

#[test]
fn slow_ci_runs_of_every_version_give_failures_flakes_the_seed_and_the_command() {
    for version in ["py311", "py312", "py313", "py314", "py314-slow-ci-color"] {
        let name = if version.contains("color") { format!("{version}.txt") } else { format!("{version}-slow-ci.txt") };
        let r = parse(&name);
        assert_eq!(names(r.failed()), ["test_crash", "test_fail"], "{name}");
        assert_eq!(names(r.flaky()), ["test_flaky"], "{name}");
        assert!(r.parallel, "{name}");
        let seed = r.seed.clone().unwrap_or_else(|| panic!("{name}: a seed"));
        assert!(seed.chars().all(|c| c.is_ascii_digit()), "{name}: {seed}");
        let command = r.command.clone().unwrap_or_else(|| panic!("{name}: a command"));
        assert!(command.contains("-m test --slow-ci"), "{name}: {command}");
        assert_eq!(r.file("test_pass").and_then(|f| f.outcome), Some(Outcome::Passed), "{name}");
        assert_eq!(r.file("test_crash").and_then(|f| f.outcome), Some(Outcome::Crashed), "{name}");
        assert!(r.fatal.iter().any(|f| f.starts_with("test_crash: Fatal Python error")), "{name}: {:?}", r.fatal);
        let fail = r.file("test_fail").expect("test_fail");
        let method = fail.methods.iter().find(|m| m.outcome == Outcome::Failed).expect("a failed method");
        assert!(method.name.starts_with("test_fail."), "{name}: {}", method.name);
        assert!(method.traceback.contains("AssertionError"), "{name}: {}", method.traceback);
        assert!(r.summary.as_deref().is_some_and(|s| s.starts_with("FAILURE")), "{name}: {:?}", r.summary);
        let again = reproduce::command(&command, Some(&seed), &["test_fail"]).expect("a reproduction");
        assert!(again.ends_with(&format!("--randseed {seed} test_fail")), "{again}");
        assert!(!again.contains("--junit-xml"), "{again}");
    }
}

#[test]
fn parallel_reruns_of_every_version_tell_flaky_from_failed() {
    for version in ["py310", "py311", "py312", "py313", "py314"] {
        let name = format!("{version}-j2-rerun.txt");
        let r = parse(&name);
        assert!(r.failed().any(|f| f.name == "test_fail"), "{name}: {:?}", names(r.failed()));
        assert_eq!(names(r.flaky()), ["test_flaky"], "{name}");
        assert_eq!(
            r.file("test_pass").and_then(cascade_diagnosis::FileResult::last_outcome),
            Some(Outcome::Passed),
            "{name}"
        );
    }
}

#[test]
fn serial_runs_keep_the_order_and_the_reruns_outcome() {
    for name in ["py310-serial-rerun-success.txt", "py311-serial-rerun-success.txt", "py314-serial-rerun-success.txt"] {
        let r = parse(name);
        assert!(!r.parallel, "{name}");
        assert_eq!(r.failed().count(), 0, "{name}: {:?}", names(r.failed()));
        assert!(r.flaky().count() >= 1, "{name}");
        assert!(r.summary.as_deref().is_some_and(|s| s.ends_with("then SUCCESS")), "{name}: {:?}", r.summary);
        let order: Vec<String> = r.files.iter().map(|f| f.name.clone()).collect();
        let flaky = r.flaky().next().expect("flaky").name.clone();
        let file = reproduce::order_file(&order, r.parallel, &flaky).expect("an order file");
        assert!(file.ends_with(&format!("{flaky}\n")), "{file}");
    }
    let r = parse("py311-serial-rerun-failure.txt");
    assert!(r.failed().count() >= 1);
}

#[test]
fn leaks_are_failures_with_their_lines() {
    for name in
        ["py311d-leaks-serial.txt", "py313d-leaks-j2.txt", "py314d-leaks-serial.txt", "py312-simdebug-leaks-j2.txt"]
    {
        let r = parse(name);
        assert!(r.leaks.iter().any(|l| l.what == "references"), "{name}: {:?}", r.leaks);
        for leak in &r.leaks {
            if !leak.line.contains("this is fine") {
                assert!(
                    r.file(&leak.test).is_some_and(cascade_diagnosis::FileResult::failed),
                    "{name}: {} should fail",
                    leak.test
                );
            }
        }
    }
    let r = parse("py311d-leaks-serial.txt");
    assert_eq!(names(r.failed()), ["test_leak_fds", "test_leak_refs"]);
    assert!(r.leaks.iter().any(|l| l.what == "file descriptors"));
}

#[test]
fn timeouts_and_crashes_are_named() {
    for name in [
        "py311-timeout-kill-j2.txt",
        "py313-timeout-kill-j2.txt",
        "py314-timeout-kill-j2.txt",
        "py310-timeout-kill-j2.txt",
    ] {
        let r = parse(name);
        assert!(r.files.iter().any(|f| f.outcome == Some(Outcome::TimedOut)), "{name}: {:?}", r.files);
    }
    for name in ["py311-timeout-j2.txt", "py310-timeout-j2.txt", "py314-timeout-j2.txt"] {
        let r = parse(name);
        assert!(r.fatal.iter().any(|f| f.contains("Timeout (")), "{name}: {:?}", r.fatal);
        assert!(r.failed().count() >= 1, "{name}");
    }
    let r = parse("py310-j2-crash.txt");
    assert!(r.files.iter().any(|f| f.outcome == Some(Outcome::Crashed)), "{:?}", r.files);
}

#[test]
fn interleaved_and_truncated_output_still_reads() {
    for version in ["py310", "py311", "py314"] {
        let name = format!("{version}-interleaved-j2.txt");
        let r = parse(&name);
        assert!(r.files.len() >= 2, "{name}");
        assert!(r.summary.is_some(), "{name}");
    }
    // Cut during the re-run: what the first run said stands, and nothing
    // cut off is taken to have passed its re-run.
    let r = parse("py313-slow-ci-truncated.txt");
    assert_eq!(r.summary.as_deref(), Some("FAILURE"));
    assert!(r.file("test_fail").is_some_and(cascade_diagnosis::FileResult::failed));
    assert!(r.file("test_crash").is_some_and(|f| f.failed() && f.rerun.is_none()));
    // Cut inside a UTF-8 character of the header: the header still reads.
    let r = parse("py311-j2-rerun-truncated-utf8.txt");
    assert!(r.python.as_deref().is_some_and(|p| p.starts_with("3.11")));
}

#[test]
fn every_fixture_parses_whole_and_line_by_line_alike() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/regrtest");
    for entry in std::fs::read_dir(&dir).expect("fixtures") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "txt") {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(&path).expect("read")).into_owned();
        let whole = Parser::parse(&text);
        let mut streamed = Parser::new();
        for line in text.split('\n') {
            streamed.line(line);
        }
        assert_eq!(whole, streamed.finish(), "{}", path.display());
        assert!(!whole.is_empty(), "{} reads as a test run", path.display());
    }
}

#[test]
fn regrtest_junit_files_of_every_version() {
    for version in
        ["py310-j2-rerun", "py311-j2-rerun", "py311-slow-ci", "py312-slow-ci", "py313-slow-ci", "py314-slow-ci"]
    {
        let name = format!("{version}.xml");
        let r = junit::parse(&fixture(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let fail = r.file("test_fail").unwrap_or_else(|| panic!("{name}: test_fail"));
        assert!(fail.failed(), "{name}");
        assert!(fail.methods.iter().any(|m| m.traceback.contains("AssertionError")), "{name}");
        assert!(
            r.file("test_flaky").is_some_and(cascade_diagnosis::FileResult::flaky),
            "{name}: {:?}",
            r.file("test_flaky")
        );
    }
}

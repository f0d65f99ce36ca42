//! `state_string`s worded as Buildbot words them, so scripts and mails that
//! read them keep working: a failing `sh test.sh` step says
//! `'sh test.sh' (failure)` and its build `failed 'sh test.sh' (failure)`;
//! a passing build says `build successful`.

use crate::Results;

/// A command as Buildbot's `command_to_string` shows it: the words quoted,
/// only the first two (and `...`) when there are three or more.
pub fn command_summary<S: AsRef<str>>(words: &[S]) -> Option<String> {
    let words: Vec<&str> = words.iter().map(AsRef::as_ref).collect();
    match words.len() {
        0 => None,
        1 | 2 => Some(format!("'{}'", words.join(" "))),
        _ => Some(format!("'{} {} ...'", words[0], words[1])),
    }
}

/// How a command step that ran out of time or lines ended, beside its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cut {
    /// It ended by itself.
    #[default]
    No,
    /// Killed for silence or for running too long.
    TimedOut,
    /// Killed for writing too many lines.
    MaxLines,
}

/// A finished step's `state_string`: what it did (its command, or its
/// description), then `(failure)` and the like unless it passed.
pub fn step_summary(done: &str, results: Results, cut: Cut) -> String {
    let mut s = done.to_string();
    if results != Results::Success {
        s.push_str(&format!(" ({})", results.name()));
        match cut {
            Cut::TimedOut => s.push_str(" (timed out)"),
            Cut::MaxLines => s.push_str(" (max lines)"),
            Cut::No => {}
        }
    }
    s
}

/// Whether a step's summary goes into its build's `state_string`
/// (Buildbot's default `updateBuildSummaryPolicy`): exceptions, retries and
/// cancellations always; failures of a step whose failure counts.
pub fn names_in_build(results: Results, failure_counts: bool) -> bool {
    match results {
        Results::Exception | Results::Retry | Results::Cancelled => true,
        Results::Failure => failure_counts,
        _ => false,
    }
}

/// A finished build's `state_string`: its result's word, then the summaries
/// of the steps that made it so.
pub fn build_summary<S: AsRef<str>>(results: Results, steps: &[S]) -> String {
    let word = match results {
        Results::Failure => "failed",
        Results::Warnings => "warnings",
        Results::Exception => "exception",
        Results::Retry => "retry",
        Results::Cancelled => "cancelled",
        Results::Success | Results::Skipped => "build successful",
    };
    let mut words = vec![word];
    words.extend(steps.iter().map(AsRef::as_ref));
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worded_as_buildbot_words_them() {
        let step = step_summary(&command_summary(&["sh", "test.sh"]).unwrap_or_default(), Results::Failure, Cut::No);
        assert_eq!(step, "'sh test.sh' (failure)");
        assert_eq!(build_summary(Results::Failure, &[&step]), "failed 'sh test.sh' (failure)");
        assert_eq!(build_summary::<&str>(Results::Success, &[]), "build successful");
        assert_eq!(command_summary(&["make", "-j4", "test"]).as_deref(), Some("'make -j4 ...'"));
        assert_eq!(command_summary(&["true"]).as_deref(), Some("'true'"));
        assert_eq!(command_summary::<&str>(&[]), None);
        assert_eq!(step_summary("'make'", Results::Success, Cut::TimedOut), "'make'");
        assert_eq!(step_summary("'make'", Results::Failure, Cut::TimedOut), "'make' (failure) (timed out)");
        assert_eq!(step_summary("'x'", Results::Exception, Cut::MaxLines), "'x' (exception) (max lines)");
    }

    #[test]
    fn only_what_made_the_build_so_is_named() {
        assert!(names_in_build(Results::Failure, true));
        assert!(!names_in_build(Results::Failure, false));
        assert!(!names_in_build(Results::Success, true) && !names_in_build(Results::Warnings, true));
        assert!(names_in_build(Results::Cancelled, false) && names_in_build(Results::Retry, false));
    }
}

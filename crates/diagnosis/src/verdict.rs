//! Judgements over several builds: which tests are flaky, and which change
//! most likely broke a builder.

use std::collections::BTreeSet;

/// How one test fared in one build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestState {
    /// It passed.
    Passed,
    /// It failed for good.
    Failed,
    /// It failed, then passed when re-run in the same build.
    Flaky,
}

/// One build's run of a test, oldest first in a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run<'a> {
    /// The revision built.
    pub revision: Option<&'a str>,
    /// How the test fared.
    pub state: TestState,
}

/// (flaky runs, runs) over one builder's history, oldest first. A run is
/// flaky when it passed on re-run, or when it failed and the next build of
/// the same revision passed.
pub fn flakiness(history: &[Run<'_>]) -> (usize, usize) {
    let flaky = history
        .iter()
        .enumerate()
        .filter(|(i, run)| match run.state {
            TestState::Flaky => true,
            TestState::Failed => history.get(i + 1).is_some_and(|next| {
                next.state != TestState::Failed && run.revision.is_some() && next.revision == run.revision
            }),
            TestState::Passed => false,
        })
        .count();
    (flaky, history.len())
}

/// The changes that may have broken a builder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspects {
    /// Candidate changes (ids), in ascending order.
    pub changes: Vec<i64>,
    /// The one change left, when the candidates narrow to one.
    pub likely: Option<i64>,
    /// How many other builders' blamelists narrowed the candidates.
    pub narrowed_by: usize,
}

/// The changes of `own` (the blamelist of the build where a failing streak
/// began) that are also in every blamelist of `others` (where the same test
/// began failing on other builders). Others that share nothing are ignored:
/// those builders broke for another reason.
pub fn suspects(own: &[i64], others: &[Vec<i64>]) -> Suspects {
    let mut left: BTreeSet<i64> = own.iter().copied().collect();
    let mut narrowed_by = 0;
    for other in others {
        let theirs: BTreeSet<i64> = other.iter().copied().collect();
        let both: BTreeSet<i64> = left.intersection(&theirs).copied().collect();
        if !both.is_empty() {
            narrowed_by += usize::from(both.len() < left.len() || !theirs.is_empty());
            left = both;
        }
    }
    let changes: Vec<i64> = left.into_iter().collect();
    let likely = (changes.len() == 1).then(|| changes[0]);
    Suspects { changes, likely, narrowed_by }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(revision: &str, state: TestState) -> Run<'_> {
        Run { revision: Some(revision), state }
    }

    #[test]
    fn flaky_runs_are_reruns_that_passed_or_failures_the_same_revision_fixed() {
        use TestState::*;
        let history =
            [run("a", Passed), run("b", Failed), run("b", Passed), run("c", Flaky), run("d", Failed), run("e", Failed)];
        assert_eq!(flakiness(&history), (2, 6));
        assert_eq!(flakiness(&[]), (0, 0));
    }

    #[test]
    fn blamelists_narrow_to_the_likely_cause() {
        let s = suspects(&[1, 2, 3], &[vec![2, 3, 9], vec![3, 4]]);
        assert_eq!((s.changes, s.likely), (vec![3], Some(3)));
        let s = suspects(&[1, 2], &[vec![7, 8]]);
        assert_eq!((s.changes, s.likely, s.narrowed_by), (vec![1, 2], None, 0));
        assert_eq!(suspects(&[5], &[]).likely, Some(5));
        assert_eq!(suspects(&[], &[vec![1]]).changes, Vec::<i64>::new());
    }

    proptest! {
        #[test]
        fn suspects_are_always_own_changes(own in proptest::collection::vec(0i64..20, 0..8),
                                           others in proptest::collection::vec(proptest::collection::vec(0i64..20, 0..8), 0..4)) {
            let s = suspects(&own, &others);
            prop_assert!(s.changes.iter().all(|c| own.contains(c)));
            prop_assert!(s.changes.is_empty() == own.is_empty());
            prop_assert_eq!(s.likely.is_some(), s.changes.len() == 1);
        }

        #[test]
        fn flaky_runs_never_exceed_runs(states in proptest::collection::vec(0u8..3, 0..30)) {
            let history: Vec<Run<'_>> = states.iter().map(|s| run(if *s == 0 { "x" } else { "y" },
                [TestState::Passed, TestState::Failed, TestState::Flaky][*s as usize])).collect();
            let (flaky, runs) = flakiness(&history);
            prop_assert!(flaky <= runs);
            prop_assert_eq!(runs, history.len());
        }
    }
}

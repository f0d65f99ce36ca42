//! What a finished build says to the people who follow a builder: Buildbot's
//! notification event names, decided from the build's result and the
//! previous finished build of the same builder (a builder here is one
//! branch's). RETRY, CANCELLED and SKIPPED builds are not a state: they are
//! never "the previous build", and a builder's first build is not a change.

use crate::Results;

/// A notification event, as reporters name the ones they want.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NotifyEvent {
    /// A build started.
    Started,
    /// A build finished, whatever its result.
    Finished,
    /// It passed.
    Success,
    /// It passed with warnings.
    Warnings,
    /// It failed.
    Failure,
    /// It broke outside the code under test.
    Exception,
    /// It was stopped.
    Cancelled,
    /// The result class (passing: success, warnings; failing: failure,
    /// exception) went from failing to passing.
    Better,
    /// The result class went from passing to failing.
    Worse,
    /// A failure after a passing build.
    Problem,
    /// A passing build after a failure.
    Recovery,
    /// A worker has been gone past its grace time.
    WorkerMissing,
    /// A missing worker came back.
    WorkerBack,
}

impl NotifyEvent {
    /// Every event.
    pub const ALL: [NotifyEvent; 13] = [
        NotifyEvent::Started,
        NotifyEvent::Finished,
        NotifyEvent::Success,
        NotifyEvent::Warnings,
        NotifyEvent::Failure,
        NotifyEvent::Exception,
        NotifyEvent::Cancelled,
        NotifyEvent::Better,
        NotifyEvent::Worse,
        NotifyEvent::Problem,
        NotifyEvent::Recovery,
        NotifyEvent::WorkerMissing,
        NotifyEvent::WorkerBack,
    ];

    /// Buildbot's name for it (`worker_missing`, `better`, ...).
    pub fn name(self) -> &'static str {
        match self {
            NotifyEvent::Started => "started",
            NotifyEvent::Finished => "finished",
            NotifyEvent::Success => "success",
            NotifyEvent::Warnings => "warnings",
            NotifyEvent::Failure => "failure",
            NotifyEvent::Exception => "exception",
            NotifyEvent::Cancelled => "cancelled",
            NotifyEvent::Better => "better",
            NotifyEvent::Worse => "worse",
            NotifyEvent::Problem => "problem",
            NotifyEvent::Recovery => "recovery",
            NotifyEvent::WorkerMissing => "worker_missing",
            NotifyEvent::WorkerBack => "worker_back",
        }
    }

    /// The event a name names.
    pub fn parse(name: &str) -> Option<NotifyEvent> {
        NotifyEvent::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// Whether a finished build's result is a state a later build is compared with.
pub fn counts_as_state(results: Results) -> bool {
    !matches!(results, Results::Retry | Results::Cancelled | Results::Skipped)
}

/// The events of a build that finished with `results`, after `previous`
/// (the result of the builder's previous finished build that counts as a
/// state; `None` for its first).
pub fn finished(previous: Option<Results>, results: Results) -> Vec<NotifyEvent> {
    let mut out = vec![NotifyEvent::Finished];
    match results {
        Results::Success => out.push(NotifyEvent::Success),
        Results::Warnings => out.push(NotifyEvent::Warnings),
        Results::Failure => out.push(NotifyEvent::Failure),
        Results::Exception => out.push(NotifyEvent::Exception),
        Results::Cancelled => out.push(NotifyEvent::Cancelled),
        Results::Skipped | Results::Retry => {}
    }
    let Some(previous) = previous.filter(|p| counts_as_state(*p)) else { return out };
    if !counts_as_state(results) {
        return out;
    }
    if previous.is_failing() && results.is_passing() {
        out.push(NotifyEvent::Better);
    }
    if previous.is_passing() && results.is_failing() {
        out.push(NotifyEvent::Worse);
    }
    if previous.is_passing() && results == Results::Failure {
        out.push(NotifyEvent::Problem);
    }
    if previous == Results::Failure && results.is_passing() {
        out.push(NotifyEvent::Recovery);
    }
    out
}

/// The `finished` events of each build of a history (oldest first), each
/// compared with the last earlier build that counts as a state.
pub fn history(results: &[Results]) -> Vec<Vec<NotifyEvent>> {
    let mut previous = None;
    results
        .iter()
        .map(|r| {
            let events = finished(previous, *r);
            if counts_as_state(*r) {
                previous = Some(*r);
            }
            events
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use NotifyEvent as E;
    use Results::*;
    use proptest::prelude::*;

    fn changes(events: &[NotifyEvent]) -> Vec<NotifyEvent> {
        events.iter().copied().filter(|e| matches!(e, E::Better | E::Worse | E::Problem | E::Recovery)).collect()
    }

    #[test]
    fn pass_fail_fail_pass_is_worse_then_nothing_then_better() {
        let h = history(&[Success, Failure, Failure, Success]);
        let got: Vec<Vec<NotifyEvent>> = h.iter().map(|e| changes(e)).collect();
        assert_eq!(got, vec![vec![], vec![E::Worse, E::Problem], vec![], vec![E::Better, E::Recovery]]);
        assert_eq!(h[1], vec![E::Finished, E::Failure, E::Worse, E::Problem]);
    }

    #[test]
    fn retries_cancellations_and_skips_are_not_a_state() {
        let h = history(&[Success, Retry, Cancelled, Skipped, Failure]);
        assert_eq!(changes(&h[4]), vec![E::Worse, E::Problem], "compared with the success, not the cancel");
        assert!(h[2].contains(&E::Cancelled) && changes(&h[2]).is_empty());
        assert_eq!(history(&[Failure])[0], vec![E::Finished, E::Failure], "a first build is not a change");
        assert_eq!(
            changes(&history(&[Exception, Warnings])[1]),
            vec![E::Better],
            "an exception is no failure to recover from"
        );
        assert_eq!(changes(&history(&[Warnings, Exception])[1]), vec![E::Worse]);
    }

    #[test]
    fn names_round_trip() {
        for e in NotifyEvent::ALL {
            assert_eq!(NotifyEvent::parse(e.name()), Some(e));
        }
        assert_eq!(NotifyEvent::parse("nonsense"), None);
    }

    fn any_result() -> impl Strategy<Value = Results> {
        proptest::sample::select(Results::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn changes_follow_the_class_of_the_last_state(results in proptest::collection::vec(any_result(), 0..40)) {
            let h = history(&results);
            let mut last: Option<Results> = None;
            for (r, events) in results.iter().zip(&h) {
                let now = counts_as_state(*r);
                let better = now && last.is_some_and(Results::is_failing) && r.is_passing();
                let worse = now && last.is_some_and(Results::is_passing) && r.is_failing();
                prop_assert_eq!(events.contains(&E::Better), better);
                prop_assert_eq!(events.contains(&E::Worse), worse);
                prop_assert!(events.contains(&E::Finished));
                prop_assert!(!(events.contains(&E::Better) && events.contains(&E::Worse)));
                if now {
                    last = Some(*r);
                }
            }
            // Between two builds of different classes there is exactly one better or worse.
            let states: Vec<Results> = results.iter().copied().filter(|r| counts_as_state(*r)).collect();
            let flips = states.windows(2).filter(|w| w[0].is_passing() != w[1].is_passing()).count();
            let said = h.iter().filter(|e| e.contains(&E::Better) || e.contains(&E::Worse)).count();
            prop_assert_eq!(flips, said);
        }
    }
}

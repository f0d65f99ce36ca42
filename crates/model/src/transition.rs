//! What a finished build says to the people who follow a builder: Buildbot's
//! notification event names, decided from the build's result and the
//! previous finished build of the same builder (a builder here is one
//! branch's). RETRY, CANCELLED and SKIPPED builds are not a state: they are
//! never "the previous build", and a builder's first build is not a change.
//!
//! A worker's presence: `worker_missing` once it has been gone past a grace
//! time (a master restart or a quick reconnect says nothing), `worker_back`
//! only when its `worker_missing` was said.

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

/// A change in a worker's connection to the masters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Its last connection ended.
    Lost,
    /// It connected.
    Connected,
}

/// When a worker lost at `lost_at` becomes `worker_missing`: `grace`
/// seconds later, and never sooner than `grace` after the sending master
/// came up at `up_since` (a worker cannot reconnect to a master that is
/// down; after a long stop every worker gets its grace time again).
pub fn missing_due(lost_at: i64, up_since: i64, grace: i64) -> i64 {
    lost_at.max(up_since).saturating_add(grace.max(0))
}

/// Whether a `worker_missing` that fell due is still true: the worker is
/// not connected, and it was not lost again since (it came back in between,
/// and the later loss has its own `worker_missing`).
pub fn still_missing(connected_now: bool, lost_again: bool) -> bool {
    !connected_now && !lost_again
}

/// Whether a worker's return is news: only when the last thing said about
/// it (a notification actually sent) was `worker_missing`.
pub fn back_is_news(last_said: Option<NotifyEvent>) -> bool {
    last_said == Some(NotifyEvent::WorkerMissing)
}

/// The worker events said over a worker's presence changes (oldest first,
/// Unix seconds) up to `now`, each `worker_missing` checked when it falls
/// due as the notifier checks it; a change at the due second comes first.
pub fn presence_history(changes: &[(i64, Presence)], grace: i64, now: i64) -> Vec<(i64, NotifyEvent)> {
    let mut t = Teller { grace, said: Vec::new(), waiting: None, connected: false };
    for &(at, change) in changes {
        t.settle_before(at);
        match change {
            Presence::Lost => {
                // A loss still waiting is lost again: `still_missing` will
                // never hold for it, so this one takes its place.
                t.connected = false;
                t.waiting = Some(at);
            }
            Presence::Connected => {
                t.connected = true;
                let last_said = t.said.last().map(|(_, e)| *e);
                if back_is_news(last_said) {
                    t.said.push((at, NotifyEvent::WorkerBack));
                }
            }
        }
    }
    t.settle_before(now.saturating_add(1));
    t.said
}

/// [`presence_history`]'s state.
struct Teller {
    grace: i64,
    said: Vec<(i64, NotifyEvent)>,
    /// When the loss whose `worker_missing` waits happened.
    waiting: Option<i64>,
    connected: bool,
}

impl Teller {
    /// Checks a `worker_missing` that fell due before `until`.
    fn settle_before(&mut self, until: i64) {
        let Some(lost_at) = self.waiting else { return };
        let due = missing_due(lost_at, i64::MIN, self.grace);
        if due < until {
            self.waiting = None;
            if still_missing(self.connected, false) {
                self.said.push((due, NotifyEvent::WorkerMissing));
            }
        }
    }
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

    #[test]
    fn a_quick_reconnect_says_nothing_and_a_long_absence_says_missing_then_back() {
        use Presence::*;
        // A master restart: gone 5 s with a 600 s grace.
        assert!(presence_history(&[(100, Lost), (105, Connected)], 600, 10_000).is_empty());
        let long = presence_history(&[(100, Lost), (1_000, Connected)], 600, 10_000);
        assert_eq!(long, vec![(700, E::WorkerMissing), (1_000, E::WorkerBack)]);
        // Back at the very second it falls due: nothing was said.
        assert!(presence_history(&[(100, Lost), (700, Connected)], 600, 10_000).is_empty());
        // Still gone, not yet due.
        assert!(presence_history(&[(100, Lost)], 600, 699).is_empty());
        assert_eq!(presence_history(&[(100, Lost)], 600, 700), vec![(700, E::WorkerMissing)]);
        // Back and lost again before the first loss fell due: only the second speaks, at its own time.
        let flapping = presence_history(&[(100, Lost), (200, Connected), (300, Lost)], 600, 10_000);
        assert_eq!(flapping, vec![(900, E::WorkerMissing)]);
    }

    #[test]
    fn the_notifiers_checks() {
        assert!(still_missing(false, false));
        assert!(!still_missing(true, false), "back");
        assert!(!still_missing(false, true), "back and lost again: the later loss speaks");
        assert!(back_is_news(Some(E::WorkerMissing)));
        assert!(!back_is_news(None) && !back_is_news(Some(E::WorkerBack)));
        assert_eq!(missing_due(i64::MAX - 1, 0, 600), i64::MAX);
        // Lost when the master stopped at 100; it came up again at 5,000.
        assert_eq!(missing_due(100, 5_000, 600), 5_600);
        assert_eq!(missing_due(6_000, 5_000, 600), 6_600);
    }

    /// Alternating losses and returns from gaps: (absence, presence) lengths.
    fn presence_from(gaps: &[(i64, i64)]) -> Vec<(i64, Presence)> {
        let mut at = 0;
        let mut out = Vec::new();
        for (gone, present) in gaps {
            out.push((at, Presence::Lost));
            at += gone;
            out.push((at, Presence::Connected));
            at += present;
        }
        out
    }

    proptest! {
        #[test]
        fn only_absences_longer_than_the_grace_are_said_each_once_then_its_return(
            gaps in proptest::collection::vec((0i64..50, 0i64..50), 0..30),
            grace in 0i64..30,
        ) {
            let changes = presence_from(&gaps);
            let end = changes.last().map_or(0, |c| c.0) + 100;
            let said = presence_history(&changes, grace, end);
            let mut expected = Vec::new();
            for pair in changes.chunks(2) {
                let (lost, back) = (pair[0].0, pair[1].0);
                if back - lost > grace {
                    expected.push((lost + grace, E::WorkerMissing));
                    expected.push((back, E::WorkerBack));
                }
            }
            prop_assert_eq!(said, expected);
        }
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

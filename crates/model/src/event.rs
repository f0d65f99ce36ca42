//! What happens in a master, as typed events.
//!
//! Every state change worth telling anyone about is an [`Event`]. The store
//! records the durable ones in the same transaction as the change itself (an
//! outbox), so a consumer that must not miss one (a notifier after a
//! restart, another master) reads them from there; live pages get them from
//! an in-memory channel. Log lines are the one ephemeral kind: their text is
//! in the log already.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::results::Results;

/// Something that happened. Ids are the store's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A buildset was created: one request per builder.
    BuildRequested {
        /// The new buildset.
        buildset_id: i64,
        /// The builders asked to build.
        builder_ids: Vec<i64>,
        /// The new build requests.
        request_ids: Vec<i64>,
    },
    /// Pending build requests were cancelled (by a person, or because
    /// their branch was deleted).
    BuildRequestsCancelled {
        /// The requests.
        request_ids: Vec<i64>,
        /// Their builders.
        builder_ids: Vec<i64>,
    },
    /// A build claimed its requests and started on a worker.
    BuildStarted {
        /// The build.
        build_id: i64,
        /// Its builder.
        builder_id: i64,
        /// Its number within the builder.
        number: i64,
        /// The worker it runs on, if any.
        worker_id: Option<i64>,
        /// The master that runs it.
        master_id: i64,
    },
    /// A step began.
    StepStarted {
        /// The step's build.
        build_id: i64,
        /// The build's builder.
        builder_id: i64,
        /// The build's number.
        number: i64,
        /// The step.
        step_id: i64,
        /// Its position in the build, from 0.
        step_number: i64,
        /// Its name.
        step: String,
    },
    /// A step ended.
    StepFinished {
        /// The step's build.
        build_id: i64,
        /// The build's builder.
        builder_id: i64,
        /// The build's number.
        number: i64,
        /// The step.
        step_id: i64,
        /// Its position in the build, from 0.
        step_number: i64,
        /// Its name.
        step: String,
        /// How it ended.
        results: Results,
    },
    /// A build ended (RETRY included: its requests wait again).
    BuildFinished {
        /// The build.
        build_id: i64,
        /// Its builder.
        builder_id: i64,
        /// Its number within the builder.
        number: i64,
        /// How it ended.
        results: Results,
    },
    /// A worker attached to a master.
    WorkerConnected {
        /// The worker.
        worker_id: i64,
        /// Its name.
        worker: String,
        /// The master it attached to.
        master_id: i64,
    },
    /// A worker's connection to a master ended.
    WorkerLost {
        /// The worker.
        worker_id: i64,
        /// Its name.
        worker: String,
        /// The master it was attached to.
        master_id: i64,
    },
    /// A master started serving.
    MasterStarted {
        /// The master.
        master_id: i64,
        /// Its name in the `masters` table.
        name: String,
    },
    /// A master stopped serving (cleanly).
    MasterStopped {
        /// The master.
        master_id: i64,
    },
    /// Lines just stored in a log (ephemeral: never recorded as an event).
    LogLines {
        /// The log.
        log_id: i64,
        /// The number of the first line, from 0.
        first_line: i64,
        /// The lines, each tagged with its stream (see [`crate::log::Stream`]).
        lines: Vec<String>,
    },
}

/// The kinds of [`Event`], for filtering and for the store's `kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// [`Event::BuildRequested`]
    BuildRequested,
    /// [`Event::BuildRequestsCancelled`]
    BuildRequestsCancelled,
    /// [`Event::BuildStarted`]
    BuildStarted,
    /// [`Event::StepStarted`]
    StepStarted,
    /// [`Event::StepFinished`]
    StepFinished,
    /// [`Event::BuildFinished`]
    BuildFinished,
    /// [`Event::WorkerConnected`]
    WorkerConnected,
    /// [`Event::WorkerLost`]
    WorkerLost,
    /// [`Event::MasterStarted`]
    MasterStarted,
    /// [`Event::MasterStopped`]
    MasterStopped,
    /// [`Event::LogLines`]
    LogLines,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 11] = [
        EventKind::BuildRequested,
        EventKind::BuildRequestsCancelled,
        EventKind::BuildStarted,
        EventKind::StepStarted,
        EventKind::StepFinished,
        EventKind::BuildFinished,
        EventKind::WorkerConnected,
        EventKind::WorkerLost,
        EventKind::MasterStarted,
        EventKind::MasterStopped,
        EventKind::LogLines,
    ];

    /// The snake_case name, as serialized.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::BuildRequested => "build_requested",
            EventKind::BuildRequestsCancelled => "build_requests_cancelled",
            EventKind::BuildStarted => "build_started",
            EventKind::StepStarted => "step_started",
            EventKind::StepFinished => "step_finished",
            EventKind::BuildFinished => "build_finished",
            EventKind::WorkerConnected => "worker_connected",
            EventKind::WorkerLost => "worker_lost",
            EventKind::MasterStarted => "master_started",
            EventKind::MasterStopped => "master_stopped",
            EventKind::LogLines => "log_lines",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether events of this kind are recorded in the store.
    pub fn is_durable(self) -> bool {
        self != EventKind::LogLines
    }
}

impl Event {
    /// This event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::BuildRequested { .. } => EventKind::BuildRequested,
            Event::BuildRequestsCancelled { .. } => EventKind::BuildRequestsCancelled,
            Event::BuildStarted { .. } => EventKind::BuildStarted,
            Event::StepStarted { .. } => EventKind::StepStarted,
            Event::StepFinished { .. } => EventKind::StepFinished,
            Event::BuildFinished { .. } => EventKind::BuildFinished,
            Event::WorkerConnected { .. } => EventKind::WorkerConnected,
            Event::WorkerLost { .. } => EventKind::WorkerLost,
            Event::MasterStarted { .. } => EventKind::MasterStarted,
            Event::MasterStopped { .. } => EventKind::MasterStopped,
            Event::LogLines { .. } => EventKind::LogLines,
        }
    }

    /// The build this event is about, if it is about one.
    pub fn build(&self) -> Option<BuildRef> {
        match self {
            Event::BuildStarted { build_id, builder_id, number, .. }
            | Event::StepStarted { build_id, builder_id, number, .. }
            | Event::StepFinished { build_id, builder_id, number, .. }
            | Event::BuildFinished { build_id, builder_id, number, .. } => {
                Some(BuildRef { build_id: *build_id, builder_id: *builder_id, number: *number })
            }
            _ => None,
        }
    }
}

/// Which build an event concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildRef {
    /// The build.
    pub build_id: i64,
    /// Its builder.
    pub builder_id: i64,
    /// Its number within the builder.
    pub number: i64,
}

/// An event as delivered: its id in the store's log (none for ephemeral
/// ones) and when it happened (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Envelope {
    /// The event's id in the store, ascending in commit order but with gaps.
    pub id: Option<i64>,
    /// When it was recorded, Unix seconds.
    pub at: i64,
    /// What happened.
    pub event: Event,
}

/// Where a reader of the event log stands, tolerant of ids that commit out
/// of order.
///
/// Ids come from a sequence: two transactions may take ids 10 and 11 and
/// commit 11 first, and a rolled-back one leaves a hole for good. A reader
/// that only asked for "ids above the last one seen" would miss 10. This
/// cursor remembers the holes below the highest id it has seen and asks for
/// them again until they appear or `patience` has passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Every id below this was delivered or given up.
    next: i64,
    /// Delivered ids at or above `next`.
    seen: BTreeSet<i64>,
    /// Missing ids below the highest seen one, with when each was noticed.
    gaps: BTreeMap<i64, i64>,
}

/// Most holes a cursor waits for at once; beyond that the oldest are given up.
pub const MAX_GAPS: usize = 1000;

impl Cursor {
    /// A cursor that delivers ids from `next` on.
    pub fn starting_at(next: i64) -> Cursor {
        Cursor { next, seen: BTreeSet::new(), gaps: BTreeMap::new() }
    }

    /// Every id below this was delivered or given up: what to persist.
    pub fn next(&self) -> i64 {
        self.next
    }

    /// Read new events with ids above this.
    pub fn high(&self) -> i64 {
        self.seen.last().copied().unwrap_or(self.next - 1).max(self.next - 1)
    }

    /// Ids to ask for again: holes that may still commit.
    pub fn gaps(&self) -> Vec<i64> {
        self.gaps.keys().copied().collect()
    }

    /// Takes the ids of events just read (new ones above [`Cursor::high`],
    /// or holes that appeared) at time `now`; returns those to deliver, in
    /// ascending order, each exactly once.
    pub fn absorb(&mut self, ids: &[i64], now: i64) -> Vec<i64> {
        let mut fresh: Vec<i64> =
            ids.iter().copied().filter(|id| *id >= self.next && !self.seen.contains(id)).collect();
        fresh.sort_unstable();
        fresh.dedup();
        for id in &fresh {
            self.seen.insert(*id);
            self.gaps.remove(id);
        }
        // Only ids near the top can still be in flight; holes further down
        // (rolled back long ago, or pruned) are not waited for.
        let high = self.high();
        let floor = self.next.max(high - MAX_GAPS as i64);
        let mut expected = floor;
        for id in self.seen.iter().copied().filter(|id| *id >= floor) {
            for missing in expected..id {
                self.gaps.entry(missing).or_insert(now);
            }
            expected = id + 1;
        }
        fresh
    }

    /// Gives up holes noticed `patience` seconds ago or earlier and moves
    /// `next` past everything delivered or given up.
    pub fn settle(&mut self, now: i64, patience: i64) {
        self.gaps.retain(|_, noticed| now - *noticed < patience);
        loop {
            if self.seen.remove(&self.next) {
                self.next += 1;
                continue;
            }
            // Not delivered: waited for (stop here), or given up (jump to
            // whichever comes first, the next hole or the next delivered id).
            let next_gap = self.gaps.keys().next().copied();
            let next_seen = self.seen.first().copied();
            match (next_gap, next_seen) {
                (Some(g), _) if g == self.next => break,
                (Some(g), Some(s)) => self.next = g.min(s),
                (None, Some(s)) => self.next = s,
                (Some(g), None) => self.next = g,
                (None, None) => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn kinds_round_trip_and_match_serde() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.name()), Some(kind));
            assert_eq!(serde_json::to_value(kind).expect("json"), serde_json::json!(kind.name()));
        }
        let e = Event::BuildFinished { build_id: 3, builder_id: 2, number: 7, results: Results::Failure };
        let json = serde_json::to_value(&e).expect("json");
        assert_eq!(json["kind"], "build_finished");
        assert_eq!(json["results"], 2);
        assert_eq!(serde_json::from_value::<Event>(json).expect("back"), e);
        assert_eq!(e.kind(), EventKind::BuildFinished);
        assert_eq!(e.build(), Some(BuildRef { build_id: 3, builder_id: 2, number: 7 }));
        assert!(!EventKind::LogLines.is_durable() && EventKind::WorkerLost.is_durable());
    }

    #[test]
    fn a_late_commit_below_the_highest_id_is_still_delivered() {
        let mut c = Cursor::starting_at(1);
        assert_eq!(c.absorb(&[1, 2, 4], 100), vec![1, 2, 4]);
        assert_eq!(c.gaps(), vec![3]);
        c.settle(101, 30);
        assert_eq!(c.next(), 3, "waits for 3");
        assert_eq!(c.high(), 4);
        assert_eq!(c.absorb(&[3], 102), vec![3]);
        c.settle(102, 30);
        assert_eq!((c.next(), c.gaps()), (5, vec![]));
        // A hole that never fills is given up after the patience.
        assert_eq!(c.absorb(&[7], 200), vec![7]);
        c.settle(210, 30);
        assert_eq!(c.next(), 5);
        c.settle(231, 30);
        assert_eq!((c.next(), c.gaps()), (8, vec![]));
        assert_eq!(c.absorb(&[7, 6], 232), Vec::<i64>::new(), "too late, and nothing twice");
    }

    #[test]
    fn a_reader_far_behind_waits_only_for_recent_holes() {
        // Saved at 1; ids below a million were pruned meanwhile.
        let mut c = Cursor::starting_at(1);
        let ids: Vec<i64> = (1_000_000..1_000_010).filter(|i| *i != 1_000_005).collect();
        assert_eq!(c.absorb(&ids, 0).len(), 9);
        let gaps = c.gaps();
        assert!(gaps.len() <= MAX_GAPS && gaps.contains(&1_000_005), "only ids near the top are waited for");
        assert_eq!(gaps.first(), Some(&(1_000_009 - MAX_GAPS as i64)));
        c.settle(0, 30);
        assert_eq!(c.next(), 1_000_009 - MAX_GAPS as i64, "the first id of the window is waited for");
        c.settle(31, 30);
        assert_eq!(c.next(), 1_000_010, "and given up after the patience, in one jump");
    }

    proptest! {
        /// However commits interleave, every id that becomes visible within
        /// the patience is delivered exactly once, and `next` never passes
        /// an id that is still awaited.
        #[test]
        fn every_visible_id_is_delivered_once(delays in proptest::collection::vec(0i64..20, 1..60), step in 1i64..5) {
            let patience = 30;
            // Id i (from 1) becomes visible at time i + delay.
            let visible_at: Vec<(i64, i64)> =
                delays.iter().enumerate().map(|(i, d)| (i as i64 + 1, i as i64 + 1 + d)).collect();
            let end = visible_at.iter().map(|(_, t)| *t).max().unwrap_or(0) + patience + 5;
            let mut c = Cursor::starting_at(1);
            let mut delivered = Vec::new();
            let mut now = 0;
            while now <= end {
                let high = c.high();
                let gaps = c.gaps();
                let batch: Vec<i64> = visible_at
                    .iter()
                    .filter(|(id, t)| *t <= now && (*id > high || gaps.contains(id)))
                    .map(|(id, _)| *id)
                    .collect();
                delivered.extend(c.absorb(&batch, now));
                c.settle(now, patience);
                for (id, t) in &visible_at {
                    if *t > now {
                        prop_assert!(c.next() <= *id || now - t >= patience);
                    }
                }
                now += step;
            }
            let mut sorted = delivered.clone();
            sorted.sort_unstable();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), delivered.len(), "no id twice");
            prop_assert_eq!(sorted, (1..=delays.len() as i64).collect::<Vec<_>>(), "every id once");
            prop_assert_eq!(c.next(), delays.len() as i64 + 1);
        }
    }
}

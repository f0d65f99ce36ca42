//! The event stream below the pages.
//!
//! Runner, workers and schedulers publish by changing the store: each
//! state-changing store call records its [`Event`] in the same transaction.
//! Here those events reach their consumers:
//!
//! - [`pump`] tails the store's event log (woken by this process's commits,
//!   and polling for other masters' and tools') and broadcasts each event on
//!   the [`Bus`], in the log's order, to live subscribers: pages, `/events`.
//!   A live subscriber that lags is told so and re-reads what it shows.
//! - A consumer that must not miss an event (a notifier, after a restart)
//!   uses an [`EventReader`]: its own cursor over the store's log, saved
//!   under its name, delivering at least once.
//! - Log lines, whose text is in the log already, are only broadcast
//!   ([`Bus::publish_lines`]).

use std::sync::Arc;
use std::time::Duration;

use cascade_model::event::Cursor;
use cascade_model::{Envelope, Event};
use cascade_store::{EventRows, Store, StoreError};
use tokio::sync::{broadcast, watch};

/// How long a hole in the event ids is waited for before it is given up:
/// far longer than any of the store's transactions.
pub const PATIENCE_SECS: i64 = 60;
/// How often the log is read without a nudge (other processes' events).
pub const POLL: Duration = Duration::from_secs(1);
/// Most events read at once.
const BATCH: i64 = 500;

/// In-process delivery of events to live subscribers.
#[derive(Clone)]
pub struct Bus {
    events: broadcast::Sender<Arc<Envelope>>,
    lines: broadcast::Sender<Arc<Envelope>>,
    closed: Arc<watch::Sender<bool>>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus::new()
    }
}

impl Bus {
    /// A bus with room for a burst of events per subscriber.
    pub fn new() -> Bus {
        Bus {
            events: broadcast::channel(1024).0,
            lines: broadcast::channel(4096).0,
            closed: Arc::new(watch::Sender::new(false)),
        }
    }

    /// Durable events, from every master sharing the store, in log order.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.events.subscribe()
    }

    /// [`Event::LogLines`] of this master's running steps.
    pub fn subscribe_lines(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.lines.subscribe()
    }

    /// Announces lines just stored in a log. No subscriber is not an error.
    pub fn publish_lines(&self, log_id: i64, first_line: i64, lines: Vec<String>, at: i64) {
        let event = Event::LogLines { log_id, first_line, lines };
        let _ = self.lines.send(Arc::new(Envelope { id: None, at, event }));
    }

    fn deliver(&self, envelope: Envelope) {
        let _ = self.events.send(Arc::new(envelope));
    }

    /// Flips when the master stops: long-lived subscribers (server-sent
    /// event streams) end then, so the HTTP server can stop.
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// Tells long-lived subscribers the master is stopping.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }
}

/// A reader of the store's event log with its own [`Cursor`].
pub struct EventReader {
    store: Store,
    cursor: Cursor,
    /// Saved under this name, for a durable consumer.
    consumer: Option<String>,
    signal: watch::Receiver<u64>,
    /// Holes are waited for by this clock (not the master's, which tests
    /// may stop): seconds since the reader began.
    started: std::time::Instant,
}

impl EventReader {
    /// A reader of the events with ids from `next` on.
    pub fn starting_at(store: &Store, next: i64) -> EventReader {
        EventReader::at(store, Cursor::starting_at(next), None)
    }

    /// A reader of the events recorded from now on.
    pub async fn from_now(store: &Store) -> Result<EventReader, StoreError> {
        Ok(EventReader::starting_at(store, store.last_event_id().await? + 1))
    }

    /// The reader of a durable consumer: it goes on from where it was last
    /// [saved](EventReader::save); the first time, from now. Events pruned
    /// while it was away are gone (the log says how many).
    pub async fn durable(store: &Store, consumer: &str) -> Result<EventReader, StoreError> {
        let now = store.last_event_id().await? + 1;
        EventReader::durable_from(store, consumer, now).await
    }

    /// As [`durable`](EventReader::durable), but the first time from event `first` on.
    pub async fn durable_from(store: &Store, consumer: &str, first: i64) -> Result<EventReader, StoreError> {
        let next = match store.event_cursor(consumer).await? {
            None => first,
            Some(next) => match store.first_event_id().await? {
                Some(first) if first > next => {
                    tracing::warn!(
                        consumer,
                        missed = first - next,
                        "events were pruned before this consumer read them"
                    );
                    first
                }
                _ => next,
            },
        };
        Ok(EventReader::at(store, Cursor::starting_at(next), Some(consumer.to_string())))
    }

    fn at(store: &Store, cursor: Cursor, consumer: Option<String>) -> EventReader {
        let started = std::time::Instant::now();
        EventReader { store: store.clone(), cursor, consumer, signal: store.event_signal(), started }
    }

    /// Reads what is new (and holes that have filled); each event is
    /// returned once, in id order.
    pub async fn poll(&mut self) -> Result<Vec<Envelope>, StoreError> {
        self.signal.borrow_and_update();
        let now = i64::try_from(self.started.elapsed().as_secs()).unwrap_or(i64::MAX);
        let gaps = self.cursor.gaps();
        let mut rows = if gaps.is_empty() { EventRows::default() } else { self.store.events_with_ids(&gaps).await? };
        let fresh = self.store.events_after(self.cursor.high(), BATCH).await?;
        rows.ids.extend(fresh.ids);
        rows.events.extend(fresh.events);
        let deliver = self.cursor.absorb(&rows.ids, now);
        self.cursor.settle(now, PATIENCE_SECS);
        let mut events: Vec<Envelope> =
            rows.events.into_iter().filter(|e| e.id.is_some_and(|id| deliver.binary_search(&id).is_ok())).collect();
        events.sort_by_key(|e| e.id);
        Ok(events)
    }

    /// Waits until this process commits events or `POLL` passes.
    pub async fn wait(&mut self) {
        let _ = tokio::time::timeout(POLL, self.signal.changed()).await;
    }

    /// Saves where a durable consumer stands: what it has handled will not
    /// be delivered again after a restart.
    pub async fn save(&self, now: i64) -> Result<(), StoreError> {
        match &self.consumer {
            Some(name) => self.store.save_event_cursor(name, self.cursor.next(), now).await,
            None => Ok(()),
        }
    }
}

/// Broadcasts the store's events from id `from` on, on `bus`, until
/// `stopped` flips.
pub async fn pump(store: Store, bus: Bus, from: i64, mut stopped: watch::Receiver<bool>) {
    let mut reader = EventReader::starting_at(&store, from);
    while !*stopped.borrow() {
        match reader.poll().await {
            Ok(events) if !events.is_empty() => {
                events.into_iter().for_each(|e| bus.deliver(e));
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reading the event log failed; retrying"),
        }
        tokio::select! {
            () = reader.wait() => {}
            _ = stopped.changed() => {}
        }
    }
}

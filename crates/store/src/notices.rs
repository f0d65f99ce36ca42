//! Messages between the masters sharing a database, with no broker beside
//! it: PostgreSQL's `LISTEN`/`NOTIFY`. Every master hears every notice
//! (its own too); a notice is not stored, so what must not be lost is in a
//! table and a notice only says "look now". On SQLite (one master) notices
//! stay in this process.
//!
//! Two channels: `cascade_events` (events were committed: read the event
//! log now rather than at the next poll) and `cascade_control` (a request
//! from one master to another, and its answer).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use crate::Result;
use crate::infra::{Backend, Store};

/// Where a notice goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Events were committed.
    Events,
    /// A request between masters, or its answer.
    Control,
}

impl Channel {
    /// PostgreSQL's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Events => "cascade_events",
            Channel::Control => "cascade_control",
        }
    }

    fn parse(name: &str) -> Option<Channel> {
        [Channel::Events, Channel::Control].into_iter().find(|c| c.name() == name)
    }
}

/// One notice as heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Its channel.
    pub channel: Channel,
    /// What it says (at most 8,000 bytes, PostgreSQL's limit).
    pub payload: String,
}

/// The largest payload PostgreSQL carries.
pub const PAYLOAD_MAX: usize = 7_999;

/// Notices heard, and the task that hears them (started by the first
/// [`Store::notices`]).
#[derive(Debug)]
pub(crate) struct Notices {
    heard: broadcast::Sender<Notice>,
    started: std::sync::Once,
    /// Events committed here since the last `cascade_events` notice.
    unannounced: AtomicBool,
    /// Dropped with the last clone of the store: the listener ends.
    alive: watch::Sender<()>,
}

impl Notices {
    pub(crate) fn new() -> Notices {
        Notices {
            heard: broadcast::channel(1024).0,
            started: std::sync::Once::new(),
            unannounced: AtomicBool::new(false),
            alive: watch::channel(()).0,
        }
    }

    pub(crate) fn events_committed(&self) {
        self.unannounced.store(true, Ordering::SeqCst);
    }
}

impl Store {
    /// Sends a notice to every master sharing the database (this one too).
    pub async fn notify(&self, channel: Channel, payload: &str) -> Result<()> {
        if payload.len() > PAYLOAD_MAX {
            return Err(crate::StoreError::BadQuery(format!("a notice of {} bytes is too long", payload.len())));
        }
        match self.backend() {
            Backend::Postgres => pg_notify(&self.pool, channel, payload).await,
            Backend::Sqlite => {
                let _ = self.notices.heard.send(Notice { channel, payload: payload.to_string() });
                Ok(())
            }
        }
    }

    /// The notices heard from now on. The first call starts listening (on
    /// PostgreSQL, one connection of its own) and announcing this
    /// process's event commits to the other masters.
    pub fn notices(&self) -> broadcast::Receiver<Notice> {
        let receiver = self.notices.heard.subscribe();
        self.notices.started.call_once(|| {
            if self.backend() == Backend::Postgres
                && let Some(url) = self.url.clone()
            {
                let alive = self.notices.alive.subscribe();
                tokio::spawn(listen(url, self.notices.heard.clone(), self.signal.clone(), alive.clone()));
                let weak = Arc::downgrade(&self.notices);
                tokio::spawn(announce(self.pool.clone(), weak, self.signal.subscribe(), alive));
            }
        });
        receiver
    }

    /// Ends the listening (the store is closing).
    pub(crate) fn stop_listening(&self) {
        self.notices.alive.send_replace(());
    }
}

async fn pg_notify(pool: &sqlx::AnyPool, channel: Channel, payload: &str) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(channel.name()).bind(payload.to_string()).execute(pool).await?;
    Ok(())
}

/// Hears both channels until the store closes; a notice of events wakes
/// this process's event readers. A lost connection is made again (notices
/// sent meanwhile are missed; event readers still poll).
async fn listen(
    url: Arc<String>,
    heard: broadcast::Sender<Notice>,
    signal: Arc<watch::Sender<u64>>,
    mut alive: watch::Receiver<()>,
) {
    let mut pause = Duration::from_secs(1);
    loop {
        tokio::select! {
            Err((e, listened)) = hear(&url, &heard, &signal) => {
                if listened {
                    pause = Duration::from_secs(1);
                }
                // Once per outage, then quietly, backing off to half a minute.
                if pause == Duration::from_secs(1) {
                    tracing::warn!(error = %e, "listening for other masters' notices failed; trying again");
                }
            }
            _ = alive.changed() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = alive.changed() => return,
        }
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

/// One listening connection, until it fails; says whether it listened.
async fn hear(
    url: &str,
    heard: &broadcast::Sender<Notice>,
    signal: &watch::Sender<u64>,
) -> std::result::Result<std::convert::Infallible, (sqlx::Error, bool)> {
    let mut listener = sqlx::postgres::PgListener::connect(url).await.map_err(|e| (e, false))?;
    listener.listen_all([Channel::Events.name(), Channel::Control.name()]).await.map_err(|e| (e, false))?;
    // Events committed while nobody listened: readers look now.
    signal.send_modify(|v| *v = v.wrapping_add(1));
    loop {
        let n = listener.recv().await.map_err(|e| (e, true))?;
        let Some(channel) = Channel::parse(n.channel()) else { continue };
        if channel == Channel::Events {
            signal.send_modify(|v| *v = v.wrapping_add(1));
        }
        let _ = heard.send(Notice { channel, payload: n.payload().to_string() });
    }
}

/// Tells the other masters when this one committed events: one notice per
/// burst (the watch merges bumps), none for what other masters announced.
async fn announce(
    pool: sqlx::AnyPool,
    notices: std::sync::Weak<Notices>,
    mut signal: watch::Receiver<u64>,
    mut alive: watch::Receiver<()>,
) {
    loop {
        tokio::select! {
            changed = signal.changed() => if changed.is_err() { return },
            _ = alive.changed() => return,
        }
        let Some(notices) = notices.upgrade() else { return };
        if notices.unannounced.swap(false, Ordering::SeqCst)
            && let Err(e) = pg_notify(&pool, Channel::Events, "").await
        {
            tracing::debug!(error = %e, "could not announce events");
        }
    }
}

//! Workers as the rest of the master sees them: a protocol-neutral
//! connection that runs commands, and the registry of who is connected.
//! `msgpack` serves `msgpack_experimental_v7` and `pb` Twisted's
//! Perspective Broker; both sit behind the same [`WorkerConnection`] trait,
//! so nothing past this module can tell them apart.

pub mod auth;
pub mod msgpack;
pub mod pb;

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use cascade_model::net::client_key;
pub use cascade_protocol::UploadOp;
use cascade_protocol::{UpdateEntry, WorkerInfo};
use cascade_store::Store;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::limiter::Limiter;

/// What the worker listeners need: who may connect, what to record, whom
/// to tell.
pub struct Hub {
    /// Where connections and worker info are recorded.
    pub store: Store,
    /// Workers' ids and the builders each serves.
    pub catalog: Arc<Catalog>,
    /// What time it is.
    pub clock: Clock,
    /// Who is connected.
    pub registry: Arc<Registry>,
    /// How passwords are checked.
    pub credentials: auth::Credentials,
    /// How dead connections are found.
    pub liveness: Liveness,
    /// Nudged when a worker attaches: the distributor may have work for it.
    pub nudge: Arc<Notify>,
    /// Bounds the password checks running at once.
    pub gate: Arc<crate::password::Gate>,
    /// Login attempts per address and per worker name.
    pub logins: LoginLimits,
    /// Buildbot's tools on the PB port store changes and try jobs through these.
    pub schedulers: Arc<crate::scheduler::Schedulers>,
    /// Events a `buildbot try --wait` follows.
    pub bus: crate::events::Bus,
    /// Which configuration this hub is of ([`Registry::next_generation`]):
    /// a login decided by a hub a reload replaced is refused, so every
    /// worker attached serves what the current configuration says.
    pub generation: u64,
}

/// Worker login attempts counted per client address and per worker name;
/// a success does not count.
///
/// The per-name count stops guesses spread over many addresses, but it
/// must not let whoever can reach the port lock a worker out: it does not
/// apply from an address the worker has logged in from before (the worker
/// reconnecting after a restart), nor to names no worker has (they cannot
/// succeed, and tracking them would let anyone fill the table).
pub struct LoginLimits {
    /// Per client address (an IPv6 /64 counts as one).
    pub by_address: Limiter<IpAddr>,
    /// Per configured worker name, from addresses it is not known at.
    pub by_name: Limiter<String>,
    /// Where each worker has logged in from lately (a few addresses each).
    known: Mutex<HashMap<String, VecDeque<IpAddr>>>,
}

/// Addresses remembered per worker.
const KNOWN_ADDRESSES: usize = 8;

impl LoginLimits {
    /// From the `[limits]` of the config.
    pub fn new(limits: &cascade_config::LimitsConfig) -> LoginLimits {
        let window = limits.worker_login_window;
        LoginLimits {
            by_address: Limiter::new(limits.worker_login_attempts, window),
            by_name: Limiter::new(limits.worker_login_attempts_per_name, window),
            known: Mutex::new(HashMap::new()),
        }
    }

    fn is_known(&self, name: &str, client: IpAddr) -> bool {
        self.known.lock().get(name).is_some_and(|at| at.contains(&client))
    }

    fn remember(&self, name: &str, client: IpAddr) {
        let mut known = self.known.lock();
        let at = known.entry(name.to_string()).or_default();
        at.retain(|a| *a != client);
        at.push_back(client);
        if at.len() > KNOWN_ADDRESSES {
            at.pop_front();
        }
    }
}

/// Why a worker's login was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Wrong name or password.
    Wrong,
    /// Too many attempts: wait this long.
    TooMany(Duration),
    /// Too many password checks at once: try again shortly.
    Busy,
    /// Something else (PB: a worker with only a hash).
    Other(&'static str),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Wrong => f.write_str("wrong login name or password"),
            Refusal::TooMany(wait) => write!(f, "too many failed logins; try again in {} s", wait.as_secs().max(1)),
            Refusal::Busy => f.write_str("too many password checks at once; try again shortly"),
            Refusal::Other(why) => f.write_str(why),
        }
    }
}

/// Liveness: a ping this often; a peer silent for `dead_after` is dropped.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// How often a quiet worker is pinged.
    pub ping_every: Duration,
    /// A worker silent this long is taken for dead.
    pub dead_after: Duration,
}

impl Hub {
    /// Counts a login attempt of `name` from `ip`, if it may still try;
    /// whether it was counted against the name too.
    fn begin_login(&self, name: &str, ip: IpAddr) -> Result<bool, Refusal> {
        let (now, client) = (std::time::Instant::now(), client_key(ip));
        self.logins.by_address.begin(&client, now).map_err(Refusal::TooMany)?;
        let by_name = self.catalog.worker(name).is_some() && !self.logins.is_known(name, client);
        if by_name && let Err(wait) = self.logins.by_name.begin(&name.to_string(), now) {
            self.logins.by_address.succeeded(&client);
            return Err(Refusal::TooMany(wait));
        }
        Ok(by_name)
    }

    fn login_succeeded(&self, name: &str, ip: IpAddr, by_name: bool) {
        let client = client_key(ip);
        self.logins.by_address.succeeded(&client);
        if by_name {
            self.logins.by_name.succeeded(&name.to_string());
        }
        self.logins.remember(name, client);
    }

    /// A msgpack login (`Authorization: Basic`) from `ip`; returns the name.
    pub async fn log_in_basic(&self, header: Option<&str>, ip: std::net::IpAddr) -> Result<String, Refusal> {
        let (name, password) = auth::parse_basic(header).map_err(Refusal::Other)?;
        let by_name = self.begin_login(&name, ip)?;
        match self.credentials.check(&self.gate, &name, &password).await {
            Ok(true) => {
                self.login_succeeded(&name, ip, by_name);
                Ok(name)
            }
            Ok(false) => Err(Refusal::Wrong),
            Err(crate::password::Busy) => Err(Refusal::Busy),
        }
    }

    /// A PB login: the response to the challenge, from `ip`.
    pub fn log_in_pb(
        &self,
        name: &str,
        challenge: &[u8],
        response: &[u8],
        ip: std::net::IpAddr,
    ) -> Result<(), Refusal> {
        let by_name = self.begin_login(name, ip)?;
        match self.credentials.check_pb(name, challenge, response) {
            Ok(()) => {
                self.login_succeeded(name, ip, by_name);
                Ok(())
            }
            Err("wrong login name or password") => Err(Refusal::Wrong),
            Err(other) => Err(Refusal::Other(other)),
        }
    }

    /// How many builds a worker may run at once.
    pub fn max_builds(&self, worker: &str) -> usize {
        self.catalog.worker(worker).map_or(1, |w| w.max_builds as usize)
    }

    /// Registers a logged-in worker and records it, or says why not. A
    /// worker paused before it reconnected stays paused.
    pub async fn attach(&self, handle: &Arc<WorkerHandle>) -> Result<(), String> {
        let stale = "the configuration was reloaded during the login: log in again";
        if self.registry.generation() != self.generation {
            return Err(stale.into());
        }
        apply_stored_flags(&self.store, handle).await;
        self.registry.attach(handle.clone()).await?;
        // A reload that began meanwhile may not have seen this worker.
        if self.registry.generation() != self.generation {
            self.registry.detach(handle);
            return Err(stale.into());
        }
        let (id, master) = (handle.worker_id, self.catalog.master_id);
        if let Err(e) = self.store.worker_attached(id, master, &handle.info.json, self.clock.now()).await {
            self.registry.detach(handle);
            return Err(format!("recording the worker: {e}"));
        }
        self.nudge.notify_one();
        Ok(())
    }

    /// Forgets a connection that ended: the store first, so once the
    /// registry forgets the worker the store already says it is gone
    /// (unless a newer connection took its place).
    pub async fn detach(&self, handle: &Arc<WorkerHandle>) {
        if self.registry.get(&handle.name).is_some_and(|cur| Arc::ptr_eq(&cur, handle))
            && let Err(e) = self.store.worker_detached(handle.worker_id, self.catalog.master_id, self.clock.now()).await
        {
            tracing::warn!(worker = %handle.name, error = %e, "could not record the detach");
        }
        self.registry.detach(handle);
        tracing::info!(worker = %handle.name, "worker detached");
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkerError {
    #[error("the worker is gone")]
    Gone,
    #[error("the worker did not answer in time")]
    Timeout,
    #[error("the worker refused: {0}")]
    Refused(String),
}

/// What a running command reports.
#[derive(Debug)]
pub enum CommandEvent {
    Output(Vec<UpdateEntry>),
    /// Part of an upload; the worker waits for the answer before it goes on.
    Upload(UploadOp, tokio::sync::oneshot::Sender<Result<(), String>>),
    /// The worker asks for the next `length` bytes of a download (empty: the end).
    Read(usize, tokio::sync::oneshot::Sender<Result<Vec<u8>, String>>),
    /// The worker is done reading.
    ReadClose(tokio::sync::oneshot::Sender<Result<(), String>>),
    /// The last event: `error` is set when the worker-side command raised.
    Complete {
        error: Option<String>,
    },
    /// The connection died while the command ran.
    Lost,
}

/// A connected worker, whatever its protocol.
pub trait WorkerConnection: Send + Sync + 'static {
    /// Starts a command; its events arrive on the returned channel, which
    /// is registered before the command is sent (a fast command's output can
    /// overtake the worker's acknowledgement).
    /// `builder` names the builder whose build runs it: PB runs one command
    /// per builder at a time on a worker.
    fn start_command<'a>(
        &'a self,
        builder: &'a str,
        command_id: &'a str,
        command_name: &'a str,
        args: serde_json::Value,
    ) -> BoxFuture<'a, Result<mpsc::Receiver<CommandEvent>, WorkerError>>;
    fn interrupt<'a>(&'a self, command_id: &'a str, why: &'a str) -> BoxFuture<'a, Result<(), WorkerError>>;
    /// A cheap round trip, to tell a live connection from a dead one.
    fn ping(&self) -> BoxFuture<'_, Result<(), WorkerError>>;
    fn shutdown(&self) -> BoxFuture<'_, Result<(), WorkerError>>;
    /// Tells the worker which builders it serves now (after a reload), as
    /// Buildbot's `setBuilderList`; a protocol without such a list needs nothing.
    fn set_builders<'a>(&'a self, builders: &'a [String]) -> BoxFuture<'a, Result<(), WorkerError>> {
        let _ = builders;
        Box::pin(async { Ok(()) })
    }
    /// The protocol it speaks: `msgpack` or `pb`.
    fn protocol(&self) -> &'static str;
    /// Drops the connection (the worker will reconnect).
    fn close(&self);
    fn is_closed(&self) -> bool;
}

pub struct WorkerHandle {
    pub name: String,
    pub worker_id: i64,
    pub info: WorkerInfo,
    /// Builds at once (a reload may change it).
    pub max_builds: AtomicUsize,
    pub running: AtomicUsize,
    /// Builders with a build on this worker now: one at a time each, as in
    /// Buildbot (they share a folder, and PB one command slot).
    pub busy_builders: Mutex<HashSet<String>>,
    /// No new builds: the worker shuts down once idle.
    pub draining: AtomicBool,
    /// No new builds until unpaused (an admin's decision; kept in the store).
    pub paused: AtomicBool,
    pub conn: Arc<dyn WorkerConnection>,
}

impl WorkerHandle {
    pub fn new(
        name: &str,
        worker_id: i64,
        info: WorkerInfo,
        max_builds: usize,
        conn: Arc<dyn WorkerConnection>,
    ) -> Self {
        WorkerHandle {
            name: name.to_string(),
            worker_id,
            info,
            max_builds: AtomicUsize::new(max_builds),
            running: AtomicUsize::new(0),
            busy_builders: Mutex::new(HashSet::new()),
            draining: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            conn,
        }
    }

    /// Takes a build slot for `builder`, if the worker has one free and is
    /// not already building that builder.
    pub fn reserve(&self, builder: &str) -> bool {
        if self.draining.load(Ordering::SeqCst) || self.paused.load(Ordering::SeqCst) || self.conn.is_closed() {
            return false;
        }
        let mut busy = self.busy_builders.lock();
        if busy.contains(builder) || self.running.load(Ordering::SeqCst) >= self.max_builds.load(Ordering::SeqCst) {
            return false;
        }
        busy.insert(builder.to_string());
        self.running.fetch_add(1, Ordering::SeqCst);
        true
    }

    pub fn release(&self, builder: &str) {
        self.busy_builders.lock().remove(builder);
        self.running.fetch_sub(1, Ordering::SeqCst);
    }

    /// Joins path parts the way the worker's OS does.
    pub fn join(&self, parts: &[&str]) -> String {
        let sep = if self.info.system.as_deref() == Some("nt") { "\\" } else { "/" };
        let mut out = String::new();
        for (i, p) in parts.iter().filter(|p| !p.is_empty()).enumerate() {
            if i > 0 && !out.ends_with(sep) {
                out.push_str(sep);
            }
            out.push_str(p);
        }
        out
    }
}

/// Who is connected to this master.
#[derive(Default)]
pub struct Registry {
    workers: Mutex<HashMap<String, Arc<WorkerHandle>>>,
    /// Names with a login being decided: a second login of the same name
    /// meanwhile is refused rather than racing the first.
    attaching: Mutex<HashSet<String>>,
    next_command: AtomicU64,
    /// The configuration now served (bumped by each reload).
    generation: AtomicU64,
    /// Notified when a worker attaches, detaches or frees a slot.
    pub changed: Notify,
}

impl Registry {
    /// A command id never used before by this master: a reconnecting worker
    /// must never see an old id again.
    pub fn command_id(&self) -> String {
        self.next_command.fetch_add(1, Ordering::Relaxed).to_string()
    }

    /// The configuration generation now served.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// A new configuration is being made: its generation.
    pub fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    pub fn get(&self, name: &str) -> Option<Arc<WorkerHandle>> {
        self.workers.lock().get(name).cloned()
    }

    pub fn connected(&self) -> Vec<Arc<WorkerHandle>> {
        self.workers.lock().values().cloned().collect()
    }

    /// Registers a new connection. A worker already connected under that
    /// name keeps its place if it still answers (the newcomer is refused,
    /// as Buildbot does); a dead one is replaced.
    pub async fn attach(&self, handle: Arc<WorkerHandle>) -> Result<(), String> {
        if !self.attaching.lock().insert(handle.name.clone()) {
            return Err(format!("another login of worker {} is being decided", handle.name));
        }
        let decided = self.attach_reserved(handle.clone()).await;
        self.attaching.lock().remove(&handle.name);
        decided
    }

    /// [`Registry::attach`], with the name reserved for this login.
    async fn attach_reserved(&self, handle: Arc<WorkerHandle>) -> Result<(), String> {
        if let Some(old) = self.get(&handle.name) {
            let alive = !old.conn.is_closed()
                && tokio::time::timeout(std::time::Duration::from_secs(10), old.conn.ping())
                    .await
                    .is_ok_and(|r| r.is_ok());
            if alive {
                return Err(format!("worker {} is already connected and answering", handle.name));
            }
            tracing::warn!(worker = %handle.name, "replacing a dead connection");
            old.conn.close();
        }
        self.workers.lock().insert(handle.name.clone(), handle);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Drops every connection (the master is stopping); their builds end
    /// as RETRY.
    pub fn close_all(&self) {
        for handle in self.connected() {
            handle.conn.close();
        }
    }

    /// Forgets a connection, unless a newer one already took its place.
    pub fn detach(&self, handle: &Arc<WorkerHandle>) {
        let mut workers = self.workers.lock();
        if workers.get(&handle.name).is_some_and(|cur| Arc::ptr_eq(cur, handle)) {
            workers.remove(&handle.name);
        }
        drop(workers);
        self.changed.notify_waiters();
    }
}

impl Registry {
    /// Stop giving the worker builds; once the running ones end, tell it to
    /// shut down (the worker asked, e.g. on SIGHUP, or an admin did).
    pub fn drain_then_shut_down(self: &Arc<Self>, handle: Arc<WorkerHandle>) {
        if handle.draining.swap(true, Ordering::SeqCst) {
            return;
        }
        tracing::info!(worker = %handle.name, "the worker will shut down once idle");
        let registry = self.clone();
        tokio::spawn(async move {
            while handle.running.load(Ordering::SeqCst) > 0 && !handle.conn.is_closed() {
                let changed = registry.changed.notified();
                if handle.running.load(Ordering::SeqCst) == 0 {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_secs(5), changed).await;
            }
            if !handle.conn.is_closed() {
                tracing::info!(worker = %handle.name, "worker idle: shutting it down");
                if let Err(e) = handle.conn.shutdown().await {
                    tracing::debug!(worker = %handle.name, error = %e, "shutdown call");
                }
            }
        });
    }
}

impl Registry {
    /// No new builds for this worker; once its running ones end, its
    /// connection is closed (it is no longer configured).
    pub fn let_go_when_idle(self: &Arc<Self>, handle: Arc<WorkerHandle>) {
        handle.draining.store(true, Ordering::SeqCst);
        let registry = self.clone();
        tokio::spawn(async move {
            loop {
                let changed = registry.changed.notified();
                if handle.running.load(Ordering::SeqCst) == 0 || handle.conn.is_closed() {
                    break;
                }
                changed.await;
            }
            handle.conn.close();
        });
    }
}

/// A worker paused before it reconnected stays paused. A shutdown asked
/// for earlier has happened (this is a new connection): its flag is cleared.
async fn apply_stored_flags(store: &Store, handle: &Arc<WorkerHandle>) {
    match store.get_worker(handle.worker_id).await {
        Ok(Some(record)) => {
            handle.paused.store(record.paused, Ordering::SeqCst);
            if record.graceful
                && let Err(e) = store.set_worker_graceful(handle.worker_id, false).await
            {
                tracing::warn!(worker = %handle.name, error = %e, "could not clear the shutdown flag");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(worker = %handle.name, error = %e, "could not read the worker's flags"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection whose ping takes `ping` to answer (success).
    struct Slow {
        ping: Duration,
        closed: AtomicBool,
    }

    impl WorkerConnection for Slow {
        fn start_command<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: &'a str,
            _: serde_json::Value,
        ) -> BoxFuture<'a, Result<mpsc::Receiver<CommandEvent>, WorkerError>> {
            Box::pin(async { Err(WorkerError::Gone) })
        }
        fn interrupt<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Result<(), WorkerError>> {
            Box::pin(async { Ok(()) })
        }
        fn ping(&self) -> BoxFuture<'_, Result<(), WorkerError>> {
            Box::pin(async move {
                tokio::time::sleep(self.ping).await;
                Ok(())
            })
        }
        fn shutdown(&self) -> BoxFuture<'_, Result<(), WorkerError>> {
            Box::pin(async { Ok(()) })
        }
        fn protocol(&self) -> &'static str {
            "msgpack"
        }
        fn close(&self) {
            self.closed.store(true, Ordering::SeqCst);
        }
        fn is_closed(&self) -> bool {
            self.closed.load(Ordering::SeqCst)
        }
    }

    fn handle(ping: Duration) -> Arc<WorkerHandle> {
        let conn = Arc::new(Slow { ping, closed: AtomicBool::new(false) });
        Arc::new(WorkerHandle::new("w1", 1, WorkerInfo::default(), 1, conn))
    }

    #[tokio::test(start_paused = true)]
    async fn two_logins_of_one_name_at_once_never_both_win() {
        let registry = Registry::default();
        let first = handle(Duration::from_secs(3));
        registry.attach(first.clone()).await.expect("the first login");
        // Two newcomers while the first connection's ping is under way.
        let (a, b) = (handle(Duration::ZERO), handle(Duration::ZERO));
        let (ra, rb) = tokio::join!(registry.attach(a.clone()), registry.attach(b.clone()));
        assert!(ra.is_err() && rb.is_err(), "the live first connection keeps its place: {ra:?} {rb:?}");
        assert!(rb.as_ref().is_err_and(|e| e.contains("being decided")), "{rb:?}");
        assert!(registry.get("w1").is_some_and(|cur| Arc::ptr_eq(&cur, &first)));
        assert!(!first.conn.is_closed());

        // Once the first is dead, exactly one of two racing logins replaces it.
        first.conn.close();
        let (c, d) = (handle(Duration::ZERO), handle(Duration::ZERO));
        let (rc, rd) = tokio::join!(registry.attach(c.clone()), registry.attach(d.clone()));
        assert!(rc.is_ok() != rd.is_ok(), "{rc:?} {rd:?}");
        let winner = if rc.is_ok() { &c } else { &d };
        assert!(registry.get("w1").is_some_and(|cur| Arc::ptr_eq(&cur, winner)));
    }
}

//! The one way to run a master: [`serve`] takes a started [`Master`], its
//! [`Listeners`] (bound by the caller: port 0 in tests) and a shutdown
//! future, and runs everything a master does until the future resolves.
//! `cascade serve`, `cascade demo`, the tests and the load tools all come
//! through here, so what runs in production is what the tests run.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use cascade_config::{Config, MasterConfig};
use cascade_store::{Store, StoreError};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

use std::sync::Arc;

use cascade_model::net::AddressRange;

use crate::accept::Caps;
use crate::app::{Master, StartError, router};
use crate::clock::Clock;
use crate::operator::{Operator, Reloaded, Signal};

/// How long stopping waits for connections and builds to wind down.
pub const GRACE: Duration = Duration::from_secs(10);

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not be bound.
    #[error("cannot listen for {what} on {address}: {source}")]
    Bind {
        /// `HTTP`, `PB` or `msgpack`.
        what: &'static str,
        /// The configured address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// Accepting or serving failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// Another master process runs on this SQLite database.
    #[error(
        "{0}: another cascade process serves this SQLite database (SQLite serves one master; run several on PostgreSQL)"
    )]
    SqliteTaken(String),
    /// The artifacts folder cannot be written.
    #[error("cannot write artifacts to {path} ([master] artifacts): {source}")]
    Artifacts {
        /// The folder.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration's secrets could not be read.
    #[error("{0}")]
    Secrets(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The master could not start.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// The three sockets a master listens on.
pub struct Listeners {
    /// Pages, API, webhooks.
    pub http: TcpListener,
    /// Perspective Broker workers.
    pub pb: TcpListener,
    /// msgpack workers.
    pub msgpack: TcpListener,
}

/// Where a master listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// Pages, API, webhooks.
    pub http: SocketAddr,
    /// Perspective Broker workers.
    pub pb: SocketAddr,
    /// msgpack workers.
    pub msgpack: SocketAddr,
}

async fn bind(what: &'static str, address: &str) -> Result<TcpListener, ServeError> {
    TcpListener::bind(address).await.map_err(|source| ServeError::Bind { what, address: address.to_string(), source })
}

impl Listeners {
    /// Binds the configured addresses.
    pub async fn bind(config: &MasterConfig) -> Result<Listeners, ServeError> {
        Ok(Listeners {
            http: bind("HTTP", &config.http).await?,
            pb: bind("PB", &config.pb).await?,
            msgpack: bind("msgpack", &config.msgpack).await?,
        })
    }

    /// Three free ports on loopback (tests, load tools).
    pub async fn loopback() -> Result<Listeners, ServeError> {
        Ok(Listeners {
            http: bind("HTTP", "127.0.0.1:0").await?,
            pb: bind("PB", "127.0.0.1:0").await?,
            msgpack: bind("msgpack", "127.0.0.1:0").await?,
        })
    }

    /// The addresses bound.
    pub fn addresses(&self) -> std::io::Result<Addresses> {
        Ok(Addresses { http: self.http.local_addr()?, pb: self.pb.local_addr()?, msgpack: self.msgpack.local_addr()? })
    }
}

/// Runs the master until it is asked to stop (`shutdown` resolving, or a
/// [`Signal`] through [`Master::operator`]), applying reloads meanwhile.
///
/// A graceful stop first stops starting builds and lets the running ones
/// finish within `[master] stop_grace` (pages, API and webhook still
/// answer); then the listeners close, connected workers are let go (the
/// builds still running end as RETRY and their requests wait again), and
/// the master's row says it stopped.
pub async fn serve(
    master: Master,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addresses = listeners.addresses()?;
    let mut inbox = master.take_inbox().ok_or_else(|| std::io::Error::other("this master is served already"))?;
    tracing::info!(http = %addresses.http, pb = %addresses.pb, msgpack = %addresses.msgpack, "listening");
    let operator = master.operator.clone();
    tokio::spawn(async move {
        shutdown.await;
        operator.tell(Signal::Stop).await;
    });
    let (closing, closed) = watch::channel(false);
    let (routes, current_routes) = watch::channel(router(master.clone()));
    let (hubs, current_hub) = watch::channel(master.hub.clone());
    let mut lasting = listen(&master, listeners, current_routes, current_hub, &closed);
    let mut generation = Generation::start(&master);
    let mut master = master;
    let at_once = loop {
        match inbox.recv().await {
            Some(Signal::Reload(reply)) => {
                let outcome = match reload(&master).await {
                    Ok((next, reloaded)) => {
                        master.metrics.reloads.inc(&["applied"]);
                        generation.stop().await;
                        let _replaced = routes.send_replace(router(next.clone()));
                        hubs.send_replace(next.hub.clone());
                        reconcile_workers(&next).await;
                        generation = Generation::start(&next);
                        master = next;
                        log_reload(&reloaded);
                        Ok(reloaded)
                    }
                    Err(errors) => {
                        master.metrics.reloads.inc(&["refused"]);
                        for error in &errors {
                            tracing::error!(error = %error, "reload refused: the master keeps its configuration");
                        }
                        Err(errors)
                    }
                };
                if let Some(reply) = reply {
                    let _ = reply.send(outcome);
                }
            }
            Some(Signal::Stop) => break false,
            Some(Signal::StopNow) | None => break true,
        }
    };
    // No build starts once the master is stopping.
    generation.stop_distributor().await;
    master.operator.set_stopping();
    if !at_once {
        drain(&master, &mut inbox).await;
    }
    inbox.close();
    while let Ok(signal) = inbox.try_recv() {
        if let Signal::Reload(Some(reply)) = signal {
            let _ = reply.send(Err(vec!["the master is stopping".into()]));
        }
    }
    tracing::info!("shutting down");
    master.bus.close();
    let _ = closing.send(true);
    let _ = generation.stop.send(true);
    wind_down(&master, [&mut generation.tasks, &mut lasting]).await;
    master.store.deactivate_master(master.master_id(), master.clock.now()).await?;
    Ok(())
}

/// Reads the configuration file again and builds the master it describes.
async fn reload(master: &Master) -> Result<(Master, Reloaded), Vec<String>> {
    let path = master.catalog.config.path.clone();
    tracing::info!(config = %path.display(), "reloading the configuration");
    let config = cascade_config::load(&path).map_err(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    master.reconfigured(config).await
}

fn log_reload(reloaded: &Reloaded) {
    tracing::info!(
        builders_added = ?reloaded.builders_added,
        builders_removed = ?reloaded.builders_removed,
        workers_added = ?reloaded.workers_added,
        workers_removed = ?reloaded.workers_removed,
        "configuration reloaded"
    );
    if !reloaded.need_restart.is_empty() {
        tracing::warn!(settings = ?reloaded.need_restart, "these settings take effect at the next start");
    }
}

/// After a reload: each connected worker is told its builders (a builder
/// removed while it builds there stays until that build ends); a worker no
/// longer configured takes no new builds and is let go once idle.
/// Waits (at most [`GRACE`]) for the workers to take their lists, so the
/// new distributor never gives a PB worker a builder it has not set up.
async fn reconcile_workers(master: &Master) {
    let mut told = JoinSet::new();
    for handle in master.workers.connected() {
        let Some(config) = master.catalog.worker(&handle.name) else {
            tracing::warn!(worker = %handle.name, "no longer configured: let go once idle");
            master.workers.let_go_when_idle(handle);
            continue;
        };
        handle.max_builds.store(config.max_builds as usize, std::sync::atomic::Ordering::SeqCst);
        let mut builders: Vec<String> =
            master.catalog.builders_of_worker(&handle.name).map(|b| b.name.clone()).collect();
        for busy in handle.busy_builders.lock().iter() {
            if !builders.contains(busy) {
                builders.push(busy.clone());
            }
        }
        told.spawn(async move {
            let why = match tokio::time::timeout(GRACE, handle.conn.set_builders(&builders)).await {
                Ok(Ok(())) => return,
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer in time".to_string(),
            };
            // It reconnects, and its login sets the builders up afresh.
            tracing::warn!(worker = %handle.name, reason = %why, "the worker did not take its new builders: let go");
            handle.conn.close();
        });
    }
    while told.join_next().await.is_some() {}
}

/// The graceful part of a stop: running builds may finish, until the
/// grace time ends or the operator asks again.
async fn drain(master: &Master, inbox: &mut tokio::sync::mpsc::Receiver<Signal>) {
    let grace = master.catalog.config.master.stop_grace;
    let running = master.runner.running_count();
    if running == 0 || grace.is_zero() {
        return;
    }
    tracing::info!(builds = running, grace = ?grace, "stopping: no new builds; the running ones may finish (asked again, they stop now)");
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let changed = master.workers.changed.notified();
        let running = master.runner.running_count();
        if running == 0 {
            tracing::info!("the running builds finished");
            return;
        }
        tokio::select! {
            () = changed => {}
            () = tokio::time::sleep_until(deadline) => {
                tracing::warn!(builds = running, "the stop's grace time is over: the builds still running end as RETRY");
                return;
            }
            signal = inbox.recv() => match signal {
                Some(Signal::Reload(Some(reply))) => {
                    let _ = reply.send(Err(vec!["the master is stopping".into()]));
                }
                Some(Signal::Reload(None)) => tracing::warn!("the master is stopping: reload ignored"),
                Some(Signal::Stop | Signal::StopNow) | None => {
                    tracing::warn!(builds = running, "asked again: the builds still running end as RETRY");
                    return;
                }
            },
        }
    }
}

/// What a master's configuration runs beside the listeners: replaced as a
/// whole by a reload.
struct Generation {
    stop: watch::Sender<bool>,
    stop_builds: watch::Sender<bool>,
    distributor: Option<tokio::task::JoinHandle<()>>,
    tasks: JoinSet<()>,
}

impl Generation {
    /// The distributor, the schedulers, the reporters, the poller and the janitor.
    fn start(master: &Master) -> Generation {
        let (stop, stopped) = watch::channel(false);
        let (stop_builds, builds_stopped) = watch::channel(false);
        let distributor = Some(tokio::spawn(master.runner.clone().run(builds_stopped)));
        let mut tasks = JoinSet::new();
        tasks.spawn(master.schedulers.clone().run(
            master.store.clone(),
            master.clock.clone(),
            master.runner.wake.clone(),
            master.metrics.clone(),
            stopped.clone(),
        ));
        tasks.spawn(janitor(master).run(stopped.clone()));
        tasks.spawn(master.notifier.clone().run(stopped.clone()));
        tasks.spawn(master.poller.clone().run(stopped));
        Generation { stop, stop_builds, distributor, tasks }
    }

    /// No build starts from here on.
    async fn stop_distributor(&mut self) {
        let _ = self.stop_builds.send(true);
        if let Some(mut distributor) = self.distributor.take()
            && tokio::time::timeout(GRACE, &mut distributor).await.is_err()
        {
            tracing::warn!("the distributor did not stop in time: it is stopped");
            distributor.abort();
        }
    }

    /// Everything stops (a reload replaces it); builds running go on.
    async fn stop(mut self) {
        self.stop_distributor().await;
        let _ = self.stop.send(true);
        if tokio::time::timeout(GRACE, async { while self.tasks.join_next().await.is_some() {} }).await.is_err() {
            tracing::warn!("parts of the replaced configuration still running are stopped");
            self.tasks.abort_all();
        }
    }
}

/// What a master caps on each of its listeners (`[limits]`).
fn caps(master: &Master, what: &'static str) -> Caps {
    let config = &master.catalog.config;
    let trusted = config.master.trusted_proxies.iter().filter_map(|p| AddressRange::parse(p).ok()).collect();
    Caps {
        what,
        connections: config.limits.connections,
        per_address: config.limits.connections_per_address,
        header_timeout: config.limits.header_timeout,
        trusted: Arc::new(trusted),
    }
}

/// A router that answers with whatever configuration is current.
fn current(routes: watch::Receiver<Router>) -> Router {
    Router::new().fallback_service(tower::service_fn(move |request: axum::extract::Request| {
        let router = routes.borrow().clone();
        router.oneshot(request)
    }))
}

/// What outlives a reload: the three listeners (each answering with the
/// current configuration) and the event pump, until `closed`.
fn listen(
    master: &Master,
    listeners: Listeners,
    routes: watch::Receiver<Router>,
    hubs: watch::Receiver<Arc<crate::workers::Hub>>,
    closed: &watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    tasks.spawn(crate::events::pump(master.store.clone(), master.bus.clone(), master.events_from, closed.clone()));
    tasks.spawn(master.relay.clone().run(master.runner.clone(), master.workers.clone(), closed.clone()));
    // Beats on while a reload swaps the rest, so no master takes this one for dead.
    tasks.spawn(heartbeat(master.clone(), closed.clone()));
    tasks.spawn(crate::accept::serve(listeners.http, current(routes), caps(master, "HTTP"), closed.clone(), GRACE));
    tasks.spawn(crate::workers::pb::serve(listeners.pb, hubs.clone(), caps(master, "PB"), closed.clone()));
    let (hub_routes, msgpack_routes) = watch::channel(crate::workers::msgpack::router(hubs.borrow().clone()));
    tasks.spawn(follow_hubs(hubs, hub_routes, closed.clone()));
    tasks.spawn(crate::accept::serve(
        listeners.msgpack,
        current(msgpack_routes),
        caps(master, "msgpack"),
        closed.clone(),
        GRACE,
    ));
    tasks
}

/// Keeps the msgpack listener's router on the current worker hub.
async fn follow_hubs(
    mut hubs: watch::Receiver<Arc<crate::workers::Hub>>,
    routes: watch::Sender<Router>,
    mut closed: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            changed = hubs.changed() => if changed.is_err() { return },
            _ = closed.changed() => return,
        }
        let hub = hubs.borrow_and_update().clone();
        let _replaced = routes.send_replace(crate::workers::msgpack::router(hub));
    }
}

/// Lets workers go, waits for builds to record how they ended, then for the
/// tasks. After [`GRACE`], the builds still running are ended as RETRY
/// here and the tasks still running are stopped.
async fn wind_down(master: &Master, mut tasks: [&mut JoinSet<()>; 2]) {
    master.workers.close_all();
    let idle = async {
        while master.runner.running_count() > 0 || !master.workers.connected().is_empty() {
            let changed = master.workers.changed.notified();
            let _ = tokio::time::timeout(Duration::from_millis(100), changed).await;
        }
        for set in tasks.iter_mut() {
            while set.join_next().await.is_some() {}
        }
    };
    if tokio::time::timeout(GRACE, idle).await.is_ok() {
        return;
    }
    tracing::warn!("parts of the master still running after the grace period are stopped");
    for build_id in master.runner.running_ids() {
        let retried = master.store.retry_build(build_id, "retry: the master stopped", master.clock.now()).await;
        if let Err(e) = retried {
            tracing::error!(build = build_id, error = %e, "could not end a build; the next start retries it");
        }
    }
    for set in tasks {
        set.abort_all();
        while set.join_next().await.is_some() {}
    }
}

/// The heartbeat, so other masters know this one lives, until `stopped`.
async fn heartbeat(master: Master, mut stopped: watch::Receiver<bool>) {
    let config = master.catalog.config.clone();
    let mut beat = tokio::time::interval(config.master.heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = beat.tick() => beat_and_expire(&master, &config).await,
            _ = stopped.changed() => return,
        }
    }
}

/// The janitor of `master`'s configuration.
pub fn janitor(master: &Master) -> crate::janitor::Janitor {
    crate::janitor::Janitor {
        store: master.store.clone(),
        config: master.catalog.config.clone(),
        metrics: master.metrics.clone(),
        clock: master.clock.clone(),
        master_id: master.master_id(),
    }
}

/// This master's heartbeat, then the masters whose heartbeats stopped:
/// declared dead, their running builds taken over.
async fn beat_and_expire(master: &Master, config: &Config) {
    let now = master.clock.now();
    match master.store.master_heartbeat(master.master_id(), now).await {
        Ok(true) => {}
        Ok(false) => tracing::error!(
            "another master declared this one dead (its heartbeat was late); its builds were taken over"
        ),
        Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
    }
    let before = now - i64::try_from(config.master.master_expiry.as_secs()).unwrap_or(i64::MAX / 2);
    match master.store.expire_masters(master.master_id(), before, now).await {
        Ok(expired) => {
            for (id, name, builds) in &expired {
                tracing::warn!(master = %name, master_id = id, builds = ?builds, "a master stopped answering: its builds are taken over");
            }
            if !expired.is_empty() {
                master.runner.nudge();
            }
        }
        Err(e) => tracing::warn!(error = %e, "looking for dead masters failed"),
    }
}

/// A master served in the background (tests, load tools, the demo).
/// Dropping it stops the master at once; [`Served::stop`] also waits for it.
pub struct Served {
    /// Where it listens.
    pub addresses: Addresses,
    operator: Operator,
    task: Option<tokio::task::JoinHandle<Result<(), ServeError>>>,
}

impl Served {
    /// The pages' and API's base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addresses.http)
    }

    /// Stops the master at once (running builds end as RETRY) and waits until it has.
    pub async fn stop(self) -> Result<(), ServeError> {
        self.ended(Signal::StopNow).await
    }

    /// Stops the master as SIGTERM does (running builds may finish within
    /// `[master] stop_grace`) and waits until it has.
    pub async fn stop_gracefully(self) -> Result<(), ServeError> {
        self.ended(Signal::Stop).await
    }

    /// Where stop and reload requests for this master go.
    pub fn operator(&self) -> Operator {
        self.operator.clone()
    }

    async fn ended(mut self, signal: Signal) -> Result<(), ServeError> {
        self.operator.tell(signal).await;
        match self.task.take() {
            Some(task) => task.await.map_err(|e| ServeError::Io(std::io::Error::other(e)))?,
            None => Ok(()),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.task.is_some() {
            self.operator.ask(Signal::StopNow);
        }
    }
}

/// Serves `master` on `listeners` in a task.
pub fn spawn(master: Master, listeners: Listeners) -> Result<Served, ServeError> {
    let addresses = listeners.addresses()?;
    let operator = master.operator.clone();
    let task = tokio::spawn(serve(master, listeners, std::future::pending()));
    Ok(Served { addresses, operator, task: Some(task) })
}

/// `cascade serve`: the configured store and listeners, until SIGTERM or
/// Ctrl-C (twice: at once); SIGHUP reloads the configuration.
pub async fn run(config: Config, database: Option<String>) -> Result<(), ServeError> {
    let secrets = config.resolve_secrets().map_err(|e| ServeError::Secrets(e.to_string()))?;
    writable(&config.master.artifacts)?;
    if secrets.webhook_secret.is_none() {
        tracing::warn!("github.insecure_webhook is on: unsigned webhooks are accepted");
    }
    let url = database.unwrap_or_else(|| config.master.database.clone());
    let _lock = lock_sqlite(&url)?;
    let store = Store::connect_with(&url, config.limits.store_timeout).await?;
    tracing::info!(backend = ?store.backend(), "store ready");
    let listeners = Listeners::bind(&config.master).await?;
    let master = Master::start(config, secrets, store.clone(), Clock::System).await?;
    let signals = tokio::spawn(forward_signals(master.operator.clone()));
    let served = serve(master, listeners, std::future::pending()).await;
    signals.abort();
    store.close().await;
    served
}

/// On SQLite, a lock on `<database>.lock` held for the life of the process,
/// so a second master on the same file refuses to start, whatever its name.
fn lock_sqlite(url: &str) -> Result<Option<std::fs::File>, ServeError> {
    let Some(path) = cascade_store::sqlite_file(url) else { return Ok(None) };
    let lock = format!("{}.lock", path.display());
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(ServeError::SqliteTaken(lock)),
        Err(std::fs::TryLockError::Error(e)) => Err(ServeError::Io(e)),
    }
}

/// Fails now, not at the first upload hours later, when `dir` cannot be
/// written (a service sandbox's read-only folders, say).
fn writable(dir: &std::path::Path) -> Result<(), ServeError> {
    let probe = dir.join(".cascade-write-check");
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&probe, b""))
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|source| ServeError::Artifacts { path: dir.to_path_buf(), source })
}

/// Turns the process's signals into requests: SIGINT and SIGTERM stop
/// (gracefully; again, at once), SIGHUP reloads.
async fn forward_signals(operator: Operator) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
            tracing::error!("cannot listen for signals");
            return;
        };
        loop {
            let asked = tokio::select! {
                _ = tokio::signal::ctrl_c() => Signal::Stop,
                _ = term.recv() => Signal::Stop,
                _ = hup.recv() => Signal::Reload(None),
            };
            if matches!(asked, Signal::Stop) {
                tracing::info!("asked to stop");
                operator.tell(asked).await;
            } else if !operator.ask(asked) {
                tracing::warn!("too many requests are waiting: the reload is dropped");
            }
        }
    }
    #[cfg(not(unix))]
    loop {
        let _ = tokio::signal::ctrl_c().await;
        operator.tell(Signal::Stop).await;
    }
}

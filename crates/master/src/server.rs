//! The one way to run a master: [`serve`] takes a started [`Master`], its
//! [`Listeners`] (bound by the caller: port 0 in tests) and a shutdown
//! future, and runs everything a master does until the future resolves.
//! `cascade serve`, `cascade demo`, the tests and the load tools all come
//! through here, so what runs in production is what the tests run.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use cascade_config::{Config, MasterConfig};
use cascade_store::{Store, StoreError};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;

use std::sync::Arc;

use cascade_model::net::AddressRange;

use crate::accept::Caps;
use crate::app::{Master, StartError, router};
use crate::clock::Clock;

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

/// Runs the master until `shutdown` resolves, then stops it: the listeners
/// close, connected workers are let go (their builds end as RETRY and
/// their requests wait again), and the master's row says it stopped.
pub async fn serve(
    master: Master,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addresses = listeners.addresses()?;
    tracing::info!(http = %addresses.http, pb = %addresses.pb, msgpack = %addresses.msgpack, "listening");
    let (stop, stopped) = watch::channel(false);
    let distributor = tokio::spawn(master.runner.clone().run(stopped.clone()));
    let mut tasks = background(&master, listeners.pb, listeners.msgpack, &stopped);
    serve_http(&master, listeners.http, shutdown).await;
    tracing::info!("shutting down");
    let _ = stop.send(true);
    master.bus.close();
    // No build starts once the workers are being let go.
    if tokio::time::timeout(GRACE, distributor).await.is_err() {
        tracing::warn!("the distributor did not stop in time");
    }
    wind_down(&master, &mut tasks).await;
    master.store.deactivate_master(master.master_id(), master.clock.now()).await?;
    Ok(())
}

/// What the listeners of `master` allow (`[limits]`).
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

/// The HTTP server, until `shutdown` (then at most [`GRACE`] more for
/// connections still open).
async fn serve_http(master: &Master, listener: TcpListener, shutdown: impl Future<Output = ()> + Send + 'static) {
    let (closing, closed) = watch::channel(false);
    let bus = master.bus.clone();
    tokio::spawn(async move {
        shutdown.await;
        // Server-sent event streams end, so their connections can close.
        bus.close();
        let _ = closing.send(true);
    });
    crate::accept::serve(listener, router(master.clone()), caps(master, "HTTP"), closed, GRACE).await;
}

/// Everything that runs beside the HTTP server.
fn background(master: &Master, pb: TcpListener, msgpack: TcpListener, stopped: &watch::Receiver<bool>) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    tasks.spawn(crate::events::pump(master.store.clone(), master.bus.clone(), master.events_from, stopped.clone()));
    tasks.spawn(master.schedulers.clone().run(
        master.store.clone(),
        master.clock.clone(),
        master.runner.wake.clone(),
        stopped.clone(),
    ));
    tasks.spawn(housekeeping(master.clone(), stopped.clone()));
    tasks.spawn(master.notifier.clone().run(stopped.clone()));
    tasks.spawn(master.poller.clone().run(stopped.clone()));
    tasks.spawn(crate::workers::pb::serve(pb, master.hub.clone(), caps(master, "PB"), stopped.clone()));
    let app = crate::workers::msgpack::router(master.hub.clone());
    tasks.spawn(crate::accept::serve(msgpack, app, caps(master, "msgpack"), stopped.clone(), GRACE));
    tasks
}

/// Lets workers go, waits for builds to record how they ended, then for the
/// background tasks. After [`GRACE`], the builds still running are ended
/// as RETRY here and the tasks still running are stopped.
async fn wind_down(master: &Master, tasks: &mut JoinSet<()>) {
    master.workers.close_all();
    let idle = async {
        while master.runner.running_count() > 0 || !master.workers.connected().is_empty() {
            let changed = master.workers.changed.notified();
            let _ = tokio::time::timeout(Duration::from_millis(100), changed).await;
        }
        while tasks.join_next().await.is_some() {}
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
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// The heartbeat (so other masters know this one lives) and the janitor
/// (expired sessions, old delivery ids and old events), until `stopped`.
async fn housekeeping(master: Master, mut stopped: watch::Receiver<bool>) {
    let config = master.catalog.config.clone();
    let mut beat = tokio::time::interval(config.master.heartbeat);
    let mut sweep = tokio::time::interval(config.janitor.every);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = beat.tick() => beat_and_expire(&master, &config).await,
            _ = sweep.tick() => janitor(&master.store, &config, master.clock.now()).await,
            _ = stopped.changed() => return,
        }
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

/// One sweep: what has outlived its horizon goes.
pub async fn janitor(store: &Store, config: &Config, now: i64) {
    let horizon = |d: Duration| now - i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2);
    let report = |what: &str, pruned: Result<u64, StoreError>| match pruned {
        Ok(0) => {}
        Ok(n) => tracing::info!(pruned = n, "{what} forgotten"),
        Err(e) => tracing::warn!(error = %e, "pruning {what} failed"),
    };
    report("old webhook delivery ids", store.prune_webhook_deliveries(horizon(config.janitor.delivery_horizon)).await);
    report("expired sessions", store.prune_sessions(now).await);
    report("old events", store.prune_events(horizon(config.janitor.event_horizon)).await);
    report("old notifications", store.prune_notifications(horizon(config.janitor.event_horizon)).await);
}

/// A master served in the background (tests, load tools, the demo).
/// Dropping it stops the master; [`Served::stop`] also waits for it.
pub struct Served {
    /// Where it listens.
    pub addresses: Addresses,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ServeError>>>,
}

impl Served {
    /// The pages' and API's base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addresses.http)
    }

    /// Stops the master and waits until it has.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(|e| ServeError::Io(std::io::Error::other(e)))?,
            None => Ok(()),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves `master` on `listeners` in a task.
pub fn spawn(master: Master, listeners: Listeners) -> Result<Served, ServeError> {
    let addresses = listeners.addresses()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(master, listeners, async move {
        let _ = stopped.await;
    }));
    Ok(Served { addresses, stop: Some(stop), task: Some(task) })
}

/// `cascade serve`: the configured store and listeners, until `shutdown`.
pub async fn run(
    config: Config,
    database: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let secrets = config.resolve_secrets().map_err(|e| ServeError::Secrets(e.to_string()))?;
    if secrets.webhook_secret.is_none() {
        tracing::warn!("github.insecure_webhook is on: unsigned webhooks are accepted");
    }
    let url = database.unwrap_or_else(|| config.master.database.clone());
    let store = Store::connect_with(&url, config.limits.store_timeout).await?;
    tracing::info!(backend = ?store.backend(), "store ready");
    let listeners = Listeners::bind(&config.master).await?;
    let master = Master::start(config, secrets, store.clone(), Clock::System).await?;
    let served = serve(master, listeners, shutdown).await;
    store.close().await;
    served
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

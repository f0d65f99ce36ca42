//! The master: the state each part of it is given, and its HTTP router.
//! Every module below takes only its own state (axum's `FromRef` hands each
//! handler its part); this is the one module that sees them all.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use cascade_config::{Config, ResolvedSecrets};
use cascade_store::{BuilderSpec, Store, StoreError, WorkerSpec};
use tokio::sync::Notify;

use crate::api::Reads;
use crate::api::control::Control;
use crate::auth::Access;
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::events::Bus;
use crate::limiter::Limiter;
use crate::metrics::{Gauge, Metrics};
use crate::operator::{Operator, Reloaded, Signal};
use crate::password::Gate;
use crate::relay::Relay;
use crate::runner::Runner;
use crate::scheduler::{SchedulerError, Schedulers};
use crate::views::Pages;
use crate::webhook::Hook;
use crate::workers::{Hub, Liveness, LoginLimits, Registry};

/// A running master's parts. Cloning is cheap: every part is shared.
#[derive(Clone)]
pub struct Master {
    /// The store.
    pub store: Store,
    /// What time it is.
    pub clock: Clock,
    /// The configuration and the ids of what it names.
    pub catalog: Arc<Catalog>,
    /// Live events.
    pub bus: Bus,
    /// Who is connected.
    pub workers: Arc<Registry>,
    /// The worker listeners' state.
    pub hub: Arc<Hub>,
    /// The distributor and the builds running here.
    pub runner: Arc<Runner>,
    /// The schedulers.
    pub schedulers: Arc<Schedulers>,
    /// Who may do what.
    pub access: Arc<Access>,
    /// The reporters' sender.
    pub notifier: Arc<crate::notify::Notifier>,
    /// Asks GitHub for pushes no delivery brought.
    pub poller: Arc<crate::poller::Poller>,
    /// The first event id after the start: live subscribers get every
    /// event from there on.
    pub events_from: i64,
    /// Where stop and reload requests go (signals, the admin API).
    pub operator: Operator,
    /// The serve loop's end of `operator`, taken once by `serve`.
    inbox: Inbox,
    /// Password checks at once, shared by every configuration this master runs.
    gate: Arc<Gate>,
    /// What `/metrics` reports; outlives reloads.
    pub metrics: Arc<Metrics>,
    /// When this master started, Unix seconds.
    pub up_since: i64,
    /// Control requests to and from the other masters.
    pub relay: Arc<Relay>,
    hook: Arc<Hook>,
    reads: Arc<Reads>,
    control: Arc<Control>,
    pages: Arc<Pages>,
    www: Arc<crate::www::Www>,
}

/// Why a master could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A scheduler's configuration cannot run.
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    /// SQLite serves one master, and another is running on the file.
    #[error(
        "master {other:?} is running on this SQLite database (its heartbeat is {age}s old): SQLite serves \
         one master; run several on PostgreSQL"
    )]
    SqliteTaken {
        /// The other master's name.
        other: String,
        /// Seconds since its heartbeat.
        age: i64,
    },
}

/// On SQLite, another master alive on the same file (its heartbeat younger
/// than `master_expiry`) means this one must not start.
async fn check_single(store: &Store, config: &Config, name: &str, now: i64) -> Result<(), StartError> {
    if store.backend() != cascade_store::Backend::Sqlite {
        return Ok(());
    }
    let expiry = i64::try_from(config.master.master_expiry.as_secs()).unwrap_or(i64::MAX);
    let other =
        store.list_masters().await?.into_iter().find(|m| m.active && m.name != name && now - m.last_active < expiry);
    match other {
        Some(m) => Err(StartError::SqliteTaken { other: m.name, age: now - m.last_active }),
        None => Ok(()),
    }
}

/// This master's row name: host and config path, so two masters on one
/// machine (or one master restarted) are told apart correctly.
pub fn default_master_name(config: &Config) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "cascade".into());
    let path = std::fs::canonicalize(&config.path).unwrap_or_else(|_| config.path.clone());
    format!("{host}:{}", path.display())
}

/// Mirrors the configuration's builders and workers into the store.
async fn sync(
    store: &Store,
    master_id: i64,
    config: &Config,
) -> Result<(BTreeMap<String, i64>, BTreeMap<String, i64>), StoreError> {
    let builders: Vec<BuilderSpec> = config
        .builders
        .iter()
        .map(|b| BuilderSpec {
            name: b.name.clone(),
            definition: b.definition.clone(),
            branch: b.branch.clone(),
            description: b.description.clone(),
            tags: b.tags.clone(),
            workers: b.workers.clone(),
        })
        .collect();
    let workers: Vec<WorkerSpec> = config.workers.iter().map(|w| WorkerSpec { name: w.name.clone() }).collect();
    store.sync_configuration(master_id, &builders, &workers).await
}

/// The reporters' sender, with the secrets it needs and no others.
fn notifier(
    store: &Store,
    catalog: &Arc<Catalog>,
    clock: &Clock,
    secrets: &ResolvedSecrets,
    lasting: &Lasting,
) -> Arc<crate::notify::Notifier> {
    Arc::new(crate::notify::Notifier {
        store: store.clone(),
        catalog: catalog.clone(),
        clock: clock.clone(),
        http: crate::outbound::http_client(),
        secrets: Arc::new(ResolvedSecrets {
            github_token: secrets.github_token.clone(),
            reporter_urls: secrets.reporter_urls.clone(),
            reporter_passwords: secrets.reporter_passwords.clone(),
            ..ResolvedSecrets::default()
        }),
        events_from: lasting.events_from,
        up_since: lasting.up_since,
        irc: Default::default(),
        metrics: lasting.metrics.clone(),
    })
}

/// What talks to GitHub's API: pull requests' builds and the poller, over one client.
fn github_parts(
    store: &Store,
    catalog: &Arc<Catalog>,
    schedulers: &Arc<Schedulers>,
    clock: &Clock,
    secrets: &ResolvedSecrets,
    wake_builds: &Arc<Notify>,
) -> (Arc<crate::pulls::Pulls>, Arc<crate::poller::Poller>) {
    let github = crate::github::GitHub {
        http: crate::outbound::http_client(),
        api_url: catalog.config.github.api_url.clone(),
        token: secrets.github_token.clone(),
        clock: clock.clone(),
    };
    let pulls = Arc::new(crate::pulls::Pulls {
        store: store.clone(),
        catalog: catalog.clone(),
        schedulers: schedulers.clone(),
        github: github.clone(),
        clock: clock.clone(),
        wake_builds: wake_builds.clone(),
    });
    let poller = Arc::new(crate::poller::Poller {
        store: store.clone(),
        catalog: catalog.clone(),
        schedulers: schedulers.clone(),
        clock: clock.clone(),
        github,
        pulls: pulls.clone(),
    });
    (pulls, poller)
}

/// What a master is assembled from besides its store and clock: what its
/// configuration makes.
struct Parts {
    catalog: Arc<Catalog>,
    schedulers: Arc<Schedulers>,
    credentials: crate::workers::auth::Credentials,
    secrets: ResolvedSecrets,
}

type Inbox = Arc<parking_lot::Mutex<Option<tokio::sync::mpsc::Receiver<Signal>>>>;

/// What outlives a reload: the connections, the builds running, the live
/// bus and the operator's channel.
struct Lasting {
    bus: Bus,
    workers: Arc<Registry>,
    wake_builds: Arc<Notify>,
    running: crate::runner::Running,
    gate: Arc<Gate>,
    events_from: i64,
    operator: Operator,
    inbox: Inbox,
    metrics: Arc<Metrics>,
    /// When this master started, Unix seconds.
    up_since: i64,
    relay: Arc<Relay>,
    /// Open `/ws` connections, counted across reloads.
    sockets: Arc<tokio::sync::Semaphore>,
}

impl Lasting {
    fn new(config: &Config, events_from: i64, up_since: i64, relay: Relay) -> Lasting {
        let (operator, inbox) = Operator::channel();
        Lasting {
            bus: Bus::new(),
            workers: Arc::new(Registry::default()),
            wake_builds: Arc::new(Notify::new()),
            running: Default::default(),
            gate: Arc::new(Gate::new(config.limits.password_checks, Duration::from_secs(2))),
            events_from,
            operator,
            inbox: Arc::new(parking_lot::Mutex::new(Some(inbox))),
            metrics: Arc::default(),
            up_since,
            relay: Arc::new(relay),
            sockets: Arc::new(tokio::sync::Semaphore::new(crate::www::MAX_SOCKETS)),
        }
    }
}

impl Master {
    /// Mirrors the config into the store, registers this master and retries
    /// the builds it left running when it last stopped.
    pub async fn start(
        config: Config,
        secrets: ResolvedSecrets,
        store: Store,
        clock: Clock,
    ) -> Result<Master, StartError> {
        let now = clock.now();
        let name = config.master.name.clone().unwrap_or_else(|| default_master_name(&config));
        check_single(&store, &config, &name, now).await?;
        let master_id = store.register_master(&name, now).await?;
        let (builder_ids, worker_ids) = sync(&store, master_id, &config).await?;
        let rows = store.sync_schedulers(&Schedulers::config_rows(&config), now).await?;
        let schedulers = Arc::new(Schedulers::new(&config, &rows, &builder_ids)?);
        tracing::info!(master = %name, master_id, builders = builder_ids.len(), workers = worker_ids.len(), "master registered");
        let retried = store.recover_master(master_id, now).await?;
        if !retried.is_empty() {
            tracing::warn!(builds = ?retried, "builds interrupted by the last shutdown will be retried");
        }
        let credentials = crate::workers::auth::Credentials::new(&config, &secrets);
        let catalog = Arc::new(Catalog::new(config, master_id, builder_ids, worker_ids));
        let events_from = store.last_event_id().await? + 1;
        let relay = Relay::new(store.clone(), master_id);
        let lasting = Lasting::new(&catalog.config, events_from, now, relay);
        let parts = Parts { catalog, schedulers, credentials, secrets };
        Ok(Master::assemble(store, clock, parts, lasting))
    }

    /// Builds every part's state over the pieces that outlive a reload.
    fn assemble(store: Store, clock: Clock, parts: Parts, lasting: Lasting) -> Master {
        let Parts { catalog, schedulers, credentials, secrets } = parts;
        let notifier = notifier(&store, &catalog, &clock, &secrets, &lasting);
        let Lasting {
            bus,
            workers,
            wake_builds,
            running,
            gate,
            events_from,
            operator,
            inbox,
            metrics,
            up_since,
            relay,
            sockets,
        } = lasting;
        let (pulls, poller) = github_parts(&store, &catalog, &schedulers, &clock, &secrets, &wake_builds);
        let runner = Arc::new(Runner {
            store: store.clone(),
            catalog: catalog.clone(),
            clock: clock.clone(),
            bus: bus.clone(),
            registry: workers.clone(),
            wake: wake_builds.clone(),
            metrics: metrics.clone(),
            running,
        });
        let wiring =
            HubWiring { nudge: wake_builds, gate: gate.clone(), schedulers: schedulers.clone(), bus: bus.clone() };
        let hub = worker_hub(&store, &catalog, &clock, &workers, credentials, wiring);
        let access = access(&store, &catalog, &clock, &gate, secrets.github_client_secret);
        let hook = Arc::new(Hook {
            store: store.clone(),
            catalog: catalog.clone(),
            schedulers: schedulers.clone(),
            secret: secrets.webhook_secret,
            clock: clock.clone(),
            pulls: pulls.clone(),
            runner: runner.clone(),
            metrics: metrics.clone(),
        });
        let reads = Arc::new(Reads { store: store.clone(), catalog: catalog.clone() });
        let control = Arc::new(Control {
            store: store.clone(),
            catalog: catalog.clone(),
            clock: clock.clone(),
            access: access.clone(),
            runner: runner.clone(),
            registry: workers.clone(),
            schedulers: schedulers.clone(),
            operator: operator.clone(),
            relay: relay.clone(),
        });
        let pages = Arc::new(Pages {
            store: store.clone(),
            catalog: catalog.clone(),
            clock: clock.clone(),
            access: access.clone(),
            bus: bus.clone(),
        });
        let www = Arc::new(crate::www::Www::new(store.clone(), catalog.clone(), bus.clone(), sockets));
        Master {
            store,
            clock,
            catalog,
            bus,
            workers,
            hub,
            runner,
            schedulers,
            access,
            notifier,
            poller,
            events_from,
            operator,
            inbox,
            gate,
            metrics,
            up_since,
            relay,
            hook,
            reads,
            control,
            pages,
            www,
        }
    }

    /// The serve loop's end of [`Master::operator`]; `None` once taken.
    pub fn take_inbox(&self) -> Option<tokio::sync::mpsc::Receiver<Signal>> {
        self.inbox.lock().take()
    }

    /// What outlives a reload of this master.
    fn lasting(&self) -> Lasting {
        Lasting {
            bus: self.bus.clone(),
            workers: self.workers.clone(),
            wake_builds: self.runner.wake.clone(),
            running: self.runner.running(),
            gate: self.gate.clone(),
            events_from: self.events_from,
            operator: self.operator.clone(),
            inbox: self.inbox.clone(),
            metrics: self.metrics.clone(),
            up_since: self.up_since,
            relay: self.relay.clone(),
            sockets: self.www.sockets.clone(),
        }
    }

    /// This master on `config` (read again from its file): the builders,
    /// workers and schedulers mirrored into the store, every part that the
    /// configuration makes built anew, and what outlives a reload (worker
    /// connections, running builds, the bus) carried over. The caller
    /// swaps it in; nothing of `self` changes.
    pub async fn reconfigured(&self, config: Config) -> Result<(Master, Reloaded), Vec<String>> {
        let secrets = config.resolve_secrets().map_err(|e| vec![e.to_string()])?;
        let store_error = |e: StoreError| vec![format!("the store: {e}")];
        let now = self.clock.now();
        let (builder_ids, worker_ids) = sync(&self.store, self.master_id(), &config).await.map_err(store_error)?;
        let rows = self.store.sync_schedulers(&Schedulers::config_rows(&config), now).await.map_err(store_error)?;
        let schedulers = Arc::new(Schedulers::new(&config, &rows, &builder_ids).map_err(|e| vec![e.to_string()])?);
        let reloaded = crate::operator::compare(&self.catalog.config, &config);
        let credentials = crate::workers::auth::Credentials::new(&config, &secrets);
        let catalog = Arc::new(Catalog::new(config, self.master_id(), builder_ids, worker_ids));
        let parts = Parts { catalog, schedulers, credentials, secrets };
        Ok((Master::assemble(self.store.clone(), self.clock.clone(), parts, self.lasting()), reloaded))
    }

    /// This master's row in `masters`.
    pub fn master_id(&self) -> i64 {
        self.catalog.master_id
    }
}

impl FromRef<Master> for Store {
    fn from_ref(m: &Master) -> Store {
        m.store.clone()
    }
}

impl FromRef<Master> for Arc<Catalog> {
    fn from_ref(m: &Master) -> Arc<Catalog> {
        m.catalog.clone()
    }
}

impl FromRef<Master> for Operator {
    fn from_ref(m: &Master) -> Operator {
        m.operator.clone()
    }
}

impl FromRef<Master> for Arc<Hook> {
    fn from_ref(m: &Master) -> Arc<Hook> {
        m.hook.clone()
    }
}

impl FromRef<Master> for Arc<Access> {
    fn from_ref(m: &Master) -> Arc<Access> {
        m.access.clone()
    }
}

impl FromRef<Master> for Arc<Reads> {
    fn from_ref(m: &Master) -> Arc<Reads> {
        m.reads.clone()
    }
}

impl FromRef<Master> for Arc<Control> {
    fn from_ref(m: &Master) -> Arc<Control> {
        m.control.clone()
    }
}

impl FromRef<Master> for Arc<crate::www::Www> {
    fn from_ref(m: &Master) -> Arc<crate::www::Www> {
        m.www.clone()
    }
}

impl FromRef<Master> for Arc<Pages> {
    fn from_ref(m: &Master) -> Arc<Pages> {
        m.pages.clone()
    }
}

/// `/metrics`: the counters, and gauges read now.
async fn metrics(State(m): State<Master>) -> Result<impl IntoResponse, crate::error::HttpError> {
    let started = std::time::Instant::now();
    let (pending, oldest) = m.store.pending_requests().await?;
    let queued = m.store.queued_notifications().await?;
    let took = started.elapsed().as_secs_f64();
    let now = m.clock.now();
    let pool = m.store.pool_use();
    let mut by_protocol: BTreeMap<&'static str, f64> = BTreeMap::from([("msgpack", 0.0), ("pb", 0.0)]);
    for handle in m.workers.connected() {
        *by_protocol.entry(handle.conn.protocol()).or_default() += 1.0;
    }
    let gauges = [
        Gauge::one("cascade_start_time_seconds", "When this master started.", m.up_since as f64),
        Gauge::one("cascade_builds_running", "Builds running on this master.", m.runner.running_count() as f64),
        Gauge {
            name: "cascade_workers_connected",
            help: "Workers connected to this master.",
            values: by_protocol.into_iter().map(|(p, n)| (vec![("protocol", p.to_string())], n)).collect(),
        },
        Gauge::one("cascade_pending_requests", "Build requests waiting for a worker.", pending as f64),
        Gauge::one(
            "cascade_pending_request_age_seconds",
            "How long the oldest waiting build request has waited.",
            oldest.map_or(0.0, |t| (now - t).max(0) as f64),
        ),
        Gauge::one("cascade_notifications_queued", "Notifications not yet sent.", queued as f64),
        Gauge {
            name: "cascade_store_connections",
            help: "The store's connection pool.",
            values: vec![
                (vec![("state", "idle".into())], pool.idle as f64),
                (vec![("state", "busy".into())], pool.open.saturating_sub(pool.idle as u32) as f64),
                (vec![("state", "max".into())], f64::from(pool.max)),
            ],
        },
        Gauge::one("cascade_store_query_seconds", "How long this scrape's store queries took.", took),
    ];
    let body = m.metrics.render(&gauges);
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body))
}

/// Who may do what, under `catalog`'s `[auth]`.
fn access(
    store: &Store,
    catalog: &Arc<Catalog>,
    clock: &Clock,
    gate: &Arc<Gate>,
    github_client_secret: Option<cascade_config::SecretString>,
) -> Arc<Access> {
    let auth = &catalog.config.auth;
    Arc::new(Access {
        store: store.clone(),
        catalog: catalog.clone(),
        clock: clock.clone(),
        limiter: Limiter::new(auth.login_attempts, auth.login_window),
        gate: gate.clone(),
        http: crate::outbound::http_client(),
        github_client_secret,
    })
}

/// What the worker hub is wired to besides the store and the catalog.
struct HubWiring {
    nudge: Arc<Notify>,
    gate: Arc<Gate>,
    schedulers: Arc<Schedulers>,
    bus: Bus,
}

/// Where workers (and Buildbot's tools, on the PB port) log in.
fn worker_hub(
    store: &Store,
    catalog: &Arc<Catalog>,
    clock: &Clock,
    registry: &Arc<Registry>,
    credentials: crate::workers::auth::Credentials,
    wiring: HubWiring,
) -> Arc<Hub> {
    let HubWiring { nudge, gate, schedulers, bus } = wiring;
    let config = &catalog.config;
    Arc::new(Hub {
        store: store.clone(),
        catalog: catalog.clone(),
        clock: clock.clone(),
        registry: registry.clone(),
        credentials,
        liveness: Liveness { ping_every: config.master.worker_ping, dead_after: config.master.worker_timeout },
        nudge,
        gate,
        logins: LoginLimits::new(&config.limits),
        schedulers,
        bus,
        generation: registry.next_generation(),
    })
}

/// 200 when the store answers (`ok`, or `ok, stopping` while a graceful
/// stop lets builds finish), 503 otherwise.
async fn healthz(
    State(store): State<Store>,
    State(catalog): State<Arc<Catalog>>,
    State(operator): State<Operator>,
) -> impl IntoResponse {
    match tokio::time::timeout(catalog.config.limits.store_timeout, store.ping()).await {
        Ok(Ok(())) if operator.is_stopping() => (StatusCode::OK, "ok, stopping"),
        Ok(Ok(())) => (StatusCode::OK, "ok"),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "health check: store unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "store unreachable")
        }
        Err(_) => {
            tracing::error!("health check: the store did not answer in time");
            (StatusCode::SERVICE_UNAVAILABLE, "store unreachable")
        }
    }
}

/// What every answer carries: no sniffing, no framing, no referrer beyond
/// this site, and a policy under which only this site's own files run.
async fn security_headers(mut response: axum::response::Response) -> axum::response::Response {
    use axum::http::{HeaderValue, header};
    let h = response.headers_mut();
    h.entry(header::X_CONTENT_TYPE_OPTIONS).or_insert(HeaderValue::from_static("nosniff"));
    h.entry(header::X_FRAME_OPTIONS).or_insert(HeaderValue::from_static("DENY"));
    h.entry(header::REFERRER_POLICY).or_insert(HeaderValue::from_static("same-origin"));
    h.entry(header::CONTENT_SECURITY_POLICY).or_insert(HeaderValue::from_static(CSP));
    response
}

/// Scripts, styles, images and connections from this site only; no frames,
/// no plugins, forms post here.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Every HTTP route: webhook, pages, logins, API, health.
pub fn router(master: Master) -> Router {
    let limits = master.catalog.config.limits.clone();
    Router::new()
        .merge(crate::webhook::router())
        .merge(crate::views::router())
        .merge(crate::auth::router())
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .nest("/api/v2", crate::api::router())
        .merge(crate::www::router(master.www.bundle.is_some()))
        .layer(axum::middleware::from_fn_with_state(master.access.clone(), crate::auth::private_gate))
        // A body that stalls is cut by the same deadline as its answer: 408.
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, limits.request_timeout))
        .layer(axum::middleware::map_response(security_headers))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(master)
}

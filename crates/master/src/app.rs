//! The master: its state, its HTTP router, and `serve`, which runs it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use cascade_config::{BuilderConfig, Config, ResolvedSecrets, SecretString};
use cascade_store::{BuilderSpec, Store, StoreError, WorkerSpec};
use tokio::sync::Notify;

use crate::scheduler::{SchedulerError, Schedulers};

/// Everything a request handler or background task needs.
pub struct Master {
    pub config: Arc<Config>,
    pub store: Store,
    pub master_id: i64,
    pub builder_ids: BTreeMap<String, i64>,
    pub worker_ids: BTreeMap<String, i64>,
    pub schedulers: Arc<Schedulers>,
    pub webhook_secret: Option<SecretString>,
    /// Nudges the scheduler loop when new changes are stored.
    pub wake_schedulers: Arc<Notify>,
    /// Nudges the build distributor: new requests, a free worker slot.
    pub wake_builds: Arc<Notify>,
    pub workers: Arc<crate::workers::Registry>,
    pub credentials: crate::workers::auth::Credentials,
    pub liveness: crate::workers::msgpack::Liveness,
    /// Failed page logins per address.
    pub login_limiter: crate::auth::limiter::LoginLimiter,
    pub github_client_secret: Option<SecretString>,
    /// For calls to GitHub (login).
    pub http_client: reqwest::Client,
    /// Every log line as it is stored, for live views (`subscribe()`).
    pub live_logs: tokio::sync::broadcast::Sender<crate::runner::log::LiveLines>,
    /// Build starts, step ends and build ends, for live pages.
    pub events: tokio::sync::broadcast::Sender<crate::views::events::BuildEvent>,
    /// Builds running on this master, with the switch that stops each.
    running: std::sync::Mutex<BTreeMap<i64, tokio::sync::watch::Sender<bool>>>,
    builders_by_id: BTreeMap<i64, BuilderConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
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

/// TLS for outgoing HTTP is rustls on ring; this makes it the process's
/// provider (once; later calls do nothing). Call before building a client.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An HTTP client for outgoing calls: rustls on ring, the platform's roots.
pub fn http_client() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("cascade/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

impl Master {
    /// Mirrors the config into the store and registers this master.
    pub async fn start(
        config: Config,
        secrets: ResolvedSecrets,
        store: Store,
        now: i64,
    ) -> Result<Arc<Master>, StartError> {
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
        let (builder_ids, worker_ids) = store.sync_configuration(&builders, &workers).await?;
        let rows = store.sync_schedulers(&Schedulers::config_rows(&config), now).await?;
        let schedulers = Arc::new(Schedulers::new(&config, &rows, &builder_ids)?);
        let name = config.master.name.clone().unwrap_or_else(|| default_master_name(&config));
        let master_id = store.register_master(&name, now).await?;
        tracing::info!(master = %name, master_id, builders = builder_ids.len(), workers = worker_ids.len(), "master registered");
        // Builds this master left running when it stopped are retried.
        let retried = store.recover_master(master_id, now).await?;
        if !retried.is_empty() {
            tracing::warn!(builds = ?retried, "builds interrupted by the last shutdown will be retried");
        }
        let credentials = crate::workers::auth::Credentials::new(&config, &secrets.worker_passwords);
        let liveness = crate::workers::msgpack::Liveness {
            ping_every: config.master.worker_ping,
            dead_after: config.master.worker_timeout,
        };
        let builders_by_id =
            config.builders.iter().filter_map(|b| builder_ids.get(&b.name).map(|id| (*id, b.clone()))).collect();
        let login_limiter =
            crate::auth::limiter::LoginLimiter::new(config.auth.login_attempts, config.auth.login_window);
        Ok(Arc::new(Master {
            config: Arc::new(config),
            store,
            master_id,
            builder_ids,
            worker_ids,
            schedulers,
            webhook_secret: secrets.webhook_secret,
            wake_schedulers: Arc::new(Notify::new()),
            wake_builds: Arc::new(Notify::new()),
            workers: Arc::new(crate::workers::Registry::default()),
            credentials,
            liveness,
            login_limiter,
            github_client_secret: secrets.github_client_secret,
            http_client: http_client(),
            live_logs: tokio::sync::broadcast::channel(4096).0,
            events: tokio::sync::broadcast::channel(1024).0,
            running: std::sync::Mutex::new(BTreeMap::new()),
            builders_by_id,
        }))
    }

    pub fn builder_by_id(&self, id: i64) -> Option<&BuilderConfig> {
        self.builders_by_id.get(&id)
    }

    pub(crate) fn register_running(&self, build_id: i64, stop: tokio::sync::watch::Sender<bool>) {
        if let Ok(mut r) = self.running.lock() {
            r.insert(build_id, stop);
        }
    }

    pub(crate) fn unregister_running(&self, build_id: i64) {
        if let Ok(mut r) = self.running.lock() {
            r.remove(&build_id);
        }
    }

    /// Stops a build running on this master: its current command is
    /// interrupted, the build ends CANCELLED (`always_run` steps still run).
    /// False if no such build runs here.
    pub fn stop_build(&self, build_id: i64) -> bool {
        let stop = self.running.lock().ok().and_then(|r| r.get(&build_id).cloned());
        match stop {
            Some(tx) => tx.send(true).is_ok(),
            None => false,
        }
    }
}

async fn healthz(State(m): State<Arc<Master>>) -> impl IntoResponse {
    match m.store.ping().await {
        Ok(()) => (StatusCode::OK, "ok"),
        Err(e) => {
            tracing::error!(error = %e, "health check: store unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "store unreachable")
        }
    }
}

pub fn router(master: Arc<Master>) -> Router {
    Router::new()
        .route(
            "/change_hook/github",
            post(crate::webhook::github).layer(DefaultBodyLimit::max(crate::webhook::MAX_BODY_BYTES)),
        )
        .route("/healthz", get(healthz))
        .route("/", get(crate::home::page))
        .route("/static/cascade.css", get(crate::home::stylesheet))
        .route("/static/cascade.js", get(crate::home::script))
        .route("/console", get(crate::views::console::console))
        .route("/grid", get(crate::views::console::grid))
        .route("/waterfall", get(crate::views::waterfall::page))
        .route("/release", get(crate::views::release::page))
        .route("/builders", get(crate::views::builders::list))
        .route("/builders/{id}", get(crate::views::builders::one))
        .route("/builders/{id}/builds/{number}", get(crate::views::build::page))
        .route("/builders/{id}/builds/{number}/steps/{step}/logs/{log}", get(crate::views::build::log))
        .route("/builders/{id}/builds/{number}/artifacts/{*path}", get(crate::views::build::artifact))
        .route("/builders/{id}/builds/{number}/steps/{step}/logs/{log}/raw", get(crate::views::build::raw))
        .route("/workers", get(crate::views::workers::list))
        .route("/workers/{id}", get(crate::views::workers::one))
        .route("/changes", get(crate::views::changes::list))
        .route("/changes/{id}", get(crate::views::changes::one))
        .route("/pending", get(crate::views::builders::pending))
        .route("/events", get(crate::views::events::stream))
        .route("/login", get(crate::auth::session::form).post(crate::auth::session::login))
        .route("/logout", post(crate::auth::session::logout))
        .route("/tokens", get(crate::auth::tokens::list).post(crate::auth::tokens::create))
        .route("/tokens/{id}/revoke", post(crate::auth::tokens::revoke))
        .route("/auth/github/login", get(crate::auth::github::start_login))
        .route("/auth/github/callback", get(crate::auth::github::callback))
        .nest("/api/v2", crate::api::router())
        .layer(axum::middleware::from_fn_with_state(master.clone(), private_gate))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(master)
}

/// Paths open to everyone even on a private master: logging in, health,
/// GitHub's webhook (it has its own signature), the stylesheet.
fn always_open(path: &str) -> bool {
    matches!(path, "/login" | "/healthz" | "/change_hook/github")
        || path.starts_with("/auth/github/")
        || path.starts_with("/static/")
}

/// With `[auth] private = true`, nothing is shown to a caller who is not
/// logged in (pages redirect to the login form, the API answers 401).
async fn private_gate(
    State(m): State<Arc<Master>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if !m.config.auth.private || always_open(request.uri().path()) {
        return next.run(request).await;
    }
    let from = request.extensions().get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0);
    match crate::auth::caller(&m, request.headers(), from).await {
        Ok(Some(_)) => next.run(request).await,
        Ok(None) if request.uri().path().starts_with("/api/") => crate::auth::refuse(
            StatusCode::UNAUTHORIZED,
            "this master is private: log in or send a token",
            None,
            from,
            "read",
        )
        .into_response(),
        Ok(None) => {
            let target = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let query = serde_urlencoded::to_string([("next", target)]).unwrap_or_default();
            axum::response::Redirect::to(&format!("/login?{query}")).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// How often a master proves it is alive.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// Delivery ids are kept a week: GitHub redelivers for 3 days, GHES for 7.
const DELIVERY_MEMORY_SECS: i64 = 7 * 24 * 3600;
/// Prune old delivery ids about once an hour.
const PRUNE_EVERY_BEATS: u64 = 360;

/// Runs the master until SIGINT/SIGTERM.
pub async fn serve(config: Config, database_override: Option<String>) -> anyhow::Result<()> {
    let secrets = config.resolve_secrets().map_err(|e| anyhow::anyhow!("{e}"))?;
    if secrets.webhook_secret.is_none() {
        tracing::warn!("github.insecure_webhook is on: unsigned webhooks are accepted");
    }
    let url = database_override.unwrap_or_else(|| config.master.database.clone());
    let store = Store::connect(&url).await?;
    tracing::info!(backend = ?store.backend(), "store ready");
    let http: SocketAddr = config.master.http.parse()?;
    let master = Master::start(config, secrets, store.clone(), crate::clock::now()).await?;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let scheduler = tokio::spawn(master.schedulers.clone().run(
        store.clone(),
        master.wake_schedulers.clone(),
        master.wake_builds.clone(),
        stopped.clone(),
    ));
    let distributor = tokio::spawn(crate::runner::run(master.clone(), stopped.clone()));
    let msgpack_addr: SocketAddr = master.config.master.msgpack.parse()?;
    let msgpack_listener = tokio::net::TcpListener::bind(msgpack_addr).await?;
    tracing::info!(address = %msgpack_listener.local_addr()?, "msgpack worker protocol listening");
    let msgpack = {
        let (app, mut stopped) = (crate::workers::msgpack::router(master.clone()), stopped.clone());
        tokio::spawn(async move {
            let _ = axum::serve(msgpack_listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.changed().await;
                })
                .await;
        })
    };
    let pb_addr: SocketAddr = master.config.master.pb.parse()?;
    let pb_listener = tokio::net::TcpListener::bind(pb_addr).await?;
    tracing::info!(address = %pb_listener.local_addr()?, "PB worker protocol listening");
    let pb = tokio::spawn(crate::workers::pb::serve(pb_listener, master.clone(), stopped.clone()));
    let heartbeat = {
        let (store, id, mut stopped) = (store.clone(), master.master_id, stopped.clone());
        tokio::spawn(async move {
            let mut beats: u64 = 0;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(HEARTBEAT) => {
                        let now = crate::clock::now();
                        if let Err(e) = store.master_heartbeat(id, now).await {
                            tracing::warn!(error = %e, "heartbeat failed");
                        }
                        beats += 1;
                        if beats % PRUNE_EVERY_BEATS == 1 {
                            match store.prune_webhook_deliveries(now - DELIVERY_MEMORY_SECS).await {
                                Ok(n) if n > 0 => tracing::info!(pruned = n, "old webhook delivery ids forgotten"),
                                Ok(_) => {}
                                Err(e) => tracing::warn!(error = %e, "pruning webhook deliveries failed"),
                            }
                        }
                    }
                    _ = stopped.changed() => return,
                }
            }
        })
    };

    let listener = tokio::net::TcpListener::bind(http).await?;
    tracing::info!(address = %listener.local_addr()?, "HTTP listening");
    // Connection info lets refusals be logged with the caller's address.
    let app = router(master.clone()).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;

    tracing::info!("shutting down");
    let _ = stop.send(true);
    let _ = tokio::join!(scheduler, heartbeat, distributor);
    msgpack.abort();
    pb.abort();
    store.deactivate_master(master.master_id).await?;
    store.close().await;
    Ok(())
}

async fn shutdown_signal() {
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
        _ = ctrl_c => {}
        _ = term => {}
    }
}

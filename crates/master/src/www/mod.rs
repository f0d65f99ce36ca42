//! Buildbot's own web UI as a front end of Cascade: `/ws`, Buildbot's
//! WebSocket of Data API events (always served), and, with `[www]
//! buildbot_ui = true`, an installed `buildbot-www` bundle under
//! `/buildbot/` with what it reads beside it: its configuration (in the
//! page, and at `/buildbot/config`), `/buildbot/api/v2`, `/buildbot/ws`
//! and its plugins (console, waterfall, grid) under `/buildbot/plugins/`.
//! Cascade's own pages stay at `/`.

mod bundle;
pub mod frames;
pub mod keys;
mod ws;

use std::collections::VecDeque;
use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::routing::get;
use cascade_store::Store;
use serde_json::Value;
use tokio::sync::Semaphore;

pub use bundle::Bundle;
pub use ws::{MAX_FRAME_BYTES, MAX_SOCKETS, MAX_SUBSCRIPTIONS};

use crate::catalog::Catalog;
use crate::events::Bus;

/// What Buildbot's UI and `/ws` need.
pub struct Www {
    /// Where the objects of events are read.
    pub store: Store,
    /// The configuration (title, URL).
    pub catalog: Arc<Catalog>,
    /// Live events.
    pub bus: Bus,
    /// One permit per open `/ws` connection.
    pub sockets: Arc<Semaphore>,
    /// The installed bundle, when `[www] buildbot_ui` is on.
    pub bundle: Option<Arc<Bundle>>,
    /// The objects lately read for events, shared by the connections: an
    /// event is read once, however many clients it goes to.
    recent: parking_lot::Mutex<VecDeque<(String, Arc<Vec<Value>>)>>,
}

/// Events whose objects are kept for the other connections.
const RECENT: usize = 512;

impl Www {
    /// The state for `catalog`'s `[www]`; a bundle that cannot be read is
    /// logged and not served (the config reader has checked it is there).
    pub fn new(store: Store, catalog: Arc<Catalog>, bus: Bus, sockets: Arc<Semaphore>) -> Www {
        let www = &catalog.config.www;
        let bundle = match (&www.buildbot_www, www.buildbot_ui) {
            (Some(dir), true) => match Bundle::load(dir) {
                Ok(b) => Some(Arc::new(b)),
                Err(e) => {
                    tracing::error!(folder = %dir.display(), error = %e, "Buildbot's UI cannot be read; not serving it");
                    None
                }
            },
            _ => None,
        };
        Www { store, catalog, bus, sockets, bundle, recent: Default::default() }
    }

    /// What was read under `key`, if it is still kept.
    fn recalled(&self, key: &str) -> Option<Arc<Vec<Value>>> {
        self.recent.lock().iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    /// Keeps what was read under `key`, forgetting the oldest.
    fn remember(&self, key: String, objects: Arc<Vec<Value>>) {
        let mut recent = self.recent.lock();
        if recent.len() >= RECENT {
            recent.pop_front();
        }
        recent.push_back((key, objects));
    }
}

/// `/ws`, and with `ui` Buildbot's UI under `/buildbot/`.
pub fn router<S>(ui: bool) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Www>: FromRef<S>,
    Arc<crate::api::Reads>: FromRef<S>,
    Arc<crate::api::control::Control>: FromRef<S>,
{
    let r = Router::new().route("/ws", get(ws::upgrade));
    if !ui {
        return r;
    }
    r.route("/buildbot", get(bundle::to_slash))
        .route("/buildbot/", get(bundle::index))
        .route("/buildbot/index.html", get(bundle::index))
        .route("/buildbot/config", get(bundle::config))
        .route("/buildbot/ws", get(ws::upgrade))
        .route("/buildbot/api/v2/application.spec", get(bundle::application_spec))
        .route("/buildbot/plugins/{name}/{*file}", get(bundle::plugin_file))
        .route("/buildbot/{*file}", get(bundle::file))
        .nest("/buildbot/api/v2", crate::api::router())
}

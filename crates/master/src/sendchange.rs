//! `cascade sendchange`: a change injected by hand, as Buildbot's.
//!
//! It writes through the store, classified by the same schedulers as a
//! webhook's changes; a running master on that database picks it up on its
//! next pass (within a second).

use std::collections::BTreeMap;

use cascade_config::Config;
use cascade_model::NewChange;
use cascade_store::{IngestOutcome, Store};

use crate::scheduler::Schedulers;

#[derive(Debug, Clone, Default)]
pub struct SendChange {
    pub who: String,
    /// A git branch name, or a configured branch label (`3.x`).
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub comments: String,
    pub files: Vec<String>,
    pub repository: Option<String>,
    pub project: Option<String>,
    pub category: Option<String>,
    pub revlink: Option<String>,
    pub when: Option<i64>,
    pub properties: BTreeMap<String, String>,
}

impl SendChange {
    pub fn into_change(self, config: &Config, now: i64) -> NewChange {
        let branch = self.branch.map(|b| config.branch(&b).map(|c| c.git.clone()).unwrap_or(b));
        let project = self.project.or_else(|| config.github.repository.clone()).unwrap_or_default();
        let repository = self
            .repository
            .or_else(|| config.github.repository.as_ref().map(|r| format!("https://github.com/{r}")))
            .unwrap_or_default();
        let mut properties: BTreeMap<String, serde_json::Value> =
            self.properties.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
        properties.entry("event".into()).or_insert_with(|| serde_json::json!("sendchange"));
        NewChange {
            author: self.who,
            committer: None,
            comments: self.comments,
            branch,
            revision: self.revision,
            // Pages and Buildbot's web UI make this a link: http(s) only.
            revlink: self.revlink.filter(|l| cascade_model::text::http_link(l).is_some()),
            when_timestamp: self.when.unwrap_or(now),
            category: self.category,
            repository,
            codebase: String::new(),
            project,
            files: self.files,
            properties,
        }
    }
}

/// Stores the change and the schedulers' interest in it; returns its id.
pub async fn send(store: &Store, config: &Config, change: SendChange, now: i64) -> anyhow::Result<i64> {
    let rows = store.sync_schedulers(&Schedulers::config_rows(config), now).await?;
    let schedulers = Schedulers::new(config, &rows, &BTreeMap::new())?;
    store_change(store, config, &schedulers, change, now).await
}

/// Stores a change a running master received (`buildbot sendchange` over
/// PB) with its schedulers' interest, and wakes them.
pub async fn store(
    store: &Store,
    config: &Config,
    schedulers: &Schedulers,
    change: SendChange,
    now: i64,
) -> anyhow::Result<i64> {
    let id = store_change(store, config, schedulers, change, now).await?;
    schedulers.nudge();
    Ok(id)
}

async fn store_change(
    store: &Store,
    config: &Config,
    schedulers: &Schedulers,
    change: SendChange,
    now: i64,
) -> anyhow::Result<i64> {
    let change = change.into_change(config, now);
    let touches = schedulers.classify(&change);
    match store.ingest_changes(None, &[(change, touches)], now).await? {
        IngestOutcome::Stored { change_ids } => {
            change_ids.first().copied().ok_or_else(|| anyhow::anyhow!("no change stored"))
        }
        IngestOutcome::Duplicate => anyhow::bail!("the store reported a duplicate for a change without delivery id"),
    }
}

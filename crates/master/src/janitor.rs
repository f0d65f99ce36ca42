//! Housekeeping of what grows for ever: old webhook delivery ids, expired
//! sessions, old events and notifications, and (with `[janitor]`
//! horizons) old builds' log contents, artifact folders and steps. It runs
//! in its own task, so a long sweep never delays the heartbeat, and in
//! small batches, so writers never wait behind it.

use std::sync::Arc;
use std::time::Duration;

use cascade_config::Config;
use cascade_model::naming::builder_folder;
use cascade_store::{Removal, Store, StoreError};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::metrics::Metrics;

/// Builds handled per transaction.
const BATCH: i64 = 20;
/// Builds handled per removal and sweep (a first sweep over years of
/// history takes several); the next sweep goes on.
const PER_SWEEP: usize = 100_000;

/// What the janitor works with.
#[derive(Clone)]
pub struct Janitor {
    /// Where the rows are.
    pub store: Store,
    /// `[janitor]` and where artifacts are.
    pub config: Arc<Config>,
    /// What it removed, counted.
    pub metrics: Arc<Metrics>,
    /// What time it is.
    pub clock: Clock,
    /// This master: its own builds' artifacts are on its disk.
    pub master_id: i64,
}

impl Janitor {
    /// Sweeps at start and every `[janitor] every`, until `stopped`.
    pub async fn run(self, mut stopped: watch::Receiver<bool>) {
        let mut sweep = tokio::time::interval(self.config.janitor.every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = sweep.tick() => {}
                _ = stopped.changed() => return,
            }
            tokio::select! {
                () = self.sweep(self.clock.now()) => {}
                _ = stopped.changed() => return,
            }
        }
    }

    /// One sweep: what has outlived its horizon goes.
    pub async fn sweep(&self, now: i64) {
        let (store, janitor) = (&self.store, &self.config.janitor);
        let horizon = |d: Duration| now - i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2);
        self.report("webhook_deliveries", store.prune_webhook_deliveries(horizon(janitor.delivery_horizon)).await);
        self.report("sessions", store.prune_sessions(now).await);
        self.report("events", store.prune_events(horizon(janitor.event_horizon)).await);
        self.report("notifications", store.prune_notifications(horizon(janitor.event_horizon)).await);
        // Steps first: builds past the build horizon need no log pass.
        for (what, label, d) in [
            (Removal::Steps, "steps", janitor.build_horizon),
            (Removal::Logs, "log_chunks", janitor.log_horizon),
            (Removal::Artifacts, "artifacts", janitor.artifact_horizon),
        ] {
            if let Some(d) = d {
                let removed = self.remove(what, horizon(d), now).await;
                self.report(label, removed);
            }
        }
        self.metrics.janitor_sweeps.inc(&[]);
    }

    fn report(&self, what: &'static str, pruned: Result<u64, StoreError>) {
        match pruned {
            Ok(0) => {}
            Ok(n) => {
                self.metrics.janitor_removed.add(&[what], n);
                tracing::info!(removed = n, what, "the janitor removed old data");
            }
            Err(e) => tracing::warn!(error = %e, what, "the janitor failed; it tries again at its next run"),
        }
    }

    /// `what` of builds finished before `before`, batch by batch; returns
    /// the rows (or, for artifacts, the folders) removed.
    async fn remove(&self, what: Removal, before: i64, now: i64) -> Result<u64, StoreError> {
        let (mut removed, mut handled) = (0, 0);
        while handled < PER_SWEEP {
            let master = (what == Removal::Artifacts).then_some(self.master_id);
            let batch = self.store.removable_builds(what, before, BATCH, master).await?;
            if batch.is_empty() {
                break;
            }
            handled += batch.len();
            let mut ids: Vec<i64> = batch.iter().map(|b| b.build_id).collect();
            if what == Removal::Artifacts {
                let root = self.config.master.artifacts.clone();
                let folders: Vec<_> = batch
                    .iter()
                    .map(|b| (b.build_id, root.join(builder_folder(&b.builder)).join(b.number.to_string())))
                    .collect();
                let (gone, deleted) =
                    tokio::task::spawn_blocking(move || remove_folders(&folders)).await.unwrap_or_default();
                if gone.len() < ids.len() {
                    // A folder that would not go is tried again next sweep; stop for now.
                    self.store.remove_from_builds(what, &gone, now).await?;
                    removed += deleted;
                    break;
                }
                removed += deleted;
                ids = gone;
            }
            removed += self.store.remove_from_builds(what, &ids, now).await?;
            // Writers go first between batches.
            tokio::task::yield_now().await;
        }
        Ok(removed)
    }
}

/// Deletes the builds' folders; returns the builds whose folder is gone
/// now (deleted, or there was none) and how many were deleted.
fn remove_folders(folders: &[(i64, std::path::PathBuf)]) -> (Vec<i64>, u64) {
    let (mut gone, mut deleted) = (Vec::new(), 0);
    for (build, folder) in folders {
        match std::fs::remove_dir_all(folder) {
            Ok(()) => {
                gone.push(*build);
                deleted += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => gone.push(*build),
            Err(e) => tracing::warn!(folder = %folder.display(), error = %e, "could not remove an artifact folder"),
        }
    }
    (gone, deleted)
}

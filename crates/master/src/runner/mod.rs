//! Builds run: the distributor gives pending requests to workers with a
//! free slot (claiming atomically, which merges compatible requests), and
//! each build runs its factory's steps on its worker.

pub mod build;
pub mod command;
pub mod log;
pub mod upload;

use std::sync::Arc;
use std::time::Duration;

use cascade_store::StoreError;

use crate::app::Master;

/// How often the distributor looks for work without being nudged (requests
/// created by another master arrive this way).
const POLL: Duration = Duration::from_secs(1);

/// Starts every build that can start now; returns how many did.
pub async fn dispatch_once(master: &Arc<Master>) -> Result<usize, StoreError> {
    let mut started = 0;
    for builder_id in master.store.pending_builder_ids().await? {
        let Some(builder) = master.builder_by_id(builder_id) else { continue };
        for worker_name in &builder.workers {
            let Some(worker) = master.workers.get(worker_name) else { continue };
            // Reserve a slot before claiming, so two builders cannot both take the last one.
            if !worker.reserve(&builder.name) {
                continue;
            }
            match master
                .store
                .claim_build(builder_id, master.master_id, Some(worker.worker_id), crate::clock::now())
                .await
            {
                Ok(Some(claimed)) => {
                    started += 1;
                    tokio::spawn(build::run(master.clone(), worker.clone(), builder.clone(), claimed));
                    break;
                }
                Ok(None) => {
                    worker.release(&builder.name);
                    break;
                }
                Err(e) => {
                    worker.release(&builder.name);
                    return Err(e);
                }
            }
        }
    }
    Ok(started)
}

pub async fn run(master: Arc<Master>, mut stopped: tokio::sync::watch::Receiver<bool>) {
    loop {
        if *stopped.borrow() {
            return;
        }
        if let Err(e) = dispatch_once(&master).await {
            tracing::error!(error = %e, "distributing builds failed; retrying");
        }
        tokio::select! {
            _ = master.wake_builds.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = stopped.changed() => {}
        }
    }
}

//! Builds run: the distributor gives pending requests to workers with a
//! free slot (claiming atomically, which merges compatible requests), and
//! each build runs its factory's steps on its worker.

pub mod build;
pub mod command;
pub mod git;
pub mod log;
pub mod testresults;
pub mod upload;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cascade_store::{Store, StoreError};
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::events::Bus;
use crate::workers::Registry;

/// How often the distributor looks for work without being nudged (requests
/// created by another master arrive this way).
const POLL: Duration = Duration::from_secs(1);

/// What the distributor and the builds it runs need.
pub struct Runner {
    /// Where requests are claimed and builds recorded.
    pub store: Store,
    /// Builders, factories, workers.
    pub catalog: Arc<Catalog>,
    /// What time it is.
    pub clock: Clock,
    /// Where log lines go as they are stored.
    pub bus: Bus,
    /// Who is connected.
    pub registry: Arc<Registry>,
    /// Nudged by new requests and free worker slots.
    pub wake: Arc<Notify>,
    /// Builds and log bytes counted.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Builds running on this master, with the switch that stops each;
    /// shared with the runner of the configuration a reload replaces
    /// (empty at start).
    pub(crate) running: Running,
}

/// The builds running on a master, by id, with the switch that stops each.
pub type Running = Arc<Mutex<BTreeMap<i64, watch::Sender<bool>>>>;

impl Runner {
    /// The builds running here, for the runner that follows a reload.
    pub fn running(&self) -> Running {
        self.running.clone()
    }

    /// Asks the distributor to look for work now.
    pub fn nudge(&self) {
        self.wake.notify_one();
    }

    /// Stops a build running on this master: its current command is
    /// interrupted, the build ends CANCELLED (`always_run` steps still run).
    /// False if no such build runs here.
    pub fn stop_build(&self, build_id: i64) -> bool {
        let stop = self.running.lock().get(&build_id).cloned();
        stop.is_some_and(|tx| tx.send(true).is_ok())
    }

    /// How many builds run on this master now.
    pub fn running_count(&self) -> usize {
        self.running.lock().len()
    }

    /// The builds running on this master now.
    pub fn running_ids(&self) -> Vec<i64> {
        self.running.lock().keys().copied().collect()
    }

    fn register_running(&self, build_id: i64, stop: watch::Sender<bool>) {
        self.running.lock().insert(build_id, stop);
    }

    fn unregister_running(&self, build_id: i64) {
        self.running.lock().remove(&build_id);
    }

    /// Starts every build that can start now; returns how many did.
    pub async fn dispatch_once(self: &Arc<Self>) -> Result<usize, StoreError> {
        let mut started = 0;
        for builder_id in self.store.pending_builder_ids().await? {
            let Some(builder) = self.catalog.builder(builder_id) else { continue };
            for worker_name in &builder.workers {
                let Some(worker) = self.registry.get(worker_name) else { continue };
                // Reserve a slot before claiming, so two builders cannot both take the last one.
                if !worker.reserve(&builder.name) {
                    continue;
                }
                let claimed = self.store.claim_build(
                    builder_id,
                    self.catalog.master_id,
                    Some(worker.worker_id),
                    self.clock.now(),
                );
                let asked = std::time::Instant::now();
                let claimed = claimed.await;
                self.metrics.store_duration.observe(&["claim"], asked.elapsed().as_secs_f64());
                match claimed {
                    Ok(Some(claimed)) => {
                        started += 1;
                        // Registered before the task runs: a stop sees every build.
                        let (stop_tx, stop) = watch::channel(false);
                        self.register_running(claimed.build_id, stop_tx);
                        tokio::spawn(build::run(self.clone(), worker.clone(), builder.clone(), claimed, stop));
                    }
                    Ok(None) => worker.release(&builder.name),
                    Err(e) => {
                        worker.release(&builder.name);
                        return Err(e);
                    }
                }
                break;
            }
        }
        Ok(started)
    }

    /// The distributor: dispatches whenever nudged, a worker attaches or a
    /// slot frees, and every `POLL`, until `stopped` flips.
    pub async fn run(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        while !*stopped.borrow() {
            if let Err(e) = self.dispatch_once().await {
                tracing::error!(error = %e, "distributing builds failed; retrying");
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
                _ = stopped.changed() => {}
            }
        }
    }
}

//! The configuration as this master runs it: the config itself, the ids
//! its builders and workers have in the store, and this master's own id.

use std::collections::BTreeMap;
use std::sync::Arc;

use cascade_config::{BuilderConfig, Config, FactoryConfig, SchedulerConfig, SchedulerKind, WorkerConfig};

/// Lookups every part of the master shares.
#[derive(Debug)]
pub struct Catalog {
    /// The configuration.
    pub config: Arc<Config>,
    /// This master's row in `masters`.
    pub master_id: i64,
    builder_ids: BTreeMap<String, i64>,
    worker_ids: BTreeMap<String, i64>,
    /// Builder id → its index in `config.builders`.
    builders_by_id: BTreeMap<i64, usize>,
}

impl Catalog {
    /// A catalog over `config` with the ids the store gave its builders and workers.
    pub fn new(
        config: Config,
        master_id: i64,
        builder_ids: BTreeMap<String, i64>,
        worker_ids: BTreeMap<String, i64>,
    ) -> Catalog {
        let builders_by_id = config
            .builders
            .iter()
            .enumerate()
            .filter_map(|(i, b)| builder_ids.get(&b.name).map(|id| (*id, i)))
            .collect();
        Catalog { config: Arc::new(config), master_id, builder_ids, worker_ids, builders_by_id }
    }

    /// A builder's id by its (expanded) name.
    pub fn builder_id(&self, name: &str) -> Option<i64> {
        self.builder_ids.get(name).copied()
    }

    /// A builder's configuration by its id.
    pub fn builder(&self, id: i64) -> Option<&BuilderConfig> {
        self.builders_by_id.get(&id).and_then(|i| self.config.builders.get(*i))
    }

    /// Every configured builder with its id, in config order.
    pub fn builders(&self) -> impl Iterator<Item = (&BuilderConfig, i64)> {
        self.config.builders.iter().filter_map(|b| self.builder_id(&b.name).map(|id| (b, id)))
    }

    /// How many builders have ids.
    pub fn builder_count(&self) -> usize {
        self.builder_ids.len()
    }

    /// A worker's id by its name.
    pub fn worker_id(&self, name: &str) -> Option<i64> {
        self.worker_ids.get(name).copied()
    }

    /// How many workers have ids.
    pub fn worker_count(&self) -> usize {
        self.worker_ids.len()
    }

    /// A worker's configuration by its name.
    pub fn worker(&self, name: &str) -> Option<&WorkerConfig> {
        self.config.workers.iter().find(|w| w.name == name)
    }

    /// The builders a worker serves, in config order.
    pub fn builders_of_worker<'a>(&'a self, worker: &'a str) -> impl Iterator<Item = &'a BuilderConfig> + 'a {
        self.config.builders.iter().filter(move |b| b.workers.iter().any(|w| w == worker))
    }

    /// A factory by name.
    pub fn factory(&self, name: &str) -> Option<&FactoryConfig> {
        self.config.factories.iter().find(|f| f.name == name)
    }

    /// The configured force schedulers.
    pub fn force_schedulers(&self) -> impl Iterator<Item = &SchedulerConfig> {
        self.config.schedulers.iter().filter(|s| matches!(s.kind, SchedulerKind::Force))
    }

    /// The builders a force scheduler may build (all, unless it lists some).
    pub fn forceable<'a>(&'a self, s: &'a SchedulerConfig) -> impl Iterator<Item = &'a BuilderConfig> + 'a {
        self.config
            .builders
            .iter()
            .filter(|b| s.builders.as_ref().is_none_or(|l| l.iter().any(|n| n == &b.definition || n == &b.name)))
    }

    /// Whether a scheduler of this name is configured.
    /// The branch labels `asked` names: itself if it is a label (or a
    /// pull request's ref), else the labels that build it as a git branch
    /// (`main` is `3.x`). A branch that is neither is an error naming the
    /// branches there are, so no one reads an empty answer as green.
    pub fn branch_labels(&self, asked: &str) -> Result<Vec<String>, String> {
        let branches = &self.config.branches;
        if branches.iter().any(|b| b.name == asked) || cascade_model::pull::number_of(asked).is_some() {
            return Ok(vec![asked.to_string()]);
        }
        let by_git: Vec<String> = branches.iter().filter(|b| b.git == asked).map(|b| b.name.clone()).collect();
        if by_git.is_empty() { Err(self.unknown_branch(asked)) } else { Ok(by_git) }
    }

    /// What is said of a branch no configuration names.
    pub fn unknown_branch(&self, asked: &str) -> String {
        let known: Vec<String> = self
            .config
            .branches
            .iter()
            .map(|b| if b.git == b.name { b.name.clone() } else { format!("{} ({})", b.name, b.git) })
            .collect();
        format!("no branch {asked:?} here; the branches are {}", known.join(", "))
    }

    pub fn has_scheduler(&self, name: &str) -> bool {
        self.config.schedulers.iter().any(|s| s.name == name)
    }
}

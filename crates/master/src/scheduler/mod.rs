//! Schedulers turn changes (branch), the clock (periodic) and people
//! (force) into buildsets with one build request per builder.
//!
//! Their state lives in the store, so the loop here holds nothing that a
//! restart could lose: a change is classified in the same transaction that
//! stores it, and a firing consumes the waiting changes atomically.

pub mod periodic;
pub mod trying;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use cascade_config::{Config, SchedulerKind};
use cascade_model::scheduling::{is_important, tree_stable_fire_at};
use cascade_model::{Glob, NewChange};
use cascade_store::{NewBuildset, NewSourceStamp, SchedulerRow, SchedulerTouch, Store, StoreError, WaitingSummary};
use parking_lot::RwLock;
use serde_json::json;
use tokio::sync::Notify;

use crate::clock::Clock;

/// How often the loop looks at the store even without a nudge: changes
/// stored by another master or by `cascade sendchange` arrive this way.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The least time between two passes: a burst of pushes, each nudging the
/// loop, costs a few passes a second, not one per push.
pub const MIN_PASS_GAP: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug)]
enum Kind {
    /// `tree_stable` in milliseconds.
    Branch {
        git_branch: String,
        tree_stable: i64,
        ignore: Vec<Glob>,
    },
    Periodic {
        git_branch: String,
        cron: Box<croner::Cron>,
    },
    Force,
    PullRequest(PullKind),
    Try,
}

/// A pull-request scheduler's triggers, compiled.
#[derive(Debug)]
struct PullKind {
    /// Label → builder-name regex.
    labels: Vec<(String, regex::Regex)>,
    /// The builders a label may reach (those with `label_tag`).
    label_builders: BTreeSet<i64>,
    comment: Option<regex::Regex>,
    cancel_running: bool,
}

#[derive(Debug)]
struct Entry {
    id: i64,
    name: String,
    kind: Kind,
    /// Builders fed, with the git branch each builds (if any).
    builders: Vec<(String, i64, Option<String>)>,
}

/// A config regex, compiled (the config reader checked it).
fn compile(pattern: &str) -> Result<regex::Regex, SchedulerError> {
    regex::Regex::new(pattern).map_err(|e| SchedulerError::Invalid(format!("{pattern:?}: {e}")))
}

fn pull_kind(
    config: &Config,
    s: &cascade_config::SchedulerConfig,
    t: &cascade_config::PullRequestTriggers,
    builder_ids: &BTreeMap<String, i64>,
) -> Result<PullKind, SchedulerError> {
    let label_builders = config
        .scheduler_builders(s)
        .into_iter()
        .filter(|b| t.label_tag.as_ref().is_none_or(|tag| b.tags.contains(tag)))
        .filter_map(|b| builder_ids.get(&b.name).copied())
        .collect();
    let labels = t.labels.iter().map(|(l, r)| Ok((l.clone(), compile(r)?))).collect::<Result<_, SchedulerError>>()?;
    let comment = t.comment.as_deref().map(compile).transpose()?;
    Ok(PullKind { labels, label_builders, comment, cancel_running: t.cancel_running })
}

/// The builders a pull request is built on, and by which scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullTarget {
    pub scheduler: String,
    pub scheduler_id: i64,
    /// (name, id), in the configuration's order.
    pub builders: Vec<(String, i64)>,
}

/// What a PR comment asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommentAsk {
    /// Not a build command (or no scheduler takes comments).
    Nothing,
    /// The builder pattern is no regex (the reason).
    BadPattern(String),
    /// A command whose pattern names no PR builder.
    NoBuilder { pattern: String },
    /// Build on these.
    Build { pattern: String, target: PullTarget },
}

/// The longest builder pattern a comment may give, and the most a compiled
/// one may take: a comment is anyone's text.
const PATTERN_MAX: usize = 200;
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// The builders of `e` whose names `pattern` matches (anywhere), among `allowed` if given.
fn matching(e: &Entry, pattern: &regex::Regex, allowed: Option<&BTreeSet<i64>>) -> Vec<(String, i64)> {
    e.builders
        .iter()
        .filter(|(name, id, _)| allowed.is_none_or(|a| a.contains(id)) && pattern.is_match(name))
        .map(|(name, id, _)| (name.clone(), *id))
        .collect()
}

/// A forced build, as the force scheduler's API will take it.
#[derive(Debug, Clone, Default)]
pub struct ForceRequest {
    pub scheduler: String,
    /// Builder names; empty means every builder of the scheduler.
    pub builders: Vec<String>,
    /// A git branch; by default each builder's own branch.
    pub branch: Option<String>,
    pub revision: Option<String>,
    pub reason: String,
    pub owner: String,
    pub properties: BTreeMap<String, serde_json::Value>,
}

/// What one pass of the loop did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    /// (scheduler name, buildset id, build request ids)
    pub fired: Vec<(String, i64, Vec<i64>)>,
    /// When something is next due (Unix milliseconds), if anything is waiting.
    pub next_due: Option<i64>,
}

#[derive(Debug)]
pub struct Schedulers {
    entries: Vec<Entry>,
    /// `owner/name` from the config; changes of other projects are not built.
    project: Option<String>,
    repository_url: String,
    disabled: RwLock<BTreeSet<i64>>,
    /// Nudged when changes are stored.
    wake: Notify,
    /// The soonest a nudge asked for a pass (Unix ms; `i64::MAX`: none
    /// since the last pass began).
    wanted_at: AtomicI64,
}

impl Schedulers {
    pub fn new(
        config: &Config,
        rows: &BTreeMap<String, SchedulerRow>,
        builder_ids: &BTreeMap<String, i64>,
    ) -> Result<Schedulers, SchedulerError> {
        let git_of = |label: &str| config.branch(label).map(|b| b.git.clone());
        let mut entries = Vec::new();
        for s in &config.schedulers {
            let row = rows
                .get(&s.name)
                .ok_or_else(|| SchedulerError::Invalid(format!("scheduler {:?} has no row in the store", s.name)))?;
            let builders = config
                .scheduler_builders(s)
                .into_iter()
                .filter_map(|b| {
                    let id = *builder_ids.get(&b.name)?;
                    Some((b.name.clone(), id, b.branch.as_deref().and_then(git_of)))
                })
                .collect();
            let kind = match &s.kind {
                SchedulerKind::Branch { branch, tree_stable, ignore_files } => Kind::Branch {
                    git_branch: git_of(branch)
                        .ok_or_else(|| SchedulerError::Invalid(format!("unknown branch {branch:?}")))?,
                    tree_stable: i64::try_from(tree_stable.as_millis()).unwrap_or(i64::MAX),
                    ignore: ignore_files.clone(),
                },
                SchedulerKind::Periodic { branch, cron } => Kind::Periodic {
                    git_branch: git_of(branch)
                        .ok_or_else(|| SchedulerError::Invalid(format!("unknown branch {branch:?}")))?,
                    cron: Box::new(periodic::parse(cron).map_err(SchedulerError::Invalid)?),
                },
                SchedulerKind::Force => Kind::Force,
                SchedulerKind::Try { .. } => Kind::Try,
                SchedulerKind::PullRequest(t) => Kind::PullRequest(pull_kind(config, s, t, builder_ids)?),
            };
            entries.push(Entry { id: row.id, name: s.name.clone(), kind, builders });
        }
        let project = config.github.repository.clone();
        let repository_url = project.as_ref().map(|p| format!("https://github.com/{p}")).unwrap_or_default();
        let disabled = rows.values().filter(|r| !r.enabled).map(|r| r.id).collect();
        Ok(Schedulers {
            entries,
            project,
            repository_url,
            disabled: RwLock::new(disabled),
            wake: Notify::new(),
            wanted_at: AtomicI64::new(i64::MAX),
        })
    }

    /// The (name, kind) of every configured scheduler, for `sync_schedulers`.
    pub fn config_rows(config: &Config) -> Vec<(String, String)> {
        config.schedulers.iter().map(|s| (s.name.clone(), s.kind.name().to_string())).collect()
    }

    /// Switches a scheduler at once (the store holds the switch for the
    /// next pass and for other masters).
    pub fn set_enabled(&self, id: i64, enabled: bool) {
        let mut disabled = self.disabled.write();
        if enabled {
            disabled.remove(&id);
        } else {
            disabled.insert(id);
        }
    }

    fn is_disabled(&self, id: i64) -> bool {
        self.disabled.read().contains(&id)
    }

    /// Which branch schedulers want this change, and whether it is
    /// important to each (its `ignore_files` decide).
    pub fn classify(&self, change: &NewChange) -> Vec<SchedulerTouch> {
        if let Some(p) = &self.project
            && !change.project.is_empty()
            && change.project != *p
        {
            return Vec::new();
        }
        self.entries
            .iter()
            .filter(|e| !self.is_disabled(e.id))
            .filter_map(|e| match &e.kind {
                Kind::Branch { git_branch, ignore, .. } if change.branch.as_deref() == Some(git_branch.as_str()) => {
                    Some(SchedulerTouch { scheduler_id: e.id, important: is_important(&change.files, ignore) })
                }
                _ => None,
            })
            .collect()
    }

    fn template(&self, e: &Entry, reason: String) -> NewBuildset {
        NewBuildset {
            reason,
            scheduler_id: Some(e.id),
            properties: BTreeMap::from([("scheduler".to_string(), (json!(e.name), "Scheduler".to_string()))]),
            builder_ids: e.builders.iter().map(|(_, id, _)| *id).collect(),
            ..Default::default()
        }
    }

    /// Fires every scheduler that is due at `now` (Unix seconds).
    pub async fn tick(&self, store: &Store, now: i64) -> Result<TickReport, SchedulerError> {
        self.tick_ms(store, now.saturating_mul(1000)).await
    }

    /// Fires every scheduler that is due at `now_ms` (Unix milliseconds);
    /// the report's `next_due` is in milliseconds too.
    pub async fn tick_ms(&self, store: &Store, now_ms: i64) -> Result<TickReport, SchedulerError> {
        let now = now_ms.div_euclid(1000);
        let rows = store.list_schedulers().await?;
        *self.disabled.write() = rows.iter().filter(|r| !r.enabled).map(|r| r.id).collect();
        let rows: BTreeMap<i64, SchedulerRow> = rows.into_iter().map(|r| (r.id, r)).collect();
        let waiting: BTreeMap<i64, WaitingSummary> =
            store.waiting_summaries().await?.into_iter().map(|w| (w.scheduler_id, w)).collect();
        let mut report = TickReport::default();
        let mut due = |t: i64| report.next_due = Some(report.next_due.map_or(t, |n: i64| n.min(t)));
        let mut fired = Vec::new();
        for e in &self.entries {
            if self.is_disabled(e.id) {
                continue;
            }
            match &e.kind {
                Kind::Branch { tree_stable, .. } => {
                    let Some(summary) = waiting.get(&e.id) else { continue };
                    let Some(fire_at) = tree_stable_fire_at(summary.last_important_ms, *tree_stable) else { continue };
                    if fire_at > now_ms {
                        due(fire_at);
                        continue;
                    }
                    let up_to = summary.up_to_change_id;
                    let reason = format!("The SingleBranchScheduler scheduler named '{}' triggered this build", e.name);
                    if let Some((bsid, brids)) =
                        store.fire_branch_scheduler(e.id, up_to, &self.template(e, reason), now).await?
                    {
                        tracing::info!(scheduler = %e.name, buildset = bsid, requests = brids.len(), "branch scheduler fired");
                        fired.push((e.name.clone(), bsid, brids));
                    }
                }
                Kind::Periodic { git_branch, cron } => {
                    let since = rows.get(&e.id).map(|r| r.last_fired_at.unwrap_or(r.created_at)).unwrap_or(now);
                    if let Some(occurrence) = periodic::due_occurrence(cron, since, now) {
                        let reason = format!("The Nightly scheduler named '{}' triggered this build", e.name);
                        let mut bs = self.template(e, reason);
                        bs.sourcestamp = NewSourceStamp {
                            repository: self.repository_url.clone(),
                            branch: Some(git_branch.clone()),
                            revision: None,
                            project: self.project.clone().unwrap_or_default(),
                            codebase: String::new(),
                        };
                        if let Some((bsid, brids)) = store.fire_periodic_scheduler(e.id, occurrence, &bs, now).await? {
                            tracing::info!(scheduler = %e.name, buildset = bsid, requests = brids.len(), "periodic scheduler fired");
                            fired.push((e.name.clone(), bsid, brids));
                        }
                    }
                    if let Some(next) = periodic::next_occurrence(cron, now) {
                        due(next.saturating_mul(1000));
                    }
                }
                Kind::Force | Kind::PullRequest(_) | Kind::Try => {}
            }
        }
        report.fired = fired;
        Ok(report)
    }

    /// Creates the buildsets for a forced build: one per branch among the
    /// chosen builders.
    pub async fn force(
        &self,
        store: &Store,
        req: &ForceRequest,
        now: i64,
    ) -> Result<Vec<(i64, Vec<i64>)>, SchedulerError> {
        let entry = self
            .entries
            .iter()
            .find(|e| e.name == req.scheduler && matches!(e.kind, Kind::Force))
            .ok_or_else(|| SchedulerError::Invalid(format!("no force scheduler named {:?}", req.scheduler)))?;
        let chosen: Vec<&(String, i64, Option<String>)> = if req.builders.is_empty() {
            entry.builders.iter().collect()
        } else {
            req.builders
                .iter()
                .map(|name| {
                    entry.builders.iter().find(|(n, _, _)| n == name).ok_or_else(|| {
                        SchedulerError::Invalid(format!("builder {name:?} cannot be forced by {:?}", req.scheduler))
                    })
                })
                .collect::<Result<_, _>>()?
        };
        if chosen.is_empty() {
            return Err(SchedulerError::Invalid("no builders to force".into()));
        }
        let mut by_branch: BTreeMap<Option<String>, Vec<i64>> = BTreeMap::new();
        for (_, id, branch) in chosen {
            let branch = req.branch.clone().or_else(|| branch.clone());
            by_branch.entry(branch).or_default().push(*id);
        }
        let mut properties: BTreeMap<String, (serde_json::Value, String)> =
            req.properties.iter().map(|(k, v)| (k.clone(), (v.clone(), "Force Build Form".to_string()))).collect();
        properties.insert("scheduler".into(), (json!(entry.name), "Scheduler".into()));
        properties.insert("owner".into(), (json!(req.owner), "Force Build Form".into()));
        properties.insert("reason".into(), (json!(req.reason), "Force Build Form".into()));
        let mut created = Vec::new();
        for (branch, builder_ids) in by_branch {
            let bs = NewBuildset {
                reason: format!("A build was forced by '{}': {}", req.owner, req.reason),
                scheduler_id: Some(entry.id),
                sourcestamp: NewSourceStamp {
                    repository: self.repository_url.clone(),
                    branch,
                    revision: req.revision.clone().filter(|r| !r.is_empty()),
                    project: self.project.clone().unwrap_or_default(),
                    codebase: String::new(),
                },
                properties: properties.clone(),
                builder_ids,
                ..Default::default()
            };
            created.push(store.create_buildset(&bs, now).await?);
        }
        Ok(created)
    }

    fn pull_entries(&self) -> impl Iterator<Item = (&Entry, &PullKind)> {
        self.entries.iter().filter(|e| !self.is_disabled(e.id)).filter_map(|e| match &e.kind {
            Kind::PullRequest(p) => Some((e, p)),
            _ => None,
        })
    }

    /// Whether any pull-request scheduler is on.
    pub fn builds_pull_requests(&self) -> bool {
        self.pull_entries().next().is_some()
    }

    /// The labels that trigger a build.
    pub fn trigger_labels(&self) -> Vec<String> {
        self.pull_entries().flat_map(|(_, p)| p.labels.iter().map(|(l, _)| l.clone())).collect()
    }

    /// Where adding `label` builds a PR: the first scheduler that has it,
    /// with its tagged builders whose names the label's regex matches.
    pub fn for_label(&self, label: &str) -> Option<PullTarget> {
        self.pull_entries().find_map(|(e, p)| {
            let (_, regex) = p.labels.iter().find(|(l, _)| l == label)?;
            let builders = matching(e, regex, Some(&p.label_builders));
            Some(PullTarget { scheduler: e.name.clone(), scheduler_id: e.id, builders })
        })
    }

    /// What a comment's body asks: its first line against each comment
    /// trigger; the group is matched, ignoring case, against the builders' names.
    pub fn for_comment(&self, body: &str) -> CommentAsk {
        let first = body.trim().lines().next().unwrap_or("").trim_end();
        for (e, p) in self.pull_entries() {
            let Some(pattern) = p.comment.as_ref().and_then(|c| c.captures(first)).and_then(|c| c.get(1)) else {
                continue;
            };
            let pattern = pattern.as_str().trim().to_string();
            if pattern.len() > PATTERN_MAX {
                return CommentAsk::BadPattern(format!("the pattern is longer than {PATTERN_MAX} characters"));
            }
            let compiled =
                regex::RegexBuilder::new(&pattern).case_insensitive(true).size_limit(PATTERN_SIZE_LIMIT).build();
            let regex = match compiled {
                Ok(r) => r,
                Err(e) => return CommentAsk::BadPattern(e.to_string()),
            };
            let builders = matching(e, &regex, None);
            if builders.is_empty() {
                return CommentAsk::NoBuilder { pattern };
            }
            let target = PullTarget { scheduler: e.name.clone(), scheduler_id: e.id, builders };
            return CommentAsk::Build { pattern, target };
        }
        CommentAsk::Nothing
    }

    /// Whether new commits also stop a PR's running builds.
    pub fn cancels_running(&self) -> bool {
        self.pull_entries().any(|(_, p)| p.cancel_running)
    }

    /// The buildset a PR build is: GitHub's merge commit as it was when the
    /// build was asked for (pinned: a push after the approval is not what
    /// runs), on `target`'s builders, with the PR's facts as properties.
    pub fn pull_buildset(&self, target: &PullTarget, change: &NewChange, reason: String) -> NewBuildset {
        let mut properties: BTreeMap<String, (serde_json::Value, String)> = change
            .properties
            .iter()
            .filter(|(k, _)| k.starts_with("pr_"))
            .map(|(k, v)| (k.clone(), (v.clone(), "Pull Request".to_string())))
            .collect();
        properties.insert("scheduler".into(), (json!(target.scheduler), "Scheduler".into()));
        NewBuildset {
            reason,
            scheduler_id: Some(target.scheduler_id),
            sourcestamp: NewSourceStamp {
                repository: change.repository.clone(),
                branch: change.branch.clone(),
                revision: change.properties.get("pr_merge_sha").and_then(|v| v.as_str()).map(str::to_string),
                project: change.project.clone(),
                codebase: String::new(),
            },
            properties,
            builder_ids: target.builders.iter().map(|(_, id)| *id).collect(),
            pin_revision: true,
            ..Default::default()
        }
    }

    /// Asks for a pass now (changes were stored).
    pub fn nudge(&self) {
        self.nudge_at(i64::MIN);
    }

    /// Asks for a pass at `at_ms` (Unix ms) at the latest.
    pub fn nudge_at(&self, at_ms: i64) {
        self.wanted_at.fetch_min(at_ms, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// When changes that arrived at `at_ms` with these `touches` could
    /// first make a scheduler fire: the soonest tree-stable timer an
    /// important one starts (a timer only moves later, so no earlier pass
    /// can fire more). None when none is important: nothing is due.
    pub fn due_after<'a>(&self, touches: impl IntoIterator<Item = &'a SchedulerTouch>, at_ms: i64) -> Option<i64> {
        touches
            .into_iter()
            .filter(|t| t.important)
            .map(|t| match self.entries.iter().find(|e| e.id == t.scheduler_id).map(|e| &e.kind) {
                Some(Kind::Branch { tree_stable, .. }) => at_ms.saturating_add(*tree_stable),
                _ => at_ms,
            })
            .min()
    }

    /// Sleeps `sleep_for`, or less when a nudge wants a pass sooner (a
    /// push that starts a 30 s timer wakes the loop only to learn that).
    async fn wait(&self, clock: &Clock, sleep_for: Duration, stopped: &mut tokio::sync::watch::Receiver<bool>) {
        let mut deadline = tokio::time::Instant::now() + sleep_for;
        loop {
            tokio::select! {
                () = self.wake.notified() => {}
                _ = tokio::time::sleep_until(deadline) => return,
                _ = stopped.changed() => return,
            }
            let (wanted, now_ms) = (self.wanted_at.load(Ordering::SeqCst), clock.now_ms());
            if wanted <= now_ms {
                return;
            }
            let wanted_in = Duration::from_millis(u64::try_from(wanted - now_ms).unwrap_or(u64::MAX)).min(sleep_for);
            deadline = deadline.min(tokio::time::Instant::now() + wanted_in);
        }
    }

    /// Runs until `stopped` turns true: fires what is due, sleeps until the
    /// next due time, a [nudge](Schedulers::nudge), or the poll interval.
    /// `fired` is nudged whenever a firing created build requests.
    pub async fn run(
        self: Arc<Self>,
        store: Store,
        clock: Clock,
        fired: Arc<Notify>,
        metrics: Arc<crate::metrics::Metrics>,
        mut stopped: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            if *stopped.borrow() {
                return;
            }
            // Asks from now on are for the next pass.
            self.wanted_at.store(i64::MAX, Ordering::SeqCst);
            let now_ms = clock.now_ms();
            let sleep_for = match self.tick_ms(&store, now_ms).await {
                Ok(report) => {
                    metrics.scheduler_passes.inc(&[]);
                    metrics.buildsets_fired.add(&[], report.fired.len() as u64);
                    if !report.fired.is_empty() {
                        fired.notify_one();
                    }
                    report
                        .next_due
                        .map(|t| Duration::from_millis((t - now_ms).max(0) as u64))
                        .unwrap_or(POLL_INTERVAL)
                        .min(POLL_INTERVAL)
                }
                Err(e) => {
                    tracing::error!(error = %e, "scheduler pass failed; retrying");
                    POLL_INTERVAL
                }
            };
            self.wait(&clock, sleep_for, &mut stopped).await;
            // Nudges that arrive meanwhile leave one permit, so they merge.
            tokio::select! {
                _ = tokio::time::sleep(MIN_PASS_GAP) => {}
                _ = stopped.changed() => {}
            }
        }
    }
}

//! `buildbot try`: a diff built on top of a revision, on builders its
//! sender chooses among a `try` scheduler's, as Buildbot's `Try_Userpass`.

use std::collections::BTreeMap;

use cascade_store::{NewBuildset, NewSourceStamp, Patch, Store};
use serde_json::json;

use super::{Kind, SchedulerError, Schedulers};

/// A try job as `buildbot try` sends it (`perspective_try`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TryJob {
    /// A git branch; `None`: the repository's default.
    pub branch: Option<String>,
    /// The base revision; `None`: the branch's tip when the build starts.
    pub revision: Option<String>,
    /// `-p` for `git apply`.
    pub patch_level: i64,
    /// The diff; empty: none (the base revision is built as it is).
    pub patch: String,
    /// Builder names; empty: every builder of the scheduler.
    pub builders: Vec<String>,
    /// Who sent it (`--who`, else the login).
    pub who: String,
    pub comment: String,
    pub properties: BTreeMap<String, String>,
}

/// The largest diff a try job may carry: PB's string limit (Twisted's
/// banana), which bounds what `buildbot try` can send to Buildbot too.
pub const PATCH_MAX: usize = 640 * 1024;

impl Schedulers {
    /// The builders the try scheduler `name` builds on, in config order.
    pub fn try_builders(&self, name: &str) -> Option<Vec<String>> {
        let entry = self.entries.iter().find(|e| e.name == name && matches!(e.kind, Kind::Try))?;
        Some(entry.builders.iter().map(|(n, _, _)| n.clone()).collect())
    }

    /// Creates the buildset of a try job; returns its id and each
    /// builder's (name, request id). Every named builder must be one of the
    /// scheduler's, as Buildbot's `filterBuilderList` demands.
    pub async fn try_job(
        &self,
        store: &Store,
        scheduler: &str,
        job: &TryJob,
        now: i64,
    ) -> Result<(i64, Vec<(String, i64)>), SchedulerError> {
        let invalid = |why: String| Err(SchedulerError::Invalid(why));
        let Some(entry) = self.entries.iter().find(|e| e.name == scheduler && matches!(e.kind, Kind::Try)) else {
            return invalid(format!("no try scheduler named {scheduler:?}"));
        };
        if self.is_disabled(entry.id) {
            return invalid(format!("the try scheduler {scheduler:?} is disabled"));
        }
        if job.patch.len() > PATCH_MAX {
            return invalid(format!("the diff is over {PATCH_MAX} bytes"));
        }
        let chosen: Vec<&(String, i64, Option<String>)> = if job.builders.is_empty() {
            entry.builders.iter().collect()
        } else {
            let mut chosen = Vec::new();
            for name in &job.builders {
                match entry.builders.iter().find(|(n, _, _)| n == name) {
                    Some(b) => chosen.push(b),
                    None => return invalid(format!("builder {name:?} is not one of {scheduler:?}'s")),
                }
            }
            chosen
        };
        let mut properties: BTreeMap<String, (serde_json::Value, String)> =
            job.properties.iter().map(|(k, v)| (k.clone(), (json!(v), "try build".to_string()))).collect();
        properties.insert("scheduler".into(), (json!(entry.name), "Scheduler".into()));
        properties.insert("owner".into(), (json!(job.who), "try build".into()));
        let mut reason = format!("'try' job by user {}", job.who);
        if !job.comment.is_empty() {
            reason.push_str(&format!(" ({})", job.comment));
        }
        let bs = NewBuildset {
            reason,
            scheduler_id: Some(entry.id),
            sourcestamp: NewSourceStamp {
                repository: self.repository_url.clone(),
                branch: job.branch.clone(),
                revision: job.revision.clone(),
                project: self.project.clone().unwrap_or_default(),
                codebase: String::new(),
            },
            properties,
            builder_ids: chosen.iter().map(|(_, id, _)| *id).collect(),
            pin_revision: job.revision.is_some(),
            patch: (!job.patch.is_empty()).then(|| Patch {
                level: job.patch_level,
                body: job.patch.clone(),
                author: job.who.clone(),
                comment: job.comment.clone(),
            }),
            ..Default::default()
        };
        let (bsid, request_ids) = store.create_buildset(&bs, now).await?;
        // Requests come back in id order, which is the order of `builder_ids`.
        let names = chosen.iter().map(|(n, _, _)| n.clone());
        Ok((bsid, names.zip(request_ids).collect()))
    }
}

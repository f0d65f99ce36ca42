//! Changes: written in one transaction with the webhook delivery that
//! brought them and with the scheduler entries that will build them.

use std::collections::BTreeMap;

use cascade_model::NewChange;
use sha2::Digest as _;
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Transaction};

use crate::query::{FieldType, ListQuery, Page, bind_all, field};
use crate::records::{ChangeRecord, SOURCESTAMP_COLUMNS, get, json_or_null, sourcestamp_from};
use crate::{Result, Store};

/// Identifies a webhook delivery; GitHub repeats both ids on a redelivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// GitHub's `X-GitHub-Hook-ID`: the hook that sent it.
    pub hook_id: String,
    /// GitHub's `X-GitHub-Delivery`: the delivery's id.
    pub delivery_id: String,
    /// GitHub's `X-GitHub-Event` (`push`, `ping`, ...).
    pub event: String,
}

/// A scheduler that wants a change, and whether the change is important to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerTouch {
    /// The scheduler.
    pub scheduler_id: i64,
    /// Whether the change is important to it (not every file it touches is ignored).
    pub important: bool,
}

/// What storing a delivery's changes came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// This delivery was stored before; nothing was written.
    Duplicate,
    /// The changes were stored.
    Stored {
        /// Their ids, in the order given.
        change_ids: Vec<i64>,
    },
}

/// Which earlier change on the same repository, branch and revision makes
/// a new one redundant, so that it is not stored again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redundant {
    /// None: every change is stored (a force push back to an old commit builds it again).
    Never,
    /// One the poller made: a delivery that comes after the poller made up for it.
    Polled,
    /// Any: the poller never repeats what a delivery or an earlier poll brought.
    Known,
}

/// The property that marks a change the poller made, and its value.
pub const SOURCE_PROPERTY: &str = "source";
/// [`SOURCE_PROPERTY`]'s value for a change the poller made.
pub const POLLER_SOURCE: &str = "poller";

/// What `/changes` reads.
pub(crate) fn change_listing() -> crate::query::Listing {
    crate::query::Listing {
        fields: CHANGE_FIELDS,
        select: format!("{CHANGE_SELECT}, {SOURCESTAMP_COLUMNS}"),
        from: "changes c JOIN sourcestamps ss ON ss.id = c.sourcestamp_id",
        id: "c.id",
        with_id: &["branch", "author"],
    }
}

const CHANGE_FIELDS: &[crate::query::Field] = &[
    field("changeid", "c.id", FieldType::Int),
    field("author", "c.author", FieldType::Text),
    field("committer", "c.committer", FieldType::Text),
    field("comments", "c.comments", FieldType::Text),
    field("branch", "c.branch", FieldType::Text),
    field("revision", "c.revision", FieldType::Text),
    field("when_timestamp", "c.when_timestamp", FieldType::Int),
    field("category", "c.category", FieldType::Text),
    field("repository", "c.repository", FieldType::Text),
    field("codebase", "c.codebase", FieldType::Text),
    field("project", "c.project", FieldType::Text),
    // Buildbot's `/sourcestamps/{ssid}/changes`.
    field("sourcestampid", "c.sourcestamp_id", FieldType::Int),
];

const CHANGE_SELECT: &str = "c.id, c.author, c.committer, c.comments, c.branch, c.revision, c.revlink, \
     c.when_timestamp, c.category, c.repository, c.codebase, c.project, c.parent_change_id";

/// For a poll (`Redundant::Known`) on PostgreSQL: a lock per repository
/// and branch until the transaction ends, so two masters polling the same
/// push cannot both find nothing and both store it (SQLite's writers take
/// turns already). Deliveries take no lock: pushes to one branch must not
/// queue behind each other.
async fn lock_branches(
    tx: &mut Transaction<'static, Any>,
    backend: crate::Backend,
    changes: &[(NewChange, Vec<SchedulerTouch>)],
    redundant: Redundant,
) -> Result<()> {
    if backend != crate::Backend::Postgres || redundant != Redundant::Known {
        return Ok(());
    }
    let keys: std::collections::BTreeSet<String> = changes
        .iter()
        .filter_map(|(c, _)| c.branch.as_ref().map(|b| format!("changes:{}:{b}", c.repository)))
        .collect();
    for key in keys {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))").bind(key).execute(&mut **tx).await?;
    }
    Ok(())
}

/// The condition under which `insert_change` leaves a change out: an
/// earlier change on its repository, branch and revision that `redundant`
/// names ($4 branch, $5 revision, $9 repository).
pub(crate) fn redundant_condition(redundant: Redundant) -> String {
    let earlier = "SELECT 1 FROM changes c WHERE c.revision = $5 AND c.branch = $4 AND c.repository = $9";
    match redundant {
        Redundant::Never => String::new(),
        Redundant::Polled => format!(" WHERE NOT EXISTS ({earlier} AND c.source = '{POLLER_SOURCE}')"),
        Redundant::Known => format!(" WHERE NOT EXISTS ({earlier})"),
    }
}

/// `$a, $a+1, ...` for an IN list of `n` values starting at placeholder `a`.
pub(crate) fn placeholders(start: usize, n: usize) -> String {
    (start..start + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

impl Store {
    /// Stores a delivery's changes and their scheduler entries atomically.
    /// When this returns, the changes are committed.
    pub async fn ingest_changes(
        &self,
        delivery: Option<&Delivery>,
        changes: &[(NewChange, Vec<SchedulerTouch>)],
        now: i64,
    ) -> Result<IngestOutcome> {
        self.ingest_changes_unless(delivery, changes, Redundant::Never, now).await
    }

    /// [`Store::ingest_changes`], leaving out the changes `redundant` says
    /// were stored before (they are not in the outcome's ids).
    pub async fn ingest_changes_unless(
        &self,
        delivery: Option<&Delivery>,
        changes: &[(NewChange, Vec<SchedulerTouch>)],
        redundant: Redundant,
        now: i64,
    ) -> Result<IngestOutcome> {
        self.ingest_changes_at(delivery, changes, redundant, now.saturating_mul(1000)).await
    }

    /// [`Store::ingest_changes_unless`] at `now_ms` (Unix milliseconds): the
    /// schedulers' tree-stable timers count from the millisecond a change
    /// arrived, so a 1 s timer never fires early.
    pub async fn ingest_changes_at(
        &self,
        delivery: Option<&Delivery>,
        changes: &[(NewChange, Vec<SchedulerTouch>)],
        redundant: Redundant,
        now_ms: i64,
    ) -> Result<IngestOutcome> {
        let now = now_ms.div_euclid(1000);
        if let [(change, touches)] = changes
            && self.backend() == crate::Backend::Postgres
            && redundant != Redundant::Known
        {
            // A delivery's one change (most pushes): one statement, one round trip.
            return crate::push_statement::ingest_one(&self.pool, delivery, change, touches, redundant, now_ms).await;
        }
        let Some(mut tx) = self.begin_delivery(delivery, now).await? else { return Ok(IngestOutcome::Duplicate) };
        lock_branches(&mut tx, self.backend(), changes, redundant).await?;
        let mut change_ids = Vec::with_capacity(changes.len());
        let mut previous: Option<(Option<String>, i64)> = None;
        for (change, touches) in changes {
            // Consecutive commits of one push on one branch form a chain.
            let parent = match &previous {
                Some((branch, id)) if *branch == change.branch => Some(*id),
                _ => None,
            };
            // Checked in the insert itself: a delivery costs no extra round trip.
            let Some(id) = insert_change(&mut tx, change, parent, redundant, now).await? else { continue };
            if !touches.is_empty() {
                let values: Vec<String> =
                    (0..touches.len()).map(|i| format!("(${}, $1, ${}, $2, $3)", 4 + 2 * i, 5 + 2 * i)).collect();
                let sql = format!(
                    "INSERT INTO scheduler_changes (scheduler_id, change_id, important, received_at, received_ms) \
                     VALUES {}",
                    values.join(", ")
                );
                let mut q = sqlx::query(AssertSqlSafe(sql)).bind(id).bind(now).bind(now_ms);
                for t in touches {
                    q = q.bind(t.scheduler_id).bind(crate::infra::flag(t.important));
                }
                q.execute(&mut *tx).await?;
            }
            previous = Some((change.branch.clone(), id));
            change_ids.push(id);
        }
        tx.commit().await?;
        Ok(IngestOutcome::Stored { change_ids })
    }

    /// The changes the poller made, newest first: `limit` (at most
    /// `MAX_LIMIT`) of those with ids below `before`, when given.
    pub async fn polled_changes(&self, before: Option<i64>, limit: i64) -> Result<Vec<ChangeRecord>> {
        let limit = limit.clamp(0, crate::query::MAX_LIMIT);
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CHANGE_SELECT}, {SOURCESTAMP_COLUMNS} FROM changes c \
             JOIN sourcestamps ss ON ss.id = c.sourcestamp_id \
             WHERE c.source = '{POLLER_SOURCE}' AND c.id < $1 ORDER BY c.id DESC LIMIT {limit}"
        )))
        .bind(before.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        self.hydrate_changes(rows).await
    }

    /// The revision of the newest change on a repository's branch.
    pub async fn newest_revision(&self, repository: &str, branch: &str) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT revision FROM changes WHERE branch = $1 AND repository = $2 AND revision IS NOT NULL \
             ORDER BY id DESC LIMIT 1",
        )
        .bind(branch.to_string())
        .bind(repository.to_string())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| get(&r, "revision")).transpose()
    }

    /// Forgets delivery ids received before `before`. GitHub redelivers for
    /// 3 days (GHES: 7), so older ids can no longer come back.
    pub async fn prune_webhook_deliveries(&self, before: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM webhook_deliveries WHERE received_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// One change, by id.
    pub async fn get_change(&self, id: i64) -> Result<Option<ChangeRecord>> {
        let page = self.list_changes(&ListQuery::default().eq("changeid", id)).await?;
        Ok(page.items.into_iter().next())
    }

    /// Lists changes (Buildbot's `/changes`).
    pub async fn list_changes(&self, q: &ListQuery) -> Result<Page<ChangeRecord>> {
        let (rows, total) = crate::query::list_page(&self.pool, self.backend(), &change_listing(), q).await?;
        let items = self.hydrate_changes(rows).await?;
        Ok(Page { items, total })
    }

    /// The changes a buildset was created for, oldest first.
    pub async fn buildset_changes(&self, buildset_id: i64) -> Result<Vec<ChangeRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CHANGE_SELECT}, {SOURCESTAMP_COLUMNS} FROM buildset_changes bc \
             JOIN changes c ON c.id = bc.change_id JOIN sourcestamps ss ON ss.id = c.sourcestamp_id \
             WHERE bc.buildset_id = $1 ORDER BY c.id"
        )))
        .bind(buildset_id)
        .fetch_all(&self.pool)
        .await?;
        self.hydrate_changes(rows).await
    }

    /// A build's blamelist: the changes of the requests it covers, oldest
    /// first, the first `MAX_LIMIT` of them.
    pub async fn build_changes(&self, build_id: i64) -> Result<Vec<ChangeRecord>> {
        Ok(self.build_changes_page(build_id, 0, crate::query::MAX_LIMIT).await?.items)
    }

    /// A page of a build's blamelist, oldest first: `limit` changes (at
    /// most `MAX_LIMIT`) after skipping `offset`, with how many there are
    /// (counted up to `COUNT_CAP` + 1). A build can cover tens of
    /// thousands of changes; no reader gets them all at once.
    pub async fn build_changes_page(&self, build_id: i64, offset: i64, limit: i64) -> Result<Page<ChangeRecord>> {
        const COVERED: &str = "SELECT bc.change_id FROM buildrequests r \
             JOIN buildset_changes bc ON bc.buildset_id = r.buildset_id WHERE r.build_id = $1";
        let count_sql = format!(
            "SELECT COUNT(*) FROM (SELECT 1 AS one FROM changes c WHERE c.id IN ({COVERED}) LIMIT {}) capped",
            crate::query::COUNT_CAP + 1
        );
        let total: i64 = sqlx::query(AssertSqlSafe(count_sql))
            .bind(build_id)
            .fetch_one(&self.pool)
            .await
            .and_then(|row| sqlx::Row::try_get(&row, 0))?;
        let (offset, limit) = (offset.max(0), limit.clamp(0, crate::query::MAX_LIMIT));
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CHANGE_SELECT}, {SOURCESTAMP_COLUMNS} FROM changes c \
             JOIN sourcestamps ss ON ss.id = c.sourcestamp_id \
             WHERE c.id IN ({COVERED}) ORDER BY c.id LIMIT {limit} OFFSET {offset}"
        )))
        .bind(build_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(Page { items: self.hydrate_changes(rows).await?, total })
    }

    /// Turns change rows into records, loading files and properties for all
    /// of them in two queries.
    async fn hydrate_changes(&self, rows: Vec<AnyRow>) -> Result<Vec<ChangeRecord>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = rows.iter().map(|r| get::<i64>(r, "id")).collect::<Result<_>>()?;
        let mut files: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        let mut props: BTreeMap<i64, BTreeMap<String, (serde_json::Value, String)>> = BTreeMap::new();
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT change_id, filename FROM change_files WHERE change_id IN ({}) ORDER BY change_id, filename",
                placeholders(1, chunk.len())
            );
            let binds: Vec<_> = chunk.iter().map(|&i| crate::query::Bind::Int(i)).collect();
            for row in bind_all(sqlx::query(AssertSqlSafe(sql)), &binds).fetch_all(&self.pool).await? {
                files.entry(get(&row, "change_id")?).or_default().push(get(&row, "filename")?);
            }
            let sql = format!(
                "SELECT change_id, name, value FROM change_properties WHERE change_id IN ({})",
                placeholders(1, chunk.len())
            );
            for row in bind_all(sqlx::query(AssertSqlSafe(sql)), &binds).fetch_all(&self.pool).await? {
                let value: String = get(&row, "value")?;
                props
                    .entry(get(&row, "change_id")?)
                    .or_default()
                    .insert(get(&row, "name")?, (json_or_null(&value), "Change".to_string()));
            }
        }
        rows.iter()
            .map(|row| {
                let id: i64 = get(row, "id")?;
                let parent: Option<i64> = get(row, "parent_change_id")?;
                Ok(ChangeRecord {
                    changeid: id,
                    author: get(row, "author")?,
                    committer: get(row, "committer")?,
                    comments: get(row, "comments")?,
                    branch: get(row, "branch")?,
                    revision: get(row, "revision")?,
                    revlink: get(row, "revlink")?,
                    when_timestamp: get(row, "when_timestamp")?,
                    category: get(row, "category")?,
                    repository: get(row, "repository")?,
                    codebase: get(row, "codebase")?,
                    project: get(row, "project")?,
                    files: files.remove(&id).unwrap_or_default(),
                    properties: props.remove(&id).unwrap_or_default(),
                    parent_changeids: parent.into_iter().collect(),
                    sourcestamp: sourcestamp_from(row)?,
                })
            })
            .collect()
    }
}

/// Records a delivery; false if it was recorded before (a redelivery).
impl Store {
    /// A write transaction that first records `delivery`, if given; `None`
    /// when it was recorded before (a redelivery: nothing is written).
    pub(crate) async fn begin_delivery(
        &self,
        delivery: Option<&Delivery>,
        now: i64,
    ) -> Result<Option<Transaction<'static, Any>>> {
        let mut tx = self.begin_write().await?;
        if let Some(d) = delivery
            && !record_delivery(&mut tx, d, now).await?
        {
            tx.rollback().await?;
            return Ok(None);
        }
        Ok(Some(tx))
    }
}

pub(crate) async fn record_delivery(tx: &mut Transaction<'static, Any>, d: &Delivery, now: i64) -> Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO webhook_deliveries (hook_id, delivery_id, event, received_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (hook_id, delivery_id) DO NOTHING RETURNING id",
    )
    .bind(d.hook_id.clone())
    .bind(d.delivery_id.clone())
    .bind(d.event.clone())
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(inserted.is_some())
}

/// What names a source stamp: (codebase, repository, branch, revision,
/// project, patch digest).
#[derive(Clone, Copy)]
pub(crate) struct StampKey<'a> {
    pub codebase: &'a str,
    pub repository: &'a str,
    pub branch: Option<&'a str>,
    pub revision: Option<&'a str>,
    pub project: &'a str,
    /// A try job's diff, by digest: a patched stamp is another stamp.
    pub patch: Option<&'a str>,
}

/// The unique key of the source stamp `k` names (`sourcestamps.ss_key`).
pub(crate) fn stamp_key(k: &StampKey<'_>) -> String {
    let StampKey { codebase, repository, branch, revision, project, patch } = *k;
    // Separators keep distinct tuples distinct; \u{1e} marks "none" (PostgreSQL refuses NUL in text).
    let mut key =
        [codebase, repository, branch.unwrap_or("\u{1e}"), revision.unwrap_or("\u{1e}"), project].join("\u{1f}");
    if let Some(digest) = patch {
        key = format!("{key}\u{1f}patch:{digest}");
    }
    // PostgreSQL indexes at most ~2.7 kB per entry: a long key is indexed
    // by its hash (short keys stay as they were, so stored rows still match).
    if key.len() > 512 { format!("sha256:{}", hex::encode(sha2::Sha256::digest(&key))) } else { key }
}

/// Finds or creates the source stamp `k` names; source stamps are shared, as in Buildbot.
pub(crate) async fn sourcestamp_id(tx: &mut Transaction<'static, Any>, k: &StampKey<'_>, now: i64) -> Result<i64> {
    let StampKey { codebase, repository, branch, revision, project, .. } = *k;
    let key = stamp_key(k);
    let inserted = sqlx::query(
        "INSERT INTO sourcestamps (ss_key, branch, revision, repository, project, codebase, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (ss_key) DO NOTHING RETURNING id",
    )
    .bind(key.clone())
    .bind(branch.map(str::to_string))
    .bind(revision.map(str::to_string))
    .bind(repository.to_string())
    .bind(project.to_string())
    .bind(codebase.to_string())
    .bind(now)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = inserted {
        return get(&row, "id");
    }
    let row = sqlx::query("SELECT id FROM sourcestamps WHERE ss_key = $1").bind(key).fetch_one(&mut **tx).await?;
    get(&row, "id")
}

/// Binds a change's own columns as `$1`–`$11`, in the order of
/// `changes`' insert (which [`redundant_condition`] names).
pub(crate) fn bind_change_columns<'q>(
    q: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    c: &NewChange,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    q.bind(c.author.clone())
        .bind(c.committer.clone())
        .bind(c.comments.clone())
        .bind(c.branch.clone())
        .bind(c.revision.clone())
        .bind(c.revlink.clone())
        .bind(c.when_timestamp)
        .bind(c.category.clone())
        .bind(c.repository.clone())
        .bind(c.codebase.clone())
        .bind(c.project.clone())
}

/// The unpatched source stamp a change names.
pub(crate) fn stamp_of(c: &NewChange) -> StampKey<'_> {
    StampKey {
        codebase: &c.codebase,
        repository: &c.repository,
        branch: c.branch.as_deref(),
        revision: c.revision.as_deref(),
        project: &c.project,
        patch: None,
    }
}

pub(crate) async fn insert_change(
    tx: &mut Transaction<'static, Any>,
    c: &NewChange,
    parent: Option<i64>,
    redundant: Redundant,
    now: i64,
) -> Result<Option<i64>> {
    let ssid = sourcestamp_id(tx, &stamp_of(c), now).await?;
    let sql = format!(
        "INSERT INTO changes (author, committer, comments, branch, revision, revlink, when_timestamp, category, \
         repository, codebase, project, sourcestamp_id, parent_change_id, received_at, source) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15{} RETURNING id",
        redundant_condition(redundant)
    );
    let row = bind_change_columns(sqlx::query(AssertSqlSafe(sql)), c)
        .bind(ssid)
        .bind(parent)
        .bind(now)
        .bind(c.properties.get(SOURCE_PROPERTY).and_then(|v| v.as_str()).map(str::to_string))
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let id: i64 = get(&row, "id")?;
    let mut files: Vec<&String> = c.files.iter().collect();
    files.sort();
    files.dedup();
    for chunk in files.chunks(400) {
        let values: Vec<String> = (0..chunk.len()).map(|i| format!("($1, ${})", i + 2)).collect();
        let sql = format!("INSERT INTO change_files (change_id, filename) VALUES {}", values.join(", "));
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(id);
        for f in chunk {
            q = q.bind((*f).clone());
        }
        q.execute(&mut **tx).await?;
    }
    // One statement for all properties: a push's latency is its round trips.
    let props: Vec<(&String, &serde_json::Value)> = c.properties.iter().collect();
    for chunk in props.chunks(300) {
        let values: Vec<String> = (0..chunk.len()).map(|i| format!("($1, ${}, ${})", 2 + 2 * i, 3 + 2 * i)).collect();
        let sql = format!("INSERT INTO change_properties (change_id, name, value) VALUES {}", values.join(", "));
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(id);
        for (name, value) in chunk {
            q = q.bind((*name).clone()).bind(value.to_string());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(Some(id))
}

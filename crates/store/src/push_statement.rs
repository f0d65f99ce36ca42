//! A delivery's one change in one PostgreSQL statement. Most pushes carry
//! one commit; writing its delivery, source stamp, change, files,
//! properties and scheduler rows as data-modifying CTEs makes the push one
//! round trip (and one implicit transaction) instead of ten, which is what
//! bounds a push's latency and PostgreSQL's CPU per push. The lists travel
//! as JSON parameters, so the statement's text is the same for every push
//! and stays prepared. SQLite, in-process, keeps the transaction of
//! statements (`Store::ingest_changes_at`).

use cascade_model::NewChange;
use sqlx::{AssertSqlSafe, Row};

use crate::Result;
use crate::changes::{
    Delivery, IngestOutcome, Redundant, SOURCE_PROPERTY, SchedulerTouch, bind_change_columns, redundant_condition,
    stamp_key, stamp_of,
};

/// The statement; `$1`–`$11` are the change's columns as in
/// `insert_change` (so [`redundant_condition`] applies), `$19`–`$21` the
/// delivery when there is one.
fn statement(recorded: bool, redundant: Redundant) -> String {
    let delivery = if recorded {
        "INSERT INTO webhook_deliveries (hook_id, delivery_id, event, received_at) VALUES ($19, $20, $21, $13) \
         ON CONFLICT (hook_id, delivery_id) DO NOTHING RETURNING id"
    } else {
        "SELECT 0 AS id"
    };
    // DO UPDATE, not DO NOTHING: it returns the stamp's id also when the
    // stamp exists, even one committed since this statement began.
    format!(
        "WITH d AS ({delivery}), \
         ss AS (INSERT INTO sourcestamps (ss_key, branch, revision, repository, project, codebase, created_at) \
           SELECT $12, $4, $5, $9, $11, $10, $13 FROM d \
           ON CONFLICT (ss_key) DO UPDATE SET ss_key = excluded.ss_key RETURNING id), \
         c AS (INSERT INTO changes (author, committer, comments, branch, revision, revlink, when_timestamp, category, \
           repository, codebase, project, sourcestamp_id, parent_change_id, received_at, source) \
           SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, ss.id, NULL, $13, $14 FROM ss{} RETURNING id), \
         f AS (INSERT INTO change_files (change_id, filename) \
           SELECT c.id, x FROM c, json_array_elements_text($15::json) x), \
         p AS (INSERT INTO change_properties (change_id, name, value) \
           SELECT c.id, e.key, e.value FROM c, json_each_text($16::json) e), \
         t AS (INSERT INTO scheduler_changes (scheduler_id, change_id, important, received_at, received_ms) \
           SELECT (e->>0)::bigint, c.id, (e->>1)::bigint, $13, $18 FROM c, json_array_elements($17::json) e) \
         SELECT (SELECT COUNT(*) FROM d) AS recorded, (SELECT id FROM c) AS change_id",
        redundant_condition(redundant)
    )
}

/// The change's files, each once, in order, as a JSON array.
fn files_json(c: &NewChange) -> String {
    let mut files: Vec<&String> = c.files.iter().collect();
    files.sort();
    files.dedup();
    serde_json::Value::from(files.into_iter().cloned().collect::<Vec<_>>()).to_string()
}

/// The properties as a JSON object of their values' JSON text, as stored.
fn properties_json(c: &NewChange) -> String {
    let map: serde_json::Map<String, serde_json::Value> =
        c.properties.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.to_string()))).collect();
    serde_json::Value::Object(map).to_string()
}

fn touches_json(touches: &[SchedulerTouch]) -> String {
    let rows: Vec<serde_json::Value> =
        touches.iter().map(|t| serde_json::json!([t.scheduler_id, i64::from(t.important)])).collect();
    serde_json::Value::from(rows).to_string()
}

/// Stores `change` (and `delivery`, if given) in one statement.
pub(crate) async fn ingest_one(
    pool: &sqlx::AnyPool,
    delivery: Option<&Delivery>,
    c: &NewChange,
    touches: &[SchedulerTouch],
    redundant: Redundant,
    now_ms: i64,
) -> Result<IngestOutcome> {
    let key = stamp_key(&stamp_of(c));
    let sql = statement(delivery.is_some(), redundant);
    let mut q = bind_change_columns(sqlx::query(AssertSqlSafe(sql)), c)
        .bind(key)
        .bind(now_ms.div_euclid(1000))
        .bind(c.properties.get(SOURCE_PROPERTY).and_then(|v| v.as_str()).map(str::to_string))
        .bind(files_json(c))
        .bind(properties_json(c))
        .bind(touches_json(touches))
        .bind(now_ms);
    if let Some(d) = delivery {
        q = q.bind(d.hook_id.clone()).bind(d.delivery_id.clone()).bind(d.event.clone());
    }
    let row = q.fetch_one(pool).await?;
    let recorded: i64 = row.try_get("recorded")?;
    if recorded == 0 {
        return Ok(IngestOutcome::Duplicate);
    }
    let id: Option<i64> = row.try_get("change_id")?;
    Ok(IngestOutcome::Stored { change_ids: id.into_iter().collect() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_travel_as_json_the_database_can_unpack() {
        let mut c = NewChange {
            author: String::new(),
            committer: None,
            comments: String::new(),
            branch: None,
            revision: None,
            revlink: None,
            when_timestamp: 0,
            category: None,
            repository: String::new(),
            codebase: String::new(),
            project: String::new(),
            files: vec!["b".into(), "a\"q".into(), "b".into()],
            properties: Default::default(),
        };
        c.properties.insert("event".into(), serde_json::json!("push"));
        c.properties.insert("n".into(), serde_json::json!(3));
        assert_eq!(files_json(&c), r#"["a\"q","b"]"#);
        assert_eq!(properties_json(&c), r#"{"event":"\"push\"","n":"3"}"#);
        let t =
            [SchedulerTouch { scheduler_id: 7, important: true }, SchedulerTouch { scheduler_id: 9, important: false }];
        assert_eq!(touches_json(&t), "[[7,1],[9,0]]");
    }

    #[test]
    fn one_statement_text_per_shape_so_it_stays_prepared() {
        let a = statement(true, Redundant::Polled);
        assert_eq!(a, statement(true, Redundant::Polled));
        assert!(a.contains("webhook_deliveries") && a.contains("c.source = 'poller'"));
        assert!(!statement(false, Redundant::Never).contains("webhook_deliveries"));
    }
}

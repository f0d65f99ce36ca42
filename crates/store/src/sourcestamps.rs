//! Source stamps by themselves (Buildbot's `/sourcestamps`), and the builds
//! a change is in.

use sqlx::AssertSqlSafe;

use crate::query::{FieldType, ListQuery, Page, compile, fetch_page, field};
use crate::records::{
    BUILD_COLUMNS, BuildRecord, SOURCESTAMP_COLUMNS, SourceStampRecord, build_from, sourcestamp_from,
};
use crate::{Result, Store};

const SOURCESTAMP_FIELDS: &[crate::query::Field] = &[
    field("ssid", "ss.id", FieldType::Int),
    field("branch", "ss.branch", FieldType::Text),
    field("revision", "ss.revision", FieldType::Text),
    field("repository", "ss.repository", FieldType::Text),
    field("project", "ss.project", FieldType::Text),
    field("codebase", "ss.codebase", FieldType::Text),
    field("created_at", "ss.created_at", FieldType::Int),
];

impl Store {
    /// Lists source stamps (Buildbot's `/sourcestamps`).
    pub async fn list_sourcestamps(&self, q: &ListQuery) -> Result<Page<SourceStampRecord>> {
        let compiled = compile(SOURCESTAMP_FIELDS, q, "ss.id")?;
        let (rows, total) = fetch_page(&self.pool, SOURCESTAMP_COLUMNS, "sourcestamps ss", &compiled).await?;
        Ok(Page { items: rows.iter().map(sourcestamp_from).collect::<Result<_>>()?, total })
    }

    /// One source stamp, by id.
    pub async fn get_sourcestamp(&self, ssid: i64) -> Result<Option<SourceStampRecord>> {
        Ok(self.list_sourcestamps(&ListQuery::default().eq("ssid", ssid)).await?.items.into_iter().next())
    }

    /// The builds whose blamelist holds the change, oldest first (at most
    /// `MAX_LIMIT`).
    pub async fn change_builds(&self, change_id: i64) -> Result<Vec<BuildRecord>> {
        let sql = format!(
            "SELECT {BUILD_COLUMNS} FROM builds b WHERE b.id IN (SELECT r.build_id FROM buildset_changes bc \
             JOIN buildrequests r ON r.buildset_id = bc.buildset_id WHERE bc.change_id = $1) ORDER BY b.id LIMIT {}",
            crate::query::MAX_LIMIT
        );
        let rows = sqlx::query(AssertSqlSafe(sql)).bind(change_id).fetch_all(&self.pool).await?;
        rows.iter().map(build_from).collect()
    }
}

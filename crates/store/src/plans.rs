//! Query plans: what the backend would do for the store's own statements
//! (the very SQL the lists and page reads run), so a test can fail when one
//! of them reads a whole growing table or sorts it. On PostgreSQL the plan
//! is asked with sequential scans priced out (`enable_seqscan = off`), so a
//! small test table still shows whether an index *could* serve; a plan that
//! keeps a sequential scan has none. Sorts are priced out the same way
//! (`enable_sort = off`): a plan that still sorts has no index in the order.

use sqlx::{AssertSqlSafe, Row};

use crate::query::{Bind, ListQuery, Listing, bind_all, compile_listing, page_sql};
use crate::{Backend, Result, Store};

/// One of the API's lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    /// `/builds`.
    Builds,
    /// `/buildrequests`.
    BuildRequests,
    /// `/buildsets`.
    Buildsets,
    /// `/changes`.
    Changes,
}

/// One of the reads the pages make for a set of ids (builders, builds or
/// changes), by the name of the store method that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewed {
    /// `console_cells`: the console's and grid's cells, by change.
    ConsoleCells,
    /// `pending_counts`: waiting requests, by builder.
    PendingCounts,
    /// `built_revisions`: the release page's revision per build.
    BuiltRevisions,
    /// `blamelist_pairs`: the release page's blamelists, by build.
    BlamelistPairs,
    /// `builds_between`: the waterfall's window, by builder.
    BuildsBetween,
    /// `steps_of`: the waterfall's and build page's steps, by build.
    StepsOf,
    /// `running_builds`: builds not yet finished (no ids).
    RunningBuilds,
}

impl Viewed {
    /// The statement for these ids and its binds, as the store method runs it.
    fn statement(self, backend: Backend, ids: &[i64]) -> (String, Vec<Bind>) {
        use crate::views::*;
        let list = id_list(backend, 1);
        let json = || vec![Bind::Text(ids_json(ids))];
        match self {
            Viewed::ConsoleCells => (console_cells_sql(&list), json()),
            Viewed::PendingCounts => (pending_counts_sql(&list), json()),
            Viewed::BuiltRevisions => (built_revisions_sql(&list), json()),
            Viewed::BlamelistPairs => (blamelist_pairs_sql(&list), json()),
            Viewed::BuildsBetween => {
                // The window's four binds, then the builders as `$5, $6, …`.
                let binds = [0, 1_000, 2_000, 500].into_iter().chain(ids.iter().copied()).map(Bind::Int).collect();
                (builds_between_sql(&crate::changes::placeholders(5, ids.len())), binds)
            }
            Viewed::StepsOf => (steps_of_sql(backend, &list), json()),
            Viewed::RunningBuilds => (running_builds_sql(), Vec::new()),
        }
    }
}

fn listing(what: Listed) -> Listing {
    match what {
        Listed::Builds => crate::buildrequests::build_listing(),
        Listed::BuildRequests => crate::buildrequests::request_listing(),
        Listed::Buildsets => crate::buildsets::buildset_listing(),
        Listed::Changes => crate::changes::change_listing(),
    }
}

impl Store {
    /// The plan of one page of a list, as `list_builds` and the others run it.
    pub async fn explain_list(&self, what: Listed, q: &ListQuery) -> Result<Vec<String>> {
        let l = listing(what);
        let compiled = compile_listing(&l, q, self.backend())?;
        self.explain(&page_sql(&l.select, l.from, &compiled), &compiled.binds).await
    }

    /// The plan of `latest_builds` for these builders.
    pub async fn explain_latest_builds(&self, builder_ids: &[i64], finished_only: bool) -> Result<Vec<String>> {
        let list = crate::views::id_list(self.backend(), 1);
        let binds = vec![Bind::Text(crate::views::ids_json(builder_ids))];
        self.explain(&crate::views::latest_builds_sql(finished_only, &list), &binds).await
    }

    /// The plan of one of the pages' reads for these ids.
    pub async fn explain_view(&self, what: Viewed, ids: &[i64]) -> Result<Vec<String>> {
        let (sql, binds) = what.statement(self.backend(), ids);
        self.explain(&sql, &binds).await
    }

    async fn explain(&self, sql: &str, binds: &[Bind]) -> Result<Vec<String>> {
        let mut conn = self.pool.acquire().await?;
        match self.backend() {
            Backend::Postgres => {
                sqlx::query("SET enable_seqscan = off").execute(&mut *conn).await?;
                sqlx::query("SET enable_sort = off").execute(&mut *conn).await?;
                let rows =
                    bind_all(sqlx::query(AssertSqlSafe(format!("EXPLAIN {sql}"))), binds).fetch_all(&mut *conn).await;
                sqlx::query("RESET enable_seqscan").execute(&mut *conn).await?;
                sqlx::query("RESET enable_sort").execute(&mut *conn).await?;
                Ok(rows?.iter().map(|r| r.try_get::<String, _>(0)).collect::<std::result::Result<_, _>>()?)
            }
            Backend::Sqlite => {
                let rows = bind_all(sqlx::query(AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}"))), binds)
                    .fetch_all(&mut *conn)
                    .await?;
                Ok(rows.iter().map(|r| r.try_get::<String, _>(3)).collect::<std::result::Result<_, _>>()?)
            }
        }
    }
}

/// The lines of a plan that read a whole table or sort its rows: on
/// SQLite a temporary b-tree for the order, or, for a query that filters
/// (`filtered`), a `SCAN` without an index (an unfiltered `SCAN` in rowid
/// order stops at its `LIMIT`); on PostgreSQL a sequential scan, a full
/// sort node (an incremental sort of rows an index already ordered is not
/// one), or an index walked from its end with a filter and no bound (it
/// stops at the `LIMIT` only if the rows it wants come soon).
pub fn full_work(plan: &[String], filtered: bool) -> Vec<String> {
    plan.iter()
        .enumerate()
        .filter(|(at, line)| {
            let l = node_text(line);
            // A scan of `json_each` reads the ids bound, not a table.
            let sqlite_scan =
                filtered && l.starts_with("SCAN ") && !l.contains(" USING ") && !l.starts_with("SCAN json_each");
            let sqlite_sort = l.starts_with("USE TEMP B-TREE FOR ORDER BY");
            let pg_scan = l.starts_with("Seq Scan") || l.starts_with("Parallel Seq Scan");
            let pg_sort = l.starts_with("Sort  (") || l.starts_with("Sort (");
            let pg_walk = l.starts_with("Index")
                && l.contains(" Scan")
                && unbounded_filter(&plan[at + 1..])
                && !walks_the_queue(l);
            sqlite_scan || sqlite_sort || pg_scan || pg_sort || pg_walk
        })
        .map(|(_, line)| line.clone())
        .collect()
}

fn node_text(line: &str) -> &str {
    line.trim_start().trim_start_matches("->").trim_start()
}

/// Partial indexes whose rows are what is queued or running: walking one
/// costs what waits, not what the history holds.
const QUEUE_INDEXES: &[&str] =
    &["buildrequests_pending ", "buildrequests_pending_branch ", "builds_running ", "builds_incomplete "];

fn walks_the_queue(node: &str) -> bool {
    QUEUE_INDEXES.iter().any(|i| node.contains(&format!(" using {i}")))
}

/// Whether a PostgreSQL node's detail lines (those up to the next node)
/// filter its rows without an `Index Cond` to bound where it reads.
fn unbounded_filter(details: &[String]) -> bool {
    let details: Vec<&str> = details.iter().map(|l| l.trim_start()).take_while(|l| !l.starts_with("->")).collect();
    details.iter().any(|l| l.starts_with("Filter:")) && !details.iter().any(|l| l.starts_with("Index Cond:"))
}

/// The lines of [`full_work`] that read a whole table: for reads bounded
/// by the ids or the time window they are given, sorting what they found
/// is no growing cost.
pub fn full_scans(plan: &[String]) -> Vec<String> {
    let sorts = |l: &String| {
        let l = l.trim_start().trim_start_matches("->").trim_start();
        l.starts_with("USE TEMP B-TREE") || l.starts_with("Sort")
    };
    full_work(plan, true).into_iter().filter(|l| !sorts(l)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(ls: &[&str]) -> Vec<String> {
        ls.iter().map(|l| (*l).to_string()).collect()
    }

    #[test]
    fn full_scans_and_sorts_are_found_on_both_backends() {
        assert!(full_work(&lines(&["SCAN b USING INDEX builds_started_at"]), true).is_empty());
        assert!(full_work(&lines(&["SEARCH r USING INDEX buildrequests_builder (builder_id=?)"]), true).is_empty());
        assert!(full_work(&lines(&["SCAN b"]), false).is_empty(), "by rowid, to the limit");
        assert!(full_work(&lines(&["SCAN json_each VIRTUAL TABLE INDEX 1:"]), true).is_empty(), "the ids bound");
        assert_eq!(full_work(&lines(&["SCAN b", "USE TEMP B-TREE FOR ORDER BY"]), true).len(), 2);
        let incremental = lines(&[
            "Limit  (cost=0.47..29.04 rows=200 width=104)",
            "  ->  Incremental Sort  (cost=0.47..74.76 rows=520 width=104)",
            "        Sort Key: started_at DESC, id DESC",
            "        ->  Index Scan Backward using builds_started_at on builds b  (cost=0.15..55.95 rows=520 width=104)",
        ]);
        assert!(full_work(&incremental, false).is_empty());
        let bad = lines(&[
            "Limit",
            "  ->  Sort  (cost=1e10..1e10 rows=1000 width=80)",
            "        Sort Key: x",
            "        ->  Seq Scan on builds b",
        ]);
        assert_eq!(full_work(&bad, false).len(), 2);
        let walk = lines(&[
            "Limit  (cost=0.43..130.10 rows=50 width=200)",
            "  ->  Index Scan Backward using changes_pkey on changes c  (cost=0.43..2593.50 rows=1000 width=200)",
            "        Filter: (branch = 'main'::text)",
        ]);
        assert_eq!(full_work(&walk, false), vec![walk[1].clone()], "a walk of the whole index, filtering");
        let bounded = lines(&[
            "Limit  (cost=0.43..130.10 rows=50 width=200)",
            "  ->  Index Scan Backward using changes_branch on changes c  (cost=0.43..2593.50 rows=1000 width=200)",
            "        Index Cond: ((branch >= 'main'::text) AND (branch <= 'main'::text))",
            "        Filter: (author <> 'x'::text)",
            "  ->  Index Scan using changes_pkey on changes d  (cost=0.43..2.50 rows=1 width=200)",
            "        Index Cond: (id = c.id)",
        ]);
        assert!(full_work(&bounded, false).is_empty(), "{:?}", full_work(&bounded, false));
        let queue = lines(&[
            "HashAggregate  (cost=8.17..8.18 rows=1 width=16)",
            "  ->  Index Scan using buildrequests_pending_branch on buildrequests r  (cost=0.14..8.16 rows=1 width=8)",
            "        Filter: (builder_id = ANY ('{1,2}'::bigint[]))",
        ]);
        assert!(full_work(&queue, false).is_empty(), "what waits is no history");
        assert_eq!(full_scans(&bad), vec!["        ->  Seq Scan on builds b".to_string()], "a bounded sort is no scan");
        assert!(
            full_scans(&lines(&["SEARCH b USING INDEX x (builder_id=?)", "USE TEMP B-TREE FOR ORDER BY"])).is_empty()
        );
    }
}

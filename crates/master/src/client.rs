//! The command-line client: `cascade status` (each builder's latest result,
//! like Buildbot's old `bbreport -q 3.x`), `cascade force`, `cascade stop`.
//! It speaks only the public API, so it works against any Cascade master.
//! Rendering is plain functions over plain rows; HTTP is at the edge.

use std::time::Duration;

use anyhow::{Context, bail};
use cascade_model::Results;
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};

pub use crate::humanize::age;

/// Calls the API of one master.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(url: &str, token: Option<String>) -> Client {
        let base = format!("{}/api/v2", url.trim_end_matches('/'));
        Client { http: crate::outbound::http_client(), base, token }
    }

    fn with_auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.header(reqwest::header::AUTHORIZATION, format!("Bearer {t}")),
            None => req,
        }
    }

    async fn answer(resp: reqwest::Response, what: &str) -> anyhow::Result<Value> {
        let status = resp.status();
        let body: Value = resp.json().await.with_context(|| format!("{what}: the answer is not JSON"))?;
        if !status.is_success() {
            let why = body.get("error").and_then(Value::as_str).unwrap_or("no reason given").to_string();
            return Err(ClientError::Refused { what: what.to_string(), status: status.as_u16(), why }.into());
        }
        Ok(body)
    }

    fn unreachable(what: String, e: &reqwest::Error) -> anyhow::Error {
        ClientError::Unreachable { what, why: e.to_string() }.into()
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .with_auth(self.http.get(&url))
            .send()
            .await
            .map_err(|e| Client::unreachable(format!("GET {url}"), &e))?;
        Client::answer(resp, &format!("GET {path}")).await
    }

    pub async fn call(&self, path: &str, method: &str, params: Value) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
        let resp = self
            .with_auth(self.http.post(&url).json(&body))
            .send()
            .await
            .map_err(|e| Client::unreachable(format!("POST {url}"), &e))?;
        Client::answer(resp, &format!("{method} on {path}")).await
    }

    /// The address of one of the master's pages.
    pub fn page(&self, path: &str) -> String {
        format!("{}{path}", self.base.trim_end_matches("/api/v2"))
    }
}

/// Why a call to the master failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer at all: down, the wrong address, a network in the way.
    #[error("{what}: the master did not answer: {why}")]
    Unreachable { what: String, why: String },
    /// The master answered an error.
    #[error("{what}: {status}: {why}")]
    Refused { what: String, status: u16, why: String },
}

/// `cascade status`'s exit status for an error: 2 when what was asked
/// makes no sense (an unknown branch, a 400), 3 when the master could not
/// be reached or answered another error.
pub fn exit_status_of(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<ClientError>() {
        Some(ClientError::Refused { status: 400, .. }) => 2,
        _ => 3,
    }
}

/// One line of `cascade status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusRow {
    pub builder: String,
    pub builderid: i64,
    /// The latest finished build, if any.
    pub number: Option<i64>,
    pub buildid: Option<i64>,
    pub results: Option<i64>,
    pub result: String,
    pub finished_at: Option<i64>,
    /// The newest change the build covered: revision and author.
    pub revision: Option<String>,
    pub author: Option<String>,
    /// The latest build's page.
    pub url: Option<String>,
    /// None of its workers is connected: which they are, and since when.
    pub offline: Option<Offline>,
}

/// A builder none of whose workers is connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Offline {
    pub workers: Vec<String>,
    /// When the last of them went away, Unix seconds, if known.
    pub since: Option<i64>,
}

impl StatusRow {
    pub fn failing(&self) -> bool {
        Results::of(self.results).is_some_and(Results::is_failing)
    }
}

fn paint(text: &str, result: &str, color: bool) -> String {
    if !color {
        return text.to_string();
    }
    // Buildbot's colours, as near as a terminal gets.
    let code = match result {
        "success" => "32",
        "warnings" => "33",
        "failure" => "31",
        "exception" => "35",
        "retry" | "cancelled" => "36",
        _ => "2",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// The table, one builder per line under a header, aligned; a failing
/// build's line ends with its page, an offline builder's says whose workers
/// are gone and since when.
pub fn render(rows: &[StatusRow], now: i64, color: bool) -> String {
    let width = rows.iter().map(|r| r.builder.chars().count()).max().unwrap_or(7).max(7);
    let mut out = format!("{:<width$}  {:<9}  {:>7}  {:>4}  CHANGE\n", "BUILDER", "RESULT", "BUILD", "AGE");
    for r in rows {
        let result = format!("{:<9}", r.result);
        let number = r.number.map(|n| format!("#{n}")).unwrap_or_else(|| "-".into());
        let when = r.finished_at.map(|t| age(now - t)).unwrap_or_else(|| "-".into());
        let head = match (&r.revision, &r.author) {
            (Some(rev), Some(a)) => format!("{} {}", rev.chars().take(10).collect::<String>(), a),
            (Some(rev), None) => rev.chars().take(10).collect(),
            _ => String::new(),
        };
        let mut line = format!(
            "{:<width$}  {}  {:>7}  {:>4}  {}",
            r.builder,
            paint(&result, &r.result, color),
            number,
            when,
            head
        )
        .trim_end()
        .to_string();
        if r.failing()
            && let Some(url) = &r.url
        {
            line.push_str(&format!("  {url}"));
        }
        if let Some(off) = &r.offline {
            let since = off.since.map(|t| format!(" for {}", age(now - t))).unwrap_or_default();
            line.push_str(&format!("  [offline{since}: {}]", off.workers.join(", ")));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// What `--failing` prints when nothing fails.
pub fn all_passing(selected: usize) -> String {
    format!("all {selected} builders passing\n")
}

/// Each builder's workers from `/workers` (one list): builder id → (name,
/// connected, when its last connection ended).
async fn workers_by_builder(
    client: &Client,
) -> anyhow::Result<std::collections::HashMap<i64, Vec<(String, bool, Option<i64>)>>> {
    let answer = client.get("/workers").await?;
    let mut out: std::collections::HashMap<i64, Vec<(String, bool, Option<i64>)>> = std::collections::HashMap::new();
    for w in answer["workers"].as_array().into_iter().flatten() {
        let name = w["name"].as_str().unwrap_or_default().to_string();
        let connected = w["connected_to"].as_array().is_some_and(|c| !c.is_empty());
        let gone = w["cascade_info"]["disconnected_at"].as_i64();
        let mut builders: Vec<i64> =
            w["configured_on"].as_array().into_iter().flatten().filter_map(|c| c["builderid"].as_i64()).collect();
        builders.dedup();
        for b in builders {
            out.entry(b).or_default().push((name.clone(), connected, gone));
        }
    }
    Ok(out)
}

/// A builder is offline when it has workers and none is connected.
pub fn offline(workers: &[(String, bool, Option<i64>)]) -> Option<Offline> {
    if workers.is_empty() || workers.iter().any(|(_, connected, _)| *connected) {
        return None;
    }
    let since =
        workers.iter().map(|(_, _, gone)| *gone).collect::<Option<Vec<i64>>>().and_then(|t| t.into_iter().max());
    Some(Offline { workers: workers.iter().map(|(n, _, _)| n.clone()).collect(), since })
}

/// How many builders' latest builds are fetched at once.
const CONCURRENCY: usize = 8;

/// Each selected builder's latest finished build and its newest change.
pub async fn status(client: &Client, branch: Option<&str>, tags: &[String]) -> anyhow::Result<Vec<StatusRow>> {
    status_paged(client, branch, tags, BUILDERS_PAGE).await
}

/// Builders asked for at once (the API's page cap).
const BUILDERS_PAGE: usize = 1000;
/// Pages read at most: a master that keeps answering full pages is not believed.
const PAGES_MAX: usize = 1000;

/// [`status`], reading the builders `page` at a time.
pub async fn status_paged(
    client: &Client,
    branch: Option<&str>,
    tags: &[String],
    page: usize,
) -> anyhow::Result<Vec<StatusRow>> {
    let mut query = vec![("order".to_string(), "name".to_string())];
    if let Some(b) = branch {
        query.push(("branch".into(), b.into()));
    }
    for t in tags {
        query.push(("tags__contains".into(), t.clone()));
    }
    let builders = every_builder(client, &query, page).await?;
    let workers = workers_by_builder(client).await?;
    let workers = &workers;
    let rows = futures_util::stream::iter(builders)
        .map(|(id, name)| async move {
            let latest = client.get(&format!("/builders/{id}/builds?complete=true&order=-number&limit=1")).await?;
            let build = latest["builds"].get(0).cloned();
            let mut row = StatusRow {
                builder: name,
                builderid: id,
                number: None,
                buildid: None,
                results: None,
                result: "no builds".into(),
                finished_at: None,
                revision: None,
                author: None,
                url: None,
                offline: workers.get(&id).and_then(|w| offline(w)),
            };
            if let Some(b) = build {
                row.number = b["number"].as_i64();
                row.buildid = b["buildid"].as_i64();
                row.results = b["results"].as_i64();
                row.result = row.results.and_then(Results::from_code).map(|r| r.name().to_string()).unwrap_or_default();
                row.finished_at = b["complete_at"].as_i64();
                row.url = row.number.map(|n| client.page(&format!("/builders/{id}/builds/{n}")));
                if let Some(bid) = row.buildid {
                    let changes = client.get(&format!("/builds/{bid}/changes")).await?;
                    if let Some(newest) = changes["changes"].as_array().and_then(|c| c.last()) {
                        row.revision = newest["revision"].as_str().map(str::to_string);
                        row.author = newest["author"].as_str().map(str::to_string);
                    }
                }
            }
            Ok::<_, anyhow::Error>(row)
        })
        .buffered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    rows.into_iter().collect()
}

/// `cascade force`: returns the request ids made.
pub async fn force(
    client: &Client,
    scheduler: &str,
    builders: &[String],
    branch: Option<&str>,
    revision: Option<&str>,
    reason: &str,
) -> anyhow::Result<Value> {
    let params = json!({ "builderNames": builders, "branch": branch, "revision": revision, "reason": reason });
    let answer = client.call(&format!("/forceschedulers/{scheduler}"), "force", params).await?;
    Ok(answer["result"].clone())
}

pub async fn stop(client: &Client, build_id: i64, reason: &str) -> anyhow::Result<()> {
    client.call(&format!("/builds/{build_id}"), "stop", json!({ "reason": reason })).await.map(|_| ())
}

/// Asks master `master` (an id, or `this`) to reload its configuration;
/// answers what changed.
pub async fn reconfig(client: &Client, master: &str) -> anyhow::Result<Value> {
    let answer = client.call(&format!("/masters/{master}"), "reconfig", json!({})).await?;
    Ok(answer.get("result").cloned().unwrap_or(Value::Null))
}

/// What a reload changed, for people: one line per kind of change.
pub fn reloaded_text(changed: &Value) -> String {
    let mut out = String::from("configuration reloaded\n");
    for (key, label) in [
        ("builders_added", "builders added"),
        ("builders_removed", "builders removed"),
        ("workers_added", "workers added"),
        ("workers_removed", "workers removed"),
        ("need_restart", "changed, but applied only at the next start"),
    ] {
        let names: Vec<&str> =
            changed.get(key).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        if !names.is_empty() {
            out.push_str(&format!("{label}: {}\n", names.join(", ")));
        }
    }
    out
}

/// Every builder `query` selects, page after page: a CPython-sized master
/// has more than one page of them.
async fn every_builder(client: &Client, query: &[(String, String)], page: usize) -> anyhow::Result<Vec<(i64, String)>> {
    let mut out = Vec::new();
    for _ in 0..PAGES_MAX {
        let mut q = query.to_vec();
        q.push(("limit".into(), page.to_string()));
        q.push(("offset".into(), out.len().to_string()));
        let qs = serde_urlencoded::to_string(&q).unwrap_or_default();
        let answer = client.get(&format!("/builders?{qs}")).await?;
        let list = answer["builders"].as_array().cloned().unwrap_or_default();
        let n = list.len();
        out.extend(list.iter().filter_map(|b| Some((b["builderid"].as_i64()?, b["name"].as_str()?.to_string()))));
        if n < page {
            return Ok(out);
        }
    }
    bail!("the master kept answering full pages of builders; stopped after {PAGES_MAX}")
}

/// Timeout for one command-line call.
pub const TIMEOUT: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, results: Option<i64>, number: Option<i64>) -> StatusRow {
        StatusRow {
            builder: name.into(),
            builderid: 1,
            number,
            buildid: number,
            results,
            result: results.and_then(Results::from_code).map(|r| r.name().to_string()).unwrap_or("no builds".into()),
            finished_at: number.map(|_| 1000),
            revision: number.map(|_| "0123456789abcdef".into()),
            author: number.map(|_| "Ann <ann@example.org>".into()),
            url: number.map(|n| format!("http://ci/builders/1/builds/{n}")),
            offline: None,
        }
    }

    #[test]
    fn a_reload_is_told_one_line_per_kind_of_change() {
        let changed = json!({ "builders_added": ["a", "b"], "builders_removed": [], "need_restart": ["master.http"] });
        let text = reloaded_text(&changed);
        assert_eq!(
            text,
            "configuration reloaded\nbuilders added: a, b\nchanged, but applied only at the next start: master.http\n"
        );
    }

    #[test]
    fn a_builder_is_offline_when_none_of_its_workers_is_connected() {
        let w = |n: &str, c: bool, t: Option<i64>| (n.to_string(), c, t);
        assert_eq!(offline(&[]), None, "no workers: nothing to be offline");
        assert_eq!(offline(&[w("a", true, None), w("b", false, Some(5))]), None);
        let both = offline(&[w("a", false, Some(5)), w("b", false, Some(9))]).expect("offline");
        assert_eq!((both.workers, both.since), (vec!["a".to_string(), "b".to_string()], Some(9)));
        assert_eq!(offline(&[w("a", false, None)]).and_then(|o| o.since), None, "never seen: since unknown");
        assert_eq!(all_passing(162), "all 162 builders passing\n");
    }

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(125), "2m");
        assert_eq!(age(7200), "2h");
        assert_eq!(age(3 * 86_400 + 5), "3d");
        assert_eq!(age(-3), "0s");
    }

    #[test]
    fn the_table_aligns_and_colours_only_when_asked() {
        let rows = vec![
            row("AMD64 Fedora 3.x", Some(0), Some(12)),
            row("ARM64 macOS 3.x", Some(2), Some(7)),
            row("x", None, None),
        ];
        let mut rows = rows;
        rows[2].offline = Some(Offline { workers: vec!["box-1".into()], since: Some(1000) });
        let plain = render(&rows, 1000 + 3600, false);
        let lines: Vec<&str> = plain.lines().collect();
        assert_eq!(lines[0], "BUILDER           RESULT       BUILD   AGE  CHANGE");
        assert_eq!(lines[1], "AMD64 Fedora 3.x  success        #12    1h  0123456789 Ann <ann@example.org>");
        assert_eq!(
            lines[2],
            "ARM64 macOS 3.x   failure         #7    1h  0123456789 Ann <ann@example.org>  http://ci/builders/1/builds/7",
            "a failing build's line ends with its page"
        );
        assert_eq!(lines[3], "x                 no builds        -     -  [offline for 1h: box-1]");
        assert!(!plain.contains('\x1b'));
        let coloured = render(&rows, 4600, true);
        assert!(coloured.contains("\x1b[31mfailure  \x1b[0m"));
        assert!(rows[1].failing() && !rows[0].failing() && !rows[2].failing());
    }
}

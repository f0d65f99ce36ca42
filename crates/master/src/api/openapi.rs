//! `/api/v2/openapi.json`: every route of the API, described from one
//! table (the same table the route test walks, so the document cannot drift
//! from what answers).

use axum::Json;
use serde_json::{Map, Value, json};

/// One documented route.
pub struct Route {
    pub method: &'static str,
    /// With `{param}` segments, as in the router.
    pub path: &'static str,
    pub summary: &'static str,
    /// The envelope's key for a JSON answer (`None`: plain text).
    pub key: Option<&'static str>,
    /// Whether it takes Buildbot's list query (filters, order, limit, ...).
    pub list: bool,
}

const fn get(path: &'static str, key: &'static str, list: bool, summary: &'static str) -> Route {
    Route { method: "get", path, summary, key: Some(key), list }
}

const fn raw(path: &'static str) -> Route {
    Route { method: "get", path, summary: "A whole log as text, streamed", key: None, list: false }
}

const fn raw_inline(path: &'static str) -> Route {
    Route { method: "get", path, summary: "A whole log as text, to view in the browser", key: None, list: false }
}

const fn post(path: &'static str, summary: &'static str) -> Route {
    Route { method: "post", path, summary, key: None, list: false }
}

pub const ROUTES: &[Route] = &[
    get("/changes", "changes", true, "Changes, newest last by default"),
    get("/changes/{id}", "changes", false, "One change"),
    get("/buildsets", "buildsets", true, "Buildsets"),
    get("/buildsets/{id}", "buildsets", false, "One buildset"),
    get("/buildrequests", "buildrequests", true, "Build requests"),
    get("/buildrequests/{id}", "buildrequests", false, "One build request"),
    post("/buildrequests/{id}", "JSON-RPC `cancel` of a request no build has taken (action `cancel`)"),
    get("/builders", "builders", true, "Builders"),
    get("/builders/{id_or_name}", "builders", false, "One builder, by id or name"),
    get("/builders/{id}/buildrequests", "buildrequests", true, "A builder's build requests"),
    get("/builders/{id}/builds", "builds", true, "A builder's builds"),
    get("/builders/{id}/builds/{number}", "builds", false, "A builder's build by number"),
    get(
        "/builders/{builder}/builds/{number}/steps",
        "steps",
        false,
        "A build's steps, by builder (id or name) and number",
    ),
    get("/builders/{builder}/builds/{number}/steps/{step}", "steps", false, "One step, by number or name"),
    get("/builders/{builder}/builds/{number}/steps/{step}/logs", "logs", false, "A step's logs"),
    get("/builders/{builder}/builds/{number}/steps/{step}/logs/{slug}", "logs", false, "One log, by slug"),
    get("/builders/{builder}/builds/{number}/steps/{step}/logs/{slug}/contents", "logchunks", false, "Lines of a log"),
    raw("/builders/{builder}/builds/{number}/steps/{step}/logs/{slug}/raw"),
    get("/builders/{id}/forceschedulers", "forceschedulers", false, "The force schedulers that may build it"),
    get("/builders/{id}/workers", "workers", true, "The workers configured for it"),
    get("/builds", "builds", true, "Builds; `property=` inlines properties"),
    get("/builds/{id}", "builds", false, "One build"),
    post(
        "/builds/{id}",
        "JSON-RPC `stop` (action `stop`), `rebuild` or `rerun` (action `rebuild`: `rerun` adds the properties \
         `randseed` and `tests` from the failed tests); a build's owner may do all three",
    ),
    get("/builds/{id}/properties", "properties", false, "A build's properties: {name: [value, source]}"),
    get("/builds/{id}/steps", "steps", false, "A build's steps"),
    get("/builds/{buildid}/steps/{step}", "steps", false, "One step, by number or name"),
    get("/builds/{buildid}/steps/{step}/logs", "logs", false, "A step's logs"),
    get("/builds/{buildid}/steps/{step}/logs/{slug}", "logs", false, "One log, by slug"),
    get("/builds/{buildid}/steps/{step}/logs/{slug}/contents", "logchunks", false, "Lines of a log"),
    raw("/builds/{buildid}/steps/{step}/logs/{slug}/raw"),
    get("/builds/{id}/changes", "changes", false, "A build's blamelist"),
    get("/builds/{id}/test_result_sets", "test_result_sets", true, "A build's test result sets (Buildbot's)"),
    get(
        "/builds/{id}/test_runs",
        "test_runs",
        false,
        "Cascade's additions: seed, command, order, failed and flaky tests, tracebacks, the reproduce command",
    ),
    get("/builders/{id}/test_result_sets", "test_result_sets", true, "A builder's test result sets"),
    get("/steps/{id}/test_result_sets", "test_result_sets", true, "A step's test result sets"),
    get("/test_result_sets", "test_result_sets", true, "Test result sets"),
    get("/test_result_sets/{id}", "test_result_sets", false, "One test result set"),
    get("/test_result_sets/{id}/results", "test_results", true, "A set's results: value 1 passed, 0 failed"),
    get("/steps/{id}", "steps", false, "One step"),
    get("/steps/{id}/logs", "logs", false, "A step's logs"),
    get("/steps/{stepid}/logs/{slug}", "logs", false, "One log, by slug"),
    get("/steps/{stepid}/logs/{slug}/contents", "logchunks", false, "Lines of a log"),
    raw("/steps/{stepid}/logs/{slug}/raw"),
    get("/logs/{id}", "logs", false, "One log"),
    get("/logs/{id}/contents", "logchunks", false, "Lines of a log: `offset` (first line), `limit` (count)"),
    raw("/logs/{id}/raw"),
    get("/workers", "workers", true, "Workers; `workerinfo` as Buildbot's, Cascade's additions in `cascade_info`"),
    get("/workers/{id}", "workers", false, "One worker, by id or name"),
    get("/workers/{id}/builders", "builders", true, "The builders it is configured for"),
    get("/projects", "projects", false, "Buildbot 4's projects: always empty (Cascade has none)"),
    post("/workers/{id}", "JSON-RPC `pause`, `unpause`, `stop` (once idle) or `kill` (action `pause`)"),
    get("/masters", "masters", false, "Masters"),
    get("/schedulers", "schedulers", false, "Schedulers, whether they are enabled, and the master running each"),
    get("/schedulers/{id}", "schedulers", false, "One scheduler"),
    post("/schedulers/{id}", "JSON-RPC `enable` with {\"enabled\": bool} (action `scheduler`)"),
    get("/forceschedulers", "forceschedulers", false, "Force schedulers and their builders"),
    get("/forceschedulers/{name}", "forceschedulers", false, "One force scheduler"),
    post(
        "/forceschedulers/{name}",
        "JSON-RPC `force` with builderNames, branch, revision, reason, properties (action `force`)",
    ),
    get("/builders/{builder}/builds/{number}/changes", "changes", false, "A build's blamelist, by builder and number"),
    get("/builders/{builder}/builds/{number}/properties", "properties", false, "A build's properties, by number"),
    raw_inline("/builders/{builder}/builds/{number}/steps/{step}/logs/{slug}/raw_inline"),
    get("/builds/{buildid}/property_list", "_properties", false, "A build's properties as {name, value, source}"),
    get("/builds/{buildid}/triggered_builds", "builds", false, "Builds it triggered: always empty here"),
    get("/builds/{buildid}/data", "build_data", false, "Buildbot's build data: always empty here"),
    raw_inline("/builds/{buildid}/steps/{step}/logs/{slug}/raw_inline"),
    raw_inline("/steps/{stepid}/logs/{slug}/raw_inline"),
    raw_inline("/logs/{logid}/raw_inline"),
    get("/builders/{builder}/masters", "masters", false, "The masters serving a builder"),
    get("/builders/{builder}/masters/{masterid}", "masters", false, "One master serving a builder"),
    get("/builders/{builder}/workers/{worker}", "workers", true, "One of a builder's workers, by id or name"),
    get("/buildrequests/{id}/builds", "builds", true, "A request's builds"),
    get("/buildsets/{id}/sourcestamps", "sourcestamps", false, "A buildset's source stamps"),
    get("/buildsets/{id}/properties", "properties", false, "A buildset's properties: {name: [value, source]}"),
    get("/buildsets/{id}/properties_list", "_properties", false, "A buildset's properties as {name, value, source}"),
    get("/changes/{id}/builds", "builds", false, "The builds whose blamelist holds the change"),
    get("/changes/{id}/properties_list", "_properties", false, "A change's properties as {name, value, source}"),
    get("/changesources", "changesources", false, "Buildbot's change sources: always empty here"),
    get("/codebases", "codebases", false, "Buildbot 4.3's codebases: always empty here"),
    get("/masters/{masterid}", "masters", false, "One master"),
    get("/masters/{masterid}/builders", "builders", false, "The builders a master serves"),
    get("/masters/{masterid}/builders/{builder}", "builders", false, "One builder a master serves"),
    get("/masters/{masterid}/builders/{builder}/workers", "workers", true, "Workers of a builder on a master"),
    get("/masters/{masterid}/builders/{builder}/workers/{worker}", "workers", true, "One of them, by id or name"),
    get("/masters/{masterid}/workers", "workers", true, "The workers configured on a master"),
    get("/masters/{masterid}/workers/{worker}", "workers", true, "One of them, by id or name"),
    get("/masters/{masterid}/schedulers", "schedulers", false, "The schedulers a master runs"),
    get("/masters/{masterid}/schedulers/{schedulerid}", "schedulers", false, "One of them"),
    get("/masters/{masterid}/changesources", "changesources", false, "A master's change sources: always empty"),
    get("/sourcestamps", "sourcestamps", true, "Source stamps"),
    get("/sourcestamps/{id}", "sourcestamps", false, "One source stamp"),
    get("/sourcestamps/{id}/changes", "changes", true, "The changes of a source stamp"),
    get("/workers/{id}/builds", "builds", true, "A worker's builds"),
];

fn parameters(route: &Route) -> Vec<Value> {
    let mut out: Vec<Value> = route
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
        .collect();
    if route.list {
        for (name, what) in [
            ("limit", "most items returned (at most 1000); without it, every item, streamed"),
            ("offset", "items skipped"),
            ("order", "field to sort by; `-field` descends"),
            ("field", "fields to keep in each item"),
        ] {
            out.push(json!({ "name": name, "in": "query", "required": false, "description": what,
                             "schema": { "type": "string" } }));
        }
    }
    out
}

fn operation(route: &Route) -> Value {
    let mut op = json!({ "summary": route.summary, "parameters": parameters(route) });
    let ok = match (route.method, route.key) {
        ("post", _) => json!({
            "description": "JSON-RPC result, or a redirect for a form post",
            "content": { "application/json": { "schema": { "type": "object", "required": ["jsonrpc", "result"] } } }
        }),
        (_, Some(key)) => json!({
            "description": "Buildbot's envelope",
            "content": { "application/json": { "schema": {
                "type": "object",
                "required": [key, "meta"],
                "properties": {
                    key: { "type": "array", "items": { "type": "object" } },
                    "meta": { "type": "object", "properties": { "total": { "type": "integer" } } }
                }
            } } }
        }),
        _ => json!({ "description": "text", "content": { "text/plain": { "schema": { "type": "string" } } } }),
    };
    let error = json!({ "description": "an error", "content": { "application/json": { "schema": {
        "type": "object", "required": ["error"], "properties": { "error": { "type": "string" } } } } } });
    let mut responses = Map::new();
    responses.insert("200".into(), ok);
    responses.insert("400".into(), error.clone());
    responses.insert("404".into(), error.clone());
    if route.method == "post" {
        responses.insert("401".into(), error.clone());
        responses.insert("403".into(), error.clone());
        responses.insert("409".into(), error);
        op["security"] = json!([{ "bearer": [] }, { "session": [] }]);
        op["requestBody"] = json!({ "required": true, "content": {
            "application/json": { "schema": { "type": "object", "required": ["method"],
                "properties": { "jsonrpc": { "type": "string" }, "id": {}, "method": { "type": "string" },
                                "params": { "type": "object" } } } },
            "application/x-www-form-urlencoded": { "schema": { "type": "object" } } } });
    }
    op["responses"] = Value::Object(responses);
    op
}

pub fn spec() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let entry = paths.entry(route.path.to_string()).or_insert_with(|| json!({}));
        entry[route.method] = operation(route);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Cascade Data API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Buildbot's Data API v2 shapes: lists answer {\"<resource>\": [...], \"meta\": {\"total\": N}}; filters `field=value` and `field__op=value` (eq, ne, lt, le, gt, ge, contains, in); with `limit`, `meta.total` is counted only when `total=1` asks. Control is JSON-RPC POSTs.",
        },
        "servers": [{ "url": "/api/v2" }],
        "components": { "securitySchemes": {
            "bearer": { "type": "http", "scheme": "bearer" },
            "session": { "type": "apiKey", "in": "cookie", "name": "cascade_session",
                         "description": "a page login; state changes also need the X-CSRF-Token header" }
        } },
        "paths": paths,
    })
}

pub async fn document() -> Json<Value> {
    Json(spec())
}

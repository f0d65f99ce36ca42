//! Control: Buildbot's JSON-RPC POSTs on `/api/v2/...` (scripts, with a
//! bearer token, or pages' JavaScript with the session's CSRF token in
//! `X-CSRF-Token`), and the same calls as plain HTML form posts (fields
//! `method`, `csrf`, `next` and the parameters), answered with a redirect.
//!
//! - `forceschedulers/{name}`: `force`
//! - `builds/{id}`: `stop`, `rebuild`
//! - `buildrequests/{id}`: `cancel`
//! - `workers/{id}`: `pause`, `unpause`, `stop` (once idle), `kill`
//! - `schedulers/{id}`: `enable` (`{"enabled": false}` disables)
//! - `masters/{id}` (or `masters/this`): `reconfig`

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use cascade_config::Action;
use cascade_model::text;
use cascade_store::{Cancelled, NewBuildset, NewSourceStamp, Store};
use serde_json::{Map, Value, json};

use super::id;
use crate::auth::{Access, Intent, User};
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::error::HttpError;
use crate::notice::{Done, Said};
use crate::operator::Operator;
use crate::relay::{Relay, Request};
use crate::runner::Runner;
use crate::scheduler::{ForceRequest, SchedulerError, Schedulers};
use crate::workers::Registry;

/// What control calls need.
pub struct Control {
    /// Where the changes are made.
    pub store: Store,
    /// Builders and workers as configured.
    pub catalog: Arc<Catalog>,
    /// What time it is.
    pub clock: Clock,
    /// Who may do what.
    pub access: Arc<Access>,
    /// Builds running here (stop), and the distributor (nudged).
    pub runner: Arc<Runner>,
    /// Workers connected here.
    pub registry: Arc<Registry>,
    /// Force schedulers, and the switches of all.
    pub schedulers: Arc<Schedulers>,
    /// This master's serve loop (reloads).
    pub operator: Operator,
    /// Builds and workers on other masters.
    pub relay: Arc<Relay>,
}

/// The methods control calls name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Force builds (force schedulers).
    Force,
    /// Stop a build, or stop a worker once idle.
    Stop,
    /// Rebuild a build.
    Rebuild,
    /// Rebuild a failing build's failed tests, with its random seed.
    Rerun,
    /// Cancel a pending request.
    Cancel,
    /// Pause a worker.
    Pause,
    /// Unpause a worker.
    Unpause,
    /// Drop a worker's connection.
    Kill,
    /// Switch a scheduler on or off.
    Enable,
    /// Reload a master's configuration.
    Reconfig,
}

impl Method {
    const ALL: [Method; 10] = [
        Method::Force,
        Method::Stop,
        Method::Rebuild,
        Method::Rerun,
        Method::Cancel,
        Method::Pause,
        Method::Unpause,
        Method::Kill,
        Method::Enable,
        Method::Reconfig,
    ];

    /// The name calls use.
    pub fn name(self) -> &'static str {
        match self {
            Method::Force => "force",
            Method::Stop => "stop",
            Method::Rebuild => "rebuild",
            Method::Rerun => "rerun",
            Method::Cancel => "cancel",
            Method::Pause => "pause",
            Method::Unpause => "unpause",
            Method::Kill => "kill",
            Method::Enable => "enable",
            Method::Reconfig => "reconfig",
        }
    }

    fn parse(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// One control call, however it came.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub method: String,
    pub id: Value,
    pub params: Map<String, Value>,
    /// A form post: answer with a redirect to `next`.
    pub form: Option<FormMeta>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FormMeta {
    pub csrf: String,
    pub next: String,
}

/// Form fields that are lists when repeated (or comma-separated).
const LIST_FIELDS: &[&str] = &["builderNames"];

/// Parses a JSON-RPC body or an urlencoded form.
pub fn parse_call(headers: &HeaderMap, body: &[u8]) -> Result<Call, HttpError> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_bytes(body).map_err(|e| HttpError::bad_request(format!("malformed form: {e}")))?;
        let mut params = Map::new();
        let (mut method, mut csrf, mut next) = (String::new(), String::new(), None);
        for (k, v) in pairs {
            match k.as_str() {
                "method" => method = v,
                "csrf" => csrf = v,
                "next" => next = Some(v),
                k if LIST_FIELDS.contains(&k) => {
                    let list = params.entry(k.to_string()).or_insert_with(|| Value::Array(vec![]));
                    if let Value::Array(items) = list {
                        items.extend(v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| json!(s)));
                    }
                }
                // Checkboxes and the like: "true"/"false" become booleans.
                _ => {
                    let value = match v.as_str() {
                        "true" => json!(true),
                        "false" => json!(false),
                        _ => json!(v),
                    };
                    params.insert(k, value);
                }
            }
        }
        let next = crate::auth::session::local_next(next.as_deref());
        return Ok(Call { method, id: Value::Null, params, form: Some(FormMeta { csrf, next }) });
    }
    let v: Value =
        serde_json::from_slice(body).map_err(|e| HttpError::bad_request(format!("not a JSON-RPC call: {e}")))?;
    let method = v.get("method").and_then(Value::as_str).ok_or_else(|| HttpError::bad_request("no `method`"))?;
    let params = match v.get("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(HttpError::bad_request("`params` must be an object")),
    };
    Ok(Call { method: method.to_string(), id: v.get("id").cloned().unwrap_or(Value::Null), params, form: None })
}

impl Call {
    fn str_param(&self, k: &str) -> Option<String> {
        self.params.get(k).and_then(|v| v.as_str()).map(str::to_string).filter(|s| !s.is_empty())
    }

    /// A parameter that is stored as it is (a branch, a revision): 400 with
    /// its name when it cannot be.
    fn name_param(&self, k: &str) -> Result<Option<String>, HttpError> {
        let value = self.str_param(k);
        if let Some(v) = &value {
            text::name_like(k, v, text::REF_MAX).map_err(|e| HttpError::bad_request(e.to_string()))?;
        }
        Ok(value)
    }

    /// Free text (a reason), made fit to store.
    fn text_param(&self, k: &str) -> Option<String> {
        self.str_param(k).map(|v| text::clean(&v, text::REASON_MAX)).filter(|v| !v.is_empty())
    }

    /// The answer: JSON-RPC's result, or for a form the page it came from,
    /// saying what was done.
    fn reply(&self, result: Value, said: Said) -> Response {
        match &self.form {
            Some(f) => Redirect::to(&said.onto(&f.next)).into_response(),
            None => self.json(result),
        }
    }

    /// The answer to a call that made a buildset: a form goes to the
    /// buildset's page, which follows its requests to their builds.
    fn made(&self, result: Value, buildset: Option<i64>, done: Done) -> Response {
        match (&self.form, buildset) {
            (Some(_), Some(bsid)) => Redirect::to(&format!("/buildsets/{bsid}?done={}", done.word())).into_response(),
            (Some(f), None) => Redirect::to(&f.next).into_response(),
            (None, _) => self.json(result),
        }
    }

    /// The answer to a form that lands on `page` (not its `next`).
    fn reply_to(&self, page: &str, result: Value, said: Said) -> Response {
        match &self.form {
            Some(_) => Redirect::to(&said.onto(page)).into_response(),
            None => self.json(result),
        }
    }

    fn json(&self, result: Value) -> Response {
        axum::Json(json!({ "jsonrpc": "2.0", "id": self.id, "result": result })).into_response()
    }
}

/// Parses a call whose method must be one of `methods` (on `what`).
fn call_for(headers: &HeaderMap, body: &[u8], methods: &[Method], what: &str) -> Result<(Call, Method), HttpError> {
    let call = parse_call(headers, body)?;
    match Method::parse(&call.method).filter(|m| methods.contains(m)) {
        Some(m) => Ok((call, m)),
        None => Err(HttpError::bad_request(format!("unknown method {:?} for {what}", call.method))),
    }
}

fn from_of(connect: Option<&Extension<ConnectInfo<SocketAddr>>>) -> Option<SocketAddr> {
    connect.map(|c| c.0.0)
}

impl Control {
    /// Who is calling, and may they do `action` (on a build owned by `owner`)?
    async fn allowed_user(
        &self,
        headers: &HeaderMap,
        from: Option<SocketAddr>,
        call: &Call,
        action: Action,
        owner: Option<&str>,
    ) -> Result<User, HttpError> {
        let csrf = call.form.as_ref().map(|f| f.csrf.as_str());
        let user = self.access.actor(headers, from, Intent::Act(action), csrf).await?;
        self.access.authorize(&user, from, action, owner)?;
        Ok(user)
    }
}

/// Stops a build here, or asks the master it runs on.
async fn stop_anywhere(c: &Control, build_id: i64, master_id: i64) -> Result<(), HttpError> {
    if master_id == c.catalog.master_id {
        return match c.runner.stop_build(build_id) {
            true => Ok(()),
            false => Err(HttpError::conflict("the build is not running any more")),
        };
    }
    let answer = c.relay.ask(master_id, Request::StopBuild { build_id }).await.map_err(unanswered)?;
    if !answer.ok {
        return Err(HttpError::conflict(format!("master {master_id}: {}", answer.message)));
    }
    Ok(())
}

/// No answer from the other master: the caller may try again.
fn unanswered(e: crate::relay::RelayError) -> HttpError {
    HttpError::unavailable(e.to_string())
}

/// `POST /api/v2/builds/{id}`: `stop`, `rebuild`.
pub async fn build(
    State(c): State<Arc<Control>>,
    Path(raw): Path<String>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, HttpError> {
    let (call, method) = call_for(&headers, &body, &[Method::Stop, Method::Rebuild, Method::Rerun], "a build")?;
    let action = if method == Method::Stop { Action::Stop } else { Action::Rebuild };
    let build_id = id(&raw, "build")?;
    let build = c.store.get_build(build_id).await?.ok_or_else(|| HttpError::not_found("no such build"))?;
    let owner = c.store.build_owner(build_id).await?;
    let user = c.allowed_user(&headers, from_of(connect.as_ref()), &call, action, owner.as_deref()).await?;
    if action == Action::Stop {
        if build.complete {
            return Err(HttpError::conflict("the build has already finished"));
        }
        stop_anywhere(&c, build_id, build.masterid).await?;
        let reason = call.text_param("reason").unwrap_or_default();
        tracing::info!(user = ?user.name, build = build_id, reason = ?reason, "build stopped");
        return Ok(call.reply(Value::Null, Said::BuildStopped));
    }
    let extra = if method == Method::Rerun { rerun_properties(&c, build_id).await? } else { Vec::new() };
    let (bsid, requests) = rebuild(&c, &build, &user, call.text_param("reason"), extra).await?;
    tracing::info!(user = %user.name, build = build_id, buildset = bsid, method = method.name(), "build rebuilt");
    let done = if method == Method::Rerun { Done::Rerun } else { Done::Rebuilt };
    Ok(call.made(json!([bsid, requests]), Some(bsid), done))
}

/// A rerun's properties: `randseed` (the failing run's seed) and `tests`
/// (its failed tests, space-separated), for a factory's
/// `--randseed %(prop:randseed)s %(prop:tests)s`.
async fn rerun_properties(c: &Control, build_id: i64) -> Result<Vec<(String, Value)>, HttpError> {
    let runs = c.store.test_runs_of(&[build_id]).await?;
    let problems = c.store.test_problems_of(&[build_id]).await?;
    let failed = c.store.failed_test_files(&[build_id]).await?.remove(&build_id).unwrap_or_default();
    if failed.is_empty() {
        return Err(HttpError::conflict("the build has no failed tests to rerun"));
    }
    let mut props = vec![("tests".to_string(), json!(failed.join(" ")))];
    let seed = runs.iter().find(|r| problems.iter().any(|p| p.test_result_setid == r.test_result_setid && !p.flaky));
    if let Some(seed) = seed.and_then(|r| r.seed.clone()) {
        props.push(("randseed".to_string(), json!(seed)));
    }
    Ok(props)
}

/// The properties of a rebuild: the original buildset's, plus who and why.
async fn rebuild_properties(
    c: &Control,
    bsid: i64,
    build_id: i64,
    user: &User,
    reason: &str,
) -> Result<BTreeMap<String, (Value, String)>, HttpError> {
    let mut properties: BTreeMap<String, (Value, String)> = BTreeMap::new();
    for (name, v) in c.store.buildset_properties(bsid).await? {
        let value = v.get(0).cloned().unwrap_or(Value::Null);
        let source = v.get(1).and_then(Value::as_str).unwrap_or("Rebuild").to_string();
        properties.insert(name, (value, source));
    }
    properties.insert("owner".into(), (json!(user.name), "Rebuild".into()));
    properties.insert("reason".into(), (json!(reason), "Rebuild".into()));
    properties.insert("rebuilt_from".into(), (json!(build_id), "Rebuild".into()));
    Ok(properties)
}

/// A new buildset for the same builder, source and properties as `build`'s,
/// pinned to the revision it built.
async fn rebuild(
    c: &Control,
    build: &cascade_store::records::BuildRecord,
    user: &User,
    reason: Option<String>,
    extra: Vec<(String, Value)>,
) -> Result<(i64, Map<String, Value>), HttpError> {
    let request = c
        .store
        .get_buildrequest(build.buildrequestid)
        .await?
        .ok_or_else(|| HttpError::not_found("the build's request is gone"))?;
    let buildset =
        c.store.get_buildset(request.buildsetid).await?.ok_or_else(|| HttpError::not_found("the buildset is gone"))?;
    let ss = buildset.sourcestamps.first().cloned().ok_or_else(|| HttpError::not_found("no source stamp"))?;
    let got_revision = c
        .store
        .build_properties(build.buildid)
        .await?
        .into_iter()
        .find(|(n, _, _)| n == "got_revision")
        .and_then(|(_, v, _)| v.as_str().map(str::to_string));
    let reason = reason.unwrap_or_else(|| format!("rebuild of build {}", build.buildid));
    let mut properties = rebuild_properties(c, buildset.bsid, build.buildid, user, &reason).await?;
    for (name, value) in extra {
        properties.insert(name, (value, "Rerun".into()));
    }
    let changes = c.store.buildset_changes(buildset.bsid).await?;
    let revision = got_revision.or(ss.revision.clone());
    let bs = NewBuildset {
        reason: format!("A rebuild was requested by '{}': {reason}", user.name),
        scheduler_id: None,
        external_idstring: None,
        sourcestamp: NewSourceStamp {
            repository: ss.repository.clone(),
            branch: ss.branch.clone(),
            revision: revision.clone(),
            project: ss.project.clone(),
            codebase: ss.codebase.clone(),
        },
        change_ids: changes.iter().map(|c| c.changeid).collect(),
        properties,
        builder_ids: vec![build.builderid],
        priority: request.priority,
        pin_revision: revision.is_some(),
        rebuilt_build_id: Some(build.buildid),
        // A try build's rebuild applies the same diff.
        patch: ss.patch.as_ref().map(|p| cascade_store::Patch {
            level: p.level,
            body: p.body.clone(),
            author: p.author.clone(),
            comment: p.comment.clone(),
        }),
    };
    let (bsid, request_ids) = c.store.create_buildset(&bs, c.clock.now()).await?;
    c.runner.nudge();
    let mut map = Map::new();
    for r in request_ids {
        map.insert(build.builderid.to_string(), json!(r));
    }
    Ok((bsid, map))
}

impl From<SchedulerError> for HttpError {
    fn from(e: SchedulerError) -> HttpError {
        match e {
            SchedulerError::Invalid(why) => HttpError::bad_request(why),
            SchedulerError::Store(e) => e.into(),
        }
    }
}

/// `builderNames` of a force call: a list, one name, or none (all).
fn builder_names(call: &Call) -> Result<Vec<String>, HttpError> {
    match call.params.get("builderNames") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => Ok(items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(_) => Err(HttpError::bad_request("builderNames must be a list of builder names")),
    }
}

/// `POST /api/v2/forceschedulers/{name}`: `force`.
pub async fn force(
    State(c): State<Arc<Control>>,
    Path(name): Path<String>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, HttpError> {
    let (call, _) = call_for(&headers, &body, &[Method::Force], "a force scheduler")?;
    let user = c.allowed_user(&headers, from_of(connect.as_ref()), &call, Action::Force, None).await?;
    let properties: BTreeMap<String, Value> = match call.params.get("properties") {
        Some(Value::Object(o)) => o.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        _ => BTreeMap::new(),
    };
    for name in properties.keys() {
        text::name_like(&format!("properties.{name}"), name, text::REF_MAX)
            .map_err(|e| HttpError::bad_request(e.to_string()))?;
    }
    let req = ForceRequest {
        scheduler: name.clone(),
        builders: builder_names(&call)?,
        branch: call.name_param("branch")?,
        revision: call.name_param("revision")?,
        reason: call.text_param("reason").unwrap_or_else(|| "forced".into()),
        owner: user.name.clone(),
        properties,
    };
    let created = c.schedulers.force(&c.store, &req, c.clock.now()).await?;
    c.runner.nudge();
    tracing::info!(user = %user.name, scheduler = %name, buildsets = ?created, "build forced");
    let first = created.first().map(|(bsid, _)| *bsid);
    let requests: Vec<i64> = created.iter().flat_map(|(_, r)| r.iter().copied()).collect();
    // A force over several branches makes a buildset per branch: the queue shows them all.
    if created.len() > 1 {
        return Ok(call.reply_to("/pending", json!([first, requests]), Said::ForcedSeveral));
    }
    Ok(call.made(json!([first, requests]), first, Done::Forced))
}

/// `POST /api/v2/buildrequests/{id}`: `cancel`.
pub async fn buildrequest(
    State(c): State<Arc<Control>>,
    Path(raw): Path<String>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, HttpError> {
    let (call, _) = call_for(&headers, &body, &[Method::Cancel], "a build request")?;
    let user = c.allowed_user(&headers, from_of(connect.as_ref()), &call, Action::Cancel, None).await?;
    let request_id = id(&raw, "build request")?;
    match c.store.cancel_buildrequest(request_id, c.clock.now()).await? {
        Cancelled::Done => {
            tracing::info!(user = %user.name, request = request_id, "build request cancelled");
            Ok(call.reply(Value::Null, Said::RequestCancelled))
        }
        Cancelled::NotFound => Err(HttpError::not_found("no such build request")),
        Cancelled::AlreadyComplete => Err(HttpError::conflict("the request is already complete")),
        Cancelled::Claimed => Err(HttpError::conflict("a build has taken the request: stop the build instead")),
    }
}

/// `POST /api/v2/workers/{id}`: `pause`, `unpause`, `stop`, `kill`.
pub async fn worker(
    State(c): State<Arc<Control>>,
    Path(raw): Path<String>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, HttpError> {
    let methods = [Method::Pause, Method::Unpause, Method::Stop, Method::Kill];
    let (call, method) = call_for(&headers, &body, &methods, "a worker")?;
    let user = c.allowed_user(&headers, from_of(connect.as_ref()), &call, Action::Pause, None).await?;
    let worker_id = id(&raw, "worker")?;
    let record = c.store.get_worker(worker_id).await?.ok_or_else(|| HttpError::not_found("no such worker"))?;
    let here = c.registry.get(&record.name).filter(|h| h.worker_id == worker_id);
    let reason = call.text_param("reason");
    let name = record.name.clone();
    // What outlives the connection is stored; the connection itself obeys
    // wherever it is, here as on another master.
    let request = match method {
        Method::Pause | Method::Unpause => {
            let paused = method == Method::Pause;
            c.store.set_worker_paused(worker_id, paused, reason.as_deref()).await?;
            Request::PauseWorker { worker: name, paused }
        }
        Method::Stop => {
            c.store.set_worker_graceful(worker_id, true).await?;
            Request::StopWorker { worker: name }
        }
        _ => Request::KillWorker { worker: name },
    };
    if here.is_some() {
        crate::relay::act(&c.runner, &c.registry, &request);
    }
    let active: std::collections::BTreeSet<i64> =
        c.store.list_masters().await?.into_iter().filter(|m| m.active).map(|m| m.masterid).collect();
    let elsewhere: Vec<i64> = record
        .connected_to
        .iter()
        .map(|m| m.masterid)
        .filter(|m| *m != c.catalog.master_id && active.contains(m))
        .collect();
    if here.is_none() && elsewhere.is_empty() && method == Method::Kill {
        return Err(HttpError::conflict("the worker is not connected"));
    }
    let asked = elsewhere.iter().map(|m| c.relay.ask(*m, request.clone()));
    for (master_id, answer) in elsewhere.iter().zip(futures_util::future::join_all(asked).await) {
        let answer = answer.map_err(unanswered)?;
        if !answer.ok {
            return Err(HttpError::conflict(format!("master {master_id}: {}", answer.message)));
        }
    }
    tracing::info!(user = %user.name, worker = %record.name, method = method.name(), ?reason, "worker control");
    let said = match method {
        Method::Pause => Said::WorkerPaused,
        Method::Unpause => Said::WorkerUnpaused,
        Method::Stop => Said::WorkerStopping,
        _ => Said::WorkerKilled,
    };
    Ok(call.reply(Value::Null, said))
}

/// `POST /api/v2/schedulers/{id}`: `enable` with `{"enabled": bool}`.
pub async fn scheduler(
    State(c): State<Arc<Control>>,
    Path(raw): Path<String>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, HttpError> {
    let (call, _) = call_for(&headers, &body, &[Method::Enable], "a scheduler")?;
    let enabled = match call.params.get("enabled") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s == "true" || s == "false" => s == "true",
        _ => return Err(HttpError::bad_request("`enabled` must be true or false")),
    };
    let user = c.allowed_user(&headers, from_of(connect.as_ref()), &call, Action::Scheduler, None).await?;
    let scheduler_id = id(&raw, "scheduler")?;
    if !c.store.set_scheduler_enabled(scheduler_id, enabled).await? {
        return Err(HttpError::not_found("no such scheduler"));
    }
    c.schedulers.set_enabled(scheduler_id, enabled);
    c.schedulers.nudge();
    tracing::info!(user = %user.name, scheduler = scheduler_id, enabled, "scheduler switched");
    Ok(call.reply(Value::Null, if enabled { Said::SchedulerEnabled } else { Said::SchedulerDisabled }))
}

/// `POST /api/v2/masters/{id}`: `reconfig` (`this` names the master
/// answering). The answer says what changed; a configuration with errors
/// is refused with all of them (409), and the master keeps the one it has.
pub async fn master(
    State(c): State<Arc<Control>>,
    Path(raw): Path<String>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, HttpError> {
    let (call, _) = call_for(&headers, &body, &[Method::Reconfig], "a master")?;
    let user = c.allowed_user(&headers, from_of(connect.as_ref()), &call, Action::Reconfig, None).await?;
    let master_id = if raw == "this" { c.catalog.master_id } else { id(&raw, "master")? };
    if master_id != c.catalog.master_id {
        let known = c.store.list_masters().await?.iter().any(|m| m.masterid == master_id);
        return Err(if known {
            HttpError::conflict(format!("master {master_id} is another master: ask it (its own URL)"))
        } else {
            HttpError::not_found("no such master")
        });
    }
    tracing::info!(user = %user.name, "reload asked");
    match c.operator.reload().await {
        Ok(reloaded) => Ok(call.reply(json!(reloaded), Said::Reloaded)),
        Err(errors) => Err(HttpError::conflict(format!("the configuration was not applied:\n{}", errors.join("\n")))),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn forms_and_json_rpc_read_the_same() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"));
        let call = parse_call(
            &h,
            b"method=force&csrf=tok&next=%2Fbuilders%2F3&builderNames=a&builderNames=b%2Cc&reason=why&enabled=false",
        )
        .expect("form");
        assert_eq!(call.method, "force");
        assert_eq!(call.params["builderNames"], json!(["a", "b", "c"]));
        assert_eq!(call.params["enabled"], json!(false));
        assert_eq!(call.form, Some(FormMeta { csrf: "tok".into(), next: "/builders/3".into() }));
        let h = HeaderMap::new();
        let call = parse_call(&h, br#"{"jsonrpc":"2.0","id":4,"method":"stop","params":{"reason":"r"}}"#).expect("rpc");
        assert_eq!((call.method.as_str(), call.id.clone(), call.form.clone()), ("stop", json!(4), None));
        assert!(parse_call(&h, b"nonsense").is_err());
        assert!(parse_call(&h, br#"{"method":"stop","params":[1]}"#).is_err());
    }
}

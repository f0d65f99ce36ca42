//! Buildbot's command-line tools on the PB port, beside the workers:
//! `buildbot sendchange` logs in as a `[sendchange]` user and calls
//! `addChange`; `buildbot try` logs in as a try scheduler's user and calls
//! `try` (or `getAvailableBuilderNames`), and with `--wait` follows the
//! objects it gets back: the buildset, its requests, their builds.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cascade_model::{Event, text};
use cascade_protocol::pb::{Failure, Value};
use cascade_store::ListQuery;
use tokio::sync::broadcast;

use super::Session;
use super::broker::Object;
use crate::scheduler::trying::TryJob;
use crate::sendchange::SendChange;

/// What a tool's session may call.
#[derive(Debug, Clone)]
pub enum ToolObject {
    /// A `[sendchange]` user's perspective: `addChange`.
    Change,
    /// A try user's perspective: `try`, `getAvailableBuilderNames`.
    Try { scheduler: String, user: String },
    /// A try job's buildset: `getBuildRequests`.
    Buildset { requests: Vec<(String, i64)> },
    /// One of its requests: `subscribe` (to its builds), `unsubscribe`.
    Request { request_id: i64, builder: String },
    /// One of a request's builds: `subscribe` (to its steps),
    /// `waitUntilFinished`, `getResults`, `getText`.
    Build { build_id: i64, builder: String },
}

/// How often a waiting task looks at the store even without an event
/// (events of other masters arrive through the store's log, with delay).
const RECHECK: Duration = Duration::from_secs(5);
/// Most files a sendchange may list; a push of more is no one's change.
const FILES_MAX: usize = 10_000;
/// Most objects one tool's connection may hold, and calls it may have waiting.
const OBJECTS_MAX: usize = 1_000;
const WAITS_MAX: usize = 200;

fn bad(why: impl std::fmt::Display) -> Failure {
    Failure::pb_error("builtins.ValueError", &why.to_string())
}

/// A call on one of the tools' objects. `None`: answered later.
pub(super) async fn call(
    session: &Arc<Session>,
    request: i64,
    luid: i64,
    object: ToolObject,
    method: &str,
    args: Vec<Value>,
) -> Option<Result<Value, Failure>> {
    // A tool's session is bounded: so many objects, so many waiting calls.
    if session.broker.object_count() >= OBJECTS_MAX || session.waits.load(Ordering::SeqCst) >= WAITS_MAX {
        return Some(Err(bad("too many open builds and requests on this connection")));
    }
    let reply = match (object, method) {
        (ToolObject::Change, "addChange") => add_change(session, &args).await,
        (ToolObject::Try { scheduler, .. }, "getAvailableBuilderNames") => {
            let names = session.hub.schedulers.try_builders(&scheduler).unwrap_or_default();
            Ok(Value::List(names.into_iter().map(Value::Str).collect()))
        }
        (ToolObject::Try { scheduler, user }, "try") => try_job(session, &scheduler, &user, &args).await,
        (ToolObject::Buildset { requests }, "getBuildRequests") => Ok(Value::List(
            requests
                .into_iter()
                .map(|(builder, request_id)| {
                    let r = session
                        .broker
                        .register(Object::Tool(ToolObject::Request { request_id, builder: builder.clone() }));
                    Value::Tuple(vec![Value::Str(builder), Value::Remote(r)])
                })
                .collect(),
        )),
        (ToolObject::Request { request_id, builder }, "subscribe") => remote_arg(&args).map(|subscriber| {
            tokio::spawn(follow_request(session.clone(), request_id, builder, subscriber));
            Value::None
        }),
        (ToolObject::Build { build_id, builder }, "subscribe") => remote_arg(&args).map(|subscriber| {
            tokio::spawn(follow_steps(session.clone(), luid, build_id, builder, subscriber));
            Value::None
        }),
        // Following ends with the build or the connection.
        (ToolObject::Request { .. } | ToolObject::Build { .. }, "unsubscribe") => Ok(Value::None),
        (ToolObject::Build { build_id, .. }, "waitUntilFinished") => {
            tokio::spawn(answer_when_finished(session.clone(), request, luid, build_id));
            return None;
        }
        (ToolObject::Build { build_id, .. }, "getResults") => {
            build(session, build_id).await.map(|b| b.results.map_or(Value::None, Value::Int))
        }
        (ToolObject::Build { build_id, .. }, "getText") => {
            build(session, build_id).await.map(|b| Value::List(vec![Value::Str(b.state_string)]))
        }
        (_, method) => Err(super::no_such_method(method)),
    };
    Some(reply)
}

fn remote_arg(args: &[Value]) -> Result<i64, Failure> {
    match args.first() {
        Some(Value::Remote(r)) => Ok(*r),
        _ => Err(Failure::pb_error("builtins.TypeError", "subscribe() needs the subscriber")),
    }
}

async fn build(session: &Session, build_id: i64) -> Result<cascade_store::records::BuildRecord, Failure> {
    match session.hub.store.get_build(build_id).await {
        Ok(Some(b)) => Ok(b),
        Ok(None) => Err(bad("no such build")),
        Err(e) => Err(Failure::pb_error("builtins.RuntimeError", &format!("the store: {e}"))),
    }
}

/// `addChange(changedict)`: stored with the schedulers' interest, as a webhook's.
async fn add_change(session: &Session, args: &[Value]) -> Result<Value, Failure> {
    let change = args.first().ok_or_else(|| bad("addChange() needs the change")).and_then(parse_change)?;
    let hub = &session.hub;
    let (who, branch) = (change.who.clone(), change.branch.clone());
    match crate::sendchange::store(&hub.store, &hub.catalog.config, &hub.schedulers, change, hub.clock.now()).await {
        Ok(id) => {
            tracing::info!(change = id, who = ?who, branch = ?branch, peer = %session.peer, "sendchange stored");
            Ok(Value::None)
        }
        Err(e) => {
            tracing::error!(error = %e, "a sendchange could not be stored");
            Err(Failure::pb_error("builtins.RuntimeError", "the change could not be stored; try again"))
        }
    }
}

/// Text of a field that may be absent or None.
fn opt_text(v: Option<&Value>, field: &str, max: usize) -> Result<Option<String>, Failure> {
    match v {
        None | Some(Value::None) => Ok(None),
        Some(v) => {
            let s = v.as_text().ok_or_else(|| bad(format!("{field}: expected text")))?.into_owned();
            text::name_like(field, &s, max).map_err(bad)?;
            Ok(Some(s).filter(|s| !s.is_empty()))
        }
    }
}

/// A revision, if given, must be a commit id: the checkout runs it.
fn opt_revision(v: Option<&Value>) -> Result<Option<String>, Failure> {
    let revision = opt_text(v, "revision", 64)?;
    if let Some(r) = &revision {
        text::revision("revision", r).map_err(bad)?;
    }
    Ok(revision)
}

/// Buildbot's change dict (`who`, `files`, `comments`, `branch`, …) as a change.
pub fn parse_change(dict: &Value) -> Result<SendChange, Failure> {
    if !matches!(dict, Value::Dict(_)) {
        return Err(bad("addChange() takes a dict"));
    }
    let files = match dict.get("files") {
        None | Some(Value::None) => Vec::new(),
        Some(v) => {
            v.as_seq().ok_or_else(|| bad("files: expected a list"))?.iter().map(file_name).collect::<Result<_, _>>()?
        }
    };
    if files.len() > FILES_MAX {
        return Err(bad(format!("files: more than {FILES_MAX}")));
    }
    let comments = opt_text_free(dict.get("comments"), 64 * 1024);
    let when = dict.get("when").and_then(Value::as_float).filter(|w| w.is_finite() && *w >= 0.0);
    Ok(SendChange {
        who: opt_text(dict.get("who"), "who", 256)?.unwrap_or_default(),
        branch: opt_text(dict.get("branch"), "branch", 256)?,
        revision: opt_revision(dict.get("revision"))?,
        comments,
        files,
        repository: opt_text(dict.get("repository"), "repository", 1024)?,
        project: opt_text(dict.get("project"), "project", 256)?,
        category: opt_text(dict.get("category"), "category", 256)?,
        revlink: opt_text(dict.get("revlink"), "revlink", 1024)?,
        when: when.map(|w| w as i64),
        properties: properties(dict.get("properties"))?,
    })
}

fn file_name(v: &Value) -> Result<String, Failure> {
    let f = v.as_text().ok_or_else(|| bad("files: expected text"))?.into_owned();
    text::no_nul("files", &f, 4096).map_err(bad)?;
    Ok(f)
}

/// Free text (comments), made fit rather than refused.
fn opt_text_free(v: Option<&Value>, max: usize) -> String {
    v.and_then(Value::as_text).map(|s| text::clean(&s, max)).unwrap_or_default()
}

/// String properties; other values as their JSON.
fn properties(v: Option<&Value>) -> Result<BTreeMap<String, String>, Failure> {
    let entries = match v {
        None | Some(Value::None) => return Ok(BTreeMap::new()),
        Some(Value::Dict(entries)) => entries,
        Some(_) => return Err(bad("properties: expected a dict")),
    };
    let mut out = BTreeMap::new();
    for (k, v) in entries.iter().take(100) {
        let name = k.as_text().ok_or_else(|| bad("properties: names must be text"))?.into_owned();
        text::name_like("properties", &name, 128).map_err(bad)?;
        let value = v.as_text().map_or_else(|| v.to_json().to_string(), std::borrow::Cow::into_owned);
        out.insert(name, text::clean(&value, 4096));
    }
    Ok(out)
}

/// `try(branch, revision, (level, diff), repository, project, builderNames, who, comment, properties)`.
pub fn parse_try(args: &[Value], user: &str) -> Result<TryJob, Failure> {
    let patch = args.get(2).and_then(Value::as_seq).ok_or_else(|| bad("patch: expected (level, diff)"))?;
    let level = patch.first().and_then(Value::as_int).ok_or_else(|| bad("patch: the level must be a number"))?;
    let body = match patch.get(1) {
        Some(Value::Bytes(b)) => String::from_utf8(b.clone()).map_err(|_| bad("patch: the diff is not UTF-8 text"))?,
        Some(Value::Str(s)) => s.clone(),
        // An empty diff: the client warns, and the base revision is built.
        Some(Value::None) => String::new(),
        _ => return Err(bad("patch: expected (level, diff)")),
    };
    let builders = match args.get(5) {
        None | Some(Value::None) => Vec::new(),
        Some(v) => v
            .as_seq()
            .ok_or_else(|| bad("builderNames: expected a list"))?
            .iter()
            .map(|b| b.as_text().map(std::borrow::Cow::into_owned).ok_or_else(|| bad("builderNames: expected text")))
            .collect::<Result<_, _>>()?,
    };
    Ok(TryJob {
        branch: opt_text(args.first(), "branch", 256)?,
        revision: opt_revision(args.get(1))?,
        patch_level: level.clamp(0, 100),
        patch: body,
        builders,
        who: opt_text(args.get(6), "who", 256)?.unwrap_or_else(|| user.to_string()),
        comment: opt_text_free(args.get(7), 4096),
        properties: properties(args.get(8))?,
    })
}

/// `try`: the buildset, or None when a builder named is not the
/// scheduler's (as Buildbot answers; the client says so).
async fn try_job(session: &Session, scheduler: &str, user: &str, args: &[Value]) -> Result<Value, Failure> {
    let job = parse_try(args, user)?;
    let hub = &session.hub;
    let known = hub.schedulers.try_builders(scheduler).unwrap_or_default();
    if job.builders.iter().any(|b| !known.contains(b)) {
        tracing::info!(user = ?user, builders = ?job.builders, "a try job named builders its scheduler does not have");
        return Ok(Value::None);
    }
    match hub.schedulers.try_job(&hub.store, scheduler, &job, hub.clock.now()).await {
        Ok((bsid, requests)) => {
            tracing::info!(user = ?user, buildset = bsid, builders = requests.len(), "try job stored");
            hub.nudge.notify_one();
            Ok(Value::Remote(session.broker.register(Object::Tool(ToolObject::Buildset { requests }))))
        }
        Err(crate::scheduler::SchedulerError::Invalid(why)) => Err(bad(why)),
        Err(e) => {
            tracing::error!(error = %e, "a try job could not be stored");
            Err(Failure::pb_error("builtins.RuntimeError", "the try job could not be stored; try again"))
        }
    }
}

/// What woke a waiting task.
enum Wake {
    Event(Event),
    /// A quiet spell or a lag: read the store again.
    Recheck,
    /// The connection or the bus is gone.
    Gone,
}

/// Waits for the next event, or at most [`RECHECK`].
async fn next_event(session: &Session, rx: &mut broadcast::Receiver<Arc<cascade_model::Envelope>>) -> Wake {
    if session.broker.is_closed() {
        return Wake::Gone;
    }
    match tokio::time::timeout(RECHECK, rx.recv()).await {
        Ok(Ok(envelope)) => Wake::Event(envelope.event.clone()),
        Ok(Err(broadcast::error::RecvError::Lagged(_))) | Err(_) => Wake::Recheck,
        Ok(Err(broadcast::error::RecvError::Closed)) => Wake::Gone,
    }
}

/// Waits until an event `matters`, or [`RECHECK`] passes; false when the
/// connection is gone. Other events cost nothing: the store is read again
/// only when there may be news.
async fn until(
    session: &Session,
    rx: &mut broadcast::Receiver<Arc<cascade_model::Envelope>>,
    matters: impl Fn(&Event) -> bool,
) -> bool {
    loop {
        match next_event(session, rx).await {
            Wake::Event(e) if !matters(&e) => {}
            Wake::Event(_) | Wake::Recheck => return true,
            Wake::Gone => return false,
        }
    }
}

/// `subscribe` on a request: `newbuild(build, builder)` for each of its
/// builds (a retried build has a successor), until the request is done.
async fn follow_request(session: Arc<Session>, request_id: i64, builder: String, subscriber: i64) {
    let _waiting = session.waiting();
    let mut rx = session.hub.bus.subscribe();
    let mut told: BTreeSet<i64> = BTreeSet::new();
    loop {
        let store = &session.hub.store;
        let builds = store.list_builds(&ListQuery::default().eq("buildrequestid", request_id)).await;
        for b in builds.map(|p| p.items).unwrap_or_default() {
            if told.insert(b.buildid) {
                let object = ToolObject::Build { build_id: b.buildid, builder: builder.clone() };
                let build = session.broker.register(Object::Tool(object));
                let args = vec![Value::Remote(build), Value::str(builder.clone())];
                let _ = session.broker.call_start(subscriber, "newbuild", args, vec![]).await;
            }
        }
        let builder_id = match store.get_buildrequest(request_id).await {
            Ok(Some(r)) if !r.complete => r.builderid,
            Ok(_) => return,
            // The store is away for a moment: look again soon.
            Err(e) => {
                tracing::warn!(error = %e, "reading a try request");
                0
            }
        };
        let news = |e: &Event| matches!(e, Event::BuildStarted { builder_id: b, .. } | Event::BuildFinished { builder_id: b, .. } if *b == builder_id);
        if !until(&session, &mut rx, news).await {
            return;
        }
    }
}

/// `subscribe` on a build: `stepStarted` and `stepFinished` as its steps go.
async fn follow_steps(session: Arc<Session>, luid: i64, build_id: i64, builder: String, subscriber: i64) {
    let _waiting = session.waiting();
    let mut rx = session.hub.bus.subscribe();
    loop {
        let event = match next_event(&session, &mut rx).await {
            Wake::Event(e) => e,
            Wake::Recheck => continue,
            Wake::Gone => return,
        };
        // As Buildbot's RemoteBuild: (builder, build, step name, step[, results]).
        let head = [Value::str(builder.clone()), Value::Remote(luid)];
        let (method, call) = match event {
            Event::StepStarted { build_id: b, step, .. } if b == build_id => {
                ("stepStarted", [&head[..], &[Value::Str(step), Value::None]].concat())
            }
            Event::StepFinished { build_id: b, step, results, .. } if b == build_id => {
                ("stepFinished", [&head[..], &[Value::Str(step), Value::None, Value::Int(results.code())]].concat())
            }
            Event::BuildFinished { build_id: b, .. } if b == build_id => return,
            _ => continue,
        };
        let _ = session.broker.call_start(subscriber, method, call, vec![]).await;
    }
}

/// `waitUntilFinished`: answered with the build itself when it has ended.
async fn answer_when_finished(session: Arc<Session>, request: i64, luid: i64, build_id: i64) {
    let _waiting = session.waiting();
    let mut rx = session.hub.bus.subscribe();
    loop {
        match session.hub.store.get_build(build_id).await {
            Ok(Some(b)) if b.complete => break,
            Ok(Some(_)) => {}
            Ok(None) => {
                session.broker.answer(request, Err(bad("no such build"))).await;
                return;
            }
            // The store is away for a moment: look again at the next event.
            Err(e) => tracing::warn!(error = %e, "reading a try build"),
        }
        let news = |e: &Event| matches!(e, Event::BuildFinished { build_id: b, .. } if *b == build_id);
        if !until(&session, &mut rx, news).await {
            return;
        }
    }
    session.broker.answer(request, Ok(Value::Remote(luid))).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict(entries: &[(&str, Value)]) -> Value {
        Value::Dict(entries.iter().map(|(k, v)| (Value::str(*k), v.clone())).collect())
    }

    #[test]
    fn a_change_dict_as_buildbot_sendchange_sends_it() {
        let d = dict(&[
            ("who", Value::str("alice")),
            ("files", Value::List(vec![Value::str("Lib/os.py")])),
            ("comments", Value::str("fix\u{0}it")),
            ("branch", Value::str("main")),
            ("revision", Value::str("0123456789abcdef0123456789abcdef01234567")),
            ("when", Value::Float(1_700_000_000.5)),
            ("properties", dict(&[("n", Value::Int(3)), ("s", Value::str("x"))])),
            ("revlink", Value::None),
        ]);
        let c = parse_change(&d).expect("a change");
        assert_eq!((c.who.as_str(), c.branch.as_deref()), ("alice", Some("main")));
        assert_eq!(c.files, vec!["Lib/os.py"]);
        assert_eq!(c.comments, "fixit", "control characters are dropped from free text");
        assert_eq!(c.when, Some(1_700_000_000));
        assert_eq!(c.properties["n"], "3");
        assert_eq!(c.revlink, None);
    }

    #[test]
    fn bad_change_fields_are_named() {
        let revision = parse_change(&dict(&[("revision", Value::str("not a sha"))])).expect_err("refused");
        assert!(revision.value.contains("revision"), "{}", revision.value);
        let files = parse_change(&dict(&[("files", Value::Int(3))])).expect_err("refused");
        assert!(files.value.contains("files"), "{}", files.value);
        assert!(parse_change(&Value::List(vec![])).is_err());
    }

    #[test]
    fn a_try_job_as_buildbot_try_sends_it() {
        let patch = Value::Tuple(vec![Value::Int(1), Value::Bytes(b"--- a/x\n+++ b/x\n".to_vec())]);
        let args = vec![
            Value::str("main"),
            Value::str("abcdef0"),
            patch,
            Value::str(""),
            Value::str(""),
            Value::List(vec![Value::str("b1")]),
            Value::str(""),
            Value::str("a comment"),
            Value::Dict(vec![]),
        ];
        let job = parse_try(&args, "alice").expect("a job");
        assert_eq!(job.branch.as_deref(), Some("main"));
        assert_eq!((job.patch_level, job.patch.as_str()), (1, "--- a/x\n+++ b/x\n"));
        assert_eq!(job.builders, vec!["b1"]);
        assert_eq!(job.who, "alice", "no --who: the login");
        assert_eq!(job.comment, "a comment");
        let mut binary = args.clone();
        binary[2] = Value::Tuple(vec![Value::Int(1), Value::Bytes(vec![0xff, 0xfe])]);
        assert!(parse_try(&binary, "alice").expect_err("refused").value.contains("UTF-8"));
    }
}

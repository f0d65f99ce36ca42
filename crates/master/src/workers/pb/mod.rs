//! Twisted Perspective Broker over TCP: the listener stock `buildbot-worker`
//! connects to by default (`shared/protocols/buildbot-pb.md`).
//!
//! Per connection: the dialect offer and version exchange, then PB messages.
//! The worker logs in through the portal (an MD5 challenge), the master
//! attaches it (`getWorkerInfo`, `setBuilderList`) and from then on it is a
//! [`facade::PbWorker`] behind the protocol-neutral
//! [`WorkerConnection`](super::WorkerConnection).
//! Any undecodable input drops that one connection, as Twisted does; the
//! worker reconnects.

pub mod broker;
pub mod facade;
pub mod tools;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cascade_config::PbRole;
use cascade_model::naming::builder_folder;
use cascade_protocol::WorkerInfo;
use cascade_protocol::pb::banana::{self, Decoder, Expr};
use cascade_protocol::pb::commands::parse_update;
use cascade_protocol::pb::message::VERSION;
use cascade_protocol::pb::{Failure, Message, ObjectId, Value};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use self::broker::{Broker, Object};
use self::facade::PbWorker;
use super::{CommandEvent, Hub, UploadOp, WorkerHandle};
use crate::accept::{Caps, Tally};

/// A connection that has not logged in by then is dropped.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest `read` answered in one piece: under banana's 640 KiB string limit.
const MAX_READ: usize = 512 * 1024;

/// Accepts PB connections until `stopped` flips, within `caps` (PB has no
/// way to say why, so a connection over them is closed at once).
pub async fn serve(
    listener: TcpListener,
    hubs: tokio::sync::watch::Receiver<Arc<Hub>>,
    caps: Caps,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let tally = Arc::new(Tally::default());
    let mut last_warning: Option<Instant> = None;
    let mut warn = |what: &str, detail: String| {
        if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            tracing::warn!(detail = %detail, "PB {what}");
            last_warning = Some(Instant::now());
        }
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match tally.admit(peer.ip(), &caps) {
                    Some(slot) => {
                        // Each login is decided by the configuration current when it connects.
                        let hub = hubs.borrow().clone();
                        tokio::spawn(async move { connection(hub, stream, peer).await; drop(slot) });
                    }
                    None => warn("connection refused: too many open", peer.ip().to_string()),
                },
                // Out of file descriptors and the like: back off, keep serving.
                Err(e) => {
                    warn("accept failed; retrying", e.to_string());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stopped.changed() => return,
        }
    }
}

/// Where a connection's login stands.
enum Login {
    Waiting,
    /// `respond` arrived; the attach is under way.
    Attaching,
    Done(Arc<WorkerHandle>),
    /// One of Buildbot's command-line tools (`sendchange`, `try`).
    Tool,
}

/// One connection's dispatcher state.
struct Session {
    hub: Arc<Hub>,
    broker: Arc<Broker>,
    peer: SocketAddr,
    login: Mutex<Login>,
    worker: Mutex<Option<String>>,
    /// A tool's calls still waiting for builds (`buildbot try --wait`):
    /// while any is, the client's silence is no sign of death.
    waits: Arc<AtomicUsize>,
}

/// Counts one waiting call while it lives.
pub(super) struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Session {
    pub(super) fn waiting(&self) -> Waiting {
        self.waits.fetch_add(1, Ordering::SeqCst);
        Waiting(self.waits.clone())
    }

    fn logged_in(&self) -> bool {
        matches!(*self.login.lock(), Login::Done(_) | Login::Tool)
    }

    fn worker_name(&self) -> String {
        self.worker.lock().clone().unwrap_or_else(|| "?".into())
    }

    fn handle(&self) -> Option<Arc<WorkerHandle>> {
        match &*self.login.lock() {
            Login::Done(h) => Some(h.clone()),
            _ => None,
        }
    }
}

async fn connection(hub: Arc<Hub>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let (out, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    let broker = Arc::new(Broker::new(out));
    let writer = tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let session = Arc::new(Session {
        hub,
        broker,
        peer,
        login: Mutex::new(Login::Waiting),
        worker: Mutex::new(None),
        waits: Arc::new(AtomicUsize::new(0)),
    });
    let outcome = run(&session, &mut rd).await;
    match outcome {
        Ok(()) => tracing::debug!(%peer, worker = %session.worker_name(), "PB connection closed"),
        Err(e) => tracing::warn!(%peer, worker = %session.worker_name(), error = %e, "PB connection dropped"),
    }
    session.broker.fail_all();
    let handle = match std::mem::replace(&mut *session.login.lock(), Login::Waiting) {
        Login::Done(h) => Some(h),
        _ => None,
    };
    writer.abort();
    if let Some(h) = handle {
        session.hub.detach(&h).await;
    }
}

/// Reads and dispatches until the connection ends; an error says why it was dropped.
async fn run(session: &Arc<Session>, rd: &mut tokio::net::tcp::OwnedReadHalf) -> Result<(), String> {
    let broker = &session.broker;
    // The server speaks first: the dialects it offers, without vocabulary.
    let offer = Expr::List(vec![Expr::bytes("pb"), Expr::bytes("none")]);
    let offer = banana::encode(&offer, false).map_err(|e| e.to_string())?;
    broker.send_raw(offer).await.map_err(|e| e.to_string())?;

    let mut decoder = Decoder::new();
    let mut dialect_chosen = false;
    let mut buf = vec![0u8; 64 * 1024];
    let connected = Instant::now();
    let mut last_heard = Instant::now();
    let liveness = session.hub.liveness;
    let mut ticker = tokio::time::interval(liveness.ping_every.min(LOGIN_TIMEOUT));
    ticker.tick().await;
    while !broker.is_closed() {
        tokio::select! {
            read = rd.read(&mut buf) => {
                let n = read.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Ok(());
                }
                last_heard = Instant::now();
                decoder.feed(&buf[..n]);
                while let Some(expr) = decoder.next_expr().map_err(|e| e.to_string())? {
                    if !dialect_chosen {
                        let vocab = match expr.as_bytes() {
                            Some(b"pb") => true,
                            Some(b"none") => false,
                            _ => return Err(format!("not a dialect this master offered: {expr:?}")),
                        };
                        decoder.set_vocabulary(vocab);
                        broker.set_vocabulary(vocab);
                        dialect_chosen = true;
                        broker.send(&Message::Version(VERSION)).await.map_err(|e| e.to_string())?;
                        continue;
                    }
                    let msg = Message::parse(&expr).map_err(|e| e.to_string())?;
                    dispatch(session, msg).await?;
                }
            }
            _ = ticker.tick() => {
                let handle = session.handle();
                if !session.logged_in() && connected.elapsed() > LOGIN_TIMEOUT {
                    return Err("no login in time".into());
                }
                let waiting = session.waits.load(Ordering::SeqCst) > 0;
                if last_heard.elapsed() > liveness.dead_after && !waiting {
                    return Err("silent too long".into());
                }
                if let Some(h) = handle
                    && last_heard.elapsed() >= liveness.ping_every
                {
                    // The answer counts as hearing from the worker.
                    tokio::spawn(async move {
                        let _ = h.conn.ping().await;
                    });
                }
            }
            () = broker.close_now.notified() => return Ok(()),
        }
    }
    Ok(())
}

async fn dispatch(session: &Arc<Session>, msg: Message) -> Result<(), String> {
    let broker = &session.broker;
    match msg {
        Message::Version(v) if v == VERSION => Ok(()),
        Message::Version(v) => Err(format!("PB version {v}; this master speaks {VERSION}")),
        Message::Answer { request, value } => {
            match broker.take_waiter(request) {
                Some(w) => {
                    let _ = w.send(Ok(value));
                }
                None => tracing::debug!(worker = %session.worker_name(), request, "answer to no open request ignored"),
            }
            Ok(())
        }
        Message::Error { request, failure } => {
            match broker.take_waiter(request) {
                Some(w) => {
                    let _ = w.send(Err(failure));
                }
                None => {
                    tracing::debug!(worker = %session.worker_name(), request, %failure, "error for no open request");
                }
            }
            Ok(())
        }
        // References are never reused, and a command's objects go when it
        // completes: decrefs (which come late, in bursts) need no bookkeeping.
        Message::Decref(_) => Ok(()),
        Message::DidNotUnderstand(name) => {
            tracing::warn!(worker = %session.worker_name(), %name, "the worker did not understand a message");
            Ok(())
        }
        Message::Call { request, object, method, answer_required, args, .. } => {
            let reply = call(session, request, &object, &method, args).await;
            if let Some(result) = reply
                && answer_required
            {
                if let Err(f) = &result {
                    tracing::debug!(worker = %session.worker_name(), %method, failure = %f, "call refused");
                }
                broker.answer(request, result).await;
            }
            Ok(())
        }
    }
}

pub(super) fn no_such_method(method: &str) -> Failure {
    Failure::pb_error("twisted.spread.flavors.NoSuchMethod", &format!("No such method: remote_{method}"))
}

fn invalid_object() -> Failure {
    Failure::pb_error("twisted.spread.pb.Error", "Invalid Object ID")
}

/// Handles a call from the worker. `None`: the answer is sent later, by a
/// task that waits for the build (so this loop keeps reading meanwhile).
async fn call(
    session: &Arc<Session>,
    request: i64,
    object: &ObjectId,
    method: &str,
    args: Vec<Value>,
) -> Option<Result<Value, Failure>> {
    let luid = match object {
        ObjectId::Name(name) if name == b"root" => {
            return Some(match method {
                "login" => login(session, &args),
                _ => Err(no_such_method(method)),
            });
        }
        ObjectId::Name(_) => return Some(Err(invalid_object())),
        ObjectId::Luid(l) => *l,
    };
    let Some(target) = session.broker.object(luid) else { return Some(Err(invalid_object())) };
    match (target, method) {
        (Object::Challenger { name, challenge }, "respond") => {
            respond(session, request, luid, name, challenge, args);
            None
        }
        (Object::Avatar, "keepalive") => Some(Ok(Value::None)),
        (Object::Avatar, "shutdown") => {
            if let Some(h) = session.handle() {
                session.hub.registry.drain_then_shut_down(h);
            }
            Some(Ok(Value::None))
        }
        (Object::Command(id), "update" | "complete") => Some(command_call(session, &id, method, &args).await),
        (Object::Writer(id), "write" | "close" | "utime" | "unpack") => match upload_piece(method, &args) {
            Ok(op) => forward(session, request, &id, |reply| CommandEvent::Upload(op, reply), |()| Value::None).await,
            Err(failure) => Some(Err(failure)),
        },
        (Object::Reader(id), "read") => {
            let length = args.first().and_then(Value::as_int).unwrap_or(0).clamp(0, MAX_READ as i64) as usize;
            forward(session, request, &id, |reply| CommandEvent::Read(length, reply), Value::Bytes).await
        }
        (Object::Reader(id), "close") => {
            forward(session, request, &id, CommandEvent::ReadClose, |()| Value::None).await
        }
        (Object::Tool(object), method) => tools::call(session, request, luid, object, method, args).await,
        (_, method) => Some(Err(no_such_method(method))),
    }
}

/// `update` and `complete` on a running command's object.
async fn command_call(session: &Session, id: &str, method: &str, args: &[Value]) -> Result<Value, Failure> {
    let broker = &session.broker;
    if method == "update" {
        let entries = match args.first().map(parse_update) {
            Some(Ok(e)) => e,
            Some(Err(e)) => return Err(Failure::pb_error("builtins.ValueError", &e)),
            None => return Err(Failure::pb_error("builtins.TypeError", "update() needs its updates")),
        };
        if let Some(tx) = broker.command_events(id) {
            let _ = tx.send(CommandEvent::Output(entries)).await;
        }
        return Ok(Value::None);
    }
    let error = match args.first() {
        None | Some(Value::None) => None,
        Some(v) => Some(Failure::from_value(v).to_string()),
    };
    if let Some(tx) = broker.finish_command(id) {
        let _ = tx.send(CommandEvent::Complete { error }).await;
    }
    Ok(Value::None)
}

/// A call on an upload's writer object, as an upload piece.
fn upload_piece(method: &str, args: &[Value]) -> Result<UploadOp, Failure> {
    let type_error = |what: &str| Failure::pb_error("builtins.TypeError", what);
    match (method, args.first()) {
        ("write", Some(Value::Bytes(b))) => Ok(UploadOp::Write(b.clone())),
        // A worker that sends text sends its UTF-8.
        ("write", Some(Value::Str(s))) => Ok(UploadOp::Write(s.as_bytes().to_vec())),
        ("close", _) => Ok(UploadOp::Close),
        ("unpack", _) => Ok(UploadOp::Unpack),
        ("utime", Some(times)) => {
            match times.as_seq().map(|t| (t.first().and_then(Value::as_float), t.get(1).and_then(Value::as_float))) {
                Some((Some(a), Some(m))) => Ok(UploadOp::Utime(a, m)),
                _ => Err(type_error("utime((atime, mtime))")),
            }
        }
        _ => Err(type_error(&format!("{method}: bad arguments"))),
    }
}

/// Hands a transfer call to its build and answers when the build has.
async fn forward<T: Send + 'static>(
    session: &Arc<Session>,
    request: i64,
    command_id: &str,
    event: impl FnOnce(oneshot::Sender<Result<T, String>>) -> CommandEvent,
    to_value: fn(T) -> Value,
) -> Option<Result<Value, Failure>> {
    let failed = |why: &str| Some(Err(Failure::pb_error("builtins.RuntimeError", why)));
    let Some(tx) = session.broker.command_events(command_id) else { return failed("the command has ended") };
    let (reply, answer) = oneshot::channel();
    if tx.send(event(reply)).await.is_err() {
        return failed("the command is no longer listening");
    }
    let broker = session.broker.clone();
    tokio::spawn(async move {
        let result = match answer.await {
            Ok(Ok(v)) => Ok(to_value(v)),
            Ok(Err(e)) => Err(Failure::pb_error("builtins.RuntimeError", &e)),
            Err(_) => Err(Failure::pb_error("builtins.RuntimeError", "the transfer was abandoned")),
        };
        broker.answer(request, result).await;
    });
    None
}

/// Login, step one: a challenge for the name (unknown names get one too,
/// so the answer does not tell which names exist).
fn login(session: &Arc<Session>, args: &[Value]) -> Result<Value, Failure> {
    if !matches!(*session.login.lock(), Login::Waiting) {
        return Err(Failure::unauthorized_login("already logged in"));
    }
    let Some(name) = args.first().and_then(Value::as_text) else {
        return Err(Failure::unauthorized_login("login needs a worker name"));
    };
    let challenge = uuid::Uuid::new_v4().as_bytes().to_vec();
    let luid = session.broker.register(Object::Challenger { name: name.into_owned(), challenge: challenge.clone() });
    Ok(Value::Tuple(vec![Value::Bytes(challenge), Value::Remote(luid)]))
}

/// Login, step two: check the response, attach the worker, answer with the
/// avatar. Every refusal is an `UnauthorizedLogin`, the one failure after
/// which the worker retries instead of exiting.
fn respond(session: &Arc<Session>, request: i64, challenger: i64, name: String, challenge: Vec<u8>, args: Vec<Value>) {
    let session = session.clone();
    session.broker.forget(&[challenger]);
    tokio::spawn(async move {
        let response = match args.first() {
            Some(Value::Bytes(b)) => b.clone(),
            _ => Vec::new(),
        };
        let mind = match args.get(1) {
            Some(Value::Remote(m)) => Some(*m),
            _ => None,
        };
        let checked = session.hub.log_in_pb(&name, &challenge, &response, session.peer.ip());
        let role = tool_role(&session.hub.catalog.config, &name);
        let outcome = match (checked, role, mind) {
            (Err(why), _, _) => Err(why.to_string()),
            (Ok(()), Some(object), _) => log_in_tool(&session, &name, object),
            (Ok(()), None, None) => Err("respond needs the worker's bot".to_string()),
            (Ok(()), None, Some(mind)) => log_in(&session, &name, mind).await,
        };
        let msg = match outcome {
            Ok(avatar) => Message::Answer { request, value: Value::Remote(avatar) },
            Err(why) => {
                tracing::warn!(worker = %name, peer = %session.peer, reason = %why, "PB login refused");
                Message::Error { request, failure: Failure::unauthorized_login(&why) }
            }
        };
        let _ = session.broker.send(&msg).await;
    });
}

/// The perspective a login name of Buildbot's tools gets; `None` for a worker.
fn tool_role(config: &cascade_config::Config, name: &str) -> Option<tools::ToolObject> {
    match config.pb_role(name)? {
        PbRole::Worker => None,
        PbRole::Sendchange => Some(tools::ToolObject::Change),
        PbRole::Try(scheduler) => {
            Some(tools::ToolObject::Try { scheduler: scheduler.to_string(), user: name.to_string() })
        }
    }
}

/// A checked login of one of Buildbot's tools; returns its perspective's id.
fn log_in_tool(session: &Arc<Session>, name: &str, object: tools::ToolObject) -> Result<i64, String> {
    let mut login = session.login.lock();
    if !matches!(*login, Login::Waiting) {
        return Err("already logged in".into());
    }
    *login = Login::Tool;
    *session.worker.lock() = Some(name.to_string());
    tracing::info!(user = ?name, peer = %session.peer, "a Buildbot tool logged in over PB");
    Ok(session.broker.register(Object::Tool(object)))
}

/// A checked login: one per connection (the state moves on under one
/// lock), then the attach; returns the avatar's id.
async fn log_in(session: &Arc<Session>, name: &str, mind: i64) -> Result<i64, String> {
    {
        let mut login = session.login.lock();
        if !matches!(*login, Login::Waiting) {
            return Err("already logged in".into());
        }
        *login = Login::Attaching;
    }
    *session.worker.lock() = Some(name.to_string());
    match attach(session, name, mind).await {
        Ok(handle) => {
            tracing::info!(worker = %name, peer = %session.peer, version = ?handle.info.version, "worker attached over PB");
            *session.login.lock() = Login::Done(handle);
            Ok(session.broker.register(Object::Avatar))
        }
        Err(why) => {
            *session.login.lock() = Login::Waiting;
            Err(why)
        }
    }
}

/// The attach sequence: learn about the worker, set up its builders,
/// register it, record it.
async fn attach(session: &Arc<Session>, name: &str, mind: i64) -> Result<Arc<WorkerHandle>, String> {
    let hub = &session.hub;
    let broker = &session.broker;
    let worker_id = hub.catalog.worker_id(name).ok_or_else(|| format!("worker {name} is not configured"))?;
    let info = broker
        .call(mind, "getWorkerInfo", vec![], vec![], REQUEST_TIMEOUT)
        .await
        .map_err(|e| format!("getWorkerInfo: {e}"))?;
    if !matches!(info, Value::Dict(_)) {
        tracing::warn!(worker = %name, answer = ?info, "getWorkerInfo did not answer a dict");
    }
    let info = WorkerInfo::from_json(info.to_json());
    if info.basedir.is_none() {
        // Every path the runner sends starts there: without it, retry the login.
        return Err("getWorkerInfo: the worker did not say where its base folder is".into());
    }
    let builders: Vec<&str> = hub.catalog.builders_of_worker(name).map(|b| b.name.as_str()).collect();
    let wfbs = set_builder_list(broker, mind, &builders).await?;
    let conn = Arc::new(PbWorker {
        worker: name.to_string(),
        broker: broker.clone(),
        bot: mind,
        builders: parking_lot::Mutex::new(wfbs),
    });
    let handle = Arc::new(WorkerHandle::new(name, worker_id, info, hub.max_builds(name), conn.clone()));
    hub.attach(&handle).await?;
    let _ = conn.print("attached").await;
    Ok(handle)
}

/// One WorkerForBuilder per builder this worker serves, in the folder the
/// runner builds in; returns each builder's WorkerForBuilder.
pub(super) async fn set_builder_list(
    broker: &Broker,
    mind: i64,
    builders: &[&str],
) -> Result<HashMap<String, i64>, String> {
    let list = Value::List(
        builders.iter().map(|b| Value::Tuple(vec![Value::str(*b), Value::str(builder_folder(b))])).collect(),
    );
    let answer = broker
        .call(mind, "setBuilderList", vec![list], vec![], REQUEST_TIMEOUT)
        .await
        .map_err(|e| format!("setBuilderList: {e}"))?;
    let mut wfbs = HashMap::new();
    if let Value::Dict(entries) = &answer {
        for (k, v) in entries {
            if let (Some(k), Value::Remote(luid)) = (k.as_text(), v) {
                wfbs.insert(k.into_owned(), *luid);
            }
        }
    }
    match builders.iter().find(|b| !wfbs.contains_key(**b)) {
        Some(missing) => Err(format!("setBuilderList: the worker did not set up {missing}")),
        None => Ok(wfbs),
    }
}

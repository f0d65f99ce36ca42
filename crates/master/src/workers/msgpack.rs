//! `msgpack_experimental_v7` over WebSocket: the listener, authentication
//! on the upgrade, and one [`Session`] per connected worker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cascade_protocol::msgpack::{Request, from_json, parse_update};
use cascade_protocol::{Frame, WorkerInfo};
use futures_util::{SinkExt, StreamExt};
use rmpv::Value;
use tokio::sync::{Notify, mpsc, oneshot};

use super::{BoxFuture, CommandEvent, UploadOp, WorkerConnection, WorkerError, WorkerHandle};
use crate::app::Master;

/// Largest message accepted from a worker. Output arrives in ~64 KiB
/// updates and uploads in 256 KiB chunks; anything far bigger is refused
/// by closing that one connection.
pub const MAX_MESSAGE: usize = 16 << 20;
/// How long the worker's output may sit in its buffer: short, so logs are live.
pub const BUFFER_TIMEOUT_SECS: f64 = 0.2;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Liveness: a WebSocket ping this often; a peer silent for `dead_after` is dropped.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    pub ping_every: Duration,
    pub dead_after: Duration,
}

pub fn router(master: Arc<Master>) -> Router {
    // The worker connects at `/` unless its tac says otherwise; any path works.
    Router::new().fallback(upgrade).with_state(master)
}

async fn upgrade(
    State(master): State<Arc<Master>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let name = match master.credentials.check_basic(auth).await {
        Ok(name) => name,
        Err(reason) => {
            tracing::warn!(%reason, "worker connection refused");
            return (StatusCode::UNAUTHORIZED, reason).into_response();
        }
    };
    match ws {
        Ok(ws) => ws
            .max_message_size(MAX_MESSAGE)
            .max_frame_size(MAX_MESSAGE)
            // Small buffers (they grow for a big message): a thousand idle
            // workers should not cost a thousand times 256 KiB.
            .read_buffer_size(16 * 1024)
            .write_buffer_size(16 * 1024)
            .on_upgrade(move |socket| run_session(master, name, socket)),
        Err(rejection) => rejection.into_response(),
    }
}

/// One connection's state, shared by its reader, its writer and the builds
/// running commands on it.
pub struct Session {
    worker: String,
    out: mpsc::Sender<Message>,
    next_seq: AtomicI64,
    pending: Mutex<HashMap<i64, oneshot::Sender<Result<Value, String>>>>,
    commands: Arc<Mutex<HashMap<String, mpsc::Sender<CommandEvent>>>>,
    closed: AtomicBool,
    close_now: Notify,
}

impl Session {
    async fn send_frame(&self, frame: Frame) -> Result<(), WorkerError> {
        self.out.send(Message::Binary(frame.encode().into())).await.map_err(|_| WorkerError::Gone)
    }

    async fn request(&self, req: Request) -> Result<Value, WorkerError> {
        if self.is_closed() {
            return Err(WorkerError::Gone);
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(seq, tx);
        }
        self.send_frame(req.into_frame(seq)).await?;
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Err(_) => {
                if let Ok(mut p) = self.pending.lock() {
                    p.remove(&seq);
                }
                Err(WorkerError::Timeout)
            }
            Ok(Err(_)) => Err(WorkerError::Gone),
            Ok(Ok(Err(msg))) => Err(WorkerError::Refused(msg)),
            Ok(Ok(Ok(v))) => Ok(v),
        }
    }

    async fn respond(&self, seq: i64, result: Result<Value, String>) {
        let _ = self.send_frame(Frame::Response { seq, result }).await;
    }

    fn commands_handle(&self) -> Arc<Mutex<HashMap<String, mpsc::Sender<CommandEvent>>>> {
        self.commands.clone()
    }

    fn command(&self, id: &str) -> Option<mpsc::Sender<CommandEvent>> {
        self.commands.lock().ok().and_then(|c| c.get(id).cloned())
    }

    /// Handles one message from the worker. Nothing it sends can stop the
    /// session except by closing it: bad input is answered or logged.
    async fn handle(&self, bytes: &[u8]) {
        let frame = match Frame::decode(bytes) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(worker = %self.worker, error = %e, "undecodable message from worker ignored");
                return;
            }
        };
        match frame {
            Frame::Response { seq, result } => {
                let waiter = self.pending.lock().ok().and_then(|mut p| p.remove(&seq));
                match waiter {
                    Some(w) => {
                        let _ = w.send(result);
                    }
                    None => tracing::warn!(worker = %self.worker, seq, "response to no request of ours ignored"),
                }
            }
            Frame::Request { op, seq, fields } => {
                tracing::trace!(worker = %self.worker, %op, seq, "request from worker");
                let command_id = Frame::field(&fields, "command_id").and_then(|v| v.as_str()).map(str::to_string);
                let result = match (op.as_str(), command_id) {
                    ("update", Some(id)) => match self.command(&id) {
                        None => Err(format!("no command {id} is running")),
                        Some(tx) => match Frame::field(&fields, "args").map(parse_update) {
                            Some(Ok(entries)) => {
                                let _ = tx.send(CommandEvent::Output(entries)).await;
                                Ok(Value::Nil)
                            }
                            Some(Err(e)) => {
                                tracing::warn!(worker = %self.worker, command = %id, error = %e, "malformed update");
                                Err(e)
                            }
                            None => Err("update without args".into()),
                        },
                    },
                    ("complete", Some(id)) => {
                        let tx = self.commands.lock().ok().and_then(|mut c| c.remove(&id));
                        match tx {
                            None => Err(format!("no command {id} is running")),
                            Some(tx) => {
                                let error = match Frame::field(&fields, "args") {
                                    None | Some(Value::Nil) => None,
                                    Some(v) => Some(v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())),
                                };
                                let _ = tx.send(CommandEvent::Complete { error }).await;
                                Ok(Value::Nil)
                            }
                        }
                    }
                    ("keepalive", _) => Ok(Value::Nil),
                    (
                        op @ ("update_upload_file_write"
                        | "update_upload_file_close"
                        | "update_upload_file_utime"
                        | "update_upload_directory_write"
                        | "update_upload_directory_unpack"),
                        Some(id),
                    ) => {
                        let upload = match op {
                            "update_upload_file_write" | "update_upload_directory_write" => {
                                match Frame::field(&fields, "args") {
                                    // Old msgpack versions send bytes as str: take the raw bytes either way.
                                    Some(Value::Binary(b)) => Some(UploadOp::Write(b.clone())),
                                    Some(Value::String(s)) => Some(UploadOp::Write(s.as_bytes().to_vec())),
                                    _ => None,
                                }
                            }
                            "update_upload_file_close" => Some(UploadOp::Close),
                            "update_upload_directory_unpack" => Some(UploadOp::Unpack),
                            _ => {
                                let time = |k| {
                                    Frame::field(&fields, k)
                                        .and_then(|v| v.as_f64().or_else(|| v.as_i64().map(|i| i as f64)))
                                };
                                time("access_time").zip(time("modified_time")).map(|(a, m)| UploadOp::Utime(a, m))
                            }
                        };
                        let forwarded = match upload {
                            None => Err(format!("{op}: malformed arguments")),
                            Some(upload) => {
                                self.forward(seq, &id, |reply| CommandEvent::Upload(upload, reply), |()| Value::Nil)
                                    .await
                            }
                        };
                        match forwarded {
                            Ok(()) => return,
                            Err(e) => Err(e),
                        }
                    }
                    ("update_read_file", Some(id)) => {
                        let length = Frame::field(&fields, "length").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
                        // The data goes as msgpack bin (Buildbot 4.3 answers nil
                        // here, which leaves its downloads empty).
                        let read = |reply| CommandEvent::Read(length.min(MAX_MESSAGE / 2), reply);
                        match self.forward(seq, &id, read, Value::Binary).await {
                            Ok(()) => return,
                            Err(e) => Err(e),
                        }
                    }
                    ("update_read_file_close", Some(id)) => {
                        match self.forward(seq, &id, CommandEvent::ReadClose, |()| Value::Nil).await {
                            Ok(()) => return,
                            Err(e) => Err(e),
                        }
                    }
                    (op, _) if op.starts_with("update_") => {
                        Err(format!("{op}: this master does not serve that transfer"))
                    }
                    (op, _) => Err(format!("Command {op} does not exist.")),
                };
                if let Err(e) = &result {
                    tracing::debug!(worker = %self.worker, %op, error = %e, "worker request refused");
                }
                self.respond(seq, result).await;
            }
        }
    }

    /// Hands a transfer request to the command it belongs to and answers the
    /// worker once the build task has, off the reader loop: the worker waits
    /// for the answer anyway, and the loop must keep reading meanwhile.
    async fn forward<T: Send + 'static>(
        &self,
        seq: i64,
        command_id: &str,
        event: impl FnOnce(oneshot::Sender<Result<T, String>>) -> CommandEvent,
        to_value: fn(T) -> Value,
    ) -> Result<(), String> {
        let tx = self.command(command_id).ok_or_else(|| format!("no command {command_id} is running"))?;
        let (reply, answer) = oneshot::channel();
        tx.send(event(reply)).await.map_err(|_| "the command is no longer listening".to_string())?;
        let out = self.out.clone();
        tokio::spawn(async move {
            let result = match answer.await {
                Ok(Ok(v)) => Ok(to_value(v)),
                Ok(Err(e)) => Err(e),
                Err(_) => Err("the transfer was abandoned".into()),
            };
            let _ = out.send(Message::Binary(Frame::Response { seq, result }.encode().into())).await;
        });
        Ok(())
    }

    /// The connection is gone: every waiter and every running command is told.
    fn fail_all(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Ok(mut p) = self.pending.lock() {
            p.clear();
        }
        let commands: Vec<_> = self.commands.lock().map(|mut c| c.drain().collect()).unwrap_or_default();
        for (_, tx) in commands {
            let _ = tx.try_send(CommandEvent::Lost);
        }
    }
}

impl WorkerConnection for Session {
    fn start_command<'a>(
        &'a self,
        _builder: &'a str,
        command_id: &'a str,
        command_name: &'a str,
        args: serde_json::Value,
    ) -> BoxFuture<'a, Result<mpsc::Receiver<CommandEvent>, WorkerError>> {
        Box::pin(async move {
            if self.is_closed() {
                return Err(WorkerError::Gone);
            }
            let (tx, rx) = mpsc::channel(64);
            if let Ok(mut c) = self.commands.lock() {
                c.insert(command_id.to_string(), tx.clone());
            }
            // The worker's acknowledgement may come after the command's first
            // output (or upload) — never wait for it here: that output has to
            // be read first. A refusal arrives as the command's end instead.
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            let (ack_tx, ack) = oneshot::channel();
            if let Ok(mut p) = self.pending.lock() {
                p.insert(seq, ack_tx);
            }
            let frame = Request::start_command(command_id, command_name, from_json(&args)).into_frame(seq);
            self.send_frame(frame).await?;
            let worker = self.worker.clone();
            let id = command_id.to_string();
            let refused: Arc<Mutex<HashMap<String, mpsc::Sender<CommandEvent>>>> = self.commands_handle();
            tokio::spawn(async move {
                let error = match tokio::time::timeout(REQUEST_TIMEOUT, ack).await {
                    Ok(Ok(Ok(_))) => return,
                    Ok(Ok(Err(msg))) => msg,
                    Ok(Err(_)) => return, // the connection is gone: the command gets Lost
                    Err(_) => "the worker did not acknowledge the command".to_string(),
                };
                tracing::warn!(%worker, command = %id, %error, "the worker refused a command");
                let tx = refused.lock().ok().and_then(|mut c| c.remove(&id));
                if let Some(tx) = tx {
                    let _ = tx.send(CommandEvent::Complete { error: Some(error) }).await;
                }
            });
            Ok(rx)
        })
    }

    fn interrupt<'a>(&'a self, command_id: &'a str, why: &'a str) -> BoxFuture<'a, Result<(), WorkerError>> {
        Box::pin(async move { self.request(Request::interrupt_command(command_id, why)).await.map(|_| ()) })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), WorkerError>> {
        Box::pin(async move { self.request(Request::print("ping")).await.map(|_| ()) })
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<(), WorkerError>> {
        Box::pin(async move { self.request(Request::shutdown()).await.map(|_| ()) })
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.close_now.notify_waiters();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

async fn run_session(master: Arc<Master>, name: String, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (out, mut out_rx) = mpsc::channel::<Message>(64);
    let session = Arc::new(Session {
        worker: name.clone(),
        out,
        next_seq: AtomicI64::new(0),
        pending: Mutex::new(HashMap::new()),
        commands: Arc::new(Mutex::new(HashMap::new())),
        closed: AtomicBool::new(false),
        close_now: Notify::new(),
    });
    let writer = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            let closing = matches!(msg, Message::Close(_));
            if sink.send(msg).await.is_err() || closing {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let liveness = master.liveness;
    let reader = {
        let session = session.clone();
        tokio::spawn(async move {
            let mut last_heard = Instant::now();
            let mut ticker = tokio::time::interval(liveness.ping_every);
            ticker.tick().await;
            loop {
                tokio::select! {
                    msg = stream.next() => {
                        last_heard = Instant::now();
                        match msg {
                            Some(Ok(Message::Binary(bytes))) => session.handle(&bytes).await,
                            Some(Ok(Message::Text(_))) => tracing::debug!(worker = %session.worker, "text message ignored"),
                            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                            Some(Ok(Message::Close(_))) | None => break,
                            Some(Err(e)) => {
                                tracing::warn!(worker = %session.worker, error = %e, "worker connection failed");
                                break;
                            }
                        }
                    }
                    _ = ticker.tick() => {
                        if last_heard.elapsed() > liveness.dead_after {
                            tracing::warn!(worker = %session.worker, "worker silent too long; dropping it");
                            break;
                        }
                        let _ = session.out.try_send(Message::Ping(Vec::new().into()));
                    }
                    _ = session.close_now.notified() => break,
                }
            }
            session.fail_all();
        })
    };

    let handle = attach(&master, &name, session.clone()).await;
    match &handle {
        Ok(h) => {
            tracing::info!(worker = %name, version = ?h.info.version, basedir = ?h.info.basedir, "worker attached")
        }
        Err(e) => {
            tracing::warn!(worker = %name, error = %e, "worker could not attach");
            let _ = session.out.try_send(Message::Close(None));
            session.close();
        }
    }
    let _ = reader.await;
    session.fail_all();
    let _ = session.out.try_send(Message::Close(None));
    drop(session);
    writer.abort();
    if let Ok(h) = handle {
        // The store first: once the registry forgets the worker, the store
        // already says it is gone (unless a newer connection took its place).
        if master.workers.get(&name).is_some_and(|cur| Arc::ptr_eq(&cur, &h))
            && let Err(e) = master.store.worker_detached(h.worker_id, master.master_id).await
        {
            tracing::warn!(worker = %name, error = %e, "could not record the detach");
        }
        master.workers.detach(&h);
        tracing::info!(worker = %name, "worker detached");
    }
}

/// The attach sequence: learn about the worker, tune its output buffering,
/// register it, record it.
async fn attach(master: &Arc<Master>, name: &str, session: Arc<Session>) -> Result<Arc<WorkerHandle>, String> {
    let info = session.request(Request::get_worker_info()).await.map_err(|e| format!("get_worker_info: {e}"))?;
    let info = WorkerInfo::from_value(&info);
    session
        .request(Request::set_worker_settings(BUFFER_TIMEOUT_SECS))
        .await
        .map_err(|e| format!("set_worker_settings: {e}"))?;
    let worker_id = *master.worker_ids.get(name).ok_or_else(|| format!("worker {name} is not configured"))?;
    let max_builds = master.config.workers.iter().find(|w| w.name == name).map(|w| w.max_builds as usize).unwrap_or(1);
    let handle = Arc::new(WorkerHandle::new(name, worker_id, info.clone(), max_builds, session.clone()));
    super::apply_stored_flags(master, &handle).await;
    master.workers.attach(handle.clone()).await?;
    master
        .store
        .worker_attached(worker_id, master.master_id, &info.json, crate::clock::now())
        .await
        .map_err(|e| e.to_string())?;
    let _ = session.request(Request::print("attached")).await;
    master.wake_builds.notify_one();
    Ok(handle)
}

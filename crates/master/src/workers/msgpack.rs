//! `msgpack_experimental_v7` over WebSocket: the listener, authentication
//! on the upgrade, and one [`Session`] per connected worker.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cascade_protocol::msgpack::{Request, WorkerRequest, from_json};
use cascade_protocol::{Frame, WorkerInfo};
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use rmpv::Value;
use tokio::sync::{Notify, mpsc, oneshot};

use super::{BoxFuture, CommandEvent, Hub, WorkerConnection, WorkerError, WorkerHandle};

/// Largest message accepted from a worker. Output arrives in ~64 KiB
/// updates and uploads in 256 KiB chunks; anything far bigger is refused
/// by closing that one connection.
pub const MAX_MESSAGE: usize = 16 << 20;
/// How long the worker's output may sit in its buffer: short, so logs are live.
pub const BUFFER_TIMEOUT_SECS: f64 = 0.2;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

type Commands = Arc<Mutex<HashMap<String, mpsc::Sender<CommandEvent>>>>;

/// The msgpack listener's routes: the upgrade on any path (the worker
/// connects at `/` unless its tac says otherwise).
pub fn router(hub: Arc<Hub>) -> Router {
    Router::new().fallback(upgrade).with_state(hub)
}

async fn upgrade(
    State(hub): State<Arc<Hub>>,
    connect: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let ip = connect.map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.0.ip());
    let name = match hub.log_in_basic(auth, ip).await {
        Ok(name) => name,
        Err(refusal) => {
            tracing::warn!(reason = %refusal, address = %ip, "worker connection refused");
            return refused(&refusal);
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
            .on_upgrade(move |socket| run_session(hub, name, socket)),
        Err(rejection) => rejection.into_response(),
    }
}

/// 401 for a wrong password, 429 for too many attempts, 503 when busy.
fn refused(refusal: &super::Refusal) -> Response {
    let (status, wait) = match refusal {
        super::Refusal::TooMany(wait) => (StatusCode::TOO_MANY_REQUESTS, Some(wait.as_secs().max(1))),
        super::Refusal::Busy => (StatusCode::SERVICE_UNAVAILABLE, Some(1)),
        super::Refusal::Wrong | super::Refusal::Other(_) => (StatusCode::UNAUTHORIZED, None),
    };
    let mut response = (status, refusal.to_string()).into_response();
    if let Some(v) = wait.and_then(|w| axum::http::HeaderValue::from_str(&w.to_string()).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// One connection's state, shared by its reader, its writer and the builds
/// running commands on it.
pub struct Session {
    worker: String,
    out: mpsc::Sender<Message>,
    next_seq: AtomicI64,
    pending: Mutex<HashMap<i64, oneshot::Sender<Result<Value, String>>>>,
    commands: Commands,
    closed: AtomicBool,
    close_now: Notify,
}

impl Session {
    fn new(worker: &str, out: mpsc::Sender<Message>) -> Session {
        Session {
            worker: worker.to_string(),
            out,
            next_seq: AtomicI64::new(0),
            pending: Mutex::new(HashMap::new()),
            commands: Arc::new(Mutex::new(HashMap::new())),
            closed: AtomicBool::new(false),
            close_now: Notify::new(),
        }
    }

    async fn send_frame(&self, frame: Frame) -> Result<(), WorkerError> {
        self.out.send(Message::Binary(frame.encode().into())).await.map_err(|_| WorkerError::Gone)
    }

    /// Sends a request and registers where its answer goes (before sending:
    /// answers can overtake anything).
    async fn send_request(&self, req: Request) -> Result<(i64, oneshot::Receiver<Result<Value, String>>), WorkerError> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(seq, tx);
        self.send_frame(req.into_frame(seq)).await?;
        Ok((seq, rx))
    }

    async fn request(&self, req: Request) -> Result<Value, WorkerError> {
        if self.is_closed() {
            return Err(WorkerError::Gone);
        }
        let (seq, rx) = self.send_request(req).await?;
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Err(_) => {
                self.pending.lock().remove(&seq);
                Err(WorkerError::Timeout)
            }
            Ok(Err(_)) => Err(WorkerError::Gone),
            Ok(Ok(Err(msg))) => Err(WorkerError::Refused(msg)),
            Ok(Ok(Ok(v))) => Ok(v),
        }
    }

    fn command(&self, id: &str) -> Option<mpsc::Sender<CommandEvent>> {
        self.commands.lock().get(id).cloned()
    }

    /// Handles one message from the worker. Nothing it sends can stop the
    /// session except by closing it: bad input is answered or logged.
    async fn handle(&self, bytes: &[u8]) {
        match Frame::decode(bytes) {
            Err(e) => tracing::warn!(worker = %self.worker, error = %e, "undecodable message from worker ignored"),
            Ok(Frame::Response { seq, result }) => match self.pending.lock().remove(&seq) {
                Some(waiter) => {
                    let _ = waiter.send(result);
                }
                None => tracing::warn!(worker = %self.worker, seq, "response to no request of ours ignored"),
            },
            Ok(Frame::Request { op, seq, fields }) => {
                tracing::trace!(worker = %self.worker, %op, seq, "request from worker");
                let answered = match WorkerRequest::parse(&op, &fields) {
                    Ok(request) => self.serve(seq, request).await,
                    Err(e) => Err(e.to_string()),
                };
                match answered {
                    Ok(Some(result)) => self.respond(seq, Ok(result)).await,
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(worker = %self.worker, %op, error = %e, "worker request refused");
                        self.respond(seq, Err(e)).await;
                    }
                }
            }
        }
    }

    async fn respond(&self, seq: i64, result: Result<Value, String>) {
        let _ = self.send_frame(Frame::Response { seq, result }).await;
    }

    /// Serves a request: `Some` answer now, `None` when a task answers later.
    async fn serve(&self, seq: i64, request: WorkerRequest) -> Result<Option<Value>, String> {
        let no_command = |id: &str| format!("no command {id} is running");
        match request {
            WorkerRequest::Keepalive => Ok(Some(Value::Nil)),
            WorkerRequest::Update { command_id, entries } => {
                let tx = self.command(&command_id).ok_or_else(|| no_command(&command_id))?;
                let _ = tx.send(CommandEvent::Output(entries)).await;
                Ok(Some(Value::Nil))
            }
            WorkerRequest::Complete { command_id, error } => {
                let tx = self.commands.lock().remove(&command_id).ok_or_else(|| no_command(&command_id))?;
                let _ = tx.send(CommandEvent::Complete { error }).await;
                Ok(Some(Value::Nil))
            }
            WorkerRequest::Upload { command_id, piece } => {
                self.forward(seq, &command_id, |reply| CommandEvent::Upload(piece, reply), |()| Value::Nil).await?;
                Ok(None)
            }
            WorkerRequest::Read { command_id, length } => {
                // The data goes as msgpack bin (Buildbot 4.3 answers nil
                // here, which leaves its downloads empty).
                let read = |reply| CommandEvent::Read(length.min(MAX_MESSAGE / 2), reply);
                self.forward(seq, &command_id, read, Value::Binary).await?;
                Ok(None)
            }
            WorkerRequest::ReadClose { command_id } => {
                self.forward(seq, &command_id, CommandEvent::ReadClose, |()| Value::Nil).await?;
                Ok(None)
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
        self.pending.lock().clear();
        let commands: Vec<_> = self.commands.lock().drain().collect();
        for (_, tx) in commands {
            let _ = tx.try_send(CommandEvent::Lost);
        }
    }
}

/// Waits for the worker's acknowledgement of a command off the reader
/// loop; a refusal (or none in time) ends the command.
fn await_ack(worker: String, id: String, commands: Commands, ack: oneshot::Receiver<Result<Value, String>>) {
    tokio::spawn(async move {
        let error = match tokio::time::timeout(REQUEST_TIMEOUT, ack).await {
            Ok(Ok(Ok(_)) | Err(_)) => return, // acknowledged, or the connection is gone: the command gets Lost
            Ok(Ok(Err(msg))) => msg,
            Err(_) => "the worker did not acknowledge the command".to_string(),
        };
        tracing::warn!(%worker, command = %id, %error, "the worker refused a command");
        let tx = commands.lock().remove(&id);
        if let Some(tx) = tx {
            let _ = tx.send(CommandEvent::Complete { error: Some(error) }).await;
        }
    });
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
            self.commands.lock().insert(command_id.to_string(), tx);
            // The worker's acknowledgement may come after the command's first
            // output (or upload) — never wait for it here: that output has to
            // be read first. A refusal arrives as the command's end instead.
            let (_, ack) =
                self.send_request(Request::start_command(command_id, command_name, from_json(&args))).await?;
            await_ack(self.worker.clone(), command_id.to_string(), self.commands.clone(), ack);
            Ok(rx)
        })
    }

    fn interrupt<'a>(&'a self, command_id: &'a str, why: &'a str) -> BoxFuture<'a, Result<(), WorkerError>> {
        Box::pin(async move { self.request(Request::interrupt_command(command_id, why)).await.map(|_| ()) })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), WorkerError>> {
        Box::pin(async move { self.request(Request::print("ping")).await.map(|_| ()) })
    }

    fn protocol(&self) -> &'static str {
        "msgpack"
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<(), WorkerError>> {
        Box::pin(async move { self.request(Request::shutdown()).await.map(|_| ()) })
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        // A permit: the reader may be busy with a message right now.
        self.close_now.notify_one();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// Reads the worker's messages until the connection ends, pinging it when
/// quiet and dropping it when silent too long.
async fn read_loop(session: Arc<Session>, mut stream: SplitStream<WebSocket>, liveness: super::Liveness) {
    let mut last_heard = Instant::now();
    let mut ticker = tokio::time::interval(liveness.ping_every);
    ticker.tick().await;
    while !session.is_closed() {
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
            () = session.close_now.notified() => break,
        }
    }
    session.fail_all();
}

async fn run_session(hub: Arc<Hub>, name: String, socket: WebSocket) {
    let (mut sink, stream) = socket.split();
    let (out, mut out_rx) = mpsc::channel::<Message>(64);
    let session = Arc::new(Session::new(&name, out));
    let writer = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            let closing = matches!(msg, Message::Close(_));
            if sink.send(msg).await.is_err() || closing {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let reader = tokio::spawn(read_loop(session.clone(), stream, hub.liveness));
    let handle = attach(&hub, &name, session.clone()).await;
    match &handle {
        Ok(h) => {
            tracing::info!(worker = %name, version = ?h.info.version, basedir = ?h.info.basedir, "worker attached");
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
        hub.detach(&h).await;
    }
}

/// The attach sequence: learn about the worker, tune its output buffering,
/// register it, record it.
async fn attach(hub: &Hub, name: &str, session: Arc<Session>) -> Result<Arc<WorkerHandle>, String> {
    let info = session.request(Request::get_worker_info()).await.map_err(|e| format!("get_worker_info: {e}"))?;
    let info = WorkerInfo::from_value(&info);
    session
        .request(Request::set_worker_settings(BUFFER_TIMEOUT_SECS))
        .await
        .map_err(|e| format!("set_worker_settings: {e}"))?;
    let worker_id = hub.catalog.worker_id(name).ok_or_else(|| format!("worker {name} is not configured"))?;
    let handle = Arc::new(WorkerHandle::new(name, worker_id, info, hub.max_builds(name), session.clone()));
    hub.attach(&handle).await?;
    let _ = session.request(Request::print("attached")).await;
    Ok(handle)
}

//! `/ws`: Buildbot's WebSocket. A client consumes paths
//! (`startConsuming` / `stopConsuming`); each Cascade event on the bus
//! becomes the Data API objects it concerns, sent as `{"k": key, "m":
//! object}` under every routing key a consumed path takes. Bounded: a cap
//! on connections and on paths per connection, a frame size limit, and a
//! client that does not read its frames is dropped, not buffered for.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cascade_model::Envelope;
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::Www;
use super::frames::{self, Command};
use super::keys::{self, Fetch};

/// Open `/ws` connections at once; past it, an upgrade is answered 503.
pub const MAX_SOCKETS: usize = 256;
/// Paths one connection may consume.
pub const MAX_SUBSCRIPTIONS: usize = 256;
/// Largest frame or message a client may send.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Frames waiting to be written; a client this far behind is dropped.
const QUEUE: usize = 1024;
/// A quiet connection is pinged this often.
const PING_EVERY: Duration = Duration::from_secs(30);
/// Close code 1013, "try again later": the client fell behind.
const BEHIND: u16 = 1013;

/// `GET /ws` (and `/buildbot/ws`).
pub(super) async fn upgrade(State(w): State<Arc<Www>>, ws: WebSocketUpgrade) -> Response {
    let Ok(permit) = w.sockets.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many live connections; try again later").into_response();
    };
    ws.max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .read_buffer_size(16 * 1024)
        .write_buffer_size(16 * 1024)
        .on_upgrade(move |socket| run(w, socket, permit))
}

/// Why a connection ends.
enum End {
    /// The client left, or the master stops.
    Gone,
    /// The client does not keep up.
    Behind,
}

/// One connection's state.
struct Session {
    www: Arc<Www>,
    paths: BTreeSet<String>,
    out: mpsc::Sender<Message>,
}

async fn run(www: Arc<Www>, socket: WebSocket, _permit: OwnedSemaphorePermit) {
    let (mut sink, stream) = socket.split();
    let (out, mut queued) = mpsc::channel::<Message>(QUEUE);
    let writer = tokio::spawn(async move {
        while let Some(msg) = queued.recv().await {
            let closing = matches!(msg, Message::Close(_));
            if sink.send(msg).await.is_err() || closing {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut session = Session { www: www.clone(), paths: BTreeSet::new(), out };
    let end = session.serve(stream).await;
    let close = match end {
        End::Gone => CloseFrame { code: 1000, reason: "".into() },
        End::Behind => CloseFrame { code: BEHIND, reason: "too far behind the events; reconnect".into() },
    };
    // A client that is behind has a full queue: its close frame may not fit, and it is not waited for.
    let sent = session.out.try_send(Message::Close(Some(close))).is_ok();
    drop(session);
    if sent && matches!(end, End::Gone) {
        let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    } else {
        writer.abort();
    }
}

async fn next_or_pending(r: &mut Option<Receiver<Arc<Envelope>>>) -> Result<Arc<Envelope>, RecvError> {
    match r.as_mut() {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

impl Session {
    /// Reads the client's frames and forwards events until either side ends.
    async fn serve(&mut self, mut stream: SplitStream<WebSocket>) -> End {
        let mut events = self.www.bus.subscribe();
        // Log lines are many: heard only while a consumed path may take them
        // (a receiver not read would lag, and its client be dropped).
        let mut lines = None;
        let mut closed = self.www.bus.closed();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            if *closed.borrow() {
                return End::Gone;
            }
            if !self.wants_logs() {
                lines = None;
            } else if lines.is_none() {
                lines = Some(self.www.bus.subscribe_lines());
            }
            let step = tokio::select! {
                frame = stream.next() => match frame {
                    Some(Ok(Message::Text(text))) => self.command(text.as_str()),
                    Some(Ok(Message::Binary(_))) => self.send(frames::not_text().frame()),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
                    Some(Ok(Message::Close(_)) | Err(_)) | None => Err(End::Gone),
                },
                e = events.recv() => self.forward(e).await,
                l = next_or_pending(&mut lines) => self.forward(l).await,
                _ = closed.changed() => Err(End::Gone),
                _ = ping.tick() => self.queue(Message::Ping(Vec::new().into())),
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Queues a frame; a full queue means the client does not read.
    fn queue(&self, msg: Message) -> Result<(), End> {
        match self.out.try_send(msg) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(queued = QUEUE, "a /ws client does not read its frames; dropping it");
                Err(End::Behind)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(End::Gone),
        }
    }

    fn send(&self, text: String) -> Result<(), End> {
        self.queue(Message::Text(text.into()))
    }

    /// Answers one client frame.
    fn command(&mut self, text: &str) -> Result<(), End> {
        let answer = match frames::parse(text) {
            Err(refusal) => refusal.frame(),
            Ok(Command::Ping { id }) => frames::pong(&id),
            Ok(Command::StartConsuming { path, id }) => {
                if self.paths.contains(&path) {
                    frames::ok(&id)
                } else if self.paths.len() >= MAX_SUBSCRIPTIONS {
                    let error = format!("too many paths consumed (at most {MAX_SUBSCRIPTIONS})");
                    frames::Refusal { code: 400, error, id }.frame()
                } else {
                    self.paths.insert(path);
                    frames::ok(&id)
                }
            }
            Ok(Command::StopConsuming { path, id }) => {
                if self.paths.remove(&path) {
                    frames::ok(&id)
                } else {
                    frames::Refusal { code: 400, error: format!("path was not consumed '{path}'"), id }.frame()
                }
            }
        };
        self.send(answer)
    }

    /// Whether log lines can concern this client at all.
    fn wants_logs(&self) -> bool {
        self.paths.iter().any(|p| keys::may_match(p, keys::Resource::Log, "append"))
    }

    async fn forward(&mut self, received: Result<Arc<Envelope>, RecvError>) -> Result<(), End> {
        match received {
            Ok(envelope) => self.announce(&envelope).await,
            Err(RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "a /ws client fell behind the event bus; dropping it");
                Err(End::Behind)
            }
            Err(RecvError::Closed) => Err(End::Gone),
        }
    }

    /// Sends what `envelope` announces under the keys this client consumes;
    /// an object is read only when some consumed path could take it.
    async fn announce(&mut self, envelope: &Envelope) -> Result<(), End> {
        for a in keys::plan(&envelope.event) {
            let resource = a.fetch.resource();
            if !self.paths.iter().any(|p| keys::may_match(p, resource, a.event)) {
                continue;
            }
            let objects = self.objects(envelope, a.fetch).await;
            for body in objects.iter() {
                for key in keys::keys(resource, body, a.event) {
                    if self.paths.iter().any(|p| keys::matches(p, &key)) {
                        self.send(frames::event(&key, body))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The objects `fetch` names after `envelope`: read once per event for
    /// every connection (log lines: once per batch).
    async fn objects(&self, envelope: &Envelope, fetch: Fetch) -> Arc<Vec<Value>> {
        let event = match (&envelope.id, &envelope.event) {
            (Some(id), _) => format!("event {id}"),
            (None, cascade_model::Event::LogLines { log_id, first_line, .. }) => format!("lines {log_id} {first_line}"),
            (None, _) => return Arc::new(self.read(fetch).await),
        };
        let key = format!("{event}: {fetch:?}");
        if let Some(known) = self.www.recalled(&key) {
            return known;
        }
        let objects = Arc::new(self.read(fetch).await);
        self.www.remember(key, objects.clone());
        objects
    }

    /// The objects `fetch` names, as `/api/v2` answers them (none if gone).
    async fn read(&self, fetch: Fetch) -> Vec<Value> {
        use crate::api::objects;
        let store = &self.www.store;
        let found = match fetch {
            Fetch::Build(id) => objects::build(store, id).await,
            Fetch::Step(id) => objects::step(store, id).await,
            Fetch::Log(id) => objects::log(store, id).await,
            Fetch::LogsOfStep(id) => objects::logs_of_step(store, id).await,
            Fetch::BuildRequest(id) => objects::buildrequest(store, id).await,
            Fetch::RequestOfBuild(id) => match store.get_build(id).await {
                Ok(Some(b)) => objects::buildrequest(store, b.buildrequestid).await,
                Ok(None) => Ok(Vec::new()),
                Err(e) => Err(e.into()),
            },
            Fetch::Buildset(id) => objects::buildset(store, id).await,
            Fetch::ChangesOfBuildset(id) => objects::changes_of_buildset(store, id).await,
            Fetch::Worker(id) => objects::worker(store, id).await,
            Fetch::Master(id) => objects::master(store, id).await,
        };
        found.unwrap_or_else(|e| {
            tracing::warn!(error = ?e, ?fetch, "reading an event's object for /ws failed");
            Vec::new()
        })
    }
}

//! One connection to the master: authenticate, answer its requests, run
//! commands, stream their output as `update`s.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use base64::Engine;
use cascade_protocol::Frame;
use cascade_protocol::msgpack::{MasterRequest, Op, Request};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use rmpv::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::commands::{self, Settings};

pub enum End {
    Shutdown,
    Disconnected,
}

/// What the connection's tasks share.
pub struct Shared {
    out: mpsc::Sender<Message>,
    next_seq: AtomicI64,
    pub settings: Mutex<Settings>,
    /// Running commands by id, each with the switch that interrupts it.
    running: Mutex<HashMap<String, watch::Sender<bool>>>,
    /// Our requests whose answer someone waits for (file transfers).
    pending: Mutex<HashMap<i64, oneshot::Sender<Result<Value, String>>>>,
}

impl Shared {
    /// Sends a request of ours; its answer is not awaited (updates are
    /// fire-and-forget, as in Buildbot's worker).
    pub async fn send(&self, op: Op, fields: Vec<(String, Value)>) -> bool {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let frame = Request { op, fields }.into_frame(seq);
        self.out.send(Message::Binary(frame.encode().into())).await.is_ok()
    }

    /// Sends a request and waits for the master's answer (file transfers
    /// wait, which paces them to what the master can take).
    pub async fn request(&self, op: Op, fields: Vec<(String, Value)>) -> Result<Value, String> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(seq, tx);
        let frame = Request { op, fields }.into_frame(seq);
        if self.out.send(Message::Binary(frame.encode().into())).await.is_err() {
            return Err("the connection is gone".into());
        }
        match tokio::time::timeout(Duration::from_secs(300), rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err("the connection is gone".into()),
            Err(_) => Err("the master did not answer".into()),
        }
    }

    pub fn finished(&self, command_id: &str) {
        self.running.lock().remove(command_id);
    }
}

pub async fn run(master: &str, name: &str, password: &str, basedir: &Path) -> anyhow::Result<End> {
    let mut req = format!("ws://{master}/").into_client_request()?;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}"));
    req.headers_mut().insert("authorization", format!("Basic {token}").parse()?);
    let config = WebSocketConfig::default().max_message_size(Some(64 << 20)).max_frame_size(Some(64 << 20));
    let (ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), false).await?;
    tracing::info!(%master, "connected");
    let (mut sink, mut stream) = ws.split();
    let (out, mut out_rx) = mpsc::channel::<Message>(256);
    let writer = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            if sink.send(msg).await.is_err() {
                break;
            }
        }
    });
    let shared = Arc::new(Shared {
        out,
        next_seq: AtomicI64::new(0),
        settings: Mutex::new(Settings::default()),
        running: Mutex::new(HashMap::new()),
        pending: Mutex::new(HashMap::new()),
    });
    let mut end = End::Disconnected;
    while let Some(msg) = stream.next().await {
        let bytes = match msg {
            Ok(Message::Binary(b)) => b,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        match Frame::decode(&bytes) {
            Err(e) => tracing::warn!(error = %e, "undecodable message from the master ignored"),
            Ok(Frame::Response { seq, result }) => {
                let waiter = shared.pending.lock().remove(&seq);
                match (waiter, result) {
                    (Some(w), result) => {
                        let _ = w.send(result);
                    }
                    (None, Err(e)) => tracing::warn!(seq, error = %e, "the master refused a message"),
                    (None, Ok(_)) => {}
                }
            }
            Ok(Frame::Request { op, seq, fields }) => {
                let request = MasterRequest::parse(&op, &fields).map_err(|e| e.to_string());
                let shutdown = matches!(request, Ok(MasterRequest::Shutdown));
                let result = request.and_then(|r| handle(&shared, basedir, r));
                let frame = Frame::Response { seq, result };
                if shared.out.send(Message::Binary(frame.encode().into())).await.is_err() {
                    break;
                }
                if shutdown {
                    end = End::Shutdown;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            }
        }
    }
    // Commands cannot report to anyone any more, and the master treats them
    // as lost (RETRY): stop them rather than leave them running unseen.
    let running: Vec<_> = shared.running.lock().drain().collect();
    for (_, stop) in running {
        let _ = stop.send(true);
    }
    shared.pending.lock().clear();
    drop(shared);
    writer.abort();
    Ok(end)
}

fn handle(shared: &Arc<Shared>, basedir: &Path, request: MasterRequest) -> Result<Value, String> {
    match request {
        MasterRequest::Print { message } => {
            tracing::info!(message = %message, "master says");
            Ok(Value::Nil)
        }
        MasterRequest::Keepalive | MasterRequest::Shutdown => Ok(Value::Nil),
        MasterRequest::GetWorkerInfo => Ok(crate::info::worker_info(basedir)),
        MasterRequest::SetWorkerSettings { args } => {
            let settings = Settings::from_value(&args)
                .ok_or_else(|| "message did not contain obligatory settings for worker".to_string())?;
            *shared.settings.lock() = settings;
            Ok(Value::Nil)
        }
        MasterRequest::StartCommand { command_id, command_name, args } => {
            if !crate::info::COMMANDS.contains(&command_name.as_str()) {
                return Err(format!("(command {command_id}): unrecognized WorkerCommand '{command_name}'"));
            }
            commands::check_args(&command_name, &args)?;
            let (stop, stopped) = watch::channel(false);
            shared.running.lock().insert(command_id.clone(), stop);
            tokio::spawn(commands::run(shared.clone(), command_id, command_name, args, stopped));
            Ok(Value::Nil)
        }
        MasterRequest::InterruptCommand { command_id, .. } => {
            match shared.running.lock().get(&command_id).cloned() {
                Some(stop) => {
                    let _ = stop.send(true);
                }
                None => tracing::info!(command = %command_id, "asked to interrupt a command, but none was running"),
            }
            Ok(Value::Nil)
        }
    }
}

//! The broker: one connection's request ids, pending answers, and the
//! master-side objects the worker may call (`buildbot-pb.md` §3).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use cascade_protocol::pb::banana;
use cascade_protocol::pb::{Failure, Message, ObjectId, Value};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::workers::{CommandEvent, WorkerError};

/// A master object the worker holds a reference to.
#[derive(Debug, Clone)]
pub enum Object {
    /// Login, step two: answers `respond` for this name and challenge.
    Challenger { name: String, challenge: Vec<u8> },
    /// The logged-in worker's perspective: `keepalive`, `shutdown`.
    Avatar,
    /// A running command's `update`/`complete` target, by command id.
    Command(String),
    /// An upload's `write`/`close`/`utime`/`unpack` target.
    Writer(String),
    /// A download's `read`/`close` target.
    Reader(String),
    /// An object of Buildbot's command-line tools (`sendchange`, `try`).
    Tool(super::tools::ToolObject),
}

/// A command running on the worker, as the broker routes its calls.
pub struct RunningCommand {
    pub events: mpsc::Sender<CommandEvent>,
    pub builder: String,
    /// Its objects (command, writer, reader), forgotten when it completes.
    pub objects: Vec<i64>,
}

type Waiter = oneshot::Sender<Result<Value, Failure>>;

pub struct Broker {
    out: mpsc::Sender<Vec<u8>>,
    /// Dialect `pb` (vocabulary on) or `none`.
    vocab: AtomicBool,
    next_request: AtomicI64,
    pending: Mutex<HashMap<i64, Waiter>>,
    next_luid: AtomicI64,
    objects: Mutex<HashMap<i64, Object>>,
    pub commands: Mutex<HashMap<String, RunningCommand>>,
    closed: AtomicBool,
    pub close_now: Notify,
}

impl Broker {
    pub fn new(out: mpsc::Sender<Vec<u8>>) -> Broker {
        Broker {
            out,
            vocab: AtomicBool::new(true),
            next_request: AtomicI64::new(1),
            pending: Mutex::new(HashMap::new()),
            next_luid: AtomicI64::new(1),
            objects: Mutex::new(HashMap::new()),
            commands: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
            close_now: Notify::new(),
        }
    }

    pub fn set_vocabulary(&self, on: bool) {
        self.vocab.store(on, Ordering::SeqCst);
    }

    /// Queues an already encoded expression (the dialect offer).
    pub async fn send_raw(&self, bytes: Vec<u8>) -> Result<(), WorkerError> {
        self.out.send(bytes).await.map_err(|_| WorkerError::Gone)
    }

    pub async fn send(&self, msg: &Message) -> Result<(), WorkerError> {
        let bytes = banana::encode(&msg.to_expr(), self.vocab.load(Ordering::SeqCst)).map_err(|e| {
            tracing::error!(error = %e, "a message to the worker could not be encoded");
            WorkerError::Refused(e.to_string())
        })?;
        self.send_raw(bytes).await
    }

    /// Answers one of the worker's requests.
    pub async fn answer(&self, request: i64, result: Result<Value, Failure>) {
        let msg = match result {
            Ok(value) => Message::Answer { request, value },
            Err(failure) => Message::Error { request, failure },
        };
        let _ = self.send(&msg).await;
    }

    /// Sends a call and returns where its answer will arrive; the waiter is
    /// registered first, since answers can overtake anything.
    pub async fn call_start(
        &self,
        object: i64,
        method: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
    ) -> Result<oneshot::Receiver<Result<Value, Failure>>, WorkerError> {
        if self.is_closed() {
            return Err(WorkerError::Gone);
        }
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(request, tx);
        let msg = Message::Call {
            request,
            object: ObjectId::Luid(object),
            method: method.to_string(),
            answer_required: true,
            args,
            kwargs,
        };
        if let Err(e) = self.send(&msg).await {
            self.take_waiter(request);
            return Err(e);
        }
        Ok(rx)
    }

    /// Calls a method on a worker object and waits for the answer.
    pub async fn call(
        &self,
        object: i64,
        method: &str,
        args: Vec<Value>,
        kwargs: Vec<(String, Value)>,
        limit: Duration,
    ) -> Result<Value, WorkerError> {
        let rx = self.call_start(object, method, args, kwargs).await?;
        match tokio::time::timeout(limit, rx).await {
            Err(_) => Err(WorkerError::Timeout),
            Ok(Err(_)) => Err(WorkerError::Gone),
            Ok(Ok(Err(failure))) => Err(WorkerError::Refused(failure.to_string())),
            Ok(Ok(Ok(v))) => Ok(v),
        }
    }

    /// The waiter for an answer or error, if that request is ours and open.
    pub fn take_waiter(&self, request: i64) -> Option<Waiter> {
        self.pending.lock().remove(&request)
    }

    /// Registers an object the worker may call; ids are never reused.
    pub fn register(&self, object: Object) -> i64 {
        let luid = self.next_luid.fetch_add(1, Ordering::Relaxed);
        self.objects.lock().insert(luid, object);
        luid
    }

    /// How many objects the peer holds references to.
    pub fn object_count(&self) -> usize {
        self.objects.lock().len()
    }

    pub fn object(&self, luid: i64) -> Option<Object> {
        self.objects.lock().get(&luid).cloned()
    }

    pub fn forget(&self, luids: &[i64]) {
        let mut objects = self.objects.lock();
        for l in luids {
            objects.remove(l);
        }
    }

    pub fn command_events(&self, command_id: &str) -> Option<mpsc::Sender<CommandEvent>> {
        self.commands.lock().get(command_id).map(|r| r.events.clone())
    }

    /// The command has ended: its objects go (late calls get "Invalid Object ID").
    pub fn finish_command(&self, command_id: &str) -> Option<mpsc::Sender<CommandEvent>> {
        let running = self.commands.lock().remove(command_id)?;
        self.forget(&running.objects);
        Some(running.events)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        // A permit: the reader may be busy with a message right now.
        self.close_now.notify_one();
    }

    /// The connection is gone: waiters fail, running commands are lost (the
    /// worker kills them when its connection drops).
    pub fn fail_all(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.pending.lock().clear();
        self.objects.lock().clear();
        let commands: Vec<_> = self.commands.lock().drain().collect();
        for (_, running) in commands {
            let _ = running.events.try_send(CommandEvent::Lost);
        }
    }
}

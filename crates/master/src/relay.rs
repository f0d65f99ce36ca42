//! Control across masters: a stop, pause, unpause, graceful stop or kill
//! asked through one master, for a build or worker on another, is carried
//! by the store's notices (PostgreSQL `NOTIFY`); the owning master acts
//! and answers, and the asking one reports the outcome. What must outlive
//! a missed notice (a worker's pause) is in the store already: a notice
//! only makes it take effect now.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cascade_store::{Channel, Store, StoreError};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use crate::runner::Runner;
use crate::workers::Registry;

/// How long an asking master waits for the answer.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// What one master asks another to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Stop a build running there.
    StopBuild {
        /// The build.
        build_id: i64,
    },
    /// Pause (or unpause) a worker connected there.
    PauseWorker {
        /// The worker's name.
        worker: String,
        /// Pause or unpause.
        paused: bool,
    },
    /// Shut a worker down once idle.
    StopWorker {
        /// The worker's name.
        worker: String,
    },
    /// Drop a worker's connection.
    KillWorker {
        /// The worker's name.
        worker: String,
    },
}

/// The owning master's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// Whether it did it.
    pub ok: bool,
    /// What it says.
    pub message: String,
}

/// What crosses the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Message {
    Ask { id: String, from: i64, to: i64, request: Request },
    Answer { id: String, to: i64, answer: Answer },
}

/// Why no answer came.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The request could not be sent.
    #[error("could not reach the other masters: {0}")]
    Store(#[from] StoreError),
    /// Nobody answered in time.
    #[error("master {0} did not answer within {ANSWER_WITHIN:?} (is it running?)")]
    NoAnswer(i64),
}

/// One master's end of the relay.
pub struct Relay {
    /// Where notices go.
    pub store: Store,
    /// This master.
    pub master_id: i64,
    waiting: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
}

impl Relay {
    /// The relay of master `master_id`.
    pub fn new(store: Store, master_id: i64) -> Relay {
        Relay { store, master_id, waiting: Mutex::new(HashMap::new()) }
    }

    /// Asks master `to` to do `request`, and waits for its answer.
    pub async fn ask(&self, to: i64, request: Request) -> Result<Answer, RelayError> {
        let id = uuid::Uuid::new_v4().to_string();
        let (reply, answer) = oneshot::channel();
        self.waiting.lock().insert(id.clone(), reply);
        // Forgotten however this ends, a caller that gave up included.
        let _forget = Forget { relay: self, id: id.clone() };
        let message = Message::Ask { id, from: self.master_id, to, request };
        self.send(&message).await?;
        let answer = tokio::time::timeout(ANSWER_WITHIN, answer).await.ok().and_then(Result::ok);
        answer.ok_or(RelayError::NoAnswer(to))
    }

    async fn send(&self, message: &Message) -> Result<(), StoreError> {
        let payload = serde_json::to_string(message).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.store.notify(Channel::Control, &payload).await
    }

    /// Answers what other masters ask of this one, and hands answers to
    /// those waiting here, until `stopped`.
    pub async fn run(
        self: Arc<Self>,
        runner: Arc<Runner>,
        registry: Arc<Registry>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let mut notices = self.store.notices();
        loop {
            let notice = tokio::select! {
                heard = notices.recv() => heard,
                _ = stopped.changed() => return,
            };
            let notice = match notice {
                Ok(n) if n.channel == Channel::Control => n,
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "control notices came faster than they were read");
                    continue;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            match serde_json::from_str::<Message>(&notice.payload) {
                Ok(Message::Ask { id, from, to, request }) if to == self.master_id => {
                    let answer = act(&runner, &registry, &request);
                    tracing::info!(from_master = from, request = ?request, ok = answer.ok, "asked by another master");
                    // Sent aside, so answers for this master's callers are read meanwhile.
                    let relay = self.clone();
                    tokio::spawn(async move {
                        if let Err(e) = relay.send(&Message::Answer { id, to: from, answer }).await {
                            tracing::warn!(error = %e, "could not answer another master");
                        }
                    });
                }
                Ok(Message::Answer { id, to, answer }) if to == self.master_id => {
                    if let Some(waiting) = self.waiting.lock().remove(&id) {
                        let _ = waiting.send(answer);
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "an unreadable control notice"),
            }
        }
    }
}

/// Removes a waiter from the relay when its `ask` ends.
struct Forget<'a> {
    relay: &'a Relay,
    id: String,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.relay.waiting.lock().remove(&self.id);
    }
}

/// Does what was asked, on this master (for a caller here, or another master).
pub fn act(runner: &Runner, registry: &Arc<Registry>, request: &Request) -> Answer {
    let done = |message: &str| Answer { ok: true, message: message.into() };
    let refused = |message: String| Answer { ok: false, message };
    let worker = |name: &str| registry.get(name).ok_or_else(|| refused(format!("worker {name} is not connected here")));
    match request {
        Request::StopBuild { build_id } => match runner.stop_build(*build_id) {
            true => done("stopping"),
            false => refused(format!("build {build_id} does not run here")),
        },
        Request::PauseWorker { worker: name, paused } => match worker(name) {
            Ok(handle) => {
                handle.paused.store(*paused, std::sync::atomic::Ordering::SeqCst);
                if !paused {
                    runner.nudge();
                }
                done(if *paused { "paused" } else { "unpaused" })
            }
            Err(no) => no,
        },
        Request::StopWorker { worker: name } => match worker(name) {
            Ok(handle) => {
                registry.drain_then_shut_down(handle);
                done("shutting down once idle")
            }
            Err(no) => no,
        },
        Request::KillWorker { worker: name } => match worker(name) {
            Ok(handle) => {
                handle.conn.close();
                done("disconnected")
            }
            Err(no) => no,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_back_as_they_were_sent() {
        let ask = Message::Ask {
            id: "1".into(),
            from: 1,
            to: 2,
            request: Request::PauseWorker { worker: "w1".into(), paused: true },
        };
        let text = serde_json::to_string(&ask).expect("json");
        assert_eq!(
            text,
            r#"{"kind":"ask","id":"1","from":1,"to":2,"request":{"op":"pause_worker","worker":"w1","paused":true}}"#
        );
        assert_eq!(serde_json::from_str::<Message>(&text).expect("back"), ask);
        assert!(serde_json::from_str::<Message>(r#"{"kind":"ask","id":"1"}"#).is_err(), "malformed is an error");
    }
}

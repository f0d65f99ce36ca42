//! The Buildbot facade: a logged-in PB worker as a [`WorkerConnection`].
//! Commands go to the builder's WorkerForBuilder with PB's spellings; the
//! worker's calls on command, writer and reader objects come back as
//! [`CommandEvent`]s (`buildbot-pb.md` §5).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cascade_protocol::pb::Value;
use cascade_protocol::pb::commands::{TransferObject, to_pb};
use tokio::sync::mpsc;

use super::broker::{Broker, Object, RunningCommand};
use crate::workers::{BoxFuture, CommandEvent, WorkerConnection, WorkerError};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub struct PbWorker {
    pub worker: String,
    pub broker: Arc<Broker>,
    /// The worker's bot (the login's "mind").
    pub bot: i64,
    /// Builder name → its WorkerForBuilder on the worker (a reload's
    /// `setBuilderList` replaces it).
    pub builders: parking_lot::Mutex<HashMap<String, i64>>,
}

impl PbWorker {
    pub async fn print(&self, message: &str) -> Result<(), WorkerError> {
        let kwargs = vec![("message".to_string(), Value::str(message))];
        self.broker.call(self.bot, "print", vec![], kwargs, REQUEST_TIMEOUT).await.map(|_| ())
    }

    fn builder_of(&self, command_id: &str) -> Option<String> {
        self.broker.commands.lock().get(command_id).map(|r| r.builder.clone())
    }
}

impl WorkerConnection for PbWorker {
    fn start_command<'a>(
        &'a self,
        builder: &'a str,
        command_id: &'a str,
        command_name: &'a str,
        args: serde_json::Value,
    ) -> BoxFuture<'a, Result<mpsc::Receiver<CommandEvent>, WorkerError>> {
        Box::pin(async move {
            if self.broker.is_closed() {
                return Err(WorkerError::Gone);
            }
            let command = to_pb(command_name, &args).map_err(WorkerError::Refused)?;
            let wfb = *self
                .builders
                .lock()
                .get(builder)
                .ok_or_else(|| WorkerError::Refused(format!("builder {builder} is not set up on this worker")))?;
            let (tx, rx) = mpsc::channel(64);
            let command_ref = self.broker.register(Object::Command(command_id.to_string()));
            let transfer_ref = command.transfer.map(|t| {
                self.broker.register(match t {
                    TransferObject::Writer => Object::Writer(command_id.to_string()),
                    TransferObject::Reader => Object::Reader(command_id.to_string()),
                })
            });
            {
                let mut commands = self.broker.commands.lock();
                // A second command on a builder would silently kill the first
                // on the worker: refuse it here instead.
                if commands.values().any(|r| r.builder == builder) {
                    drop(commands);
                    self.broker.forget(&[Some(command_ref), transfer_ref].into_iter().flatten().collect::<Vec<_>>());
                    return Err(WorkerError::Refused(format!("builder {builder} is already running a command")));
                }
                let objects = [Some(command_ref), transfer_ref].into_iter().flatten().collect();
                commands.insert(
                    command_id.to_string(),
                    RunningCommand { events: tx, builder: builder.to_string(), objects },
                );
            }
            let call_args = vec![
                Value::Remote(command_ref),
                Value::str(command_id),
                Value::str(command.name),
                command.args_value(transfer_ref),
            ];
            // Updates can arrive before the acknowledgement: never wait for it
            // here. A refusal ends the command instead.
            let ack = match self.broker.call_start(wfb, "startCommand", call_args, vec![]).await {
                Ok(ack) => ack,
                Err(e) => {
                    self.broker.finish_command(command_id);
                    return Err(e);
                }
            };
            let (broker, worker, id) = (self.broker.clone(), self.worker.clone(), command_id.to_string());
            tokio::spawn(async move {
                let error = match tokio::time::timeout(REQUEST_TIMEOUT, ack).await {
                    Ok(Ok(Ok(_))) => return,
                    Ok(Ok(Err(failure))) => failure.to_string(),
                    Ok(Err(_)) => return, // the connection is gone: the command gets Lost
                    Err(_) => "the worker did not acknowledge the command".to_string(),
                };
                tracing::warn!(%worker, command = %id, %error, "the worker refused a command");
                if let Some(tx) = broker.finish_command(&id) {
                    let _ = tx.send(CommandEvent::Complete { error: Some(error) }).await;
                }
            });
            Ok(rx)
        })
    }

    fn interrupt<'a>(&'a self, command_id: &'a str, why: &'a str) -> BoxFuture<'a, Result<(), WorkerError>> {
        Box::pin(async move {
            // PB interrupts whatever runs on the builder; only ask while ours does.
            let Some(builder) = self.builder_of(command_id) else { return Ok(()) };
            let Some(wfb) = self.builders.lock().get(&builder).copied() else { return Ok(()) };
            let args = vec![Value::str(command_id), Value::str(why)];
            self.broker.call(wfb, "interruptCommand", args, vec![], REQUEST_TIMEOUT).await.map(|_| ())
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), WorkerError>> {
        Box::pin(self.print("ping"))
    }

    fn protocol(&self) -> &'static str {
        "pb"
    }

    fn set_builders<'a>(&'a self, builders: &'a [String]) -> BoxFuture<'a, Result<(), WorkerError>> {
        Box::pin(async move {
            let names: Vec<&str> = builders.iter().map(String::as_str).collect();
            let wfbs = super::set_builder_list(&self.broker, self.bot, &names).await.map_err(WorkerError::Refused)?;
            *self.builders.lock() = wfbs;
            Ok(())
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, Result<(), WorkerError>> {
        Box::pin(
            async move { self.broker.call(self.bot, "shutdown", vec![], vec![], REQUEST_TIMEOUT).await.map(|_| ()) },
        )
    }

    fn close(&self) {
        self.broker.close();
    }

    fn is_closed(&self) -> bool {
        self.broker.is_closed()
    }
}

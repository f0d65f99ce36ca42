//! Running one remote command and turning its events into log lines and
//! an end state.

use std::sync::Arc;

use cascade_model::outcome::CommandEnd;
use cascade_protocol::UpdateEntry;
use regex::Regex;
use tokio::sync::watch;

use super::log::LogWriter;
use crate::workers::{CommandEvent, WorkerError, WorkerHandle};

/// Most stdout kept when a command's output is wanted (e.g. `git rev-parse`).
const CAPTURE_LIMIT: usize = 1 << 20;

#[derive(Debug, Default)]
pub struct CommandResult {
    pub end: CommandEnd,
    /// The worker went away while it ran.
    pub lost: bool,
    pub stdout: String,
    pub stat: Option<Vec<i64>>,
    pub failure_reason: Option<String>,
}

pub struct CommandRun<'a> {
    pub worker: &'a Arc<WorkerHandle>,
    pub builder: &'a str,
    pub command_id: String,
    pub name: &'a str,
    pub args: serde_json::Value,
    pub warning_pattern: Option<&'a Regex>,
    pub capture_stdout: bool,
}

impl CommandRun<'_> {
    pub async fn run(
        mut self,
        log: &mut LogWriter,
        stop: &mut watch::Receiver<bool>,
        mut transfer: Option<&mut dyn super::upload::Transfer>,
    ) -> Result<CommandResult, cascade_store::StoreError> {
        let mut result = CommandResult::default();
        let args = std::mem::take(&mut self.args);
        let mut events = match self.worker.conn.start_command(self.builder, &self.command_id, self.name, args).await {
            Ok(rx) => rx,
            Err(WorkerError::Gone) => {
                result.lost = true;
                return Ok(result);
            }
            Err(e) => {
                log.add('h', &format!("{} could not start: {e}", self.name)).await?;
                result.end.error = Some(e.to_string());
                return Ok(result);
            }
        };
        // A stop interrupts the command running when it comes (or this one,
        // if it came just before); it never reaches steps started later
        // with a fresh switch (always_run clean-ups).
        let mut interrupted = *stop.borrow();
        if interrupted {
            let _ = self.worker.conn.interrupt(&self.command_id, "the build was stopped").await;
        }
        let mut listening = true;
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(CommandEvent::Output(entries)) => {
                        for entry in entries {
                            self.absorb(entry, log, &mut result).await?;
                        }
                    }
                    Some(CommandEvent::Upload(op, reply)) => {
                        tracing::trace!(command = %self.command_id, "upload event");
                        let answer = match transfer.as_deref_mut() {
                            Some(t) => t.upload(op),
                            None => Err("this step takes no upload".to_string()),
                        };
                        if let Err(e) = &answer {
                            log.add('h', &format!("upload refused: {e}")).await?;
                        }
                        let _ = reply.send(answer);
                    }
                    Some(CommandEvent::Read(length, reply)) => {
                        let answer = match transfer.as_deref_mut() {
                            Some(t) => t.read(length),
                            None => Err("this step serves no download".to_string()),
                        };
                        let _ = reply.send(answer);
                    }
                    Some(CommandEvent::ReadClose(reply)) => {
                        let answer = match transfer.as_deref_mut() {
                            Some(t) => t.close_read(),
                            None => Err("this step serves no download".to_string()),
                        };
                        let _ = reply.send(answer);
                    }
                    Some(CommandEvent::Complete { error }) => {
                        if let Some(e) = &error {
                            log.add('h', &format!("the worker failed running {}: {e}", self.name)).await?;
                        }
                        result.end.error = error;
                        break;
                    }
                    Some(CommandEvent::Lost) | None => {
                        log.add('h', "the worker was lost while the command ran").await?;
                        result.lost = true;
                        break;
                    }
                },
                changed = stop.changed(), if listening && !interrupted => match changed {
                    Ok(()) if *stop.borrow() => {
                        interrupted = true;
                        log.add('h', "stopping: interrupting the command").await?;
                        let _ = self.worker.conn.interrupt(&self.command_id, "the build was stopped").await;
                    }
                    Ok(()) => {}
                    Err(_) => listening = false,
                },
            }
        }
        result.end.interrupted = interrupted;
        if let Some(rc) = result.end.rc {
            log.add('h', &format!("program finished with exit code {rc}")).await?;
        }
        Ok(result)
    }

    async fn absorb(
        &self,
        entry: UpdateEntry,
        log: &mut LogWriter,
        result: &mut CommandResult,
    ) -> Result<(), cascade_store::StoreError> {
        match entry {
            UpdateEntry::Stdout(text) => {
                self.count_warnings(&text, result);
                if self.capture_stdout && result.stdout.len() < CAPTURE_LIMIT {
                    result.stdout.push_str(&text);
                }
                log.add('o', &text).await?;
            }
            UpdateEntry::Stderr(text) => {
                self.count_warnings(&text, result);
                log.add('e', &text).await?;
            }
            UpdateEntry::Header(text) => log.add('h', &text).await?,
            UpdateEntry::Log(name, text) => log.add('o', &format!("[{name}] {}", text.trim_end_matches('\n'))).await?,
            UpdateEntry::Rc(rc) => result.end.rc = Some(rc),
            UpdateEntry::FailureReason(r) => result.failure_reason = Some(r),
            UpdateEntry::Stat(s) => result.stat = Some(s),
            UpdateEntry::Elapsed(_) | UpdateEntry::Files(_) | UpdateEntry::Other(..) => {}
        }
        Ok(())
    }

    fn count_warnings(&self, text: &str, result: &mut CommandResult) {
        if let Some(re) = self.warning_pattern {
            result.end.warnings += text.lines().filter(|l| re.is_match(l)).count() as u64;
        }
    }
}

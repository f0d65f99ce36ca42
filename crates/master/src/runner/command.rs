//! Running one remote command and turning its events into log lines and
//! an end state.

use std::sync::Arc;

use cascade_model::log::Stream;
use cascade_model::outcome::CommandEnd;
use cascade_protocol::UpdateEntry;
use regex::Regex;
use tokio::sync::watch;

use super::log::LogWriter;
use crate::workers::{CommandEvent, WorkerError, WorkerHandle};

const NO_DOWNLOAD: &str = "this step serves no download";

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

/// Whether a command's event ended it.
enum Flow {
    Go,
    Done,
}

impl CommandRun<'_> {
    /// Runs the command to its end: its output goes to `log`, a stop
    /// interrupts it, transfers go to `transfer`.
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
                log.header(&format!("{} could not start: {e}", self.name)).await?;
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
                event = events.recv() => {
                    if let Flow::Done = self.on_event(event, log, &mut result, transfer.as_deref_mut()).await? {
                        break;
                    }
                }
                changed = stop.changed(), if listening && !interrupted => match changed {
                    Ok(()) if *stop.borrow() => {
                        interrupted = true;
                        log.header("stopping: interrupting the command").await?;
                        let _ = self.worker.conn.interrupt(&self.command_id, "the build was stopped").await;
                    }
                    Ok(()) => {}
                    Err(_) => listening = false,
                },
            }
        }
        result.end.interrupted = interrupted;
        if let Some(rc) = result.end.rc {
            log.header(&format!("program finished with exit code {rc}")).await?;
        }
        Ok(result)
    }

    async fn on_event<'d>(
        &self,
        event: Option<CommandEvent>,
        log: &mut LogWriter,
        result: &mut CommandResult,
        transfer: Option<&mut (dyn super::upload::Transfer + 'd)>,
    ) -> Result<Flow, cascade_store::StoreError> {
        match event {
            Some(CommandEvent::Output(entries)) => {
                for entry in entries {
                    self.absorb(entry, log, result).await?;
                }
            }
            Some(CommandEvent::Upload(op, reply)) => {
                let answer = transfer.map_or_else(|| Err("this step takes no upload".to_string()), |t| t.upload(op));
                if let Err(e) = &answer {
                    log.header(&format!("upload refused: {e}")).await?;
                }
                let _ = reply.send(answer);
            }
            Some(CommandEvent::Read(length, reply)) => {
                let _ = reply.send(transfer.map_or_else(|| Err(NO_DOWNLOAD.to_string()), |t| t.read(length)));
            }
            Some(CommandEvent::ReadClose(reply)) => {
                let _ = reply
                    .send(transfer.map_or_else(|| Err(NO_DOWNLOAD.to_string()), super::upload::Transfer::close_read));
            }
            Some(CommandEvent::Complete { error }) => {
                if let Some(e) = &error {
                    log.header(&format!("the worker failed running {}: {e}", self.name)).await?;
                }
                result.end.error = error;
                return Ok(Flow::Done);
            }
            Some(CommandEvent::Lost) | None => {
                log.header("the worker was lost while the command ran").await?;
                result.lost = true;
                return Ok(Flow::Done);
            }
        }
        Ok(Flow::Go)
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
                log.add(Stream::Stdout, &text).await?;
            }
            UpdateEntry::Stderr(text) => {
                self.count_warnings(&text, result);
                log.add(Stream::Stderr, &text).await?;
            }
            UpdateEntry::Header(text) => log.header(&text).await?,
            UpdateEntry::Log(name, text) => {
                log.add(Stream::Stdout, &format!("[{name}] {}", text.trim_end_matches('\n'))).await?;
            }
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

//! The operations of `msgpack_experimental_v7`, named once, and the
//! requests each side sends, parsed from their frames into types.

use rmpv::Value;

use super::{Frame, UpdateEntry, parse_update};
use crate::transfer::UploadOp;

/// Every `op` either side sends (besides `response`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// master → worker: a line for the worker's log.
    Print,
    /// Either way: a liveness check.
    Keepalive,
    /// master → worker: what the worker says about itself.
    GetWorkerInfo,
    /// master → worker: output buffering.
    SetWorkerSettings,
    /// master → worker: run a command.
    StartCommand,
    /// master → worker: stop a running command.
    InterruptCommand,
    /// master → worker: exit.
    Shutdown,
    /// worker → master: a command's output and status.
    Update,
    /// worker → master: a command ended.
    Complete,
    /// worker → master: a piece of an uploaded file.
    UploadFileWrite,
    /// worker → master: the uploaded file is whole.
    UploadFileClose,
    /// worker → master: the uploaded file's times.
    UploadFileUtime,
    /// worker → master: a piece of an uploaded folder's tar stream.
    UploadDirectoryWrite,
    /// worker → master: the tar stream is whole; unpack it.
    UploadDirectoryUnpack,
    /// worker → master: the next piece of a download.
    ReadFile,
    /// worker → master: the download is done.
    ReadFileClose,
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 16] = [
        Op::Print,
        Op::Keepalive,
        Op::GetWorkerInfo,
        Op::SetWorkerSettings,
        Op::StartCommand,
        Op::InterruptCommand,
        Op::Shutdown,
        Op::Update,
        Op::Complete,
        Op::UploadFileWrite,
        Op::UploadFileClose,
        Op::UploadFileUtime,
        Op::UploadDirectoryWrite,
        Op::UploadDirectoryUnpack,
        Op::ReadFile,
        Op::ReadFileClose,
    ];

    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Op::Print => "print",
            Op::Keepalive => "keepalive",
            Op::GetWorkerInfo => "get_worker_info",
            Op::SetWorkerSettings => "set_worker_settings",
            Op::StartCommand => "start_command",
            Op::InterruptCommand => "interrupt_command",
            Op::Shutdown => "shutdown",
            Op::Update => "update",
            Op::Complete => "complete",
            Op::UploadFileWrite => "update_upload_file_write",
            Op::UploadFileClose => "update_upload_file_close",
            Op::UploadFileUtime => "update_upload_file_utime",
            Op::UploadDirectoryWrite => "update_upload_directory_write",
            Op::UploadDirectoryUnpack => "update_upload_directory_unpack",
            Op::ReadFile => "update_read_file",
            Op::ReadFileClose => "update_read_file_close",
        }
    }

    /// The operation with this wire name.
    pub fn parse(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }
}

/// Why a request was refused; the text is what the peer is answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// An operation nobody defines (Buildbot's own wording).
    #[error("Command {0} does not exist.")]
    Unknown(String),
    /// An operation the other side sends, not this one.
    #[error("{0}: this side does not serve that operation")]
    WrongWay(&'static str),
    /// A known operation with missing or mistyped fields.
    #[error("{op}: {reason}")]
    Malformed {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        reason: String,
    },
}

fn malformed(op: Op, reason: impl Into<String>) -> RequestError {
    RequestError::Malformed { op: op.name(), reason: reason.into() }
}

fn text_field(op: Op, fields: &[(String, Value)], name: &str) -> Result<String, RequestError> {
    Frame::field(fields, name)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| malformed(op, format!("needs `{name}`")))
}

/// What a worker asks of the master.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerRequest {
    /// Are you there?
    Keepalive,
    /// A running command's output and status.
    Update {
        /// The command.
        command_id: String,
        /// What it reports.
        entries: Vec<UpdateEntry>,
    },
    /// A command ended; `error` is set when it raised on the worker.
    Complete {
        /// The command.
        command_id: String,
        /// The worker-side failure, if any.
        error: Option<String>,
    },
    /// A piece of an upload.
    Upload {
        /// The command doing the upload.
        command_id: String,
        /// The piece.
        piece: UploadOp,
    },
    /// The next `length` bytes of a download.
    Read {
        /// The command doing the download.
        command_id: String,
        /// Bytes wanted.
        length: usize,
    },
    /// The download is done.
    ReadClose {
        /// The command doing the download.
        command_id: String,
    },
}

impl WorkerRequest {
    /// Parses a request frame's operation and fields.
    pub fn parse(op: &str, fields: &[(String, Value)]) -> Result<WorkerRequest, RequestError> {
        let op = Op::parse(op).ok_or_else(|| RequestError::Unknown(op.to_string()))?;
        if op == Op::Keepalive {
            return Ok(WorkerRequest::Keepalive);
        }
        let command_id = match op {
            Op::Print
            | Op::Keepalive
            | Op::GetWorkerInfo
            | Op::SetWorkerSettings
            | Op::StartCommand
            | Op::InterruptCommand
            | Op::Shutdown => return Err(RequestError::WrongWay(op.name())),
            _ => text_field(op, fields, "command_id")?,
        };
        let args = Frame::field(fields, "args");
        Ok(match op {
            Op::Update => {
                let args = args.ok_or_else(|| malformed(op, "needs `args`"))?;
                WorkerRequest::Update { command_id, entries: parse_update(args).map_err(|e| malformed(op, e))? }
            }
            Op::Complete => WorkerRequest::Complete { command_id, error: completion_error(args) },
            Op::ReadFile => {
                let length = Frame::field(fields, "length").and_then(Value::as_u64).unwrap_or(0);
                WorkerRequest::Read { command_id, length: usize::try_from(length).unwrap_or(usize::MAX) }
            }
            Op::ReadFileClose => WorkerRequest::ReadClose { command_id },
            _ => WorkerRequest::Upload { command_id, piece: upload_piece(op, fields)? },
        })
    }
}

/// `complete`'s `args`: nil when the command ran, else what it raised.
fn completion_error(args: Option<&Value>) -> Option<String> {
    match args {
        None | Some(Value::Nil) => None,
        Some(v) => Some(v.as_str().map_or_else(|| v.to_string(), str::to_string)),
    }
}

fn upload_piece(op: Op, fields: &[(String, Value)]) -> Result<UploadOp, RequestError> {
    match op {
        Op::UploadFileWrite | Op::UploadDirectoryWrite => match Frame::field(fields, "args") {
            Some(Value::Binary(b)) => Ok(UploadOp::Write(b.clone())),
            // Old msgpack versions send bytes as str: take the raw bytes either way.
            Some(Value::String(s)) => Ok(UploadOp::Write(s.as_bytes().to_vec())),
            _ => Err(malformed(op, "needs `args` bytes")),
        },
        Op::UploadFileClose => Ok(UploadOp::Close),
        Op::UploadDirectoryUnpack => Ok(UploadOp::Unpack),
        _ => {
            let time = |k| Frame::field(fields, k).and_then(|v| v.as_f64().or_else(|| v.as_i64().map(|i| i as f64)));
            time("access_time")
                .zip(time("modified_time"))
                .map(|(a, m)| UploadOp::Utime(a, m))
                .ok_or_else(|| malformed(op, "needs `access_time` and `modified_time`"))
        }
    }
}

/// What the master asks of a worker.
#[derive(Debug, Clone, PartialEq)]
pub enum MasterRequest {
    /// Log this line.
    Print {
        /// The line.
        message: String,
    },
    /// Are you there?
    Keepalive,
    /// Say who you are.
    GetWorkerInfo,
    /// Buffer output like this (`args` as sent).
    SetWorkerSettings {
        /// The settings map.
        args: Value,
    },
    /// Run a command.
    StartCommand {
        /// The command's id, unique for the connection.
        command_id: String,
        /// `shell`, `upload_file`, `mkdir`, ...
        command_name: String,
        /// Its arguments.
        args: Value,
    },
    /// Stop a running command.
    InterruptCommand {
        /// The command.
        command_id: String,
        /// Why, for the log.
        why: String,
    },
    /// Exit.
    Shutdown,
}

impl MasterRequest {
    /// Parses a request frame's operation and fields.
    pub fn parse(op: &str, fields: &[(String, Value)]) -> Result<MasterRequest, RequestError> {
        let op = Op::parse(op).ok_or_else(|| RequestError::Unknown(op.to_string()))?;
        let field = |name: &str| Frame::field(fields, name);
        Ok(match op {
            Op::Print => {
                MasterRequest::Print { message: field("message").and_then(Value::as_str).unwrap_or("").to_string() }
            }
            Op::Keepalive => MasterRequest::Keepalive,
            Op::GetWorkerInfo => MasterRequest::GetWorkerInfo,
            Op::SetWorkerSettings => MasterRequest::SetWorkerSettings {
                args: field("args")
                    .cloned()
                    .ok_or_else(|| malformed(op, "message did not contain obligatory settings for worker"))?,
            },
            Op::StartCommand => MasterRequest::StartCommand {
                command_id: text_field(op, fields, "command_id")?,
                command_name: text_field(op, fields, "command_name")?,
                args: field("args").cloned().unwrap_or(Value::Nil),
            },
            Op::InterruptCommand => MasterRequest::InterruptCommand {
                command_id: field("command_id").and_then(Value::as_str).unwrap_or("").to_string(),
                why: field("why").and_then(Value::as_str).unwrap_or("").to_string(),
            },
            Op::Shutdown => MasterRequest::Shutdown,
            other => return Err(RequestError::WrongWay(other.name())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn names_round_trip() {
        for op in Op::ALL {
            assert_eq!(Op::parse(op.name()), Some(op));
        }
        assert_eq!(Op::parse("response"), None);
    }

    #[test]
    fn worker_requests_parse_into_types() {
        let id = ("command_id", Value::from("7"));
        assert_eq!(WorkerRequest::parse("keepalive", &[]), Ok(WorkerRequest::Keepalive));
        assert_eq!(
            WorkerRequest::parse("update", &fields(&[id.clone(), ("args", Value::Array(vec![]))])),
            Ok(WorkerRequest::Update { command_id: "7".into(), entries: vec![] })
        );
        assert_eq!(
            WorkerRequest::parse("complete", &fields(&[id.clone(), ("args", Value::from("boom"))])),
            Ok(WorkerRequest::Complete { command_id: "7".into(), error: Some("boom".into()) })
        );
        assert_eq!(
            WorkerRequest::parse("update_upload_file_write", &fields(&[id.clone(), ("args", Value::Binary(vec![1]))])),
            Ok(WorkerRequest::Upload { command_id: "7".into(), piece: UploadOp::Write(vec![1]) })
        );
        let utime = fields(&[id.clone(), ("access_time", Value::from(1)), ("modified_time", Value::F64(2.5))]);
        assert_eq!(
            WorkerRequest::parse("update_upload_file_utime", &utime),
            Ok(WorkerRequest::Upload { command_id: "7".into(), piece: UploadOp::Utime(1.0, 2.5) })
        );
        assert_eq!(
            WorkerRequest::parse("update_read_file", &fields(&[id.clone(), ("length", Value::from(10))])),
            Ok(WorkerRequest::Read { command_id: "7".into(), length: 10 })
        );
        assert_eq!(
            WorkerRequest::parse("frobnicate", &[]).map_err(|e| e.to_string()),
            Err("Command frobnicate does not exist.".to_string())
        );
        assert!(matches!(WorkerRequest::parse("update", &[]), Err(RequestError::Malformed { .. })));
        assert!(matches!(WorkerRequest::parse("update", &fields(&[id])), Err(RequestError::Malformed { .. })));
        assert_eq!(WorkerRequest::parse("start_command", &[]), Err(RequestError::WrongWay("start_command")));
    }

    #[test]
    fn master_requests_parse_into_types() {
        let start = fields(&[
            ("command_id", Value::from("1")),
            ("command_name", Value::from("shell")),
            ("args", Value::Map(vec![])),
        ]);
        assert_eq!(
            MasterRequest::parse("start_command", &start),
            Ok(MasterRequest::StartCommand {
                command_id: "1".into(),
                command_name: "shell".into(),
                args: Value::Map(vec![])
            })
        );
        assert!(MasterRequest::parse("set_worker_settings", &[]).is_err());
        assert_eq!(MasterRequest::parse("shutdown", &[]), Ok(MasterRequest::Shutdown));
        assert_eq!(MasterRequest::parse("update", &[]), Err(RequestError::WrongWay("update")));
    }
}

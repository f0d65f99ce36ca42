//! Frames and messages of `msgpack_experimental_v7` (see
//! `shared/protocols/buildbot-msgpack.md` for the wire facts).

mod op;

use rmpv::Value;

pub use op::{MasterRequest, Op, RequestError, WorkerRequest};

/// Deepest nesting accepted from a peer; real messages nest four levels.
const MAX_DEPTH: usize = 32;

/// Why a peer's bytes are not a message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtocolError {
    /// The bytes are not one well-formed msgpack value (or nest too deep).
    #[error("not msgpack: {0}")]
    Malformed(String),
    /// More bytes follow the value.
    #[error("trailing bytes after the msgpack value")]
    Trailing,
    /// The value is not a map.
    #[error("a message must be a map")]
    NotAMap,
    /// `op` or `seq_number` is missing or of the wrong type.
    #[error("a message needs `op` and `seq_number`")]
    MissingHeader,
    /// A message's field is missing or of the wrong type.
    #[error("message {op:?}: {reason}")]
    BadField {
        /// The message's `op`.
        op: String,
        /// What is wrong with its fields.
        reason: String,
    },
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A request from the peer; it must be answered with its `seq`.
    Request {
        /// The operation's name.
        op: String,
        /// The sender's number for it; the response repeats it.
        seq: i64,
        /// Every other field, in the order sent (`result` last, if present).
        fields: Vec<(String, Value)>,
    },
    /// The answer to one of our own requests.
    Response {
        /// The number of the request answered.
        seq: i64,
        /// Its result, or the peer's error message when `is_exception` is present.
        result: Result<Value, String>,
    },
}

fn str_key(k: &Value) -> Option<&str> {
    k.as_str()
}

impl Frame {
    /// Decodes one WebSocket message; garbage is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Frame, ProtocolError> {
        let mut rd = bytes;
        let value = rmpv::decode::read_value_with_max_depth(&mut rd, MAX_DEPTH)
            .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
        if !rd.is_empty() {
            return Err(ProtocolError::Trailing);
        }
        let Value::Map(entries) = value else { return Err(ProtocolError::NotAMap) };
        let mut op: Option<String> = None;
        let mut seq: Option<i64> = None;
        let mut result = Value::Nil;
        let mut is_exception = false;
        let mut fields = Vec::new();
        for (k, v) in entries {
            let Some(key) = str_key(&k) else { continue };
            match key {
                "op" => op = v.as_str().map(str::to_string),
                "seq_number" => seq = v.as_i64(),
                // Buildbot tests for the key's presence, not its value.
                "is_exception" => is_exception = true,
                "result" => result = v,
                _ => fields.push((key.to_string(), v)),
            }
        }
        let (Some(op), Some(seq)) = (op, seq) else { return Err(ProtocolError::MissingHeader) };
        if op == "response" {
            let result = if is_exception {
                Err(match result {
                    Value::String(s) => s.into_str().unwrap_or_else(|| "(invalid UTF-8)".into()),
                    other => other.to_string(),
                })
            } else {
                Ok(result)
            };
            return Ok(Frame::Response { seq, result });
        }
        if is_exception || result != Value::Nil {
            fields.push(("result".into(), result));
        }
        Ok(Frame::Request { op, seq, fields })
    }

    /// Encodes as one msgpack map, `op` first and `seq_number` last.
    pub fn encode(&self) -> Vec<u8> {
        let map = match self {
            Frame::Request { op, seq, fields } => {
                let mut m = Vec::with_capacity(fields.len() + 2);
                m.push((Value::from("op"), Value::from(op.as_str())));
                for (k, v) in fields {
                    m.push((Value::from(k.as_str()), v.clone()));
                }
                m.push((Value::from("seq_number"), Value::from(*seq)));
                m
            }
            Frame::Response { seq, result } => {
                let mut m =
                    vec![(Value::from("op"), Value::from("response")), (Value::from("seq_number"), Value::from(*seq))];
                match result {
                    Ok(v) => m.push((Value::from("result"), v.clone())),
                    // Never `is_exception: false`: the key's presence is what counts.
                    Err(msg) => {
                        m.push((Value::from("result"), Value::from(msg.as_str())));
                        m.push((Value::from("is_exception"), Value::Boolean(true)));
                    }
                }
                m
            }
        };
        let mut buf = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = rmpv::encode::write_value(&mut buf, &Value::Map(map));
        buf
    }

    /// The value of the field `name`, if present.
    pub fn field<'a>(fields: &'a [(String, Value)], name: &str) -> Option<&'a Value> {
        fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

/// A master → worker request, before it gets its sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The operation.
    pub op: Op,
    /// Its fields, besides `op` and `seq_number`.
    pub fields: Vec<(String, Value)>,
}

impl Request {
    /// The frame to send, numbered `seq`.
    pub fn into_frame(self, seq: i64) -> Frame {
        Frame::Request { op: self.op.name().to_string(), seq, fields: self.fields }
    }

    /// Writes `message` to the worker's log.
    pub fn print(message: &str) -> Request {
        Request { op: Op::Print, fields: vec![("message".into(), Value::from(message))] }
    }

    /// A liveness check.
    pub fn keepalive() -> Request {
        Request { op: Op::Keepalive, fields: vec![] }
    }

    /// Asks the worker about itself (see `WorkerInfo`).
    pub fn get_worker_info() -> Request {
        Request { op: Op::GetWorkerInfo, fields: vec![] }
    }

    /// The worker's own defaults, except a short `buffer_timeout` so that
    /// output reaches the master (and the browser) within a fraction of a second.
    pub fn set_worker_settings(buffer_timeout_secs: f64) -> Request {
        let args = Value::Map(vec![
            (Value::from("newline_re"), Value::from(r"(\r\n|\r(?=.)|\033\[u|\033\[[0-9]+;[0-9]+[Hf]|\033\[2J|\x08+)")),
            (Value::from("max_line_length"), Value::from(4096)),
            (Value::from("buffer_timeout"), Value::F64(buffer_timeout_secs)),
            (Value::from("buffer_size"), Value::from(65536)),
        ]);
        Request { op: Op::SetWorkerSettings, fields: vec![("args".into(), args)] }
    }

    /// Runs `command_name` (`shell`, `stat`, ...) with `args`, its updates tagged `command_id`.
    pub fn start_command(command_id: &str, command_name: &str, args: Value) -> Request {
        Request {
            op: Op::StartCommand,
            fields: vec![
                ("command_id".into(), Value::from(command_id)),
                ("command_name".into(), Value::from(command_name)),
                ("args".into(), args),
            ],
        }
    }

    /// Stops the command `command_id`, giving `why` as the reason.
    pub fn interrupt_command(command_id: &str, why: &str) -> Request {
        Request {
            op: Op::InterruptCommand,
            fields: vec![("command_id".into(), Value::from(command_id)), ("why".into(), Value::from(why))],
        }
    }

    /// Tells the worker to exit.
    pub fn shutdown() -> Request {
        Request { op: Op::Shutdown, fields: vec![] }
    }
}

/// One `[key, value]` entry of an `update`.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateEntry {
    /// Standard output text.
    Stdout(String),
    /// Standard error text.
    Stderr(String),
    /// Text the worker writes about the command (what it runs, where, how it ended).
    Header(String),
    /// Output of a `logfiles` entry: (log name, text).
    Log(String, String),
    /// The command's exit code.
    Rc(i64),
    /// How long the command ran, in seconds.
    Elapsed(f64),
    /// Why the command failed, as the worker puts it (a timeout, say).
    FailureReason(String),
    /// File names, from a `glob` or `listdir` command.
    Files(Vec<String>),
    /// A `stat` command's result: Python's `os.stat` tuple.
    Stat(Vec<i64>),
    /// A key this master does not know; kept so nothing is silently lost.
    Other(String, Value),
}

/// `[text, [nl_index...], [timestamp...]]` → text. Indexes are Python code
/// point offsets; the text alone carries the lines.
fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Array(parts) => parts.first().and_then(|t| t.as_str()).map(str::to_string),
        Value::String(s) => s.as_str().map(str::to_string),
        _ => None,
    }
}

/// Parses an `update`'s `args`: an array of `[key, value]` pairs.
pub fn parse_update(args: &Value) -> Result<Vec<UpdateEntry>, String> {
    let Value::Array(items) = args else { return Err("update args must be an array".into()) };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(pair) = item else { return Err("an update entry must be [key, value]".into()) };
        let (Some(key), Some(value)) = (pair.first().and_then(|k| k.as_str()), pair.get(1)) else {
            return Err("an update entry must be [key, value]".into());
        };
        let bad = |what: &str| format!("update entry {key:?}: {what}");
        let entry = match key {
            "stdout" => UpdateEntry::Stdout(text_of(value).ok_or_else(|| bad("expected text"))?),
            "stderr" => UpdateEntry::Stderr(text_of(value).ok_or_else(|| bad("expected text"))?),
            "header" => UpdateEntry::Header(text_of(value).ok_or_else(|| bad("expected text"))?),
            "log" => {
                let Value::Array(parts) = value else { return Err(bad("expected [name, text]")) };
                let name = parts.first().and_then(|n| n.as_str()).ok_or_else(|| bad("expected a log name"))?;
                let text = parts.get(1).and_then(text_of).ok_or_else(|| bad("expected text"))?;
                UpdateEntry::Log(name.to_string(), text)
            }
            "rc" => UpdateEntry::Rc(value.as_i64().ok_or_else(|| bad("expected an integer"))?),
            "elapsed" => UpdateEntry::Elapsed(
                value.as_f64().or_else(|| value.as_i64().map(|i| i as f64)).ok_or_else(|| bad("expected a number"))?,
            ),
            "failure_reason" => {
                UpdateEntry::FailureReason(value.as_str().ok_or_else(|| bad("expected a string"))?.to_string())
            }
            "files" => {
                let Value::Array(files) = value else { return Err(bad("expected a list")) };
                UpdateEntry::Files(files.iter().filter_map(|f| f.as_str().map(str::to_string)).collect())
            }
            "stat" => {
                let Value::Array(fields) = value else { return Err(bad("expected a list")) };
                UpdateEntry::Stat(fields.iter().map(|f| f.as_i64().unwrap_or(0)).collect())
            }
            other => UpdateEntry::Other(other.to_string(), value.clone()),
        };
        out.push(entry);
    }
    Ok(out)
}

/// A JSON value as msgpack: how protocol-neutral command arguments travel
/// over this protocol. Strings stay str, integers stay integers.
pub fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::from(i),
            (_, Some(u), _) => Value::from(u),
            (_, _, Some(f)) => Value::F64(f),
            _ => Value::Nil,
        },
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(a) => Value::Array(a.iter().map(from_json).collect()),
        serde_json::Value::Object(o) => {
            Value::Map(o.iter().map(|(k, v)| (Value::from(k.as_str()), from_json(v))).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Value {
        Value::Array(vec![Value::from(s), Value::Array(vec![]), Value::Array(vec![])])
    }

    #[test]
    fn requests_round_trip_and_put_seq_number_last() {
        let frame = Request::start_command("3", "shell", Value::Map(vec![(Value::from("workdir"), Value::from("/w"))]))
            .into_frame(10);
        let bytes = frame.encode();
        assert_eq!(Frame::decode(&bytes).expect("decodes"), frame);
        let Value::Map(m) = rmpv::decode::read_value(&mut &bytes[..]).expect("msgpack") else { panic!("map") };
        assert_eq!(m.last().map(|(k, _)| k.as_str()), Some(Some("seq_number")));
    }

    #[test]
    fn responses_never_say_is_exception_false() {
        let ok = Frame::Response { seq: 4, result: Ok(Value::Nil) }.encode();
        let Value::Map(m) = rmpv::decode::read_value(&mut &ok[..]).expect("msgpack") else { panic!("map") };
        assert!(!m.iter().any(|(k, _)| k.as_str() == Some("is_exception")));
        assert_eq!(Frame::decode(&ok).expect("decodes"), Frame::Response { seq: 4, result: Ok(Value::Nil) });
        let err = Frame::Response { seq: 5, result: Err("Command frobnicate does not exist.".into()) }.encode();
        assert_eq!(
            Frame::decode(&err).expect("decodes"),
            Frame::Response { seq: 5, result: Err("Command frobnicate does not exist.".into()) }
        );
    }

    #[test]
    fn an_exception_key_with_any_value_is_an_exception() {
        let raw = Value::Map(vec![
            (Value::from("op"), Value::from("response")),
            (Value::from("seq_number"), Value::from(1)),
            (Value::from("result"), Value::from("boom")),
            (Value::from("is_exception"), Value::Boolean(false)),
        ]);
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, &raw).expect("encode");
        assert_eq!(Frame::decode(&buf).expect("decodes"), Frame::Response { seq: 1, result: Err("boom".into()) });
    }

    #[test]
    fn updates_parse_as_the_worker_sends_them() {
        // Shaped like the capture's update for `echo out-line; echo err-line >&2; exit 3`.
        let args = Value::Array(vec![
            Value::Array(vec![Value::from("header"), text("sh -c 'echo out-line'\n in dir /w (timeout 1200 secs)\n")]),
            Value::Array(vec![Value::from("stdout"), text("out-line\n")]),
            Value::Array(vec![Value::from("stderr"), text("err-line\n")]),
            Value::Array(vec![Value::from("rc"), Value::from(3)]),
            Value::Array(vec![Value::from("elapsed"), Value::F64(0.0426)]),
            Value::Array(vec![Value::from("log"), Value::Array(vec![Value::from("test.log"), text("x\n")])]),
            Value::Array(vec![Value::from("files"), Value::Array(vec![Value::from("a"), Value::from("b")])]),
            Value::Array(vec![Value::from("rc"), Value::from(-1)]),
            Value::Array(vec![Value::from("novel"), Value::from(1)]),
        ]);
        let entries = parse_update(&args).expect("parses");
        assert_eq!(entries[1], UpdateEntry::Stdout("out-line\n".into()));
        assert_eq!(entries[2], UpdateEntry::Stderr("err-line\n".into()));
        assert_eq!(entries[3], UpdateEntry::Rc(3));
        assert_eq!(entries[4], UpdateEntry::Elapsed(0.0426));
        assert_eq!(entries[5], UpdateEntry::Log("test.log".into(), "x\n".into()));
        assert_eq!(entries[6], UpdateEntry::Files(vec!["a".into(), "b".into()]));
        assert_eq!(entries[7], UpdateEntry::Rc(-1));
        assert!(matches!(entries[8], UpdateEntry::Other(ref k, _) if k == "novel"));
        assert!(parse_update(&Value::from(3)).is_err());
        assert!(parse_update(&Value::Array(vec![Value::from(3)])).is_err());
        assert!(parse_update(&Value::Array(vec![Value::Array(vec![Value::from("rc"), Value::from("x")])])).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(Frame::decode(b""), Err(ProtocolError::Malformed(_))));
        assert!(Frame::decode(&[0xc1]).is_err());
        assert!(matches!(Frame::decode(&[0x93, 1, 2, 3]), Err(ProtocolError::NotAMap)));
        assert!(matches!(Frame::decode(&[0x80]), Err(ProtocolError::MissingHeader)));
        let mut ok = Frame::Response { seq: 1, result: Ok(Value::Nil) }.encode();
        ok.push(0);
        assert_eq!(Frame::decode(&ok), Err(ProtocolError::Trailing));
        // 10,000 nested arrays: refused by depth, no stack overflow.
        let bomb = vec![0x91u8; 10_000];
        assert!(matches!(Frame::decode(&bomb), Err(ProtocolError::Malformed(_))));
        // An array claiming 4 billion elements in 5 bytes: no huge allocation.
        assert!(matches!(Frame::decode(&[0xdd, 0xff, 0xff, 0xff, 0xff]), Err(ProtocolError::Malformed(_))));
    }

    #[test]
    fn every_byte_string_up_to_three_bytes_decodes_or_errors() {
        for a in 0..=255u8 {
            for b in [0u8, 1, 0x7f, 0x80, 0x90, 0xa1, 0xc0, 0xcc, 0xd9, 0xff] {
                let _ = Frame::decode(&[a]);
                let _ = Frame::decode(&[a, b]);
                let _ = Frame::decode(&[0x81, a, b]);
            }
        }
    }
}

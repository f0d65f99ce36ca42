//! The commands a master can start, and the `update` stream they write.

mod fs;
mod shell;
mod transfer;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cascade_protocol::msgpack::Op;
use rmpv::Value;
use tokio::sync::watch;

use crate::session::Shared;

/// Output tuning from `set_worker_settings` (Buildbot's defaults).
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub max_line_length: usize,
    pub buffer_timeout: Duration,
    pub buffer_size: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { max_line_length: 4096, buffer_timeout: Duration::from_secs(5), buffer_size: 65536 }
    }
}

impl Settings {
    /// All four keys are required, as Buildbot's worker requires them.
    pub fn from_value(v: &Value) -> Option<Settings> {
        let Value::Map(m) = v else { return None };
        let get = |k: &str| m.iter().find(|(key, _)| key.as_str() == Some(k)).map(|(_, v)| v);
        get("newline_re")?;
        let max_line_length = get("max_line_length")?.as_u64()? as usize;
        let t = get("buffer_timeout")?;
        let buffer_timeout = t.as_f64().or_else(|| t.as_u64().map(|u| u as f64))?;
        let buffer_size = get("buffer_size")?.as_u64()? as usize;
        Some(Settings {
            max_line_length: max_line_length.max(80),
            buffer_timeout: Duration::from_secs_f64(buffer_timeout.clamp(0.0, 3600.0)),
            buffer_size: buffer_size.max(1024),
        })
    }
}

pub fn str_arg<'a>(args: &'a Value, key: &str) -> Option<&'a str> {
    arg(args, key).and_then(|v| v.as_str())
}

pub fn arg<'a>(args: &'a Value, key: &str) -> Option<&'a Value> {
    match args {
        Value::Map(m) => m.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v).filter(|v| !v.is_nil()),
        _ => None,
    }
}

pub fn paths_arg(args: &Value) -> Vec<String> {
    match arg(args, "paths") {
        Some(Value::Array(a)) => a.iter().filter_map(|p| p.as_str().map(str::to_string)).collect(),
        Some(Value::String(s)) => s.as_str().map(|s| vec![s.to_string()]).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Refuses a command whose required arguments are missing, before it starts
/// (the answer to `start_command` says so, as Buildbot's worker does).
pub fn check_args(name: &str, args: &Value) -> Result<(), String> {
    let missing = |what: &str| Err(format!("{name} is missing args: {what}"));
    match name {
        "shell" if arg(args, "workdir").is_none() => missing("workdir"),
        "shell" if arg(args, "command").is_none() => missing("command"),
        "mkdir" | "rmdir" if arg(args, "paths").is_none() => missing("paths"),
        "cpdir" if arg(args, "from_path").is_none() || arg(args, "to_path").is_none() => missing("from_path, to_path"),
        "stat" | "glob" | "listdir" | "rmfile" if arg(args, "path").is_none() => missing("path"),
        "upload_file" | "download_file" | "upload_directory"
            if arg(args, "path").is_none() || arg(args, "blocksize").is_none() =>
        {
            missing("path, blocksize")
        }
        _ => Ok(()),
    }
}

/// Buffers a command's `update` entries and sends them in batches: when
/// `buffer_size` bytes are waiting, `buffer_timeout` after the first, or at the end.
pub struct Emitter {
    shared: Arc<Shared>,
    command_id: String,
    pending: Vec<Value>,
    bytes: usize,
    since: Option<Instant>,
    pub settings: Settings,
}

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

impl Emitter {
    fn new(shared: Arc<Shared>, command_id: String) -> Emitter {
        let settings = *shared.settings.lock();
        Emitter { shared, command_id, pending: Vec::new(), bytes: 0, since: None, settings }
    }

    pub async fn entry(&mut self, key: &str, value: Value) {
        self.bytes += 20;
        self.pending.push(Value::Array(vec![Value::from(key), value]));
        self.since.get_or_insert_with(Instant::now);
        if self.bytes >= self.settings.buffer_size {
            self.flush().await;
        }
    }

    /// Whole lines of text on a stream (`stdout`, `stderr`, `header`), in
    /// Buildbot's `[text, [newline offsets], [timestamps]]` form.
    pub async fn text(&mut self, stream: &str, text: &str) {
        let mut text = text.to_string();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        let mut offsets = Vec::new();
        for (i, c) in text.chars().enumerate() {
            if c == '\n' {
                offsets.push(Value::from(i as u64));
            }
        }
        let stamp = now_secs();
        let stamps = vec![Value::F64(stamp); offsets.len()];
        self.bytes += text.len() + 16 * offsets.len();
        self.pending.push(Value::Array(vec![
            Value::from(stream),
            Value::Array(vec![Value::from(text), Value::Array(offsets), Value::Array(stamps)]),
        ]));
        self.since.get_or_insert_with(Instant::now);
        if self.bytes >= self.settings.buffer_size {
            self.flush().await;
        }
    }

    /// When the oldest waiting entry must go out.
    pub fn deadline(&self) -> Option<Instant> {
        self.since.map(|t| t + self.settings.buffer_timeout)
    }

    pub async fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let args = Value::Array(std::mem::take(&mut self.pending));
        self.bytes = 0;
        self.since = None;
        self.shared
            .send(Op::Update, vec![("command_id".into(), Value::from(self.command_id.as_str())), ("args".into(), args)])
            .await;
    }

    /// A request whose answer the command needs (file transfers); what is
    /// buffered goes out first, so the order of events is kept.
    pub async fn request(&mut self, op: Op, mut fields: Vec<(String, Value)>) -> Result<Value, String> {
        self.flush().await;
        fields.insert(0, ("command_id".into(), Value::from(self.command_id.as_str())));
        self.shared.request(op, fields).await
    }

    async fn complete(mut self, error: Option<String>) {
        self.flush().await;
        let args = error.map(Value::from).unwrap_or(Value::Nil);
        self.shared
            .send(
                Op::Complete,
                vec![("command_id".into(), Value::from(self.command_id.as_str())), ("args".into(), args)],
            )
            .await;
        self.shared.finished(&self.command_id);
    }
}

/// Runs a command to its end and reports it.
pub async fn run(shared: Arc<Shared>, command_id: String, name: String, args: Value, stop: watch::Receiver<bool>) {
    let mut em = Emitter::new(shared, command_id);
    let started = Instant::now();
    let outcome = match name.as_str() {
        "shell" => shell::run(&args, &mut em, stop).await,
        "upload_file" => transfer::upload_file(&args, &mut em, stop).await,
        "download_file" => transfer::download_file(&args, &mut em, stop).await,
        "upload_directory" => transfer::upload_directory(&args, &mut em, stop).await,
        other => fs::run(other, &args, &mut em).await,
    };
    if !matches!(outcome, Ok(Ended::Interrupted)) && outcome.is_ok() {
        em.entry("elapsed", Value::F64(started.elapsed().as_secs_f64())).await;
    }
    em.complete(outcome.err()).await;
}

pub enum Ended {
    Normally,
    Interrupted,
}

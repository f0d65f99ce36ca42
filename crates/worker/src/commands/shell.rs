//! `shell`: a process in its own process group, its output streamed as
//! whole lines; silence (`timeout`), total time (`maxTime`) and interrupts
//! kill the whole group.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rmpv::Value;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};

use super::{Emitter, Ended, arg, str_arg};

/// After the process exits, how long its pipes may stay open (a forgotten
/// background child) before the group is killed.
const PIPE_GRACE: Duration = Duration::from_secs(5);

fn signal_number(name: &str) -> i32 {
    match name.trim_start_matches("SIG") {
        "TERM" => libc::SIGTERM,
        "INT" => libc::SIGINT,
        "HUP" => libc::SIGHUP,
        "QUIT" => libc::SIGQUIT,
        _ => libc::SIGKILL,
    }
}

#[allow(unsafe_code)] // one kill(2); see SAFETY below
fn kill_group(pgid: u32, signal: i32) {
    if pgid == 0 {
        return;
    }
    // SAFETY: kill(2) with a negative pid signals that process group; it
    // touches no memory of ours. The group is the command's own (process_group(0)).
    unsafe {
        libc::kill(-(pgid as i32), signal);
    }
}

/// Reads a pipe and cuts it into lines of at most `max` bytes; the last
/// partial line is sent at EOF. Memory stays bounded whatever the process prints.
async fn read_lines<R: tokio::io::AsyncRead + Unpin>(
    mut pipe: R,
    stream: &'static str,
    max: usize,
    tx: mpsc::Sender<(&'static str, String)>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' || partial.len() >= max {
                let line = String::from_utf8_lossy(&partial).into_owned();
                partial.clear();
                if b != b'\n' {
                    partial.push(b);
                }
                if tx.send((stream, line)).await.is_err() {
                    return;
                }
            } else if b != b'\r' {
                partial.push(b);
            }
        }
    }
    if !partial.is_empty() {
        let _ = tx.send((stream, String::from_utf8_lossy(&partial).into_owned())).await;
    }
}

fn display(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) && !a.is_empty() {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A `shell` command's arguments, as Buildbot sends them.
#[derive(Debug, Clone, PartialEq)]
struct ShellArgs {
    workdir: String,
    /// What runs.
    argv: Vec<String>,
    /// What the log shows (secrets obfuscated).
    shown: String,
    /// Kill after this long without output.
    timeout: Option<Duration>,
    /// Kill after this long in all.
    max_time: Option<Duration>,
    /// The signal an interrupt or timeout sends.
    signal: i32,
    /// Variables to set (`Some`) or remove (`None`).
    env: BTreeMap<String, Option<String>>,
    initial_stdin: Option<String>,
}

/// `command`: a shell string, or an argv whose elements may be
/// `["obfuscated", real, shown]` (run the real one, show the other).
fn command(value: Option<&Value>) -> Result<(Vec<String>, String), String> {
    match value {
        Some(Value::String(s)) => {
            let s = s.as_str().unwrap_or("").to_string();
            Ok((vec!["/bin/sh".into(), "-c".into(), s.clone()], s))
        }
        Some(Value::Array(items)) => {
            let mut real = Vec::new();
            let mut visible = Vec::new();
            for item in items {
                match item {
                    Value::Array(parts) if parts.first().and_then(|p| p.as_str()) == Some("obfuscated") => {
                        real.push(parts.get(1).and_then(|p| p.as_str()).unwrap_or("").to_string());
                        visible.push(parts.get(2).and_then(|p| p.as_str()).unwrap_or("****").to_string());
                    }
                    other => {
                        let s = other.as_str().map_or_else(|| other.to_string(), str::to_string);
                        real.push(s.clone());
                        visible.push(s);
                    }
                }
            }
            Ok((real, display(&visible)))
        }
        _ => Err("WorkerShellCommand is missing args: command".into()),
    }
}

/// `env`: a value of nil removes the variable; a list joins with `:`.
fn environment(value: Option<&Value>) -> BTreeMap<String, Option<String>> {
    let mut env = BTreeMap::new();
    if let Some(Value::Map(m)) = value {
        for (k, v) in m {
            let Some(k) = k.as_str() else { continue };
            let value = match v {
                Value::Nil => None,
                Value::Array(parts) => Some(parts.iter().filter_map(|p| p.as_str()).collect::<Vec<_>>().join(":")),
                other => other.as_str().map(str::to_string),
            };
            env.insert(k.to_string(), value);
        }
    }
    env
}

impl ShellArgs {
    fn parse(args: &Value) -> Result<ShellArgs, String> {
        let workdir = str_arg(args, "workdir").ok_or("WorkerShellCommand is missing args: workdir")?.to_string();
        let (argv, shown) = command(arg(args, "command"))?;
        if argv.is_empty() {
            return Err("an empty command".into());
        }
        Ok(ShellArgs {
            workdir,
            argv,
            shown,
            timeout: arg(args, "timeout").and_then(Value::as_u64).map(Duration::from_secs),
            max_time: arg(args, "maxTime").and_then(Value::as_u64).map(Duration::from_secs),
            signal: signal_number(str_arg(args, "interruptSignal").unwrap_or("KILL")),
            env: environment(arg(args, "env")),
            initial_stdin: str_arg(args, "initial_stdin").map(str::to_string),
        })
    }

    /// The header line Buildbot's worker writes before a command.
    fn header(&self) -> String {
        let mut header = format!("{}\n in dir {}", self.shown, self.workdir);
        if let Some(t) = self.timeout {
            header.push_str(&format!(" (timeout {} secs)", t.as_secs()));
        }
        if let Some(t) = self.max_time {
            header.push_str(&format!(" (maxTime {} secs)", t.as_secs()));
        }
        header.push_str("\n using PTY: False");
        header
    }

    /// The process, in its own process group, with piped output.
    fn spawn(&self) -> std::io::Result<tokio::process::Child> {
        let mut cmd = tokio::process::Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..])
            .current_dir(&self.workdir)
            .env("PWD", &self.workdir)
            .process_group(0)
            .kill_on_drop(true);
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.stdin(if self.initial_stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn()
    }
}

/// Runs a `shell` command: its output streams as it comes, silence and
/// total time limits and interrupts kill its whole process group.
pub async fn run(args: &Value, em: &mut Emitter, stop: watch::Receiver<bool>) -> Result<Ended, String> {
    let a = ShellArgs::parse(args)?;
    em.text("header", &a.header()).await;
    if let Err(e) = std::fs::create_dir_all(&a.workdir) {
        em.text("header", &format!("cannot create {}: {e}", a.workdir)).await;
        em.entry("rc", Value::from(-1)).await;
        return Ok(Ended::Normally);
    }
    let started = Instant::now();
    let mut child = match a.spawn() {
        Ok(c) => c,
        Err(e) => {
            em.text("header", &format!("cannot run {}: {e}", a.argv[0])).await;
            em.entry("rc", Value::from(-1)).await;
            return Ok(Ended::Normally);
        }
    };
    if let (Some(text), Some(mut stdin)) = (a.initial_stdin.clone(), child.stdin.take()) {
        tokio::spawn(async move {
            let _ = tokio::io::AsyncWriteExt::write_all(&mut stdin, text.as_bytes()).await;
        });
    }
    let (tx, lines) = mpsc::channel(1024);
    let max = em.settings.max_line_length;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(read_lines(out, "stdout", max, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(read_lines(err, "stderr", max, tx.clone()));
    }
    drop(tx);
    let mut watch = Watch::new(&a, child.id().unwrap_or(0), started);
    let status = watch.run(&mut child, lines, em, stop).await;
    report_exit(em, status, started).await;
    Ok(if watch.interrupted { Ended::Interrupted } else { Ended::Normally })
}

/// The exit code (and the killing signal, if any), then the elapsed time.
async fn report_exit(em: &mut Emitter, status: Option<std::io::Result<std::process::ExitStatus>>, started: Instant) {
    let rc = match status {
        Some(Ok(s)) => {
            #[cfg(unix)]
            {
                use std::os::unix::process::ExitStatusExt;
                if let Some(sig) = s.signal() {
                    em.text("header", &format!("process killed by signal {sig}")).await;
                }
            }
            s.code().map_or(-1, i64::from)
        }
        _ => -1,
    };
    em.entry("rc", Value::from(rc)).await;
    em.text("header", &format!("elapsedTime={:.6}", started.elapsed().as_secs_f64())).await;
}

/// A running process watched: its output, its limits, a stop.
struct Watch<'a> {
    a: &'a ShellArgs,
    pgid: u32,
    silence_deadline: Option<Instant>,
    hard_deadline: Option<Instant>,
    pipes_open: bool,
    killed: bool,
    interrupted: bool,
    exited_at: Option<Instant>,
}

impl<'a> Watch<'a> {
    fn new(a: &'a ShellArgs, pgid: u32, started: Instant) -> Watch<'a> {
        Watch {
            a,
            pgid,
            silence_deadline: a.timeout.map(|t| Instant::now() + t),
            hard_deadline: a.max_time.map(|t| started + t),
            pipes_open: true,
            killed: false,
            interrupted: false,
            exited_at: None,
        }
    }

    /// Kills the group for `reason` (`timeout_without_output` or `timeout`).
    async fn time_out(&mut self, em: &mut Emitter, reason: &str, limit: Option<Duration>, what: &str) {
        let secs = limit.map_or(0, |t| t.as_secs());
        em.entry("failure_reason", Value::from(reason)).await;
        let shown = &self.a.shown;
        em.text("header", &format!("\ncommand timed out: {secs} seconds {what} running {shown}, attempting to kill"))
            .await;
        kill_group(self.pgid, self.a.signal);
        self.killed = true;
    }

    /// Watches until the process has exited and its output is read.
    async fn run(
        &mut self,
        child: &mut tokio::process::Child,
        mut lines: mpsc::Receiver<(&'static str, String)>,
        em: &mut Emitter,
        mut stop: watch::Receiver<bool>,
    ) -> Option<std::io::Result<std::process::ExitStatus>> {
        let mut status = None;
        let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        while self.pipes_open || status.is_none() {
            let flush_at = em.deadline().unwrap_or(far);
            let grace_at = self.exited_at.map_or(far, |t| t + PIPE_GRACE);
            let (silence, hard) = (self.silence_deadline, self.hard_deadline);
            tokio::select! {
                line = lines.recv(), if self.pipes_open => match line {
                    Some((stream, text)) => {
                        em.text(stream, &text).await;
                        self.silence_deadline = self.a.timeout.map(|t| Instant::now() + t);
                    }
                    None => self.pipes_open = false,
                },
                s = child.wait(), if status.is_none() => {
                    status = Some(s);
                    self.exited_at = Some(Instant::now());
                }
                () = tokio::time::sleep_until(silence.unwrap_or(far).into()), if !self.killed && silence.is_some() => {
                    self.time_out(em, "timeout_without_output", self.a.timeout, "without output").await;
                }
                () = tokio::time::sleep_until(hard.unwrap_or(far).into()), if !self.killed && hard.is_some() => {
                    self.time_out(em, "timeout", self.a.max_time, "elapsed").await;
                }
                changed = stop.changed(), if !self.interrupted => {
                    if changed.is_err() || *stop.borrow() {
                        self.interrupted = true;
                        em.flush().await;
                        em.text("header", "\ncommand interrupted, attempting to kill").await;
                        kill_group(self.pgid, self.a.signal);
                        self.killed = true;
                    }
                }
                () = tokio::time::sleep_until(flush_at.into()) => em.flush().await,
                () = tokio::time::sleep_until(grace_at.into()), if self.pipes_open => {
                    // The process is gone but something it started holds its output open.
                    kill_group(self.pgid, libc::SIGKILL);
                    self.exited_at = None;
                }
            }
        }
        status
    }
}

#[cfg(test)]
mod shell_tests {
    use super::*;

    fn args(pairs: &[(&str, Value)]) -> Value {
        Value::Map(pairs.iter().map(|(k, v)| (Value::from(*k), v.clone())).collect())
    }

    #[test]
    fn arguments_parse_as_buildbot_sends_them() {
        let obfuscated = Value::Array(vec![Value::from("obfuscated"), Value::from("s3cret"), Value::from("****")]);
        let a = ShellArgs::parse(&args(&[
            ("workdir", Value::from("/w/build")),
            ("command", Value::Array(vec![Value::from("make"), Value::from("TOKEN=a b"), obfuscated])),
            ("timeout", Value::from(30)),
            ("interruptSignal", Value::from("TERM")),
            (
                "env",
                Value::Map(vec![
                    (Value::from("PATH"), Value::Array(vec![Value::from("/a"), Value::from("/b")])),
                    (Value::from("X"), Value::Nil),
                ]),
            ),
        ]))
        .expect("parses");
        assert_eq!(a.argv, vec!["make", "TOKEN=a b", "s3cret"]);
        assert_eq!(a.shown, "make 'TOKEN=a b' '****'", "the secret is not shown");
        assert!(!a.shown.contains("s3cret"));
        assert_eq!(a.header(), "make 'TOKEN=a b' '****'\n in dir /w/build (timeout 30 secs)\n using PTY: False");
        assert_eq!(a.signal, libc::SIGTERM);
        assert_eq!(a.env.get("PATH"), Some(&Some("/a:/b".to_string())));
        assert_eq!(a.env.get("X"), Some(&None));
        let shell = ShellArgs::parse(&args(&[("workdir", Value::from("/w")), ("command", Value::from("echo hi"))]))
            .expect("parses");
        assert_eq!(shell.argv, vec!["/bin/sh", "-c", "echo hi"]);
        assert!(ShellArgs::parse(&args(&[("command", Value::from("x"))])).is_err(), "workdir is needed");
        assert!(ShellArgs::parse(&args(&[("workdir", Value::from("/w"))])).is_err(), "so is a command");
    }
}

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

pub async fn run(args: &Value, em: &mut Emitter, mut stop: watch::Receiver<bool>) -> Result<Ended, String> {
    let workdir = str_arg(args, "workdir").ok_or("WorkerShellCommand is missing args: workdir")?.to_string();
    let (argv, shown): (Vec<String>, String) = match arg(args, "command") {
        Some(Value::String(s)) => {
            let s = s.as_str().unwrap_or("").to_string();
            (vec!["/bin/sh".into(), "-c".into(), s.clone()], s)
        }
        Some(Value::Array(items)) => {
            // An element may be ["obfuscated", real, shown]: run the real one, show the other.
            let mut real = Vec::new();
            let mut visible = Vec::new();
            for item in items {
                match item {
                    Value::Array(parts) if parts.first().and_then(|p| p.as_str()) == Some("obfuscated") => {
                        real.push(parts.get(1).and_then(|p| p.as_str()).unwrap_or("").to_string());
                        visible.push(parts.get(2).and_then(|p| p.as_str()).unwrap_or("****").to_string());
                    }
                    other => {
                        let s = other.as_str().map(str::to_string).unwrap_or_else(|| other.to_string());
                        real.push(s.clone());
                        visible.push(s);
                    }
                }
            }
            let shown = display(&visible);
            (real, shown)
        }
        _ => return Err("WorkerShellCommand is missing args: command".into()),
    };
    if argv.is_empty() {
        return Err("an empty command".into());
    }
    let timeout = arg(args, "timeout").and_then(|v| v.as_u64()).map(Duration::from_secs);
    let max_time = arg(args, "maxTime").and_then(|v| v.as_u64()).map(Duration::from_secs);
    let signal = signal_number(str_arg(args, "interruptSignal").unwrap_or("KILL"));
    let mut env: BTreeMap<String, Option<String>> = BTreeMap::new();
    if let Some(Value::Map(m)) = arg(args, "env") {
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

    let mut header = format!("{shown}\n in dir {workdir}");
    if let Some(t) = timeout {
        header.push_str(&format!(" (timeout {} secs)", t.as_secs()));
    }
    if let Some(t) = max_time {
        header.push_str(&format!(" (maxTime {} secs)", t.as_secs()));
    }
    header.push_str("\n using PTY: False");
    em.text("header", &header).await;

    if let Err(e) = std::fs::create_dir_all(&workdir) {
        em.text("header", &format!("cannot create {workdir}: {e}")).await;
        em.entry("rc", Value::from(-1)).await;
        return Ok(Ended::Normally);
    }
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).current_dir(&workdir).env("PWD", &workdir).process_group(0).kill_on_drop(true);
    for (k, v) in &env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let initial_stdin = str_arg(args, "initial_stdin").map(str::to_string);
    cmd.stdin(if initial_stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            em.text("header", &format!("cannot run {}: {e}", argv[0])).await;
            em.entry("rc", Value::from(-1)).await;
            return Ok(Ended::Normally);
        }
    };
    let pgid = child.id().unwrap_or(0);
    if let (Some(text), Some(mut stdin)) = (initial_stdin, child.stdin.take()) {
        tokio::spawn(async move {
            let _ = tokio::io::AsyncWriteExt::write_all(&mut stdin, text.as_bytes()).await;
        });
    }
    let (tx, mut lines) = mpsc::channel(1024);
    let max = em.settings.max_line_length;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(read_lines(out, "stdout", max, tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(read_lines(err, "stderr", max, tx.clone()));
    }
    drop(tx);

    let mut silence_deadline = timeout.map(|t| Instant::now() + t);
    let hard_deadline = max_time.map(|t| started + t);
    let mut status = None;
    let mut pipes_open = true;
    let mut killed = false;
    let mut interrupted = false;
    let mut exited_at: Option<Instant> = None;
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    while pipes_open || status.is_none() {
        let flush_at = em.deadline().unwrap_or(far);
        let grace_at = exited_at.map(|t| t + PIPE_GRACE).unwrap_or(far);
        tokio::select! {
            line = lines.recv(), if pipes_open => match line {
                Some((stream, text)) => {
                    em.text(stream, &text).await;
                    silence_deadline = timeout.map(|t| Instant::now() + t);
                }
                None => pipes_open = false,
            },
            s = child.wait(), if status.is_none() => {
                status = Some(s);
                exited_at = Some(Instant::now());
            }
            _ = tokio::time::sleep_until(silence_deadline.unwrap_or(far).into()), if !killed && silence_deadline.is_some() => {
                let secs = timeout.map(|t| t.as_secs()).unwrap_or(0);
                em.entry("failure_reason", Value::from("timeout_without_output")).await;
                em.text("header", &format!("\ncommand timed out: {secs} seconds without output running {shown}, attempting to kill")).await;
                kill_group(pgid, signal);
                killed = true;
            }
            _ = tokio::time::sleep_until(hard_deadline.unwrap_or(far).into()), if !killed && hard_deadline.is_some() => {
                let secs = max_time.map(|t| t.as_secs()).unwrap_or(0);
                em.entry("failure_reason", Value::from("timeout")).await;
                em.text("header", &format!("\ncommand timed out: {secs} seconds elapsed running {shown}, attempting to kill")).await;
                kill_group(pgid, signal);
                killed = true;
            }
            changed = stop.changed(), if !interrupted => {
                if changed.is_err() || *stop.borrow() {
                    interrupted = true;
                    em.flush().await;
                    em.text("header", "\ncommand interrupted, attempting to kill").await;
                    kill_group(pgid, signal);
                    killed = true;
                }
            }
            _ = tokio::time::sleep_until(flush_at.into()) => em.flush().await,
            _ = tokio::time::sleep_until(grace_at.into()), if pipes_open => {
                // The process is gone but something it started holds its output open.
                kill_group(pgid, libc::SIGKILL);
                exited_at = None;
            }
        }
    }
    let rc = match status {
        Some(Ok(s)) => {
            #[cfg(unix)]
            {
                use std::os::unix::process::ExitStatusExt;
                if let Some(sig) = s.signal() {
                    em.text("header", &format!("process killed by signal {sig}")).await;
                }
            }
            s.code().map(i64::from).unwrap_or(-1)
        }
        _ => -1,
    };
    em.entry("rc", Value::from(rc)).await;
    em.text("header", &format!("elapsedTime={:.6}", started.elapsed().as_secs_f64())).await;
    Ok(if interrupted { Ended::Interrupted } else { Ended::Normally })
}

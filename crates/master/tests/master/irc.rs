//! The IRC reporter against a real IRC server: Debian's ngircd (installed by
//! `tests/support/ngircd.sh`, which `.ci/run` runs), started here on a free
//! port. A client of the test's own sits in the channel and reads exactly
//! what the bot says; the server is restarted and the bot comes back.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use cascade_model::Results;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::harness::{Harness, free_port};

fn ngircd() -> PathBuf {
    crate::harness::installed("CASCADE_NGIRCD", "ngircd.sh")
}

/// An ngircd on `port`, killed on drop.
struct Server(tokio::process::Child);

impl Server {
    async fn start(dir: &Path, port: u16) -> Server {
        let conf = dir.join("ngircd.conf");
        let text = format!(
            "[Global]\nName = irc.cascade.test\nInfo = test\nListen = 127.0.0.1\nPorts = {port}\nPidFile = {}\n\
             MotdPhrase = hello\n[Limits]\nMaxNickLength = 30\n[Options]\nPAM = no\nIdent = no\nDNS = no\n",
            dir.join("ngircd.pid").display()
        );
        std::fs::write(&conf, text).expect("config");
        let child = tokio::process::Command::new(ngircd())
            .args(["-n", "-f"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("ngircd starts");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "ngircd never listened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Server(child)
    }

    async fn stop(mut self) {
        let _ = self.0.start_kill();
        let _ = self.0.wait().await;
    }
}

/// The test's own IRC client, in the channel.
pub struct Listener {
    pub lines: tokio::io::Lines<BufReader<tokio::io::ReadHalf<TcpStream>>>,
    pub write: tokio::io::WriteHalf<TcpStream>,
}

impl Listener {
    pub async fn join(port: u16, channel: &str) -> Listener {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        let (read, mut write) = tokio::io::split(stream);
        write.write_all(b"NICK watcher\r\nUSER watcher 0 * :w\r\n").await.expect("register");
        let mut me = Listener { lines: BufReader::new(read).lines(), write };
        me.until(|l| l.contains(" 001 ")).await;
        me.write.write_all(format!("JOIN {channel}\r\n").as_bytes()).await.expect("join");
        me.until(|l| l.contains(" 366 ")).await;
        me
    }

    /// Reads until a line matches; answers PINGs.
    pub async fn until(&mut self, want: impl Fn(&str) -> bool) -> String {
        self.until_within(Duration::from_secs(30), want).await
    }

    /// [`Listener::until`], waiting at most `limit`.
    pub async fn until_within(&mut self, limit: Duration, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = tokio::time::timeout(left, self.lines.next_line()).await;
            let line = line.expect("timed out reading IRC").expect("read").expect("connection open");
            if let Some(token) = line.strip_prefix("PING ") {
                let _ = self.write.write_all(format!("PONG {token}\r\n").as_bytes()).await;
            }
            if want(&line) {
                return line;
            }
        }
    }

    /// Who is in `channel` now (its NAMES reply, joined).
    pub async fn names(&mut self, channel: &str) -> String {
        self.write.write_all(format!("NAMES {channel}\r\n").as_bytes()).await.expect("names");
        let mut names = String::new();
        loop {
            let line = self.until(|l| l.contains(" 353 ") || l.contains(" 366 ")).await;
            if line.contains(" 366 ") {
                return names;
            }
            names.push_str(line.rsplit_once(':').map_or("", |(_, n)| n));
            names.push(' ');
        }
    }

    /// The next message the bot posts in the channel.
    pub async fn said(&mut self) -> String {
        let line = self.until(|l| l.contains(" PRIVMSG #builds :")).await;
        line.split_once(" PRIVMSG #builds :").map(|(_, t)| t.to_string()).unwrap_or_default()
    }
}

fn config(port: u16) -> String {
    format!(
        r##"
[master]
name = "irc"
url = "https://ci.example.org"
[github]
insecure_webhook = true
[[branch]]
name = "main"
[[worker]]
name = "w1"
password = "pw"
[[factory]]
name = "f"
steps = [{{ command = "make" }}]
[[builder]]
name = "Fedora"
workers = ["w1"]
factory = "f"
branches = ["main"]
[[reporter]]
name = "irc"
kind = "irc"
server = "127.0.0.1:{port}"
tls = false
nick = "cascade-bot"
password = "unused-without-sasl"
channels = ["#builds"]
"##
    )
}

/// Ends a new build of `Fedora main` with `results`, straight in the store.
pub async fn finish(h: &Harness, results: Results) {
    crate::harness::end_a_new_build(&h.store, h.builder("Fedora main"), h.master.master_id(), results).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_hears_worse_then_better_and_the_bot_comes_back_after_a_restart() {
    let db = cascade_testkit::TestDb::new(cascade_testkit::Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let server = Server::start(dir.path(), port).await;
    let mut watcher = Listener::join(port, "#builds").await;
    let h = Harness::with_config(&db, &config(port)).await;
    // The bot joins (the server offers no SASL: it logs in without).
    watcher.until(|l| l.contains("JOIN") && l.starts_with(":cascade-bot")).await;

    for results in [Results::Success, Results::Failure, Results::Failure, Results::Success] {
        finish(&h, results).await;
    }
    assert_eq!(watcher.said().await, "Fedora main #2: worse (failure): https://ci.example.org/builders/1/builds/2");
    assert_eq!(watcher.said().await, "Fedora main #4: better (success): https://ci.example.org/builders/1/builds/4");

    // The server restarts; the bot reconnects and says the next change.
    server.stop().await;
    let server = Server::start(dir.path(), port).await;
    let mut watcher = Listener::join(port, "#builds").await;
    // The bot backs off while the server is down (1, 2, 4… s): on a busy
    // machine its next try may be half a minute away.
    let back = Duration::from_secs(90);
    // On a busy machine the bot may be back before the watcher: then it is
    // among the channel's names, and no JOIN of it will come.
    if !watcher.names("#builds").await.split(' ').any(|n| n.trim_start_matches(['@', '+']) == "cascade-bot") {
        watcher.until_within(back, |l| l.contains("JOIN") && l.starts_with(":cascade-bot")).await;
    }
    finish(&h, Results::Exception).await;
    assert_eq!(watcher.said().await, "Fedora main #5: worse (exception): https://ci.example.org/builders/1/builds/5");
    h.stop().await;
    server.stop().await;
    db.finish().await;
}

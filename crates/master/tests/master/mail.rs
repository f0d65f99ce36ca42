//! The mail reporter against a real SMTP server: aiosmtpd from PyPI
//! (installed by `tests/support/aiosmtpd.sh`, which `.ci/run` runs), storing
//! what it receives in a Maildir the test reads. A problem mail goes to the
//! list; a worker gone past its grace time mails its owner; a worker that
//! comes back within the grace time mails nobody.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use cascade_model::Results;
use cascade_store::NotificationState;

use crate::harness::{Harness, free_port};
use crate::irc::finish;
use crate::workers::{BuildbotWorker, Kind, run_master, wait_for};

fn python() -> PathBuf {
    crate::harness::installed("CASCADE_AIOSMTPD_PYTHON", "aiosmtpd.sh")
}

/// aiosmtpd's python with `args`, once it listens on `port`; killed on drop.
async fn smtp_server(port: u16, args: Vec<std::ffi::OsString>) -> tokio::process::Child {
    let child = tokio::process::Command::new(python())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("aiosmtpd starts");
    wait_for("aiosmtpd to listen", Duration::from_secs(30), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()
    })
    .await;
    child
}

/// aiosmtpd on `port`, storing what it receives in `maildir`; killed on drop.
async fn aiosmtpd(port: u16, maildir: &Path) -> tokio::process::Child {
    let listen = format!("127.0.0.1:{port}");
    let args = ["-m", "aiosmtpd", "-n", "-l", &listen, "-c", "aiosmtpd.handlers.Mailbox"];
    let mut args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
    args.push(maildir.into());
    smtp_server(port, args).await
}

/// The (To, Subject) of every mail in the Maildir.
fn mails(maildir: &Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(maildir.join("new")) else { return Vec::new() };
    let mut out: Vec<(String, String)> = entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|text| {
            let header = |name: &str| {
                text.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or_default()
            };
            (header("To:"), header("Subject:"))
        })
        .collect();
    out.sort();
    out
}

fn config(smtp: u16) -> String {
    format!(
        r#"
[master]
name = "mail"
url = "https://ci.example.org"
[github]
insecure_webhook = true
[[branch]]
name = "main"
[[worker]]
name = "w1"
password = "pw-one"
notify = "owner@example.org"
[[factory]]
name = "f"
steps = [{{ command = "true" }}]
[[builder]]
name = "Fedora"
workers = ["w1"]
factory = "f"
branches = ["main"]
[[reporter]]
name = "mail"
kind = "mail"
smtp = "127.0.0.1:{smtp}"
from = "buildbot@example.org"
to = ["list@example.org"]
events = ["problem", "worker_missing", "worker_back"]
worker_grace = "3s"
"#
    )
}

/// The worker-missing notifications, once `count` of them have settled.
async fn settled_missing(h: &Harness, count: usize) -> Vec<&'static str> {
    let started = Instant::now();
    loop {
        let states = missing_states(h).await;
        if states.len() == count && states.iter().all(|s| *s != "pending") {
            return states;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "worker notifications: {states:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn missing_states(h: &Harness) -> Vec<&'static str> {
    let all = h.store.recent_notifications(100).await.expect("notifications");
    all.into_iter().filter(|n| n.build_id.is_none()).map(|n| n.state.name()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn problems_mail_the_list_and_a_missing_worker_mails_its_owner_after_its_grace() {
    let db = cascade_testkit::TestDb::new(cascade_testkit::Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let maildir = dir.path().join("maildir");
    let port = free_port();
    let _smtp = aiosmtpd(port, &maildir).await;
    let h = Harness::with_config(&db, &config(port)).await;
    let running = run_master(&h).await;
    let mut worker = BuildbotWorker::start_kind(Kind::Cascade, dir.path(), running.port, "w1", "pw-one").await;
    wait_for("the worker to attach", Duration::from_secs(30), || async { h.master.workers.get("w1") }).await;

    finish(&h, Results::Success).await;
    finish(&h, Results::Failure).await;
    wait_for("the problem mail", Duration::from_secs(30), || async { (mails(&maildir).len() == 1).then_some(()) })
        .await;
    assert_eq!(mails(&maildir), [("list@example.org".to_string(), "problem: Fedora main #2".to_string())]);

    // Gone and back within its grace time: nobody hears of it.
    worker.kill().await;
    let mut worker = BuildbotWorker::start_kind(Kind::Cascade, dir.path(), running.port, "w1", "pw-one").await;
    wait_for("the worker to attach again", Duration::from_secs(30), || async { h.master.workers.get("w1") }).await;
    assert_eq!(settled_missing(&h, 1).await, ["skipped"]);

    // Gone for good: after the grace time its owner hears of it.
    worker.kill().await;
    assert_eq!(settled_missing(&h, 2).await, ["skipped", "sent"]);
    let got = mails(&maildir);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.contains(&("owner@example.org".to_string(), "worker w1 is missing".to_string())), "{got:?}");

    // Back after it was reported missing: its owner hears that too.
    let _worker = BuildbotWorker::start_kind(Kind::Cascade, dir.path(), running.port, "w1", "pw-one").await;
    wait_for("the back mail", Duration::from_secs(30), || async { (mails(&maildir).len() == 3).then_some(()) }).await;
    assert!(mails(&maildir).contains(&("owner@example.org".to_string(), "worker w1 is back".to_string())));
    h.stop().await;
    db.finish().await;
}

/// A master stopped for longer than the workers' grace time, then started
/// again on the same store and ports: its workers get their grace time
/// again from the start (they cannot reconnect to a master that is down),
/// the worker reconnects within it, and nobody is mailed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_restart_with_a_quick_worker_reconnect_mails_nobody() {
    let db = cascade_testkit::TestDb::new(cascade_testkit::Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let maildir = dir.path().join("maildir");
    let port = free_port();
    let _smtp = aiosmtpd(port, &maildir).await;
    let (http, msgpack, pb) = (free_port(), free_port(), free_port());
    let text = config(port).replace(
        "url = \"https://ci.example.org\"",
        &format!("url = \"https://ci.example.org\"\nhttp = \"127.0.0.1:{http}\"\nmsgpack = \"127.0.0.1:{msgpack}\"\npb = \"127.0.0.1:{pb}\""),
    );
    let store = db.store().await;
    let start = || async {
        let config = cascade_config::parse(&text, Path::new("mail.toml")).expect("config");
        let secrets = config.resolve_secrets().expect("secrets");
        let listeners = cascade_master::Listeners::bind(&config.master).await.expect("listeners");
        let clock = cascade_master::clock::Clock::System;
        let master = cascade_master::Master::start(config, secrets, store.clone(), clock).await.expect("start");
        (master.clone(), cascade_master::server::spawn(master, listeners).expect("served"))
    };
    let (master, served) = start().await;
    let mut worker = BuildbotWorker::start_kind(Kind::Cascade, dir.path(), msgpack, "w1", "pw-one").await;
    wait_for("the worker to attach", Duration::from_secs(30), || async { master.workers.get("w1") }).await;
    served.stop().await.expect("a clean stop");
    worker.kill().await;
    // Down past the grace time (3 s): the worker could not have come back sooner.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let restarted_at = cascade_master::clock::now();
    let (master, served) = start().await;
    // The loss fell due while the master was down: it waits for the grace time from the start.
    wait_for("the notifier to hold back", Duration::from_secs(30), || async {
        let all = store.recent_notifications(100).await.expect("notifications");
        let held = |n: &cascade_store::NotificationRecord| {
            n.state == NotificationState::Pending && n.next_attempt_at >= restarted_at + 3
        };
        all.iter().filter(|n| n.build_id.is_none()).any(held).then_some(())
    })
    .await;
    assert!(mails(&maildir).is_empty(), "{:?}", mails(&maildir));
    let _worker = BuildbotWorker::start_kind(Kind::Cascade, dir.path(), msgpack, "w1", "pw-one").await;
    wait_for("the worker to come back", Duration::from_secs(30), || async { master.workers.get("w1") }).await;
    let started = Instant::now();
    let states = loop {
        let all = store.recent_notifications(100).await.expect("notifications");
        let states: Vec<&str> = all.into_iter().filter(|n| n.build_id.is_none()).map(|n| n.state.name()).collect();
        if !states.is_empty() && states.iter().all(|s| *s != "pending") {
            break states;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "worker notifications: {states:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(states.iter().all(|s| *s == "skipped"), "{states:?}");
    assert!(mails(&maildir).is_empty(), "{:?}", mails(&maildir));
    served.stop().await.expect("stop");
    store.close().await;
    db.finish().await;
}

/// aiosmtpd that refuses mail before STARTTLS and a good AUTH
/// (`tests/support/smtp-tls.py`), with a certificate from a throw-away CA.
async fn aiosmtpd_tls(port: u16, maildir: &Path, certs: &Path) -> tokio::process::Child {
    crate::harness::tls_certificates(certs);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/support/smtp-tls.py");
    let args: Vec<std::ffi::OsString> = vec![
        script.into(),
        port.to_string().into(),
        maildir.into(),
        certs.join("server.pem").into(),
        certs.join("server.key").into(),
        "cascade".into(),
        "smtp-pw".into(),
    ];
    smtp_server(port, args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_starttls_with_a_login_the_problem_mail_reaches_a_relay_that_insists_on_both() {
    let db = cascade_testkit::TestDb::new(cascade_testkit::Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let maildir = dir.path().join("maildir");
    let port = free_port();
    let _smtp = aiosmtpd_tls(port, &maildir, &dir.path().join("certs")).await;
    let ca = dir.path().join("certs/ca.pem");
    let text = config(port).replace(
        "worker_grace = \"3s\"",
        &format!("starttls = true\nusername = \"cascade\"\npassword = \"smtp-pw\"\nca_file = \"{}\"", ca.display()),
    );
    let h = Harness::with_config(&db, &text).await;
    finish(&h, Results::Success).await;
    finish(&h, Results::Failure).await;
    wait_for("the problem mail", Duration::from_secs(30), || async { (mails(&maildir).len() == 1).then_some(()) })
        .await;
    assert_eq!(mails(&maildir), [("list@example.org".to_string(), "problem: Fedora main #2".to_string())]);
    // The relay stores the mail before the master hears its answer and records it.
    let states = wait_for("the notification recorded as sent", Duration::from_secs(30), || async {
        let sent = h.store.recent_notifications(10).await.expect("notifications");
        let states: Vec<&str> = sent.iter().map(|n| n.state.name()).collect();
        (!states.contains(&"pending")).then_some(states.iter().map(|s| (*s).to_string()).collect::<Vec<_>>())
    })
    .await;
    assert_eq!(states, ["sent"]);
    h.stop().await;
    db.finish().await;
}

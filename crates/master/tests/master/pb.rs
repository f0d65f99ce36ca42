//! The PB listener driven byte by byte from Rust (a minimal worker built on
//! the protocol crate): login refusals in the shape the worker needs, the
//! broker's answers to bad calls, hostile bytes, liveness. And, with stock
//! `buildbot-worker` 4.3.0 over PB: concurrent builders on one worker, and a
//! worker-initiated graceful shutdown.

use std::time::Duration;

use cascade_protocol::pb::banana::{self, Decoder, Expr};
use cascade_protocol::pb::message::{VERSION, challenge_response, password_md5};
use cascade_protocol::pb::{Failure, Message, ObjectId, Value};
use cascade_store::ListQuery;
use cascade_testkit::test_both;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::Harness;
use crate::workers::{BuildbotWorker, Kind, config, finished_build, log_of, make_repo, push, run_master, wait_for};

const LIMIT: Duration = Duration::from_secs(20);

/// A hand-driven PB peer.
struct PbClient {
    stream: TcpStream,
    decoder: Decoder,
    next_request: i64,
}

impl PbClient {
    /// Connects and negotiates dialect `pb`, as the stock worker does.
    async fn connect(port: u16) -> PbClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connects");
        let mut c = PbClient { stream, decoder: Decoder::new(), next_request: 1 };
        let offer = c.next_expr().await.expect("the dialect offer");
        assert_eq!(offer, Expr::List(vec![Expr::bytes("pb"), Expr::bytes("none")]));
        c.write(&banana::encode(&Expr::bytes("pb"), false).expect("encodes")).await;
        c.decoder.set_vocabulary(true);
        c.send(&Message::Version(VERSION)).await;
        assert_eq!(c.next().await, Some(Message::Version(VERSION)));
        c
    }

    async fn write(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    async fn send(&mut self, msg: &Message) {
        let bytes = banana::encode(&msg.to_expr(), true).expect("encodes");
        self.write(&bytes).await;
    }

    /// The next expression, or `None` once the master closed the connection.
    async fn next_expr(&mut self) -> Option<Expr> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if let Some(e) = self.decoder.next_expr().expect("the master sends valid banana") {
                return Some(e);
            }
            let n = tokio::time::timeout(LIMIT, self.stream.read(&mut buf)).await.expect("the master answers in time");
            match n {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.decoder.feed(&buf[..n]),
            }
        }
    }

    async fn next(&mut self) -> Option<Message> {
        let e = self.next_expr().await?;
        Some(Message::parse(&e).expect("the master sends valid PB"))
    }

    async fn call(&mut self, object: ObjectId, method: &str, args: Vec<Value>) -> i64 {
        let request = self.next_request;
        self.next_request += 1;
        let msg = Message::Call { request, object, method: method.into(), answer_required: true, args, kwargs: vec![] };
        self.send(&msg).await;
        request
    }

    /// Waits for the answer to `request`, acting as the worker's bot and
    /// builders meanwhile (answering `getWorkerInfo`, `setBuilderList`, `print`).
    async fn answer_of(&mut self, request: i64) -> Result<Value, Failure> {
        loop {
            match self.next().await.expect("the connection stays up") {
                Message::Answer { request: r, value } if r == request => return Ok(value),
                Message::Error { request: r, failure } if r == request => return Err(failure),
                Message::Call { request: r, method, args, .. } => {
                    let value = match method.as_str() {
                        "getWorkerInfo" => Value::Dict(vec![
                            (Value::str("basedir"), Value::str("/nonexistent/pb-client")),
                            (Value::str("version"), Value::str("pb-client")),
                            (Value::str("environ"), Value::Dict(vec![(Value::str("TOKEN"), Value::str("hunter2"))])),
                        ]),
                        "setBuilderList" => {
                            let names = args.first().and_then(Value::as_seq).map(<[Value]>::to_vec).unwrap_or_default();
                            Value::Dict(
                                names
                                    .iter()
                                    .enumerate()
                                    .filter_map(|(i, t)| {
                                        let name = t.as_seq()?.first()?.clone();
                                        Some((name, Value::Remote(i as i64 + 2)))
                                    })
                                    .collect(),
                            )
                        }
                        _ => Value::None,
                    };
                    self.send(&Message::Answer { request: r, value }).await;
                }
                _ => {}
            }
        }
    }

    /// The two-step login; the avatar's id on success.
    async fn login(&mut self, name: &str, password: &str) -> Result<i64, Failure> {
        let req = self.call(ObjectId::Name(b"root".to_vec()), "login", vec![Value::Bytes(name.into())]).await;
        let answer = self.answer_of(req).await?;
        let [Value::Bytes(challenge), Value::Remote(challenger)] = answer.as_seq().expect("a tuple") else {
            panic!("login answers (challenge, challenger): {answer:?}");
        };
        let response = challenge_response(&password_md5(password.as_bytes()), challenge);
        let req = self
            .call(ObjectId::Luid(*challenger), "respond", vec![Value::Bytes(response.to_vec()), Value::Remote(1)])
            .await;
        match self.answer_of(req).await? {
            Value::Remote(avatar) => Ok(avatar),
            other => panic!("respond answers the avatar: {other:?}"),
        }
    }

    /// Answers every call with None from now on, as an idle worker would.
    fn serve(mut self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(msg) = self.next().await {
                if let Message::Call { request, .. } = msg {
                    self.send(&Message::Answer { request, value: Value::None }).await;
                }
            }
        })
    }

    /// True once the master has closed the connection.
    async fn closed(&mut self) -> bool {
        loop {
            match self.next_expr().await {
                None => return true,
                Some(_) => continue,
            }
        }
    }
}

fn is_unauthorized(f: &Failure) -> bool {
    f.parents.iter().any(|p| p == "twisted.cred.error.UnauthorizedLogin")
        && f.kind == "twisted.cred.error.UnauthorizedLogin"
}

test_both!(login_refusals_and_bad_calls_get_pb_shaped_answers, |db| {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, _) = make_repo(dir.path());
    let hash = cascade_master::password::hash("hashed-pw").expect("hash");
    let text = config(&repo, r#"{ name = "x", command = ["true"] },"#)
        .replace("[[factory]]", &format!("[[worker]]\nname = \"hashed\"\npassword_hash = \"{hash}\"\n\n[[factory]]"));
    let h = Harness::with_config(db, &text).await;
    let running = run_master(&h).await;

    // Unknown names get a challenge like anyone, then the refusal a worker retries after.
    let mut c = PbClient::connect(running.pb_port).await;
    let refused = c.login("nobody", "pw-one").await.expect_err("refused");
    assert!(is_unauthorized(&refused), "{refused:?}");
    let mut c = PbClient::connect(running.pb_port).await;
    let refused = c.login("w1", "wrong").await.expect_err("refused");
    assert!(is_unauthorized(&refused), "{refused:?}");
    // PB's MD5 challenge cannot be checked against an argon2 hash: refused, and told why.
    let mut c = PbClient::connect(running.pb_port).await;
    let refused = c.login("hashed", "hashed-pw").await.expect_err("refused");
    assert!(is_unauthorized(&refused) && refused.value.contains("password_hash"), "{refused:?}");
    assert!(h.master.workers.get("w1").is_none());

    let mut c = PbClient::connect(running.pb_port).await;
    let avatar = c.login("w1", "pw-one").await.expect("the right password");
    let w1 = h.master.workers.get("w1").expect("attached");
    assert_eq!(w1.info.version.as_deref(), Some("pb-client"));
    assert!(!w1.info.json.to_string().contains("hunter2"), "the worker's environment is not kept");
    let listed = h.store.list_workers(&ListQuery::default()).await.expect("workers");
    let row = listed.items.iter().find(|w| w.name == "w1").expect("w1");
    assert_eq!(row.connected_to.len(), 1);

    // Keepalives are answered with None.
    let req = c.call(ObjectId::Luid(avatar), "keepalive", vec![]).await;
    assert_eq!(c.answer_of(req).await, Ok(Value::None));
    // A second login on the same connection is refused.
    let req = c.call(ObjectId::Name(b"root".to_vec()), "login", vec![Value::Bytes(b"w1".to_vec())]).await;
    assert!(c.answer_of(req).await.is_err_and(|f| is_unauthorized(&f)));
    // Unknown objects and methods get PB's errors, and the connection stays.
    let req = c.call(ObjectId::Luid(999), "update", vec![]).await;
    let err = c.answer_of(req).await.expect_err("no such object");
    assert_eq!(err.value, "Invalid Object ID");
    let req = c.call(ObjectId::Luid(avatar), "frobnicate", vec![]).await;
    let err = c.answer_of(req).await.expect_err("no such method");
    assert!(err.parents.iter().any(|p| p == "twisted.spread.flavors.NoSuchMethod"), "{err:?}");
    // Unknown decrefs, stray answers and didNotUnderstand are ignored.
    c.send(&Message::Decref(12_345)).await;
    c.send(&Message::Answer { request: 777, value: Value::None }).await;
    c.send(&Message::Error { request: 778, failure: Failure::pb_error("x.Y", "stray") }).await;
    c.send(&Message::DidNotUnderstand("foo".into())).await;
    let req = c.call(ObjectId::Luid(avatar), "keepalive", vec![]).await;
    assert_eq!(c.answer_of(req).await, Ok(Value::None), "still served");

    // A second connection under the live name is refused (and may retry):
    // the first still answers, so it stays.
    let first = c.serve();
    let mut second = PbClient::connect(running.pb_port).await;
    let refused = second.login("w1", "pw-one").await.expect_err("duplicate refused");
    assert!(is_unauthorized(&refused), "{refused:?}");
    assert!(h.master.workers.get("w1").is_some_and(|cur| std::sync::Arc::ptr_eq(&cur, &w1)));

    first.abort();
    wait_for("w1 to detach", LIMIT, || async { h.master.workers.get("w1").is_none().then_some(()) }).await;
});

test_both!(hostile_bytes_drop_only_their_connection, |db| {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, sha) = make_repo(dir.path());
    let text = config(&repo, r#"{ name = "ok", command = ["echo", "fine"] },"#)
        .replace("workers = [\"w1\"]", "workers = [\"w2\"]")
        .replace("[[factory]]", "[[worker]]\nname = \"w2\"\npassword = \"pw-two\"\n\n[[factory]]");
    let h = Harness::with_config(db, &text).await;
    let running = run_master(&h).await;

    // Each of these is fatal to its own connection, as in Twisted.
    // A string of 655,361 bytes: prefix 1 + 40 × 128², type STRING.
    let too_long = vec![0x01, 0x00, 0x28, 0x82];
    let deep: Vec<u8> = std::iter::repeat_n([0x01u8, 0x80], 10_000).flatten().collect();
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("an unknown token type", vec![0x01, 0xff]),
        ("an unknown vocabulary word", vec![0x40, 0x87]),
        ("a string over the limit", too_long),
        ("lists nested ten thousand deep", deep),
        ("a prefix over 64 bytes", vec![0x00; 100]),
        ("a top-level non-list", banana::encode(&Expr::Int(5), true).expect("encodes")),
        ("an unknown message", banana::encode(&Expr::List(vec![Expr::bytes("frobnicate")]), true).expect("encodes")),
        (
            "an insecure jelly type",
            banana::encode(
                &Expr::List(vec![
                    Expr::bytes("answer"),
                    Expr::Int(1),
                    Expr::List(vec![Expr::bytes("instance"), Expr::bytes("os.system")]),
                ]),
                true,
            )
            .expect("encodes"),
        ),
    ];
    for (what, bytes) in hostile {
        let mut c = PbClient::connect(running.pb_port).await;
        c.write(&bytes).await;
        assert!(c.closed().await, "{what}: the connection is dropped");
    }
    // A dialect that was not offered.
    let mut raw = TcpStream::connect(("127.0.0.1", running.pb_port)).await.expect("connects");
    raw.write_all(&banana::encode(&Expr::bytes("banana-2"), false).expect("encodes")).await.expect("writes");
    let mut sink = Vec::new();
    let closed = tokio::time::timeout(LIMIT, raw.read_to_end(&mut sink)).await;
    assert!(closed.is_ok(), "an unoffered dialect closes the connection");
    // A logged-in worker that sends garbage loses its connection, and its registration.
    let mut c = PbClient::connect(running.pb_port).await;
    c.login("w1", "pw-one").await.expect("logs in");
    assert!(h.master.workers.get("w1").is_some());
    c.write(&[0x05, 0x88]).await;
    assert!(c.closed().await);
    wait_for("w1 to be dropped", LIMIT, || async { h.master.workers.get("w1").is_none().then_some(()) }).await;

    // Meanwhile a stock worker over PB is served and builds.
    let _w2 = BuildbotWorker::start_kind(Kind::BuildbotPb, dir.path(), running.pb_port, "w2", "pw-two").await;
    wait_for("w2 to attach", Duration::from_secs(30), || async { h.master.workers.get("w2") }).await;
    push(&h, &sha).await;
    let build = finished_build(&h, Duration::from_secs(60)).await;
    assert_eq!(build.results, Some(0), "{}", build.state_string);
});

test_both!(a_silent_pb_worker_is_dropped, |db| {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, _) = make_repo(dir.path());
    let text = config(&repo, r#"{ name = "x", command = ["true"] },"#)
        .replace("name = \"worker-test\"", "name = \"worker-test\"\nworker_ping = \"100ms\"\nworker_timeout = \"1s\"");
    let h = Harness::with_config(db, &text).await;
    let running = run_master(&h).await;
    let mut c = PbClient::connect(running.pb_port).await;
    c.login("w1", "pw-one").await.expect("logs in");
    // The master pings a quiet worker; this one never answers.
    let ping = c.next().await.expect("a ping");
    assert!(matches!(&ping, Message::Call { method, .. } if method == "print"), "{ping:?}");
    wait_for("the silent worker to be dropped", Duration::from_secs(10), || async {
        h.master.workers.get("w1").is_none().then_some(())
    })
    .await;
    assert!(c.closed().await);
});

test_both!(builders_run_side_by_side_on_one_pb_worker, |db| {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, sha) = make_repo(dir.path());
    let flags = dir.path().join("flags");
    std::fs::create_dir_all(&flags).expect("flags");
    // Each build says it started, then waits for the go-ahead: both can only
    // finish if both run at once (one command slot per builder on the worker).
    let step = format!(
        r#"{{ name = "meet", command = ["sh", "-c", "touch '{f}/%(prop:buildername)s'; while [ ! -f {f}/go ]; do sleep 0.1; done; echo met"] }},"#,
        f = flags.display()
    );
    let text = config(&repo, &step).replace("password = \"pw-one\"", "password = \"pw-one\"\nmax_builds = 2").replace(
        "[[scheduler]]",
        "[[builder]]\nname = \"other\"\nworkers = [\"w1\"]\nfactory = \"f\"\nbranches = [\"main\"]\n\n[[scheduler]]",
    );
    let h = Harness::with_config(db, &text).await;
    let running = run_master(&h).await;
    let _worker = BuildbotWorker::start_kind(Kind::BuildbotPb, dir.path(), running.pb_port, "w1", "pw-one").await;
    wait_for("the worker to attach", Duration::from_secs(30), || async { h.master.workers.get("w1") }).await;
    push(&h, &sha).await;
    wait_for("both builds to be running", Duration::from_secs(60), || async {
        (flags.join("unix main").exists() && flags.join("other main").exists()).then_some(())
    })
    .await;
    std::fs::write(flags.join("go"), "").expect("go");
    let done = wait_for("both builds to finish", Duration::from_secs(60), || async {
        let a = h.store.get_build(1).await.ok().flatten().filter(|b| b.complete)?;
        let b = h.store.get_build(2).await.ok().flatten().filter(|b| b.complete)?;
        Some([a, b])
    })
    .await;
    for b in &done {
        assert_eq!(b.results, Some(0), "{}", b.state_string);
        let steps = h.store.list_steps(b.buildid).await.expect("steps");
        assert!(log_of(&h, &steps[1]).await.contains(&"omet".to_string()));
    }
});

test_both!(a_pb_worker_that_asks_to_stop_finishes_its_build_first, |db| {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, sha) = make_repo(dir.path());
    let (started, go) = (dir.path().join("started"), dir.path().join("go"));
    let step = format!(
        r#"{{ name = "wait", command = ["sh", "-c", "touch {s}; while [ ! -f {g} ]; do sleep 0.1; done; echo done"] }},"#,
        s = started.display(),
        g = go.display()
    );
    let h = Harness::with_config(db, &config(&repo, &step)).await;
    let running = run_master(&h).await;
    let mut worker = BuildbotWorker::start_kind(Kind::BuildbotPb, dir.path(), running.pb_port, "w1", "pw-one").await;
    wait_for("the worker to attach", Duration::from_secs(30), || async { h.master.workers.get("w1") }).await;
    push(&h, &sha).await;
    wait_for("the build to be running", Duration::from_secs(60), || async { started.exists().then_some(()) }).await;
    // `allow_shutdown = 'signal'`: SIGHUP makes the worker ask the master to stop it.
    let pid = worker.pid();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status().expect("kill").success());
    wait_for("the master to stop giving it work", LIMIT, || async {
        h.master.workers.get("w1").filter(|w| w.draining.load(std::sync::atomic::Ordering::SeqCst))
    })
    .await;
    assert!(worker.is_running(), "the worker waits for its build");
    std::fs::write(&go, "").expect("go");
    let build = finished_build(&h, Duration::from_secs(60)).await;
    assert_eq!(build.results, Some(0), "the running build finishes: {}", build.state_string);
    wait_for("the worker to exit", Duration::from_secs(30), || {
        let exited = !worker.is_running();
        async move { exited.then_some(()) }
    })
    .await;
    wait_for("the registry to forget the worker", LIMIT, || async {
        h.master.workers.get("w1").is_none().then_some(())
    })
    .await;
});

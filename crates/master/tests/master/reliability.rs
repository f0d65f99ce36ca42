//! The edges hold: what anyone who can reach a port may send (slow or
//! endless requests, floods of connections, floods of wrong passwords,
//! hostile text) is answered or dropped, never lets the master run out of
//! memory or descriptors, and gets the same answer on both backends. The
//! long runs (kill -9 loops, PostgreSQL restarts, soaks) are `loadgen
//! reliability`; see docs/reliability.md.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use cascade_testkit::{Backend, TestDb, test_both};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::harness::{CONFIG, Harness, MasterProcess, free_port, synthetic_push};
use crate::workers::wait_for;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const ELSEWHERE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// A connection to `to` made from `from` (any loopback address will do).
async fn connect_from(to: SocketAddr, from: IpAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::new(from, 0)).expect("bind");
    socket.connect(to).await.expect("connect")
}

/// Reads the head of an answer (through the blank line), or what came
/// before the server closed the connection.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The status of an answer's head, 0 when there was none.
fn status_of(head: &str) -> u16 {
    head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// One request on its own connection; the answer's status.
async fn exchange(to: SocketAddr, from: IpAddr, request: &str) -> u16 {
    let mut stream = connect_from(to, from).await;
    stream.write_all(request.as_bytes()).await.expect("write");
    status_of(&read_head(&mut stream).await)
}

/// Waits (at most `limit`) for the server to close `stream`; whether it did.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut sink = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut sink)).await.is_ok()
}

/// A msgpack worker's login: the WebSocket upgrade with Basic credentials.
fn worker_login(name: &str, password: &str) -> String {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}"));
    format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: Basic {basic}\r\n\r\n"
    )
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
}

/// The harness config with `[limits]` as given.
fn limited(limits: &str) -> String {
    format!("{CONFIG}\n[limits]\n{limits}\n")
}

/// Peak resident memory of a process, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// The most a master may hold while a thousand wrong passwords arrive at
/// once (each argon2 check takes about 19 MiB; unbounded, 600 of them took
/// 12.5 GiB).
const LOGIN_FLOOD_CEILING_MIB: u64 = 256;

fn process_config(http: u16, msgpack: u16, pb: u16) -> String {
    let hash = cascade_master::password::hash("ann-password").expect("hash");
    format!(
        r#"
[master]
name = "flooded"
http = "127.0.0.1:{http}"
msgpack = "127.0.0.1:{msgpack}"
pb = "127.0.0.1:{pb}"
[github]
insecure_webhook = true
[[branch]]
name = "main"
[[worker]]
name = "w1"
password_hash = "{hash}"
[[factory]]
name = "f"
steps = [{{ command = "true" }}]
[[builder]]
name = "unix"
workers = ["w1"]
factory = "f"
branches = ["main"]
[[user]]
name = "ann"
password_hash = "{hash}"
[auth]
login_attempts = 100000
[limits]
connections_per_address = 4096
password_checks = 2
worker_login_attempts = 100000
worker_login_attempts_per_name = 100000
"#
    )
}

/// The login form's cookie and token.
async fn login_form(client: &reqwest::Client, base: &str) -> (String, String) {
    let answer = client.get(format!("{base}/login")).send().await.expect("login form");
    let cookie = answer
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("cascade_login="))
        .and_then(|c| c.split(';').next())
        .expect("login cookie")
        .to_string();
    let html = answer.text().await.expect("html");
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).expect("csrf");
    (cookie, csrf.to_string())
}

/// A thousand wrong logins at once, half workers' (msgpack), half people's
/// (the login form), every one a real password check (the rate limits are
/// set out of the way): all are answered (401, or 503 when the checks are
/// queued too long), and the master's peak memory stays under the ceiling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_wrong_logins_at_once_stay_under_a_memory_ceiling() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (http, msgpack, pb) = (free_port(), free_port(), free_port());
    let config = dir.path().join("cascade.toml");
    std::fs::write(&config, process_config(http, msgpack, pb)).expect("config");
    let mut master = MasterProcess::start(&config, &db.url, &dir.path().join("master.log"));
    let pid = master.0.id().expect("pid");
    let base = format!("http://127.0.0.1:{http}");
    cascade_master::outbound::install_crypto_provider();
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    master.wait_healthy(&client, &base, &dir.path().join("master.log"), Duration::from_secs(60)).await;
    let (cookie, csrf) = login_form(&client, &base).await;

    let workers = (0..500).map(|i| {
        let login = worker_login(if i % 2 == 0 { "w1" } else { "nobody" }, &format!("wrong-{i}"));
        tokio::spawn(async move { exchange(SocketAddr::from(([127, 0, 0, 1], msgpack)), LOCALHOST, &login).await })
    });
    let people = (0..500).map(|i| {
        let (client, base, cookie, csrf) = (client.clone(), base.clone(), cookie.clone(), csrf.clone());
        tokio::spawn(async move {
            let user = if i % 2 == 0 { "ann".to_string() } else { format!("ann\nlogged in user=admin {i}") };
            let form = [("username", user.as_str()), ("password", "wrong"), ("csrf", csrf.as_str()), ("next", "/")];
            let body = serde_urlencoded::to_string(form).expect("form");
            let answer = client
                .post(format!("{base}/login"))
                .header(header::COOKIE, cookie)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await;
            answer.map_or(0, |a| a.status().as_u16())
        })
    });
    let mut statuses = Vec::new();
    for task in workers.chain(people).collect::<Vec<_>>() {
        statuses.push(task.await.expect("task"));
    }
    let peak = peak_rss_kib(pid) / 1024;
    let checked = statuses.iter().filter(|s| **s == 401).count();
    assert!(statuses.iter().all(|s| matches!(s, 401 | 503)), "every login answered 401 or 503: {statuses:?}");
    assert!(checked > 0, "some passwords were checked");
    eprintln!("1,000 wrong logins at once: {checked} checked, the rest 503; peak {peak} MiB");
    assert!(peak < LOGIN_FLOOD_CEILING_MIB, "peak {peak} MiB over {LOGIN_FLOOD_CEILING_MIB} MiB ({checked} checked)");

    // The master is still itself, and its log was not forged.
    assert!(client.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success()));
    master.kill().await;
    let log = std::fs::read_to_string(dir.path().join("master.log")).expect("log");
    assert!(!log.lines().any(|l| l.starts_with("logged in user=admin")), "a user name forged a log line");
    assert!(!log.contains("wrong-"), "a password reached the log");
    db.finish().await;
}

/// A client that sends half its headers, or half its body, or nothing at
/// all on the workers' port, is dropped once `header_timeout` passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_dropped() {
    let db = TestDb::new(Backend::Sqlite).await;
    let h = Harness::with_config(&db, &limited("header_timeout = \"1s\"\nrequest_timeout = \"2s\"")).await;
    let (http, msgpack) = (h.served.addresses.http, h.served.addresses.msgpack);
    let limit = Duration::from_secs(20);

    let mut slowloris = connect_from(http, LOCALHOST).await;
    slowloris.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.expect("write");
    assert!(closed_within(&mut slowloris, limit).await, "half a request's headers is dropped");

    let mut endless = connect_from(http, LOCALHOST).await;
    let head = "POST /change_hook/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n\
                Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"ref\":";
    endless.write_all(head.as_bytes()).await.expect("write");
    let answer = tokio::time::timeout(limit, read_head(&mut endless)).await.expect("an answer to a stalled body");
    assert!(matches!(status_of(&answer), 0 | 408), "a body that never ends gets 408 or a close: {answer}");

    let mut silent = connect_from(msgpack, LOCALHOST).await;
    assert!(closed_within(&mut silent, limit).await, "a silent worker connection is dropped");
    let mut half = connect_from(msgpack, LOCALHOST).await;
    half.write_all(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n").await.expect("write");
    assert!(closed_within(&mut half, limit).await, "half a WebSocket handshake is dropped");

    assert_eq!(exchange(http, LOCALHOST, &get("/healthz")).await, 200, "and everyone else is served");
    h.stop().await;
    db.finish().await;
}

/// Idle connections from one address fill only that address's share:
/// the next one is refused with 503, and `/healthz`, webhooks and worker
/// logins from elsewhere go on, on both ports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_from_one_address_leaves_the_master_answering() {
    let db = TestDb::new(Backend::Sqlite).await;
    let h = Harness::with_config(&db, &limited("connections = 100\nconnections_per_address = 20")).await;
    for port in [h.served.addresses.http, h.served.addresses.msgpack] {
        let mut idle = Vec::new();
        for _ in 0..20 {
            idle.push(connect_from(port, LOCALHOST).await);
        }
        let mut refused = connect_from(port, LOCALHOST).await;
        let head = tokio::time::timeout(Duration::from_secs(20), read_head(&mut refused)).await.expect("an answer");
        assert_eq!(status_of(&head), 503, "the flooding address is refused clearly: {head}");
        let from_elsewhere = if port == h.served.addresses.http {
            exchange(port, ELSEWHERE, &get("/healthz")).await
        } else {
            exchange(port, ELSEWHERE, &worker_login("w1", "pw")).await
        };
        assert!(matches!(from_elsewhere, 200 | 101), "another address is served on {port}: {from_elsewhere}");
        drop(idle);
    }
    // Once the flood ends, its address is served again.
    let healthz = wait_for("the flood's connections to close", Duration::from_secs(20), || async {
        let status = exchange(h.served.addresses.http, LOCALHOST, &get("/healthz")).await;
        (status == 200).then_some(status)
    })
    .await;
    assert_eq!(healthz, 200);
    h.stop().await;
    db.finish().await;
}

/// Wrong worker passwords are counted before they are checked: past
/// `worker_login_attempts` an address waits (429, even with the right
/// password), other addresses do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_worker_logins_are_rate_limited_per_address() {
    let db = TestDb::new(Backend::Sqlite).await;
    let h = Harness::with_config(&db, &limited("worker_login_attempts = 3")).await;
    let port = h.served.addresses.msgpack;
    let at_once: Vec<_> = (0..20)
        .map(|i| tokio::spawn(async move { exchange(port, LOCALHOST, &worker_login("w1", &format!("no-{i}"))).await }))
        .collect();
    let mut statuses = Vec::new();
    for t in at_once {
        statuses.push(t.await.expect("task"));
    }
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 3, "three checked, even sent at once: {statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 17, "{statuses:?}");
    assert_eq!(exchange(port, LOCALHOST, &worker_login("w1", "pw")).await, 429, "the address waits");
    assert_eq!(exchange(port, ELSEWHERE, &worker_login("w1", "pw")).await, 101, "another address logs in");
    h.stop().await;
    db.finish().await;
}

/// A push with `field` set to `value` (a JSON pointer into the payload).
fn hostile_push(pointer: &str, value: Value) -> Value {
    let mut push = synthetic_push("3.x", 77, 1, &["Lib/os.py"]);
    *push.pointer_mut(pointer).unwrap_or_else(|| panic!("no {pointer}")) = value;
    push
}

/// What a push answers: its status, and the error's text when refused.
async fn answer_to(h: &Harness, push: &Value, delivery: &str) -> (StatusCode, String) {
    let (status, answer) = h.deliver("push", &serde_json::to_vec(push).expect("json"), delivery).await;
    (status, answer["error"].as_str().unwrap_or_default().to_string())
}

test_both!(hostile_push_fields_get_the_same_answer_on_both_backends, |db| {
    let config = CONFIG.replace(
        "webhook_secret = \"test-secret\"",
        "webhook_secret = \"test-secret\"\nrepository = \"ailisp/gcbapp-buildconfig-example\"",
    );
    let h = Harness::frozen(db, &config).await;
    let long = "x".repeat(3000);
    let long_hex = "a".repeat(3000);
    // Refused by name: what is stored as it is (and indexed) must fit.
    let refused = [
        ("/ref", json!(format!("refs/heads/{long}")), "ref"),
        ("/ref", json!("refs/heads/3.x\u{0}"), "ref"),
        ("/after", json!(long_hex), "after"),
        ("/commits/0/id", json!(long_hex), "commits[0].id"),
        ("/commits/0/id", json!("not-hex\u{0}"), "commits[0].id"),
        ("/commits/0/modified/0", json!("Lib/\u{0}os.py"), "commits[0].modified[0]"),
        ("/repository/html_url", json!(format!("https://github.com/{long}")), "repository.html_url"),
        ("/repository/full_name", json!(format!("ailisp/{long}")), "repository.full_name"),
        (
            "/repository",
            json!({"html_url": "https://github.com/ailisp/gcbapp-buildconfig-example"}),
            "repository.full_name",
        ),
        ("/repository", json!({"name": "r", "owner": {"login": "o\u{0}x"}}), "repository.full_name"),
    ];
    for (i, (pointer, value, field)) in refused.into_iter().enumerate() {
        let (status, error) = answer_to(&h, &hostile_push(pointer, value), &format!("refused-{i}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{pointer}: {error}");
        assert!(error.contains(field), "{pointer}: the error names {field}: {error}");
    }
    let (status, answer) = h
        .deliver("push", &serde_json::to_vec(&hostile_push("/ref", json!("refs/heads/3.x"))).expect("json"), &long)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer["error"].as_str().unwrap_or_default().contains("X-GitHub-Delivery"), "{answer}");

    // Taken, made fit: free text is cleaned and cut, links must be http(s).
    let taken = [
        ("/commits/0/author/name", json!(format!("Eve\u{0}\u{1b}[31m{long}"))),
        ("/commits/0/author/email", json!(format!("eve\u{0}@{long}"))),
        ("/commits/0/message", json!(format!("fix\u{0} it\n{long}"))),
        ("/commits/0/url", json!("javascript:alert(1)")),
        ("/pusher/name", json!("root\nlogged in user=admin")),
    ];
    for (i, (pointer, value)) in taken.into_iter().enumerate() {
        let mut push = hostile_push(pointer, value);
        let id = format!("{:040x}", 0xfeed_0000_u64 + i as u64);
        push["commits"][0]["id"] = json!(id);
        push["after"] = json!(id);
        push["head_commit"] = push["commits"][0].clone();
        let (status, error) = answer_to(&h, &push, &format!("taken-{i}")).await;
        assert_eq!(status, StatusCode::OK, "{pointer}: {error}");
        let changes = h.store.list_changes(&cascade_store::ListQuery::default().eq("revision", id.as_str())).await;
        let change = changes.expect("changes").items.pop().expect("stored");
        assert!(!change.author.contains('\0') && !change.author.contains('\u{1b}') && change.author.len() < 500);
        assert!(!change.comments.contains('\0'));
        assert!(change.revlink.as_deref().is_none_or(|l| l.starts_with("https://")), "{:?}", change.revlink);
        let (status, _) = h.get(&format!("/api/v2/changes/{}", change.changeid)).await;
        assert_eq!(status, StatusCode::OK, "{pointer}: the change reads back");
    }

    // Reads and forms with a NUL are refused by name too.
    let (status, answer) = h.get("/api/v2/changes?branch=%00").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer["error"].as_str().unwrap_or_default().contains("branch"), "{answer}");
    let (status, answer) = h.get("/api/v2/builders/%00").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a name no builder has: {answer}");
    let (status, answer) = h.get(&format!("/api/v2/builds?state_string__in={}", vec!["x"; 5000].join(","))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
});

// Every page, every API answer and every error carries the headers that
// keep a browser from framing it, sniffing it or running injected script.
test_both!(every_answer_carries_the_security_headers, |db| {
    let h = Harness::frozen(db, CONFIG).await;
    let ids = h.push(&synthetic_push("3.x", 5, 2, &["Lib/os.py"]), "headers-1").await;
    let paths = [
        "/".to_string(),
        "/console".into(),
        "/grid".into(),
        "/waterfall".into(),
        "/release".into(),
        "/builders".into(),
        format!("/builders/{}", h.builder("Linux 3.x")),
        "/workers".into(),
        "/changes".into(),
        format!("/changes/{}", ids[0]),
        "/pending".into(),
        "/login".into(),
        "/builders/999/builds/1".into(),
        "/no/such/page".into(),
        "/api/v2/builders".into(),
        "/api/v2/changes?bogus=1".into(),
        "/healthz".into(),
        "/static/cascade.js".into(),
    ];
    for path in paths {
        let req = Request::get(path.as_str()).body(Body::empty()).expect("req");
        let (status, headers, _) = h.app_response(req).await;
        let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let csp = value("content-security-policy");
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{path} ({status}): {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(value("x-frame-options"), "DENY", "{path}");
        assert_eq!(value("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(value("referrer-policy"), "same-origin", "{path}");
    }
});

// User data becomes a link only as an http(s) URL: a change whose link
// is `javascript:` (stored before this master checked) shows as plain
// text on every page that lists it, and `sendchange` drops such a link.
test_both!(only_http_links_reach_the_pages, |db| {
    let h = Harness::frozen(db, CONFIG).await;
    let mut change = cascade_master::sendchange::SendChange {
        who: "Eve <eve@example.org>".into(),
        branch: Some("3.x".into()),
        revision: Some("deadbeefdeadbeef".into()),
        revlink: Some("javascript:alert(1)".into()),
        comments: "innocent".into(),
        ..Default::default()
    };
    let config = &h.master.catalog.config;
    assert_eq!(change.clone().into_change(config, 0).revlink, None, "sendchange drops it");
    let mut stored = change.clone().into_change(config, 0);
    stored.revlink = change.revlink.take();
    let outcome = h.store.ingest_changes(None, &[(stored, Vec::new())], 0).await.expect("stored");
    let cascade_store::IngestOutcome::Stored { change_ids } = outcome else { panic!("not stored") };
    let id = change_ids[0];
    for path in ["/console".to_string(), "/changes".into(), format!("/changes/{id}")] {
        let (status, body) = h.send(Request::get(path.as_str()).body(Body::empty()).expect("req")).await;
        let html = String::from_utf8_lossy(&body);
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(html.contains("deadbeefde"), "{path} lists the change");
        assert!(!html.to_ascii_lowercase().contains("javascript:"), "{path} links to script: {html}");
    }
});

/// A TCP relay to PostgreSQL that can be cut, as a restart cuts it: its
/// connections are dropped and, until it is mended, new ones are refused.
struct Relay {
    address: SocketAddr,
    target: SocketAddr,
    accepting: Option<tokio::task::AbortHandle>,
    open: std::sync::Arc<parking_lot::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    fn to(target: SocketAddr) -> Relay {
        let address = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut relay = Relay { address, target, accepting: None, open: Default::default() };
        relay.mend();
        relay
    }

    /// Listens (again) on the relay's address.
    fn mend(&mut self) {
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("reuseaddr");
        socket.bind(self.address).expect("bind");
        let listener = socket.listen(64).expect("listen");
        self.address = listener.local_addr().expect("address");
        let (target, open) = (self.target, self.open.clone());
        let accepting = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let relay = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                open.lock().push(relay.abort_handle());
            }
        });
        self.accepting = Some(accepting.abort_handle());
    }

    /// Stops listening and drops every relayed connection.
    async fn cut(&mut self) {
        if let Some(a) = self.accepting.take() {
            a.abort();
        }
        let address = self.address;
        wait_for("the relay to refuse", Duration::from_secs(10), || async {
            TcpStream::connect(address).await.is_err().then_some(())
        })
        .await;
        self.open.lock().drain(..).for_each(|t| t.abort());
    }
}

/// `postgres://user@HOST:PORT/db` with its host and port replaced.
fn through(url: &str, relay: SocketAddr) -> (String, SocketAddr) {
    let (scheme, rest) = url.split_once("://").expect("scheme");
    let (credentials, rest) = rest.rsplit_once('@').map_or(("", rest), |(c, r)| (c, r));
    let (authority, path) = rest.split_once('/').expect("path");
    let target: SocketAddr = authority.parse().expect("host:port as an address");
    let at = if credentials.is_empty() { String::new() } else { format!("{credentials}@") };
    (format!("{scheme}://{at}{relay}/{path}"), target)
}

/// While PostgreSQL cannot be reached, `/healthz` says so and webhooks
/// answer 503 well inside GitHub's 10 s; once it is back, so is the master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_is_reported_fast() {
    let db = TestDb::new(Backend::Postgres).await;
    let (_, target) = through(&db.url, SocketAddr::from(([127, 0, 0, 1], 0)));
    let mut relay = Relay::to(target);
    let (url, _) = through(&db.url, relay.address);
    let store = cascade_store::Store::connect_with(&url, Duration::from_secs(1)).await.expect("store");
    let h = Harness::on_store(store, &limited("store_timeout = \"1s\"")).await;
    let healthz = || async { h.send(Request::get("/healthz").body(Body::empty()).expect("req")).await.0 };
    assert_eq!(healthz().await, StatusCode::OK);

    relay.cut().await;
    let within = Duration::from_secs(6);
    let status = tokio::time::timeout(within, healthz()).await.expect("/healthz answers in time");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let body = serde_json::to_vec(&synthetic_push("3.x", 31, 1, &["Lib/os.py"])).expect("json");
    let (status, answer) = tokio::time::timeout(within, h.deliver("push", &body, "while-down")).await.expect("in time");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");

    relay.mend();
    wait_for("the store to be back", Duration::from_secs(30), || async {
        (healthz().await == StatusCode::OK).then_some(())
    })
    .await;
    let (status, answer) = h.deliver("push", &body, "while-down").await;
    assert_eq!(status, StatusCode::OK, "the redelivery is stored: {answer}");
    h.stop().await;
    db.finish().await;
}

/// Wrong passwords for a worker's name from many addresses stop guesses
/// by name, but they cannot lock the worker out: from an address it has
/// logged in from before, it still logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_for_a_worker_name_do_not_lock_the_worker_out() {
    let db = TestDb::new(Backend::Sqlite).await;
    let h = Harness::with_config(&db, &limited("worker_login_attempts_per_name = 3")).await;
    let port = h.served.addresses.msgpack;
    let home = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    assert_eq!(exchange(port, home, &worker_login("w1", "pw")).await, 101, "the worker logs in from home");
    wait_for("the worker to go", Duration::from_secs(20), || async {
        h.master.workers.get("w1").is_none().then_some(())
    })
    .await;
    for last in 4..=7u8 {
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
        let status = exchange(port, from, &worker_login("w1", "guess")).await;
        assert!(matches!(status, 401 | 429), "{status}");
    }
    let stranger = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 8));
    assert_eq!(exchange(port, stranger, &worker_login("w1", "pw")).await, 429, "the name waits, from new addresses");
    assert_eq!(exchange(port, home, &worker_login("w1", "pw")).await, 101, "but not from the worker's own");
    h.stop().await;
    db.finish().await;
}

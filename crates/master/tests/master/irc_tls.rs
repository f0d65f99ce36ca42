//! The IRC reporter over TLS with SASL, against a real network: Debian's
//! InspIRCd with Anope's services (installed by `tests/support/inspircd.sh`,
//! which `.ci/run` runs), linked on free ports, with a certificate from a
//! throw-away CA (`tests/support/tls-certs.sh`). The channel is `+R` (only
//! users logged in to an account may join), so the bot's line reaches it
//! only if SASL really logged it in.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use cascade_model::Results;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::harness::{Harness, free_port, support, tls_certificates};
use crate::irc::{Listener, finish};

const ACCOUNT: &str = "cascadebot";
const PASSWORD: &str = "s3cret-sasl-pw";

/// (inspircd, anope), from the environment or installed now.
fn servers() -> (PathBuf, PathBuf) {
    if let (Ok(i), Ok(a)) = (std::env::var("CASCADE_INSPIRCD"), std::env::var("CASCADE_ANOPE")) {
        return (i.into(), a.into());
    }
    let lines = support("inspircd.sh", &[]);
    (lines[0].clone().into(), lines[1].clone().into())
}

struct Ports {
    plain: u16,
    tls: u16,
    link: u16,
}

/// InspIRCd and Anope, linked; both killed on drop.
struct Network {
    _ircd: tokio::process::Child,
    _services: tokio::process::Child,
}

impl Network {
    async fn start(dir: &Path, ports: &Ports) -> Network {
        let (inspircd, anope) = servers();
        let certs = dir.join("certs");
        tls_certificates(&certs);
        let conf = dir.join("inspircd.conf");
        std::fs::write(&conf, inspircd_conf(dir, &certs, ports)).expect("inspircd.conf");
        let ircd = tokio::process::Command::new(inspircd)
            .args(["--nofork", "--runasroot", "--config"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("inspircd starts");
        for port in [ports.plain, ports.tls, ports.link] {
            listening(port).await;
        }
        let services = tokio::process::Command::new(anope)
            .arg("--nofork")
            .arg(format!("--confdir={}", anope_conf(dir, ports.link).display()))
            .arg(format!("--dbdir={}", dir.display()))
            .arg(format!("--logdir={}", dir.display()))
            .args(["--modulesdir=/usr/lib/anope", "--localedir=/usr/share/locale"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("anope starts");
        Network { _ircd: ircd, _services: services }
    }
}

async fn listening(port: u16) {
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "nothing listens on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn inspircd_conf(dir: &Path, certs: &Path, p: &Ports) -> String {
    let (cert, key) = (certs.join("server.pem"), certs.join("server.key"));
    format!(
        r#"<server name="irc.cascade.test" description="Cascade test" network="CascadeTest">
<admin name="Test" nick="test" email="test@cascade.test">
<bind address="127.0.0.1" port="{plain}" type="clients">
<bind address="127.0.0.1" port="{tls}" type="clients" sslprofile="tls">
<bind address="127.0.0.1" port="{link}" type="servers">
<connect allow="*" timeout="60" pingfreq="120" sendq="262144" recvq="8192" localmax="100" globalmax="100" threshold="1000" commandrate="100000" fakelag="no">
<pid file="{pid}">
<module name="spanningtree"><module name="cap"><module name="sasl"><module name="services_account">
<module name="hidechans"><module name="svshold"><module name="chghost"><module name="chgident">
<module name="ssl_gnutls"><module name="sslinfo">
<sslprofile name="tls" provider="gnutls" certfile="{cert}" keyfile="{key}" dhfile="" hash="sha256">
<link name="services.cascade.test" ipaddr="127.0.0.1" port="{link}" allowmask="127.0.0.0/8" sendpass="link-pw" recvpass="link-pw">
<uline server="services.cascade.test" silent="yes">
<sasl target="services.cascade.test">
"#,
        plain = p.plain,
        tls = p.tls,
        link = p.link,
        pid = dir.join("inspircd.pid").display(),
        cert = cert.display(),
        key = key.display(),
    )
}

/// Debian's Anope configuration, linked to this network, in a folder of the test's.
fn anope_conf(dir: &Path, link: u16) -> PathBuf {
    let conf = dir.join("anope");
    std::fs::create_dir_all(&conf).expect("anope folder");
    for entry in std::fs::read_dir("/etc/anope").expect("/etc/anope").flatten() {
        std::fs::copy(entry.path(), conf.join(entry.file_name())).expect("copy anope config");
    }
    let edit = |file: &str, pairs: &[(&str, String)]| {
        let path = conf.join(file);
        let mut text = std::fs::read_to_string(&path).expect("read anope config");
        for (old, new) in pairs {
            assert!(text.contains(old), "{file} has no {old:?}");
            text = text.replacen(old, new, 1);
        }
        std::fs::write(&path, text).expect("write anope config");
    };
    edit(
        "services.conf",
        &[
            ("value = \"services.example.com\"", "value = \"services.cascade.test\"".into()),
            ("name = \"services.example.com\"", "name = \"services.cascade.test\"".into()),
            ("port = 7000", format!("port = {link}")),
            ("password = \"mypassword\"", "password = \"link-pw\"".into()),
            ("pid = \"/var/run/anope/anope.pid\"", format!("pid = \"{}\"", dir.join("anope.pid").display())),
            ("motd = \"/etc/anope/services.motd\"", format!("motd = \"{}\"", conf.join("services.motd").display())),
            ("casemap = \"ascii\"", "casemap = \"rfc1459\"".into()),
            // A first link attempt that fails on a busy machine is retried in
            // 2 s, not Anope's 60 s (which is the whole wait below).
            ("retrywait = 60s", "retrywait = 2s".into()),
        ],
    );
    edit("nickserv.conf", &[("#nickregdelay = 30s", "nickregdelay = 0s".into())]);
    conf
}

/// A raw client: registers `ACCOUNT` with NickServ once services have linked.
async fn register_account(port: u16) {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    let (read, mut write) = tokio::io::split(stream);
    write.write_all(format!("NICK {ACCOUNT}\r\nUSER {ACCOUNT} 0 * :r\r\n").as_bytes()).await.expect("register");
    let mut me = Listener { lines: BufReader::new(read).lines(), write };
    me.until(|l| l.contains(" 001 ")).await;
    // Services link a few seconds after the server starts; until then NickServ is no one.
    let started = Instant::now();
    loop {
        let register = format!("PRIVMSG NickServ :REGISTER {PASSWORD} bot@cascade.test\r\n");
        me.write.write_all(register.as_bytes()).await.expect("REGISTER");
        let answer = me.until(|l| l.contains(" 401 ") || l.contains("NOTICE")).await;
        if answer.contains("registered") {
            break;
        }
        assert!(!answer.contains("NOTICE"), "NickServ refused: {answer}");
        assert!(started.elapsed() < Duration::from_secs(60), "services never linked");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = me.write.write_all(b"QUIT :done\r\n").await;
}

fn config(tls_port: u16, ca: &Path) -> String {
    format!(
        r##"
[master]
name = "irc-tls"
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
server = "127.0.0.1:{tls_port}"
ca_file = "{ca}"
nick = "{ACCOUNT}"
password = "{PASSWORD}"
channels = ["#builds"]
"##,
        ca = ca.display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_bot_logs_in_with_sasl_and_speaks_in_a_channel_for_accounts_only() {
    let db = cascade_testkit::TestDb::new(cascade_testkit::Backend::Sqlite).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ports = Ports { plain: free_port(), tls: free_port(), link: free_port() };
    let _network = Network::start(dir.path(), &ports).await;
    register_account(ports.plain).await;
    let mut watcher = Listener::join(ports.plain, "#builds").await;
    watcher.write.write_all(b"MODE #builds +R\r\n").await.expect("MODE");
    watcher.until(|l| l.contains(" MODE #builds ") && l.contains("+R")).await;

    let h = Harness::with_config(&db, &config(ports.tls, &dir.path().join("certs/ca.pem"))).await;
    // Only an account may join a +R channel: the join itself says SASL worked.
    watcher.until(|l| l.starts_with(&format!(":{ACCOUNT}!")) && l.contains(" JOIN ")).await;
    watcher.write.write_all(format!("WHOIS {ACCOUNT}\r\n").as_bytes()).await.expect("WHOIS");
    let mut whois = Vec::new();
    while whois.last().is_none_or(|l: &String| !l.contains(" 318 ")) {
        whois.push(watcher.until(|_| true).await);
    }
    let has = |code: &str| whois.iter().any(|l| l.contains(&format!(" {code} watcher {ACCOUNT} ")));
    assert!(has("330"), "not logged in to its account: {whois:?}");
    assert!(has("671"), "not connected over TLS: {whois:?}");

    finish(&h, Results::Success).await;
    finish(&h, Results::Failure).await;
    assert_eq!(watcher.said().await, "Fedora main #2: worse (failure): https://ci.example.org/builders/1/builds/2");
    h.stop().await;
    db.finish().await;
}

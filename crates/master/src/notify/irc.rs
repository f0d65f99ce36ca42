//! An IRC reporter: one connection per reporter (TLS optional, SASL PLAIN
//! when a password is set), its nick and channels, reconnecting with
//! back-off; lines are sent at most one a second after a short burst, so the
//! server's flood control never drops the bot.

use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch};

use super::message::Facts;

/// What a reporter connects with.
#[derive(Clone)]
pub struct IrcSettings {
    pub server: String,
    pub tls: bool,
    pub nick: String,
    pub password: Option<String>,
    pub channels: Vec<String>,
    pub colours: bool,
    /// Certificates that alone verify the server, when set.
    pub ca_file: Option<std::path::PathBuf>,
}

/// A line to post, and where to say it was written.
type Post = (String, oneshot::Sender<()>);

/// The reporter's side of its connection.
#[derive(Clone)]
pub struct IrcHandle {
    tx: mpsc::Sender<Post>,
}

impl IrcHandle {
    /// Posts `line` to every channel; false if it was not written within `limit`.
    pub async fn post(&self, line: String, limit: Duration) -> bool {
        let (done, written) = oneshot::channel();
        // A full queue (a long disconnection) is a failed attempt, not a wait.
        if self.tx.try_send((line, done)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(limit, written).await, Ok(Ok(())))
    }
}

/// Starts the connection task; it runs until `stopped` flips.
pub fn spawn(settings: IrcSettings, stopped: watch::Receiver<bool>) -> IrcHandle {
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(run(settings, rx, stopped));
    IrcHandle { tx }
}

/// The line for a channel, with mIRC colours when asked.
pub fn line(f: &Facts, colours: bool) -> String {
    let text = super::message::line(f);
    let text: String = text.chars().filter(|c| !matches!(c, '\r' | '\n' | '\0')).collect();
    if !colours {
        return text;
    }
    let colour = match f.event.as_str() {
        "better" | "success" | "recovery" => "03",
        "worse" | "failure" | "problem" => "04",
        "exception" => "06",
        _ => return text,
    };
    format!("\x03{colour}{text}\x03")
}

/// `:prefix COMMAND a b :trailing` → (command, params).
pub fn parse(line: &str) -> (String, Vec<String>) {
    let mut rest = line.trim_end_matches(['\r', '\n']);
    if rest.starts_with(':') {
        rest = rest.split_once(' ').map_or("", |(_, r)| r);
    }
    let (head, trailing) = match rest.split_once(" :") {
        Some((h, t)) => (h, Some(t)),
        None => (rest, None),
    };
    let mut words = head.split(' ').filter(|w| !w.is_empty());
    let command = words.next().unwrap_or("").to_ascii_uppercase();
    let mut params: Vec<String> = words.map(str::to_string).collect();
    params.extend(trailing.map(str::to_string));
    (command, params)
}

/// SASL PLAIN's payload: `nick\0nick\0password`, base64.
pub fn sasl_plain(nick: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{nick}\0{nick}\0{password}"))
}

async fn run(settings: IrcSettings, mut rx: mpsc::Receiver<Post>, mut stopped: watch::Receiver<bool>) {
    let mut failures: u32 = 0;
    while !*stopped.borrow() {
        match connect(&settings).await {
            Ok(stream) => {
                tracing::info!(server = %settings.server, "IRC connected");
                let ended = session(&settings, stream, &mut rx, &mut stopped).await;
                failures = if ended.is_ok() { 0 } else { failures + 1 };
                if let Err(e) = ended {
                    tracing::warn!(server = %settings.server, error = %e, "IRC connection lost");
                }
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(server = %settings.server, error = %e, "IRC connect failed");
            }
        }
        let wait = Duration::from_millis(500u64.saturating_mul(1 << failures.min(7)).min(60_000));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stopped.changed() => {}
        }
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn connect(settings: &IrcSettings) -> Result<Box<dyn Stream>, String> {
    let tcp = tokio::time::timeout(Duration::from_secs(15), tokio::net::TcpStream::connect(&settings.server))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if !settings.tls {
        return Ok(Box::new(tcp));
    }
    Ok(Box::new(crate::outbound::tls_connect(&settings.server, tcp, settings.ca_file.as_deref()).await?))
}

/// One connection: registration (with SASL), joins, then posts and PINGs until it ends.
async fn session(
    settings: &IrcSettings,
    stream: Box<dyn Stream>,
    rx: &mut mpsc::Receiver<Post>,
    stopped: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let (read, mut write) = tokio::io::split(stream);
    let mut lines = Lines { reader: BufReader::new(read), buf: Vec::new() };
    let mut nick = settings.nick.clone();
    let out = |text: String| format!("{text}\r\n");
    let mut hello = String::new();
    if settings.password.is_some() {
        hello.push_str(&out("CAP LS 302".into()));
    }
    hello.push_str(&out(format!("NICK {nick}")));
    hello.push_str(&out(format!("USER {nick} 0 * :Cascade CI")));
    write.write_all(hello.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut registered = false;
    let mut caps = String::new();
    let mut budget = Budget::new();
    loop {
        tokio::select! {
            line = tokio::time::timeout(Duration::from_secs(300), lines.next_line()) => {
                let line = line.map_err(|_| "silent for 5 minutes".to_string())?.map_err(|e| e.to_string())?;
                let Some(line) = line else { return Err("closed by the server".into()) };
                let (command, params) = parse(&line);
                let reply = answer(settings, &mut nick, &command, &params, &mut registered, &mut caps);
                for r in reply {
                    write.write_all(out(r).as_bytes()).await.map_err(|e| e.to_string())?;
                }
                if command == "ERROR" {
                    return Err(format!("server said {:?}", params.last().cloned().unwrap_or_default()));
                }
            }
            post = rx.recv(), if registered => {
                let Some((text, done)) = post else { return Ok(()) };
                // Its sender gave up waiting: it will be tried again as a new line.
                if done.is_closed() {
                    continue;
                }
                for channel in &settings.channels {
                    budget.wait().await;
                    write.write_all(out(format!("PRIVMSG {channel} :{text}")).as_bytes()).await.map_err(|e| e.to_string())?;
                }
                let _ = done.send(());
            }
            _ = stopped.changed() => {
                let _ = write.write_all(b"QUIT :master stopping\r\n").await;
                return Ok(());
            }
        }
    }
}

/// Longest line read from a server; the rest of a longer one is dropped.
const MAX_LINE: usize = 8 * 1024;

/// A server's lines, each at most `MAX_LINE` bytes kept, whatever it sends.
struct Lines<R> {
    reader: BufReader<R>,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Lines<R> {
    async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        self.buf.clear();
        loop {
            let chunk = self.reader.fill_buf().await?;
            if chunk.is_empty() {
                return Ok(None);
            }
            let (take, ended) = match chunk.iter().position(|b| *b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            let room = MAX_LINE.saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&chunk[..take.min(room)]);
            self.reader.consume(take);
            if ended {
                let line = String::from_utf8_lossy(&self.buf).trim_end_matches(['\r', '\n']).to_string();
                return Ok(Some(line));
            }
        }
    }
}

/// What to answer a server's line with.
fn answer(
    settings: &IrcSettings,
    nick: &mut String,
    command: &str,
    params: &[String],
    registered: &mut bool,
    caps: &mut String,
) -> Vec<String> {
    let last = params.last().map(String::as_str).unwrap_or("");
    match command {
        "PING" => vec![format!("PONG :{last}")],
        // `CAP * LS * :…` says more lines of capabilities follow.
        "CAP" if params.get(1).is_some_and(|s| s == "LS") && params.len() >= 4 && params[2] == "*" => {
            caps.push(' ');
            caps.push_str(last);
            Vec::new()
        }
        "CAP" if params.get(1).is_some_and(|s| s == "LS") => {
            caps.push(' ');
            caps.push_str(last);
            let offered = caps.split(' ').any(|c| c == "sasl" || c.starts_with("sasl="));
            caps.clear();
            if offered {
                vec!["CAP REQ :sasl".into()]
            } else {
                tracing::warn!(server = %settings.server, "the IRC server offers no SASL; connecting without");
                vec!["CAP END".into()]
            }
        }
        "CAP" if params.get(1).is_some_and(|s| s == "ACK") => vec!["AUTHENTICATE PLAIN".into()],
        "CAP" if params.get(1).is_some_and(|s| s == "NAK") => vec!["CAP END".into()],
        "AUTHENTICATE" if last == "+" => {
            vec![format!("AUTHENTICATE {}", sasl_plain(&settings.nick, settings.password.as_deref().unwrap_or("")))]
        }
        "903" => vec!["CAP END".into()],
        "904" | "905" | "906" => {
            tracing::warn!(server = %settings.server, "SASL authentication failed");
            vec!["CAP END".into()]
        }
        "433" if nick.len() < settings.nick.len() + 5 => {
            nick.push('_');
            vec![format!("NICK {nick}")]
        }
        "001" => {
            *registered = true;
            settings.channels.iter().map(|c| format!("JOIN {c}")).collect()
        }
        _ => Vec::new(),
    }
}

/// Flood control: a burst of four lines, then one a second.
struct Budget {
    tokens: f64,
    at: tokio::time::Instant,
}

impl Budget {
    fn new() -> Budget {
        Budget { tokens: 4.0, at: tokio::time::Instant::now() }
    }

    async fn wait(&mut self) {
        let now = tokio::time::Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64()).min(4.0);
        self.at = now;
        if self.tokens < 1.0 {
            tokio::time::sleep(Duration::from_secs_f64(1.0 - self.tokens)).await;
            self.tokens = 1.0;
            self.at = tokio::time::Instant::now();
        }
        self.tokens -= 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lines_parse() {
        assert_eq!(parse(":srv 001 bot :Welcome"), ("001".into(), vec!["bot".into(), "Welcome".into()]));
        assert_eq!(parse("PING :abc"), ("PING".into(), vec!["abc".into()]));
        assert_eq!(
            parse(":srv CAP * LS :multi-prefix sasl"),
            ("CAP".into(), vec!["*".into(), "LS".into(), "multi-prefix sasl".into()])
        );
    }

    #[test]
    fn sasl_is_asked_for_when_offered_over_several_cap_lines_and_authenticates() {
        let settings = IrcSettings {
            server: "irc:6697".into(),
            tls: true,
            nick: "bot".into(),
            password: Some("pw".into()),
            channels: vec!["#b".into()],
            colours: false,
            ca_file: None,
        };
        let (mut nick, mut registered, mut caps) = ("bot".to_string(), false, String::new());
        let mut say = |line: &str| {
            let (command, params) = parse(line);
            answer(&settings, &mut nick, &command, &params, &mut registered, &mut caps)
        };
        assert!(say(":srv CAP * LS * :multi-prefix away-notify").is_empty(), "more lines follow");
        assert_eq!(say(":srv CAP * LS :sasl=PLAIN,EXTERNAL"), ["CAP REQ :sasl"]);
        assert_eq!(say(":srv CAP bot ACK :sasl"), ["AUTHENTICATE PLAIN"]);
        assert_eq!(say("AUTHENTICATE +"), ["AUTHENTICATE Ym90AGJvdABwdw=="]);
        assert_eq!(say(":srv 903 bot :SASL authentication successful"), ["CAP END"]);
        assert_eq!(say(":srv 433 * bot :Nickname is already in use"), ["NICK bot_"]);
        assert_eq!(say(":srv 001 bot_ :Welcome"), ["JOIN #b"]);
        assert_eq!(say(":srv CAP * LS :multi-prefix"), ["CAP END"], "no SASL offered: on without it");
    }

    #[test]
    fn sasl_plain_is_base64_of_nick_nick_password() {
        assert_eq!(sasl_plain("bot", "pw"), "Ym90AGJvdABwdw==");
    }

    #[test]
    fn colours_follow_the_event_and_lines_carry_no_newlines() {
        let f = Facts { event: "worse".into(), builder: "b\r\nQUIT".into(), url: "u".into(), ..Facts::default() };
        let plain = line(&f, false);
        assert!(!plain.contains('\n') && !plain.contains('\r'));
        assert!(line(&f, true).starts_with("\x0304"));
    }

    #[tokio::test]
    async fn a_flooding_server_cannot_grow_a_line_without_bound() {
        let mut input = "a".repeat(20_000).into_bytes();
        input.extend_from_slice(b"\nPING :x\r\n");
        let mut lines = Lines { reader: BufReader::new(&input[..]), buf: Vec::new() };
        assert_eq!(lines.next_line().await.expect("read").map(|l| l.len()), Some(MAX_LINE));
        assert_eq!(lines.next_line().await.expect("read").as_deref(), Some("PING :x"));
        assert_eq!(lines.next_line().await.expect("read"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn flood_control_allows_a_burst_then_one_a_second() {
        let mut b = Budget::new();
        let start = tokio::time::Instant::now();
        for _ in 0..6 {
            b.wait().await;
        }
        assert!(start.elapsed() >= Duration::from_secs(2), "{:?}", start.elapsed());
        assert!(start.elapsed() < Duration::from_secs(3));
    }
}

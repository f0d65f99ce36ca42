//! Mail over SMTP: EHLO, STARTTLS when asked, AUTH PLAIN when a user is set,
//! one message to its recipients. Replies in 4xx are retried, 5xx given up.

use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::deliver::Outcome;

/// Where and as whom mail is sent.
pub struct SmtpSettings<'a> {
    pub server: &'a str,
    pub starttls: bool,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub from: &'a str,
    /// Certificates that alone verify the server, when set.
    pub ca_file: Option<&'a std::path::Path>,
}

/// A mail to send.
pub struct Mail<'a> {
    pub to: &'a [String],
    pub subject: &'a str,
    pub body: &'a str,
}

/// Text safe in a header: no line breaks, no controls.
fn header_text(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// The message as sent after DATA: headers, a blank line, the body with
/// every line ending CRLF and leading dots doubled, then the end mark.
pub fn data(from: &str, mail: &Mail<'_>, date: &str, id: &str) -> String {
    let mut out = format!(
        "From: {}\r\nTo: {}\r\nSubject: {}\r\nDate: {date}\r\nMessage-ID: <{id}>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
        header_text(from),
        header_text(&mail.to.join(", ")),
        header_text(mail.subject),
    );
    for line in mail.body.lines() {
        if line.starts_with('.') {
            out.push('.');
        }
        // A bare CR could end DATA early on a lenient relay.
        out.push_str(&line.replace('\r', " "));
        out.push_str("\r\n");
    }
    out.push_str(".\r\n");
    out
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Conn {
    io: BufReader<Box<dyn Io>>,
}

impl Conn {
    /// Reads a (multi-line) reply: its code and last line.
    async fn reply(&mut self) -> Result<(u16, String), String> {
        loop {
            let mut line = String::new();
            let read = tokio::time::timeout(Duration::from_secs(60), self.io.read_line(&mut line)).await;
            let n = read.map_err(|_| "the SMTP server went silent".to_string())?.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the SMTP server closed the connection".into());
            }
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).ok_or_else(|| format!("not SMTP: {line:?}"))?;
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, line.trim_end().to_string()));
            }
        }
    }

    async fn say(&mut self, text: &str) -> Result<(u16, String), String> {
        self.io.get_mut().write_all(text.as_bytes()).await.map_err(|e| e.to_string())?;
        self.reply().await
    }
}

/// What a reply means for the notification.
fn refused(code: u16, line: &str) -> Outcome {
    if (400..500).contains(&code) { Outcome::Retry(line.to_string()) } else { Outcome::Refused(line.to_string()) }
}

/// Sends one mail.
pub async fn send(settings: &SmtpSettings<'_>, mail: &Mail<'_>, date: &str, id: &str) -> Outcome {
    match tokio::time::timeout(Duration::from_secs(120), exchange(settings, mail, date, id)).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => Outcome::Retry(e),
        Err(_) => Outcome::Retry("the SMTP exchange took over two minutes".into()),
    }
}

async fn exchange(settings: &SmtpSettings<'_>, mail: &Mail<'_>, date: &str, id: &str) -> Result<Outcome, String> {
    let connect = tokio::net::TcpStream::connect(settings.server);
    let tcp = tokio::time::timeout(Duration::from_secs(15), connect).await.map_err(|_| "timed out".to_string())?;
    let tcp = tcp.map_err(|e| e.to_string())?;
    let mut conn = Conn { io: BufReader::new(Box::new(tcp) as Box<dyn Io>) };
    let expect = |got: (u16, String), want: u16| if got.0 == want { None } else { Some(refused(got.0, &got.1)) };
    if let Some(o) = expect(conn.reply().await?, 220) {
        return Ok(o);
    }
    if let Some(o) = expect(conn.say("EHLO cascade\r\n").await?, 250) {
        return Ok(o);
    }
    if settings.starttls {
        if let Some(o) = expect(conn.say("STARTTLS\r\n").await?, 220) {
            return Ok(o);
        }
        conn = upgrade(conn, settings.server, settings.ca_file).await?;
        if let Some(o) = expect(conn.say("EHLO cascade\r\n").await?, 250) {
            return Ok(o);
        }
    }
    if let (Some(user), Some(password)) = (settings.username, settings.password) {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        if let Some(o) = expect(conn.say(&format!("AUTH PLAIN {token}\r\n")).await?, 235) {
            return Ok(o);
        }
    }
    if let Some(o) = expect(conn.say(&format!("MAIL FROM:<{}>\r\n", header_text(settings.from))).await?, 250) {
        return Ok(o);
    }
    for to in mail.to {
        let got = conn.say(&format!("RCPT TO:<{}>\r\n", header_text(to))).await?;
        if got.0 != 250 && got.0 != 251 {
            return Ok(refused(got.0, &got.1));
        }
    }
    if let Some(o) = expect(conn.say("DATA\r\n").await?, 354) {
        return Ok(o);
    }
    if let Some(o) = expect(conn.say(&data(settings.from, mail, date, id)).await?, 250) {
        return Ok(o);
    }
    let _ = conn.say("QUIT\r\n").await;
    Ok(Outcome::Sent)
}

async fn upgrade(conn: Conn, server: &str, ca_file: Option<&std::path::Path>) -> Result<Conn, String> {
    let tls = crate::outbound::tls_connect(server, conn.io.into_inner(), ca_file).await?;
    Ok(Conn { io: BufReader::new(Box::new(tls) as Box<dyn Io>) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dot_stuffs_and_keeps_headers_on_one_line() {
        let to = vec!["a@example.org".to_string(), "b@example.org".to_string()];
        let mail = Mail { to: &to, subject: "worse\r\nBcc: evil@example.org", body: "line\n.starts with a dot\nend" };
        let text = data("ci@example.org", &mail, "Wed, 02 Dec 2026 04:00:00 +0000", "1@cascade");
        assert!(text.contains("Subject: worse  Bcc: evil@example.org\r\n"), "{text}");
        assert!(!text.contains("\r\nBcc:"));
        assert!(text.contains("\r\n..starts with a dot\r\n"));
        assert!(text.ends_with("end\r\n.\r\n"));
        assert!(text.contains("To: a@example.org, b@example.org\r\n"));
    }

    #[test]
    fn replies_in_4xx_are_retried_and_5xx_refused() {
        assert!(matches!(refused(451, "busy"), Outcome::Retry(_)));
        assert!(matches!(refused(550, "no such user"), Outcome::Refused(_)));
    }
}

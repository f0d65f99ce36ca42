//! `[[reporter]]`: who hears about builds, about which builders, and how.

use std::time::Duration;

use cascade_model::transition::NotifyEvent;

use crate::model::{ChatFormat, GithubConfig, IrcReporter, MailReporter, ReporterConfig, ReporterKind};
use crate::reader::{Ctx, Table, array_of_tables};

/// The events a kind reports when the config names none.
fn default_events(kind: &ReporterKind) -> Vec<NotifyEvent> {
    use NotifyEvent::*;
    match kind {
        // A stopped build is not news in a channel (CPython's choice).
        ReporterKind::Webhook { .. } | ReporterKind::Irc(_) => vec![Better, Worse, Exception],
        ReporterKind::GithubStatus { .. } => vec![Started, Finished],
        ReporterKind::GithubComment { .. } => vec![Failure],
        ReporterKind::Mail(_) => vec![Problem],
    }
}

fn read_kind(ctx: &mut Ctx, t: &mut Table, kind: &str, github: &GithubConfig) -> Option<ReporterKind> {
    let needs_token = |ctx: &mut Ctx, t: &Table| {
        if github.token.is_none() {
            ctx.error(t.offset(), "github.token", format!("a {kind} reporter needs github.token"));
        }
        if github.repository.is_none() {
            ctx.error(t.offset(), "github.repository", format!("a {kind} reporter needs github.repository"));
        }
    };
    match kind {
        "webhook" => {
            let url = t.opt_secret(ctx, "url");
            let format = match t.opt_str(ctx, "format").as_deref() {
                None | Some("json") => ChatFormat::Json,
                Some("slack") => ChatFormat::Slack,
                Some("discord") => ChatFormat::Discord,
                Some("zulip") => ChatFormat::Zulip,
                Some(other) => {
                    let why = format!("unknown format {other:?}: json, slack, discord or zulip");
                    ctx.error(t.offset(), &t.key("format"), why);
                    ChatFormat::Json
                }
            };
            match url {
                Some(url) => Some(ReporterKind::Webhook { url, format }),
                None => {
                    ctx.error(t.offset(), &t.key("url"), "missing required key");
                    None
                }
            }
        }
        "github_status" => {
            needs_token(ctx, t);
            let context = t.opt_str(ctx, "context").unwrap_or_else(|| "buildbot/{builder}".into());
            Some(ReporterKind::GithubStatus { context })
        }
        "github_comment" => {
            needs_token(ctx, t);
            let guide = t.opt_str(ctx, "guide");
            if guide.as_deref().is_some_and(|g| !(g.starts_with("https://") || g.starts_with("http://"))) {
                ctx.error(t.offset(), &t.key("guide"), "expected an http(s) link");
            }
            Some(ReporterKind::GithubComment { guide })
        }
        "irc" => read_irc(ctx, t).map(ReporterKind::Irc),
        "mail" => read_mail(ctx, t).map(ReporterKind::Mail),
        other => {
            let why = format!("unknown reporter kind {other:?}: webhook, github_status, github_comment, irc or mail");
            ctx.error(t.offset(), &t.key("kind"), why);
            None
        }
    }
}

fn read_irc(ctx: &mut Ctx, t: &mut Table) -> Option<IrcReporter> {
    let server = t.req_str(ctx, "server");
    let nick = t.req_str(ctx, "nick");
    let channels: Vec<String> =
        t.opt_str_list(ctx, "channels").unwrap_or_default().into_iter().map(|(c, _)| c).collect();
    if channels.is_empty() {
        ctx.error(t.offset(), &t.key("channels"), "name at least one channel");
    }
    if let Some(s) = &server
        && !s.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
    {
        ctx.error(t.offset(), &t.key("server"), format!("{s:?} is not host:port"));
    }
    let bad = |s: &str| s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control() || c == ',');
    if nick.as_deref().is_some_and(bad) || channels.iter().any(|c| bad(c)) {
        ctx.error(t.offset(), &t.key("nick"), "nick and channels cannot hold spaces, commas or control characters");
    }
    let tls = t.bool_or(ctx, "tls", true);
    let colours = t.bool_or(ctx, "colours", false);
    let password = t.opt_secret(ctx, "password");
    let ca_file = read_ca_file(ctx, t, tls, "tls = true");
    Some(IrcReporter { server: server?, tls, nick: nick?, password, channels, colours, ca_file })
}

fn read_mail(ctx: &mut Ctx, t: &mut Table) -> Option<MailReporter> {
    let smtp = t.req_str(ctx, "smtp");
    let from = t.req_str(ctx, "from");
    let to: Vec<String> = t.opt_str_list(ctx, "to").unwrap_or_default().into_iter().map(|(a, _)| a).collect();
    let bad = |a: &str| !a.contains('@') || a.chars().any(|c| c.is_whitespace() || c.is_control() || "<>,".contains(c));
    if from.as_deref().is_some_and(bad) || to.iter().any(|a| bad(a)) {
        ctx.error(t.offset(), &t.key("to"), "expected plain addresses like ci@example.org");
    }
    if let Some(s) = &smtp
        && !s.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
    {
        ctx.error(t.offset(), &t.key("smtp"), format!("{s:?} is not host:port"));
    }
    let starttls = t.bool_or(ctx, "starttls", false);
    let username = t.opt_str(ctx, "username");
    let password = t.opt_secret(ctx, "password");
    let worker_grace = t.opt_duration(ctx, "worker_grace").unwrap_or(Duration::from_secs(600));
    if password.is_some() && !starttls {
        ctx.error(t.offset(), &t.key("password"), "a password is sent only over STARTTLS: set starttls = true");
    }
    let ca_file = read_ca_file(ctx, t, starttls, "starttls = true");
    Some(MailReporter { smtp: smtp?, starttls, username, password, from: from?, to, worker_grace, ca_file })
}

/// `ca_file`: PEM certificates that alone verify the server (a private
/// CA), relative to the config's folder; checked here so a bad path is a
/// config error, not a failed send hours later.
fn read_ca_file(ctx: &mut Ctx, t: &mut Table, tls: bool, needs: &str) -> Option<std::path::PathBuf> {
    let path = ctx.base_dir.join(t.opt_str(ctx, "ca_file")?);
    let key = t.key("ca_file");
    if !tls {
        ctx.error(t.offset(), &key, format!("a CA file is used only with {needs}"));
    }
    match std::fs::read_to_string(&path) {
        Ok(text) if text.contains("-----BEGIN CERTIFICATE-----") => {}
        Ok(_) => ctx.error(t.offset(), &key, format!("{} holds no PEM certificate", path.display())),
        Err(e) => ctx.error(t.offset(), &key, format!("cannot read {}: {e}", path.display())),
    }
    Some(path)
}

fn read_events(ctx: &mut Ctx, t: &mut Table) -> Option<Vec<NotifyEvent>> {
    let names = t.opt_str_list(ctx, "events")?;
    let mut out = Vec::new();
    for (name, offset) in names {
        match NotifyEvent::parse(&name) {
            Some(e) if !out.contains(&e) => out.push(e),
            Some(_) => {}
            None => ctx.error(offset, &t.key("events"), format!("unknown event {name:?}")),
        }
    }
    Some(out)
}

pub(crate) fn read_reporters(ctx: &mut Ctx, root: &mut Table, github: &GithubConfig) -> Vec<ReporterConfig> {
    let mut out: Vec<ReporterConfig> = Vec::new();
    for (i, mut t) in array_of_tables(ctx, root, "reporter").into_iter().enumerate() {
        let kind_name = t.req_str(ctx, "kind");
        let name = t.opt_str(ctx, "name");
        let events = read_events(ctx, &mut t);
        let list = |ctx: &mut Ctx, t: &mut Table, k: &str| -> Vec<String> {
            t.opt_str_list(ctx, k).unwrap_or_default().into_iter().map(|(s, _)| s).collect()
        };
        let (tags, builders, branches) =
            (list(ctx, &mut t, "tags"), list(ctx, &mut t, "builders"), list(ctx, &mut t, "branches"));
        let give_up_after = t.opt_duration(ctx, "give_up_after").unwrap_or(Duration::from_secs(3600));
        let kind = kind_name.as_deref().and_then(|k| read_kind(ctx, &mut t, k, github));
        let offset = t.offset();
        t.finish(ctx);
        let Some(kind) = kind else { continue };
        let name = name.unwrap_or_else(|| format!("{}-{}", kind.name(), i + 1));
        if out.iter().any(|r| r.name == name) {
            ctx.error(offset, &format!("reporter[{i}].name"), format!("duplicate reporter name {name:?}"));
        }
        let events = events.unwrap_or_else(|| default_events(&kind));
        // GitHub hears about the stable builders unless told otherwise.
        let github = matches!(kind, ReporterKind::GithubStatus { .. } | ReporterKind::GithubComment { .. });
        let tags = if github && tags.is_empty() && builders.is_empty() && branches.is_empty() {
            vec!["stable".to_string()]
        } else {
            tags
        };
        out.push(ReporterConfig { name, kind, events, tags, builders, branches, give_up_after });
    }
    out
}

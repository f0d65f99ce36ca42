//! Walks the spanned TOML tree into typed config, collecting every error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::error::{ConfigError, ConfigErrors, Location};
use crate::model::*;
use crate::secret::{Secret, SecretSource, SecretString};
use crate::validate;

type Val<'i> = Spanned<DeValue<'i>>;

pub(crate) struct Ctx<'s> {
    text: &'s str,
    file: &'s Path,
    pub(crate) base_dir: &'s Path,
    errors: Vec<(usize, ConfigError)>,
    /// PB has one name space per port: each login name read so far (a
    /// worker, a sendchange user, a try user) and what it is.
    pb_names: BTreeMap<String, String>,
}

impl<'s> Ctx<'s> {
    pub(crate) fn error(&mut self, offset: usize, key: &str, message: impl Into<String>) {
        let location = self.location(offset);
        self.errors.push((offset, ConfigError { location, key: key.to_string(), message: message.into() }));
    }

    pub(crate) fn location(&self, offset: usize) -> Location {
        Location::at(self.file, self.text, offset)
    }
}

/// A table being read: remembers which keys were used so that the rest can
/// be reported as unknown.
pub(crate) struct Table<'t, 'i> {
    map: &'t DeTable<'i>,
    offset: usize,
    path: String,
    used: BTreeSet<&'t str>,
}

impl<'t, 'i> Table<'t, 'i> {
    fn new(map: &'t DeTable<'i>, offset: usize, path: String) -> Self {
        Table { map, offset, path, used: BTreeSet::new() }
    }

    pub(crate) fn key(&self, k: &str) -> String {
        if self.path.is_empty() { k.to_string() } else { format!("{}.{k}", self.path) }
    }

    pub(crate) fn offset(&self) -> usize {
        self.offset
    }

    pub(crate) fn take(&mut self, k: &str) -> Option<&'t Val<'i>> {
        let (key, v) = self.map.get_key_value(k)?;
        self.used.insert(key.get_ref().as_ref());
        Some(v)
    }

    fn missing(&self, ctx: &mut Ctx, k: &str) {
        ctx.error(self.offset, &self.key(k), "missing required key");
    }

    pub(crate) fn opt_str(&mut self, ctx: &mut Ctx, k: &str) -> Option<String> {
        let v = self.take(k)?;
        as_str(ctx, v, &self.key(k))
    }

    pub(crate) fn req_str(&mut self, ctx: &mut Ctx, k: &str) -> Option<String> {
        if self.map.get(k).is_none() {
            self.missing(ctx, k);
            return None;
        }
        self.opt_str(ctx, k)
    }

    pub(crate) fn opt_bool(&mut self, ctx: &mut Ctx, k: &str) -> Option<bool> {
        let v = self.take(k)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                ctx.error(v.span().start, &self.key(k), format!("expected true or false, found {}", kind(v)));
                None
            }
        }
    }

    pub(crate) fn bool_or(&mut self, ctx: &mut Ctx, k: &str, default: bool) -> bool {
        self.opt_bool(ctx, k).unwrap_or(default)
    }

    fn opt_int(&mut self, ctx: &mut Ctx, k: &str) -> Option<(i64, usize)> {
        let v = self.take(k)?;
        as_int(ctx, v, &self.key(k)).map(|i| (i, v.span().start))
    }

    pub(crate) fn opt_str_list(&mut self, ctx: &mut Ctx, k: &str) -> Option<Vec<(String, usize)>> {
        let v = self.take(k)?;
        str_list(ctx, v, &self.key(k))
    }

    pub(crate) fn opt_duration(&mut self, ctx: &mut Ctx, k: &str) -> Option<Duration> {
        let v = self.take(k)?;
        let key = self.key(k);
        match v.get_ref() {
            DeValue::Integer(_) => {
                let secs = as_int(ctx, v, &key)?;
                if secs < 0 {
                    ctx.error(v.span().start, &key, "a duration cannot be negative");
                    return None;
                }
                Some(Duration::from_secs(secs as u64))
            }
            DeValue::String(s) => match humantime::parse_duration(s) {
                Ok(d) => Some(d),
                Err(e) => {
                    ctx.error(
                        v.span().start,
                        &key,
                        format!("invalid duration {s:?} ({e}); write e.g. \"30s\", \"5m\", \"2h\""),
                    );
                    None
                }
            },
            _ => {
                ctx.error(v.span().start, &key, format!("expected a duration such as \"30s\", found {}", kind(v)));
                None
            }
        }
    }

    fn opt_table(&mut self, ctx: &mut Ctx, k: &str) -> Option<Table<'t, 'i>> {
        let v = self.take(k)?;
        as_table(ctx, v, self.key(k))
    }

    fn opt_str_map(&mut self, ctx: &mut Ctx, k: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(mut t) = self.opt_table(ctx, k) else { return out };
        let keys: Vec<String> = t.map.keys().map(|k| k.get_ref().to_string()).collect();
        for name in keys {
            if let Some(v) = t.opt_str(ctx, &name) {
                out.insert(name, v);
            }
        }
        t.finish(ctx);
        out
    }

    pub(crate) fn opt_secret(&mut self, ctx: &mut Ctx, k: &str) -> Option<Secret> {
        let v = self.take(k)?;
        let key = self.key(k);
        let location = ctx.location(v.span().start);
        let source = match v.get_ref() {
            DeValue::String(s) => SecretSource::Literal(SecretString::new(s.to_string())),
            DeValue::Table(_) => {
                let mut t = as_table(ctx, v, key.clone())?;
                let env = t.opt_str(ctx, "env");
                let file = t.opt_str(ctx, "file");
                t.finish(ctx);
                match (env, file) {
                    (Some(e), None) => SecretSource::Env(e),
                    (None, Some(f)) => SecretSource::File(ctx.base_dir.join(f)),
                    _ => {
                        ctx.error(v.span().start, &key, "a secret table takes exactly one of `env` or `file`");
                        return None;
                    }
                }
            }
            _ => {
                ctx.error(
                    v.span().start,
                    &key,
                    format!("expected a string, {{ env = \"…\" }} or {{ file = \"…\" }}, found {}", kind(v)),
                );
                return None;
            }
        };
        Some(Secret { source, location, key })
    }

    /// Reports every key nobody asked for.
    pub(crate) fn finish(self, ctx: &mut Ctx) {
        for k in self.map.keys() {
            let name: &str = k.get_ref().as_ref();
            if !self.used.contains(name) {
                ctx.error(k.span().start, &self.key(name), "unknown key");
            }
        }
    }
}

fn kind(v: &Val) -> &'static str {
    match v.get_ref() {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn as_str(ctx: &mut Ctx, v: &Val, key: &str) -> Option<String> {
    match v.get_ref() {
        DeValue::String(s) => Some(s.to_string()),
        _ => {
            ctx.error(v.span().start, key, format!("expected a string, found {}", kind(v)));
            None
        }
    }
}

fn as_int(ctx: &mut Ctx, v: &Val, key: &str) -> Option<i64> {
    match v.get_ref() {
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => Some(n),
            Err(_) => {
                ctx.error(v.span().start, key, "integer out of range");
                None
            }
        },
        _ => {
            ctx.error(v.span().start, key, format!("expected an integer, found {}", kind(v)));
            None
        }
    }
}

fn as_table<'t, 'i>(ctx: &mut Ctx, v: &'t Val<'i>, key: String) -> Option<Table<'t, 'i>> {
    match v.get_ref() {
        DeValue::Table(t) => Some(Table::new(t, v.span().start, key)),
        _ => {
            ctx.error(v.span().start, &key, format!("expected a table, found {}", kind(v)));
            None
        }
    }
}

fn str_list(ctx: &mut Ctx, v: &Val, key: &str) -> Option<Vec<(String, usize)>> {
    let DeValue::Array(items) = v.get_ref() else {
        ctx.error(v.span().start, key, format!("expected an array of strings, found {}", kind(v)));
        return None;
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(s) = as_str(ctx, item, &format!("{key}[{i}]")) {
            out.push((s, item.span().start));
        }
    }
    Some(out)
}

/// `[[name]]` sections: an array of tables.
pub(crate) fn array_of_tables<'t, 'i>(ctx: &mut Ctx, root: &mut Table<'t, 'i>, name: &str) -> Vec<Table<'t, 'i>> {
    let Some(v) = root.take(name) else { return Vec::new() };
    let DeValue::Array(items) = v.get_ref() else {
        ctx.error(
            v.span().start,
            name,
            format!("expected [[{name}]] sections (an array of tables), found {}", kind(v)),
        );
        return Vec::new();
    };
    items.iter().enumerate().filter_map(|(i, item)| as_table(ctx, item, format!("{name}[{i}]"))).collect()
}

pub(crate) fn read_config(text: &str, file: &Path, base_dir: &Path) -> Result<Config, ConfigErrors> {
    let mut ctx = Ctx { text, file, base_dir, errors: Vec::new(), pb_names: BTreeMap::new() };
    let (doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for e in syntax {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            ctx.error(offset, "", format!("TOML syntax error: {}", e.message()));
        }
        return Err(finish_errors(ctx));
    }
    let mut root = Table::new(doc.get_ref(), 0, String::new());

    let master = read_master(&mut ctx, &mut root);
    let github = read_github(&mut ctx, &mut root);
    let branches = read_branches(&mut ctx, &mut root);
    let workers = read_workers(&mut ctx, &mut root);
    let factories = read_factories(&mut ctx, &mut root);
    let builders = read_builders(&mut ctx, &mut root, &branches, &workers, &factories);
    let schedulers = read_schedulers(&mut ctx, &mut root, &branches, &builders);
    let users = read_users(&mut ctx, &mut root);
    let auth = read_auth(&mut ctx, &mut root);
    let janitor = read_janitor(&mut ctx, &mut root);
    let limits = read_limits(&mut ctx, &mut root);
    let reporters = crate::reporters::read_reporters(&mut ctx, &mut root, &github);
    let sendchange = read_sendchange(&mut ctx, &mut root);
    let www = read_www(&mut ctx, &mut root);
    root.finish(&mut ctx);

    if !ctx.errors.is_empty() {
        return Err(finish_errors(ctx));
    }
    Ok(Config {
        path: file.to_path_buf(),
        master,
        github,
        branches,
        workers,
        factories,
        builders,
        schedulers,
        users,
        auth,
        janitor,
        limits,
        reporters,
        sendchange,
        www,
    })
}

fn read_users(ctx: &mut Ctx, root: &mut Table) -> Vec<UserConfig> {
    let mut out: Vec<UserConfig> = Vec::new();
    for mut t in array_of_tables(ctx, root, "user") {
        let name = t.req_str(ctx, "name");
        let hash_offset = t.map.get("password_hash").map(|v| v.span().start).unwrap_or(t.offset());
        let password_hash = t.opt_str(ctx, "password_hash");
        if password_hash.as_deref().is_some_and(|h| !h.starts_with("$argon2")) {
            ctx.error(hash_offset, &t.key("password_hash"), "expected an argon2 hash from `cascade hash-password`");
        }
        let roles: Vec<String> = t.opt_str_list(ctx, "roles").unwrap_or_default().into_iter().map(|(s, _)| s).collect();
        if let Some(name) = name {
            if out.iter().any(|u| u.name == name) {
                ctx.error(t.offset(), &t.key("name"), format!("duplicate user name {name:?}"));
            }
            out.push(UserConfig { name, password_hash, roles });
        }
        t.finish(ctx);
    }
    out
}

fn read_auth(ctx: &mut Ctx, root: &mut Table) -> AuthConfig {
    let mut auth = AuthConfig::default();
    let Some(mut t) = root.opt_table(ctx, "auth") else { return auth };
    auth.admins = t.opt_str_list(ctx, "admins").unwrap_or_default().into_iter().map(|(s, _)| s).collect();
    auth.private = t.bool_or(ctx, "private", false);
    auth.private_metrics = match t.opt_str(ctx, "metrics").as_deref() {
        None => auth.private,
        Some("private") => true,
        Some("public") => false,
        Some(other) => {
            ctx.error(t.offset(), &t.key("metrics"), format!("{other:?}: expected \"public\" or \"private\""));
            auth.private
        }
    };
    if let Some(d) = t.opt_duration(ctx, "session_lifetime") {
        auth.session_lifetime = d;
    }
    if let Some((n, offset)) = t.opt_int(ctx, "login_attempts") {
        if n < 1 {
            ctx.error(offset, &t.key("login_attempts"), "must be at least 1");
        } else {
            auth.login_attempts = n.min(u32::MAX as i64) as u32;
        }
    }
    if let Some(d) = t.opt_duration(ctx, "login_window") {
        auth.login_window = d;
    }
    if let Some(mut gh) = t.opt_table(ctx, "github") {
        let client_id = gh.req_str(ctx, "client_id");
        let secret = gh.opt_secret(ctx, "client_secret");
        if secret.is_none() && gh.map.get("client_secret").is_none() {
            gh.missing(ctx, "client_secret");
        }
        let mut teams = BTreeMap::new();
        if let Some(mut tt) = gh.opt_table(ctx, "teams") {
            let keys: Vec<(String, usize)> =
                tt.map.iter().map(|(k, _)| (k.get_ref().to_string(), k.span().start)).collect();
            for (team, offset) in keys {
                if !team.contains('/') {
                    ctx.error(offset, &tt.key(&team), "a team is written \"org/team-slug\"");
                }
                let roles: Vec<String> =
                    tt.opt_str_list(ctx, &team).unwrap_or_default().into_iter().map(|(s, _)| s).collect();
                teams.insert(team, roles);
            }
            tt.finish(ctx);
        }
        let admins = gh.opt_str_list(ctx, "admins").unwrap_or_default().into_iter().map(|(s, _)| s).collect();
        let url = |gh: &mut Table, ctx: &mut Ctx, k: &str, default: &str| {
            gh.opt_str(ctx, k).unwrap_or_else(|| default.to_string()).trim_end_matches('/').to_string()
        };
        let authorize_url = url(&mut gh, ctx, "authorize_url", "https://github.com/login/oauth/authorize");
        let token_url = url(&mut gh, ctx, "token_url", "https://github.com/login/oauth/access_token");
        let api_url = url(&mut gh, ctx, "api_url", "https://api.github.com");
        gh.finish(ctx);
        if let (Some(client_id), Some(client_secret)) = (client_id, secret) {
            auth.github =
                Some(GithubLoginConfig { client_id, client_secret, teams, admins, authorize_url, token_url, api_url });
        }
    }
    if let Some(mut rules) = t.opt_table(ctx, "rules") {
        let keys: Vec<(String, usize)> =
            rules.map.iter().map(|(k, _)| (k.get_ref().to_string(), k.span().start)).collect();
        for (name, offset) in keys {
            let Some(action) = Action::parse(&name) else {
                rules.take(&name);
                let known: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
                ctx.error(offset, &rules.key(&name), format!("unknown action; expected one of {}", known.join(", ")));
                continue;
            };
            let roles = rules.opt_str_list(ctx, &name).unwrap_or_default().into_iter().map(|(s, _)| s).collect();
            auth.rules.insert(action, roles);
        }
        rules.finish(ctx);
    }
    t.finish(ctx);
    auth
}

fn finish_errors(mut ctx: Ctx) -> ConfigErrors {
    ctx.errors.sort_by_key(|(offset, _)| *offset);
    ConfigErrors(ctx.errors.into_iter().map(|(_, e)| e).collect())
}

fn read_master(ctx: &mut Ctx, root: &mut Table) -> MasterConfig {
    let mut master = MasterConfig {
        title: "Cascade".into(),
        url: "http://localhost:8010/".into(),
        name: None,
        http: "127.0.0.1:8010".into(),
        pb: "0.0.0.0:9989".into(),
        msgpack: "0.0.0.0:9990".into(),
        database: "sqlite://cascade.sqlite".into(),
        worker_ping: Duration::from_secs(30),
        worker_timeout: Duration::from_secs(100),
        heartbeat: Duration::from_secs(10),
        master_expiry: Duration::from_secs(60),
        stop_grace: Duration::from_secs(3600),
        trusted_proxies: Vec::new(),
        artifacts: ctx.base_dir.join("artifacts"),
    };
    let Some(mut t) = root.opt_table(ctx, "master") else { return master };
    if let Some(v) = t.opt_str(ctx, "title") {
        master.title = v;
    }
    if let Some(mut v) = t.opt_str(ctx, "url") {
        if !v.ends_with('/') {
            v.push('/');
        }
        master.url = v;
    }
    master.name = t.opt_str(ctx, "name");
    for (key, slot) in [("http", &mut master.http), ("pb", &mut master.pb), ("msgpack", &mut master.msgpack)] {
        if let Some(v) = t.take(key)
            && let Some(s) = as_str(ctx, v, &t.key(key))
        {
            if validate::listen_address(&s).is_err() {
                ctx.error(
                    v.span().start,
                    &t.key(key),
                    format!("{s:?} is not a listen address such as \"127.0.0.1:8010\""),
                );
            }
            *slot = s;
        }
    }
    if let Some(v) = t.take("database")
        && let Some(s) = as_str(ctx, v, &t.key("database"))
    {
        if !validate::database_url(&s) {
            ctx.error(v.span().start, &t.key("database"), "expected a URL starting with sqlite:// or postgres://");
        }
        master.database = s;
    }
    if let Some(a) = t.opt_str(ctx, "artifacts") {
        master.artifacts = ctx.base_dir.join(a);
    }
    if let Some(d) = t.opt_duration(ctx, "worker_ping") {
        master.worker_ping = d.max(Duration::from_millis(50));
    }
    if let Some(d) = t.opt_duration(ctx, "worker_timeout") {
        master.worker_timeout = d;
    }
    if master.worker_timeout <= master.worker_ping {
        ctx.error(t.offset(), &t.key("worker_timeout"), "must be longer than worker_ping");
    }
    read_liveness(ctx, &mut t, &mut master);
    for (i, (proxy, offset)) in t.opt_str_list(ctx, "trusted_proxies").unwrap_or_default().into_iter().enumerate() {
        if validate::address_range(&proxy).is_err() {
            let key = t.key(&format!("trusted_proxies[{i}]"));
            ctx.error(offset, &key, format!("{proxy:?} is not an address or range such as \"10.0.0.0/8\""));
        }
        master.trusted_proxies.push(proxy);
    }
    t.finish(ctx);
    master
}

fn read_limits(ctx: &mut Ctx, root: &mut Table) -> LimitsConfig {
    let mut limits = LimitsConfig::default();
    let Some(mut t) = root.opt_table(ctx, "limits") else { return limits };
    let count = |t: &mut Table, ctx: &mut Ctx, key: &str, slot: &mut usize| {
        if let Some((n, offset)) = t.opt_int(ctx, key) {
            match usize::try_from(n) {
                Ok(n) if n > 0 => *slot = n,
                _ => ctx.error(offset, &t.key(key), "expected a positive number"),
            }
        }
    };
    count(&mut t, ctx, "connections", &mut limits.connections);
    count(&mut t, ctx, "connections_per_address", &mut limits.connections_per_address);
    count(&mut t, ctx, "password_checks", &mut limits.password_checks);
    for (key, slot) in [
        ("worker_login_attempts", &mut limits.worker_login_attempts),
        ("worker_login_attempts_per_name", &mut limits.worker_login_attempts_per_name),
    ] {
        let mut attempts = *slot as usize;
        count(&mut t, ctx, key, &mut attempts);
        *slot = u32::try_from(attempts).unwrap_or(u32::MAX);
    }
    for (key, slot) in [
        ("header_timeout", &mut limits.header_timeout),
        ("request_timeout", &mut limits.request_timeout),
        ("store_timeout", &mut limits.store_timeout),
        ("worker_login_window", &mut limits.worker_login_window),
    ] {
        if let Some(d) = t.opt_duration(ctx, key) {
            *slot = d.max(Duration::from_millis(10));
        }
    }
    t.finish(ctx);
    limits
}

/// `[www]`: with `buildbot_ui = true`, `buildbot_www` must name a folder
/// holding Buildbot's `index.html` (relative to the config's folder).
fn read_www(ctx: &mut Ctx, root: &mut Table) -> WwwConfig {
    let mut www = WwwConfig::default();
    let Some(mut t) = root.opt_table(ctx, "www") else { return www };
    let offset = t.offset;
    www.buildbot_ui = t.bool_or(ctx, "buildbot_ui", false);
    www.buildbot_www = t.opt_str(ctx, "buildbot_www").map(|p| ctx.base_dir.join(p));
    match (&www.buildbot_www, www.buildbot_ui) {
        (None, true) => ctx.error(
            offset,
            "www.buildbot_www",
            "buildbot_ui = true needs the folder of an installed buildbot-www's static files",
        ),
        (Some(dir), true) if !dir.join("index.html").is_file() => ctx.error(
            offset,
            "www.buildbot_www",
            format!("no index.html in {}: is buildbot-www installed there?", dir.display()),
        ),
        _ => {}
    }
    t.finish(ctx);
    www
}

fn read_janitor(ctx: &mut Ctx, root: &mut Table) -> JanitorConfig {
    let mut janitor = JanitorConfig::default();
    let Some(mut t) = root.opt_table(ctx, "janitor") else { return janitor };
    if let Some(d) = t.opt_duration(ctx, "every") {
        janitor.every = d.max(Duration::from_millis(10));
    }
    if let Some(d) = t.opt_duration(ctx, "delivery_horizon") {
        janitor.delivery_horizon = d;
    }
    if let Some(d) = t.opt_duration(ctx, "event_horizon") {
        janitor.event_horizon = d;
    }
    janitor.log_horizon = t.opt_duration(ctx, "log_horizon");
    janitor.artifact_horizon = t.opt_duration(ctx, "artifact_horizon");
    janitor.build_horizon = t.opt_duration(ctx, "build_horizon");
    t.finish(ctx);
    janitor
}

fn read_github(ctx: &mut Ctx, root: &mut Table) -> GithubConfig {
    let mut github = GithubConfig {
        repository: None,
        webhook_secret: None,
        insecure_webhook: false,
        allow_sha1_signature: false,
        build_tags: false,
        token: None,
        api_url: "https://api.github.com".into(),
        poll_interval: Duration::from_secs(300),
    };
    let section_offset = root.map.get("github").map(|v| v.span().start).unwrap_or(0);
    if let Some(mut t) = root.opt_table(ctx, "github") {
        if let Some(v) = t.take("repository")
            && let Some(s) = as_str(ctx, v, &t.key("repository"))
        {
            if !validate::repository_name(&s) {
                ctx.error(v.span().start, &t.key("repository"), format!("{s:?} is not of the form \"owner/name\""));
            }
            github.repository = Some(s);
        }
        github.webhook_secret = t.opt_secret(ctx, "webhook_secret");
        github.insecure_webhook = t.bool_or(ctx, "insecure_webhook", false);
        github.allow_sha1_signature = t.bool_or(ctx, "allow_sha1_signature", false);
        github.build_tags = t.bool_or(ctx, "build_tags", false);
        github.token = t.opt_secret(ctx, "token");
        if let Some(url) = t.opt_str(ctx, "api_url") {
            github.api_url = url.trim_end_matches('/').to_string();
        }
        if let Some(every) = t.opt_duration(ctx, "poll_interval") {
            github.poll_interval = every;
        }
        t.finish(ctx);
    }
    if github.webhook_secret.is_none() && !github.insecure_webhook {
        ctx.error(
            section_offset,
            "github.webhook_secret",
            "no webhook secret configured: set github.webhook_secret, or github.insecure_webhook = true to accept unsigned webhooks",
        );
    }
    github
}

/// `heartbeat` and `master_expiry`: how masters sharing a store tell the
/// living from the dead.
fn read_liveness(ctx: &mut Ctx, t: &mut Table, master: &mut MasterConfig) {
    if let Some(d) = t.opt_duration(ctx, "heartbeat") {
        master.heartbeat = d.max(Duration::from_millis(10));
    }
    if let Some(d) = t.opt_duration(ctx, "master_expiry") {
        master.master_expiry = d;
    }
    if let Some(d) = t.opt_duration(ctx, "stop_grace") {
        master.stop_grace = d;
    }
    // Heartbeats are stored in whole seconds: a second of slack, and two
    // beats that may be missed before a live master looks dead.
    if master.master_expiry < (master.heartbeat * 2).max(Duration::from_secs(2)) {
        ctx.error(t.offset(), &t.key("master_expiry"), "must be at least twice heartbeat, and at least 2s");
    }
}

fn read_branches(ctx: &mut Ctx, root: &mut Table) -> Vec<BranchConfig> {
    let mut out: Vec<BranchConfig> = Vec::new();
    for mut t in array_of_tables(ctx, root, "branch") {
        let name = t.req_str(ctx, "name");
        let git = t.opt_str(ctx, "git");
        if let Some(name) = name {
            let git = git.unwrap_or_else(|| name.clone());
            if out.iter().any(|b| b.name == name) {
                ctx.error(t.offset(), &t.key("name"), format!("duplicate branch name {name:?}"));
            } else if let Some(other) = out.iter().find(|b| b.git == git) {
                ctx.error(
                    t.offset(),
                    &t.key("git"),
                    format!("git branch {git:?} is already configured as {:?}", other.name),
                );
            }
            out.push(BranchConfig { name, git });
        }
        t.finish(ctx);
    }
    out
}

fn read_workers(ctx: &mut Ctx, root: &mut Table) -> Vec<WorkerConfig> {
    let mut out: Vec<WorkerConfig> = Vec::new();
    for mut t in array_of_tables(ctx, root, "worker") {
        let name = t.req_str(ctx, "name");
        let password = t.opt_secret(ctx, "password");
        let hash_offset = t.map.get("password_hash").map(|v| v.span().start);
        let hash = t.opt_str(ctx, "password_hash");
        let max_builds = match t.opt_int(ctx, "max_builds") {
            None => 1,
            Some((n, _)) if n >= 1 && n <= u32::MAX as i64 => n as u32,
            Some((_, offset)) => {
                ctx.error(offset, &t.key("max_builds"), "must be at least 1");
                1
            }
        };
        let properties = t.opt_str_map(ctx, "properties");
        let notify = t.opt_str(ctx, "notify");
        let password = match (password, hash) {
            (Some(p), None) => Some(WorkerPassword::Plain(p)),
            (None, Some(h)) => {
                if !h.starts_with("$argon2") {
                    ctx.error(
                        hash_offset.unwrap_or(t.offset()),
                        &t.key("password_hash"),
                        "expected an argon2 hash from `cascade hash-password`",
                    );
                }
                Some(WorkerPassword::Hash(h))
            }
            (Some(_), Some(_)) => {
                ctx.error(t.offset(), &t.key("password"), "give either password or password_hash, not both");
                None
            }
            (None, None) => {
                ctx.error(t.offset(), &t.key("password"), "missing required key (or password_hash)");
                None
            }
        };
        if let (Some(name), Some(password)) = (name, password) {
            if out.iter().any(|w| w.name == name) {
                ctx.error(t.offset(), &t.key("name"), format!("duplicate worker name {name:?}"));
            }
            ctx.pb_names.insert(name.clone(), "a worker".into());
            out.push(WorkerConfig { name, password, max_builds, properties, notify });
        }
        t.finish(ctx);
    }
    out
}

fn read_factories(ctx: &mut Ctx, root: &mut Table) -> Vec<FactoryConfig> {
    let mut out: Vec<FactoryConfig> = Vec::new();
    for mut t in array_of_tables(ctx, root, "factory") {
        let name = t.req_str(ctx, "name");
        let mut steps = Vec::new();
        match t.take("steps") {
            None => t.missing(ctx, "steps"),
            Some(v) => match v.get_ref() {
                DeValue::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Some(mut st) = as_table(ctx, item, t.key(&format!("steps[{i}]"))) {
                            if let Some(step) = read_step(ctx, &mut st, i) {
                                steps.push(step);
                            }
                            st.finish(ctx);
                        }
                    }
                }
                _ => {
                    ctx.error(
                        v.span().start,
                        &t.key("steps"),
                        format!("expected an array of steps, found {}", kind(v)),
                    );
                }
            },
        }
        let mut names = BTreeSet::new();
        for s in &steps {
            if !names.insert(s.name.clone()) {
                ctx.error(
                    t.offset(),
                    &t.key("steps"),
                    format!("two steps are named {:?}; step names must be unique in a factory", s.name),
                );
            }
        }
        if let Some(name) = name {
            if out.iter().any(|f| f.name == name) {
                ctx.error(t.offset(), &t.key("name"), format!("duplicate factory name {name:?}"));
            }
            out.push(FactoryConfig { name, steps });
        }
        t.finish(ctx);
    }
    out
}

fn read_step(ctx: &mut Ctx, t: &mut Table, index: usize) -> Option<StepConfig> {
    let name = t.opt_str(ctx, "name");
    // Read after the kind: a source step halts by default, as Buildbot's do
    // (building the previous build's tree would pass for the wrong reason).
    let halt_on_failure = t.opt_bool(ctx, "halt_on_failure");
    let flunk_on_failure = t.bool_or(ctx, "flunk_on_failure", true);
    let warn_on_failure = t.bool_or(ctx, "warn_on_failure", false);
    let always_run = t.bool_or(ctx, "always_run", false);
    let timeout = t.opt_duration(ctx, "timeout");
    let max_time = t.opt_duration(ctx, "max_time");
    let (default_name, kind) = if let Some(g) = t.opt_table(ctx, "git") {
        read_git(ctx, g)
    } else if let Some(u) = t.opt_table(ctx, "upload") {
        read_upload(ctx, u)?
    } else if let Some(d) = t.opt_table(ctx, "download") {
        read_download(ctx, d)?
    } else {
        read_shell(ctx, t)?
    };
    let name =
        name.unwrap_or_else(|| if index == 0 { default_name.clone() } else { format!("{default_name}_{index}") });
    let halt_on_failure = halt_on_failure.unwrap_or(matches!(kind, StepKind::Git(_)));
    Some(StepConfig { name, kind, halt_on_failure, flunk_on_failure, warn_on_failure, always_run, timeout, max_time })
}

/// One of `choices` (name → value) at `key`, the first by default; an
/// unknown name is an error that lists the choices.
fn read_choice<T: Copy>(ctx: &mut Ctx, t: &mut Table, key: &str, what: &str, choices: &[(&str, T)]) -> T {
    let default = choices[0].1;
    let Some(v) = t.take(key) else { return default };
    let Some(given) = as_str(ctx, v, &t.key(key)) else { return default };
    if let Some((_, value)) = choices.iter().find(|(name, _)| *name == given) {
        return *value;
    }
    let names: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    let expected = match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) if rest.len() == 1 => format!("{} or {last}", rest[0]),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    ctx.error(v.span().start, &t.key(key), format!("unknown {what} {given:?}; expected {expected}"));
    default
}

fn read_git(ctx: &mut Ctx, mut g: Table) -> (String, StepKind) {
    let repo = g.opt_str(ctx, "repo");
    let mode =
        read_choice(ctx, &mut g, "mode", "mode", &[("full", GitMode::Full), ("incremental", GitMode::Incremental)]);
    let methods = [
        ("fresh", GitMethod::Fresh),
        ("clobber", GitMethod::Clobber),
        ("copy", GitMethod::Copy),
        ("clean", GitMethod::Clean),
    ];
    let method = read_choice(ctx, &mut g, "method", "method", &methods);
    let submodules = g.bool_or(ctx, "submodules", false);
    let depth = match g.opt_int(ctx, "depth") {
        Some((d, _)) if (1..=i64::from(u32::MAX)).contains(&d) => Some(d as u32),
        Some((_, offset)) => {
            ctx.error(offset, &g.key("depth"), "must be a positive number of commits");
            None
        }
        None => None,
    };
    let filter_offset = g.map.get("filter").map_or(g.offset(), |v| v.span().start);
    let filter = g.opt_str(ctx, "filter");
    if let Some(f) = &filter
        && !validate::git_filter(f)
    {
        ctx.error(
            filter_offset,
            &g.key("filter"),
            format!("{f:?} is not a git filter; use e.g. \"blob:none\" or \"tree:0\""),
        );
    }
    let clobber_on_failure = g.bool_or(ctx, "clobber_on_failure", false);
    g.finish(ctx);
    let git = GitStep { repo, mode, method, submodules, depth, filter, clobber_on_failure };
    ("git".to_string(), StepKind::Git(git))
}

/// `dest` of a transfer must stay inside the folder it names.
fn relative_dest(ctx: &mut Ctx, t: &Table, dest: Option<&String>, inside: &str) {
    if let Some(d) = dest
        && (d.starts_with('/') || d.split('/').any(|part| part == ".."))
    {
        ctx.error(t.offset(), &t.key("dest"), format!("must be a relative path inside {inside}"));
    }
}

fn read_upload(ctx: &mut Ctx, mut u: Table) -> Option<(String, StepKind)> {
    let src = u.req_str(ctx, "src");
    let dest = u.req_str(ctx, "dest");
    let directory = u.bool_or(ctx, "directory", false);
    relative_dest(ctx, &u, dest.as_ref(), "the build's artifact folder");
    u.finish(ctx);
    let (src, dest) = (src?, dest?);
    Some((format!("upload {dest}"), StepKind::Upload(UploadStep { src, dest, directory })))
}

fn read_download(ctx: &mut Ctx, mut d: Table) -> Option<(String, StepKind)> {
    let src = d.req_str(ctx, "src");
    let dest = d.req_str(ctx, "dest");
    relative_dest(ctx, &d, dest.as_ref(), "the build folder");
    let mode = match d.opt_int(ctx, "mode") {
        Some((m, _)) if (0..=0o7777).contains(&m) => Some(m as u32),
        Some((_, offset)) => {
            ctx.error(offset, &d.key("mode"), "expected Unix permissions, e.g. 0o755");
            None
        }
        None => None,
    };
    d.finish(ctx);
    let (src, dest) = (src?, dest?);
    Some((format!("download {dest}"), StepKind::Download(DownloadStep { src: ctx.base_dir.join(src), dest, mode })))
}

fn read_command(ctx: &mut Ctx, t: &mut Table) -> Option<Command> {
    let Some(v) = t.take("command") else {
        ctx.error(t.offset(), &t.key("command"), "missing required key (a step needs `command`, `git` or `upload`)");
        return None;
    };
    match v.get_ref() {
        DeValue::String(s) if !s.trim().is_empty() => Some(Command::Shell(s.to_string())),
        DeValue::Array(_) => {
            let argv: Vec<String> = str_list(ctx, v, &t.key("command"))?.into_iter().map(|(s, _)| s).collect();
            if argv.is_empty() {
                ctx.error(v.span().start, &t.key("command"), "an empty command");
                return None;
            }
            Some(Command::Argv(argv))
        }
        _ => {
            ctx.error(v.span().start, &t.key("command"), "expected a non-empty string or an array of strings");
            None
        }
    }
}

/// `decode_rc`: exit code → result name.
fn read_decode_rc(ctx: &mut Ctx, t: &mut Table) -> BTreeMap<i64, cascade_model::Results> {
    let mut decode_rc = BTreeMap::new();
    let Some(mut d) = t.opt_table(ctx, "decode_rc") else { return decode_rc };
    let entries: Vec<(String, usize)> = d.map.iter().map(|(k, v)| (k.get_ref().to_string(), v.span().start)).collect();
    for (code, offset) in entries {
        let value = d.opt_str(ctx, &code);
        let Ok(rc) = code.parse::<i64>() else {
            ctx.error(offset, &d.key(&code), "keys of decode_rc are exit codes (integers)");
            continue;
        };
        match value.as_deref().and_then(validate::result_by_name) {
            Some(r) => {
                decode_rc.insert(rc, r);
            }
            None => ctx.error(
                offset,
                &d.key(&code),
                "expected one of \"success\", \"warnings\", \"failure\", \"skipped\", \"exception\", \"retry\", \"cancelled\"",
            ),
        }
    }
    d.finish(ctx);
    decode_rc
}

fn read_shell(ctx: &mut Ctx, t: &mut Table) -> Option<(String, StepKind)> {
    let command = read_command(ctx, t);
    let env = t.opt_str_map(ctx, "env");
    let workdir = t.opt_str(ctx, "workdir");
    let decode_rc = read_decode_rc(ctx, t);
    let warning_pattern = t.opt_str(ctx, "warning_pattern");
    let command = command?;
    let default_name = match &command {
        Command::Shell(s) => s.split_whitespace().next().unwrap_or("shell").to_string(),
        Command::Argv(a) => a[0].rsplit('/').next().unwrap_or("shell").to_string(),
    };
    Some((default_name, StepKind::Shell(ShellStep { command, env, workdir, decode_rc, warning_pattern })))
}

fn read_builders(
    ctx: &mut Ctx,
    root: &mut Table,
    branches: &[BranchConfig],
    workers: &[WorkerConfig],
    factories: &[FactoryConfig],
) -> Vec<BuilderConfig> {
    let mut out: Vec<BuilderConfig> = Vec::new();
    for mut t in array_of_tables(ctx, root, "builder") {
        let name = t.req_str(ctx, "name");
        let worker_names = t.opt_str_list(ctx, "workers");
        if worker_names.is_none() && t.map.get("workers").is_none() {
            t.missing(ctx, "workers");
        }
        let factory_offset = t.map.get("factory").map(|v| v.span().start).unwrap_or(t.offset());
        let factory = t.req_str(ctx, "factory");
        let branch_names = t.opt_str_list(ctx, "branches");
        let tags: Vec<String> = t.opt_str_list(ctx, "tags").unwrap_or_default().into_iter().map(|(s, _)| s).collect();
        let description = t.opt_str(ctx, "description");
        // CPython's scripts select "the stable builders of 3.14" by tags.
        let branch_tag = t.bool_or(ctx, "branch_tag", true);

        let worker_names = worker_names.unwrap_or_default();
        if worker_names.is_empty() && t.map.get("workers").is_some() {
            ctx.error(t.offset(), &t.key("workers"), "a builder needs at least one worker");
        }
        for (i, (w, offset)) in worker_names.iter().enumerate() {
            if !workers.iter().any(|c| c.name == *w) {
                ctx.error(*offset, &t.key(&format!("workers[{i}]")), format!("unknown worker {w:?}"));
            }
        }
        if let Some(f) = &factory
            && !factories.iter().any(|c| c.name == *f)
        {
            ctx.error(factory_offset, &t.key("factory"), format!("unknown factory {f:?}"));
        }
        let mut labels: Vec<Option<String>> = Vec::new();
        match &branch_names {
            None => labels.push(None),
            Some(list) => {
                if list.is_empty() {
                    ctx.error(
                        t.offset(),
                        &t.key("branches"),
                        "an empty list; leave `branches` out for a builder without a branch",
                    );
                }
                for (i, (b, offset)) in list.iter().enumerate() {
                    if !branches.iter().any(|c| c.name == *b) {
                        ctx.error(*offset, &t.key(&format!("branches[{i}]")), format!("unknown branch {b:?}"));
                    }
                    labels.push(Some(b.clone()));
                }
            }
        }
        if let (Some(name), Some(factory)) = (name, factory) {
            for label in labels {
                let expanded = match &label {
                    Some(l) => format!("{name} {l}"),
                    None => name.clone(),
                };
                if out.iter().any(|b| b.name == expanded) {
                    ctx.error(t.offset(), &t.key("name"), format!("duplicate builder name {expanded:?}"));
                    continue;
                }
                let tags = with_branch_tag(&tags, label.as_deref().filter(|_| branch_tag));
                out.push(BuilderConfig {
                    name: expanded,
                    definition: name.clone(),
                    branch: label,
                    workers: worker_names.iter().map(|(w, _)| w.clone()).collect(),
                    factory: factory.clone(),
                    tags,
                    description: description.clone(),
                });
            }
        }
        t.finish(ctx);
    }
    out
}

/// A builder's tags with its branch label among them (once).
fn with_branch_tag(tags: &[String], label: Option<&str>) -> Vec<String> {
    let mut tags = tags.to_vec();
    if let Some(l) = label.filter(|l| !tags.iter().any(|t| t == l)) {
        tags.push(l.to_string());
    }
    tags
}

/// A scheduler's `branch`, which must be configured.
fn scheduler_branch(ctx: &mut Ctx, t: &mut Table, branches: &[BranchConfig]) -> Option<String> {
    let offset = t.map.get("branch").map_or(t.offset(), |v| v.span().start);
    let b = t.req_str(ctx, "branch")?;
    if !branches.iter().any(|c| c.name == b) {
        ctx.error(offset, &t.key("branch"), format!("unknown branch {b:?}"));
    }
    Some(b)
}

fn read_branch_scheduler(ctx: &mut Ctx, t: &mut Table, branches: &[BranchConfig]) -> Option<SchedulerKind> {
    let branch = scheduler_branch(ctx, t, branches);
    let tree_stable = t.opt_duration(ctx, "tree_stable").unwrap_or(Duration::from_secs(0));
    let mut ignore_files = Vec::new();
    for (i, (p, offset)) in t.opt_str_list(ctx, "ignore_files").unwrap_or_default().into_iter().enumerate() {
        match cascade_model::Glob::new(&p) {
            Ok(g) => ignore_files.push(g),
            Err(e) => ctx.error(offset, &t.key(&format!("ignore_files[{i}]")), e.to_string()),
        }
    }
    branch.map(|branch| SchedulerKind::Branch { branch, tree_stable, ignore_files })
}

fn read_periodic_scheduler(ctx: &mut Ctx, t: &mut Table, branches: &[BranchConfig]) -> Option<SchedulerKind> {
    let branch = scheduler_branch(ctx, t, branches);
    let cron_offset = t.map.get("cron").map_or(t.offset(), |v| v.span().start);
    let cron = t.req_str(ctx, "cron");
    if let Some(c) = &cron
        && let Err(e) = validate::cron(c)
    {
        ctx.error(cron_offset, &t.key("cron"), format!("invalid cron expression {c:?}: {e}"));
    }
    Some(SchedulerKind::Periodic { branch: branch?, cron: cron? })
}

/// A regex from the configuration, checked (and, with `group`, required
/// to capture something).
fn regex_key(ctx: &mut Ctx, t: &mut Table, k: &str, group: bool) -> Option<String> {
    let offset = t.map.get(k).map_or(t.offset(), |v| v.span().start);
    let pattern = t.opt_str(ctx, k)?;
    match regex::Regex::new(&pattern) {
        Ok(r) if group && r.captures_len() < 2 => {
            ctx.error(offset, &t.key(k), "needs a group, e.g. '^!buildbot (.+)': it holds the builder-name regex");
            None
        }
        Ok(_) => Some(pattern),
        Err(e) => {
            ctx.error(offset, &t.key(k), format!("invalid regex: {e}"));
            None
        }
    }
}

fn read_pull_request_scheduler(ctx: &mut Ctx, t: &mut Table, branches: &[BranchConfig]) -> Option<SchedulerKind> {
    let branch = scheduler_branch(ctx, t, branches);
    let mut labels = Vec::new();
    if let Some(mut l) = t.opt_table(ctx, "labels") {
        let names: Vec<String> = l.map.keys().map(|k| k.get_ref().to_string()).collect();
        for name in names {
            if let Some(regex) = regex_key(ctx, &mut l, &name, false) {
                labels.push((name, regex));
            }
        }
        l.finish(ctx);
    }
    let label_tag = t.opt_str(ctx, "label_tag").or_else(|| Some("stable".to_string())).filter(|s| !s.is_empty());
    let comment_offset = t.map.get("comment").map_or(t.offset(), |v| v.span().start);
    let comment = regex_key(ctx, t, "comment", true);
    // Unanchored, the bot's own answer quoting a pattern could match again.
    if comment.as_ref().is_some_and(|c| !c.starts_with('^')) {
        ctx.error(comment_offset, &t.key("comment"), "must start with ^ (a command begins the comment)");
    }
    let cancel_running = t.bool_or(ctx, "cancel_running", false);
    if labels.is_empty() && comment.is_none() {
        ctx.error(t.offset(), &t.key("labels"), "a pull_request scheduler needs `labels`, `comment` or both");
    }
    let triggers = PullRequestTriggers { branch: branch?, labels, label_tag, comment, cancel_running };
    Some(SchedulerKind::PullRequest(triggers))
}

fn read_scheduler_kind(ctx: &mut Ctx, t: &mut Table, branches: &[BranchConfig]) -> Option<SchedulerKind> {
    let kind_offset = t.map.get("kind").map_or(t.offset(), |v| v.span().start);
    match t.req_str(ctx, "kind").as_deref() {
        Some("branch") => read_branch_scheduler(ctx, t, branches),
        Some("periodic") => read_periodic_scheduler(ctx, t, branches),
        Some("force") => Some(SchedulerKind::Force),
        Some("pull_request") => read_pull_request_scheduler(ctx, t, branches),
        Some("try") => {
            let place =
                format!("try scheduler {:?}", t.map.get("name").and_then(|v| v.get_ref().as_str()).unwrap_or("?"));
            let users = read_tool_users(ctx, t, &place);
            if users.is_empty() {
                ctx.error(t.offset(), &t.key("users"), "a try scheduler needs at least one user");
            }
            Some(SchedulerKind::Try { users })
        }
        Some(other) => {
            let message = format!(
                "unknown scheduler kind {other:?}; expected \"branch\", \"periodic\", \"force\", \"pull_request\" or \"try\""
            );
            ctx.error(kind_offset, &t.key("kind"), message);
            None
        }
        None => None,
    }
}

/// `users = [{ name, password }]`: logins for Buildbot's command-line tools
/// (`place` says whose, in the error when a name is taken).
fn read_tool_users(ctx: &mut Ctx, t: &mut Table, place: &str) -> Vec<ToolUser> {
    let Some(v) = t.take("users") else { return Vec::new() };
    let key = t.key("users");
    let DeValue::Array(items) = v.get_ref() else {
        ctx.error(v.span().start, &key, format!("expected an array of {{ name, password }} tables, found {}", kind(v)));
        return Vec::new();
    };
    let mut out: Vec<ToolUser> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(mut u) = as_table(ctx, item, format!("{key}[{i}]")) else { continue };
        let name = u.req_str(ctx, "name");
        let password = u.opt_secret(ctx, "password");
        if password.is_none() && u.map.get("password").is_none() {
            ctx.error(u.offset(), &u.key("password"), "missing required key");
        }
        if let Some(name) = &name {
            match ctx.pb_names.get(name) {
                Some(first) => {
                    let message = format!("PB login {name:?} is already {first}; PB login names must be unique");
                    ctx.error(u.offset(), &u.key("name"), message);
                }
                None => {
                    ctx.pb_names.insert(name.clone(), format!("a user of {place}"));
                }
            }
        }
        if let (Some(name), Some(password)) = (name, password) {
            out.push(ToolUser { name, password });
        }
        u.finish(ctx);
    }
    out
}

/// `[sendchange]`: the logins `buildbot sendchange` may use.
fn read_sendchange(ctx: &mut Ctx, root: &mut Table) -> SendchangeConfig {
    let Some(mut t) = root.opt_table(ctx, "sendchange") else { return SendchangeConfig::default() };
    let users = read_tool_users(ctx, &mut t, "[sendchange]");
    t.finish(ctx);
    SendchangeConfig { users }
}

fn read_schedulers(
    ctx: &mut Ctx,
    root: &mut Table,
    branches: &[BranchConfig],
    builders: &[BuilderConfig],
) -> Vec<SchedulerConfig> {
    let mut out: Vec<SchedulerConfig> = Vec::new();
    for mut t in array_of_tables(ctx, root, "scheduler") {
        let name = t.req_str(ctx, "name");
        let kind = read_scheduler_kind(ctx, &mut t, branches);
        let builder_list = t.opt_str_list(ctx, "builders");
        for (i, (b, offset)) in builder_list.iter().flatten().enumerate() {
            if !builders.iter().any(|c| c.name == *b || c.definition == *b) {
                ctx.error(*offset, &t.key(&format!("builders[{i}]")), format!("unknown builder {b:?}"));
            }
        }
        if let (Some(name), Some(kind)) = (name, kind) {
            if out.iter().any(|s| s.name == name) {
                ctx.error(t.offset(), &t.key("name"), format!("duplicate scheduler name {name:?}"));
            }
            // A scheduler that feeds no builder would collect changes forever.
            let fed = builders.iter().any(|b| {
                (kind.branch().is_none() || b.branch.as_deref() == kind.branch())
                    && builder_list.as_ref().is_none_or(|l| l.iter().any(|(n, _)| *n == b.name || *n == b.definition))
            });
            if !fed {
                ctx.error(t.offset(), &t.key("builders"), "this scheduler feeds no builder (none builds its branch)");
            }
            let builders = builder_list.map(|l| l.into_iter().map(|(s, _)| s).collect());
            out.push(SchedulerConfig { name, kind, builders });
        }
        t.finish(ctx);
    }
    out
}

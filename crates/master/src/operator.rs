//! What an operator asks of a running master, however it is asked (a
//! signal, `cascade reconfig`, the admin API): one channel that the serve
//! loop reads, so a reload and a stop never race each other.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};

/// One request to the serve loop.
#[derive(Debug)]
pub enum Signal {
    /// Stop starting builds, let the running ones finish within
    /// `[master] stop_grace`, then stop. Asked again while stopping: at once.
    Stop,
    /// Stop now: the builds still running end as RETRY.
    StopNow,
    /// Read the configuration file again and apply it; the reply (if any)
    /// says what changed, or gives every error (the master then keeps
    /// running on the configuration it had).
    Reload(Option<oneshot::Sender<Result<Reloaded, Vec<String>>>>),
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Reloaded {
    /// Builders that are new.
    pub builders_added: Vec<String>,
    /// Builders no longer configured: they take no new work.
    pub builders_removed: Vec<String>,
    /// Workers that may now log in.
    pub workers_added: Vec<String>,
    /// Workers no longer configured.
    pub workers_removed: Vec<String>,
    /// Settings that changed but only take effect when the master restarts.
    pub need_restart: Vec<String>,
}

/// Where requests to the serve loop go, and whether it is stopping.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Operator {
    tx: mpsc::Sender<Signal>,
    stopping: Arc<AtomicBool>,
}

/// How many requests may wait for the serve loop.
const WAITING: usize = 16;

impl Operator {
    /// A sender and the serve loop's end.
    pub fn channel() -> (Operator, mpsc::Receiver<Signal>) {
        let (tx, rx) = mpsc::channel(WAITING);
        (Operator { tx, stopping: Arc::default() }, rx)
    }

    /// The master takes no new builds: it is stopping.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Said by the serve loop once it starts no more builds.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Asks without waiting for room; false if the loop is gone or busy.
    pub fn ask(&self, signal: Signal) -> bool {
        self.tx.try_send(signal).is_ok()
    }

    /// Asks, waiting for room: a stop is never dropped.
    pub async fn tell(&self, signal: Signal) -> bool {
        self.tx.send(signal).await.is_ok()
    }

    /// Asks for a reload and waits for its outcome. Reloads never wait
    /// for room, so they cannot crowd out a stop.
    pub async fn reload(&self) -> Result<Reloaded, Vec<String>> {
        let (reply, outcome) = oneshot::channel();
        match self.tx.try_send(Signal::Reload(Some(reply))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(vec!["too many requests are waiting; try again".into()]);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(vec!["the master is not running".into()]),
        }
        outcome.await.unwrap_or_else(|_| Err(vec!["the master stopped before reloading".into()]))
    }
}

/// What changes from `old` to `new`: builders and workers added and
/// removed, and the settings a reload cannot apply (listeners, the store,
/// the master's name, connection caps, which are read once at start).
pub fn compare(old: &cascade_config::Config, new: &cascade_config::Config) -> Reloaded {
    let names = |c: &cascade_config::Config| -> (BTreeSet<String>, BTreeSet<String>) {
        (c.builders.iter().map(|b| b.name.clone()).collect(), c.workers.iter().map(|w| w.name.clone()).collect())
    };
    let ((old_builders, old_workers), (new_builders, new_workers)) = (names(old), names(new));
    let (m, n) = (&old.master, &new.master);
    let (l, k) = (&old.limits, &new.limits);
    let fixed = [
        ("master.http", m.http != n.http),
        ("master.pb", m.pb != n.pb),
        ("master.msgpack", m.msgpack != n.msgpack),
        ("master.database", m.database != n.database),
        ("master.name", m.name != n.name),
        ("master.trusted_proxies", m.trusted_proxies != n.trusted_proxies),
        ("master.heartbeat", m.heartbeat != n.heartbeat),
        ("master.master_expiry", m.master_expiry != n.master_expiry),
        ("limits.connections", l.connections != k.connections),
        ("limits.connections_per_address", l.connections_per_address != k.connections_per_address),
        ("limits.header_timeout", l.header_timeout != k.header_timeout),
        ("limits.password_checks", l.password_checks != k.password_checks),
    ];
    Reloaded {
        builders_added: new_builders.difference(&old_builders).cloned().collect(),
        builders_removed: old_builders.difference(&new_builders).cloned().collect(),
        workers_added: new_workers.difference(&old_workers).cloned().collect(),
        workers_removed: old_workers.difference(&new_workers).cloned().collect(),
        need_restart: fixed.iter().filter(|(_, changed)| *changed).map(|(key, _)| key.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[master]
name = "m"
[github]
insecure_webhook = true
[[branch]]
name = "main"
[[worker]]
name = "w1"
password = "pw"
[[factory]]
name = "f"
steps = [{ name = "s", command = ["true"] }]
[[builder]]
name = "b1"
factory = "f"
workers = ["w1"]
"#;

    fn parse(text: &str) -> cascade_config::Config {
        cascade_config::parse(text, std::path::Path::new("t.toml")).expect("config")
    }

    #[test]
    fn a_reload_names_what_it_adds_removes_and_cannot_apply() {
        let old = parse(BASE);
        assert_eq!(compare(&old, &old), Reloaded::default());
        let new = BASE
            .replace("name = \"b1\"", "name = \"b2\"")
            .replace("name = \"m\"", "name = \"m\"\nhttp = \"127.0.0.1:9\"")
            + "[[worker]]\nname = \"w2\"\npassword = \"pw\"\n";
        let changed = compare(&old, &parse(&new));
        assert_eq!(changed.builders_added, vec!["b2"]);
        assert_eq!(changed.builders_removed, vec!["b1"]);
        assert_eq!(changed.workers_added, vec!["w2"]);
        assert!(changed.workers_removed.is_empty());
        assert_eq!(changed.need_restart, vec!["master.http"]);
    }
}

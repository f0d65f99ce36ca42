//! Notifications: the event log (written in the transaction of each build's
//! start and end: the outbox) is read by every master as the durable
//! consumer `notify`; each build event becomes one notification per
//! reporter that wants it, written once whoever reads it first; then one
//! master at a time claims and sends each, retrying with back-off until the
//! reporter's `give_up_after`.

pub mod deliver;
pub mod irc;
pub mod mail;
pub mod message;

use std::sync::Arc;
use std::time::Duration;

use cascade_config::{ReporterConfig, ReporterKind, ResolvedSecrets};
use cascade_model::transition::{self, NotifyEvent};
use cascade_model::{Event, Results};
use cascade_store::{NewNotification, NotificationRecord, NotificationState, Store, StoreError};
use tokio::sync::watch;

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::events::EventReader;
use deliver::{Outcome, Target};
use message::{Facts, merged_pull_request};

/// How long a master holds a notification it is sending: longer than a
/// batch takes to send whatever the receivers do (each send is bounded).
const LEASE_SECS: i64 = 900;
/// Most notifications claimed at once.
const BATCH: i64 = 5;
/// Tracebacks a pull request comment carries, and how long each may be.
const TRACEBACKS: usize = 5;
const TRACEBACK_CHARS: usize = 4000;

/// How long a worker must be gone before a reporter says `worker_missing`.
fn worker_grace(r: &ReporterConfig) -> i64 {
    match &r.kind {
        ReporterKind::Mail(m) => i64::try_from(m.worker_grace.as_secs()).unwrap_or(i64::MAX),
        _ => 600,
    }
}

/// What notifying needs.
pub struct Notifier {
    pub store: Store,
    pub catalog: Arc<Catalog>,
    pub clock: Clock,
    pub http: reqwest::Client,
    pub secrets: Arc<ResolvedSecrets>,
    /// The first event of this master's life: a first run reads from there.
    pub events_from: i64,
    /// When this master came up, Unix seconds: workers get their grace time from then.
    pub up_since: i64,
    /// IRC reporters' connections, by reporter name (made when the notifier runs).
    pub irc: parking_lot::Mutex<std::collections::HashMap<String, irc::IrcHandle>>,
    /// Deliveries and failures counted by reporter.
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Notifier {
    /// Reads the event log into notifications and sends them, until `stopped` flips.
    pub async fn run(self: Arc<Self>, stopped: watch::Receiver<bool>) {
        if self.catalog.config.reporters.is_empty() {
            return;
        }
        for r in &self.catalog.config.reporters {
            if let ReporterKind::Irc(c) = &r.kind {
                let settings = irc::IrcSettings {
                    server: c.server.clone(),
                    tls: c.tls,
                    nick: c.nick.clone(),
                    password: self.secrets.reporter_passwords.get(&r.name).map(|p| p.expose().to_string()),
                    channels: c.channels.clone(),
                    colours: c.colours,
                    ca_file: c.ca_file.clone(),
                };
                self.irc.lock().insert(r.name.clone(), irc::spawn(settings, stopped.clone()));
            }
        }
        // Claims this master held in a life before a crash are its own to
        // resend; let go of them before this life claims any.
        if let Err(e) = self.store.release_notifications(self.catalog.master_id).await {
            tracing::warn!(error = %e, "could not release this master's old claims");
        }
        let write = self.clone().write_loop(stopped.clone());
        let send = self.send_loop(stopped);
        tokio::join!(write, send);
    }

    async fn write_loop(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        let mut reader = loop {
            // Saved at once: from here on no build event is missed, even if
            // this master is killed before it writes a notification.
            match self.open_reader().await {
                Ok(r) => break r,
                Err(e) => tracing::warn!(error = %e, "the notifier cannot read the event log yet; retrying"),
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stopped.changed() => return,
            }
        };
        while !*stopped.borrow() {
            if let Err(e) = self.write_once(&mut reader).await {
                tracing::warn!(error = %e, "writing notifications failed; reading again from the saved place");
                // The reader moved past events whose notifications were not
                // written: start again where it last saved (writing is idempotent).
                if let Ok(again) = EventReader::durable_from(&self.store, "notify", self.events_from).await {
                    reader = again;
                }
            }
            tokio::select! {
                () = reader.wait() => {}
                _ = stopped.changed() => {}
            }
        }
    }

    async fn open_reader(&self) -> Result<EventReader, StoreError> {
        let reader = EventReader::durable_from(&self.store, "notify", self.events_from).await?;
        reader.save(self.clock.now()).await?;
        Ok(reader)
    }

    /// Turns what is new in the event log into notifications, then saves where it stands.
    pub async fn write_once(&self, reader: &mut EventReader) -> Result<usize, StoreError> {
        let mut written = 0;
        for envelope in reader.poll().await? {
            let Some(id) = envelope.id else { continue };
            let items = self.notifications_for(id, envelope.at, &envelope.event).await?;
            if !items.is_empty() {
                written += self.store.add_notifications(&items, self.clock.now()).await?;
            }
        }
        reader.save(self.clock.now()).await?;
        Ok(written as usize)
    }

    /// The notifications one event makes.
    async fn notifications_for(
        &self,
        event_id: i64,
        at: i64,
        event: &Event,
    ) -> Result<Vec<NewNotification>, StoreError> {
        // The event's own result: by the time it is read the build may have moved on.
        let (build_id, builder_id, results, events) = match event {
            Event::BuildStarted { build_id, builder_id, .. } => {
                (*build_id, *builder_id, None, vec![NotifyEvent::Started])
            }
            Event::BuildFinished { build_id, builder_id, number, results } => {
                let previous = self.store.previous_state(*builder_id, *number).await?.and_then(Results::from_code);
                (*build_id, *builder_id, Some(*results), transition::finished(previous, *results))
            }
            Event::WorkerLost { worker_id, worker, .. } => {
                return self.worker_event(event_id, at, *worker_id, worker, NotifyEvent::WorkerMissing).await;
            }
            Event::WorkerConnected { worker_id, worker, .. } => {
                return self.worker_event(event_id, at, *worker_id, worker, NotifyEvent::WorkerBack).await;
            }
            _ => return Ok(Vec::new()),
        };
        let Some(builder) = self.catalog.builder(builder_id) else { return Ok(Vec::new()) };
        let wanting: Vec<(&ReporterConfig, NotifyEvent)> = self
            .catalog
            .config
            .reporters
            .iter()
            .filter(|r| admits(r, builder))
            // The most telling event it wants: a change of state over a bare result.
            .filter_map(|r| events.iter().rev().find(|e| r.events.contains(e)).map(|e| (r, *e)))
            .collect();
        if wanting.is_empty() {
            return Ok(Vec::new());
        }
        let facts = self.facts(build_id, builder, results, &events).await?;
        let Some(facts) = facts else { return Ok(Vec::new()) };
        let now = self.clock.now();
        let mut out = Vec::new();
        for (reporter, event) in wanting {
            let mut f = facts.clone();
            f.event = event.name().to_string();
            let dedupe = match (&reporter.kind, f.pull_request) {
                // One comment per pull request and builder, however often it fails again.
                (ReporterKind::GithubComment { .. }, Some(pr)) => format!("pr:{pr}:builder:{builder_id}"),
                (ReporterKind::GithubComment { .. }, None) => continue,
                _ => format!("event:{event_id}"),
            };
            let body = serde_json::to_string(&f).unwrap_or_default();
            let give_up_at = now.saturating_add(i64::try_from(reporter.give_up_after.as_secs()).unwrap_or(i64::MAX));
            out.push(NewNotification {
                reporter: reporter.name.clone(),
                dedupe,
                event_id,
                build_id: Some(build_id),
                body,
                give_up_at,
                due_at: now,
            });
        }
        Ok(out)
    }

    /// A lost worker's `worker_missing`, due once its grace time has passed
    /// since the loss at `at` (it is skipped then if the worker is back); a
    /// worker's `worker_back`, when a `worker_missing` about it was the last
    /// thing said (`transition`'s rules).
    async fn worker_event(
        &self,
        event_id: i64,
        at: i64,
        worker_id: i64,
        worker: &str,
        event: NotifyEvent,
    ) -> Result<Vec<NewNotification>, StoreError> {
        let owner = self.catalog.worker(worker).and_then(|w| w.notify.clone());
        let base = self.catalog.config.master.url.trim_end_matches('/');
        let mut out = Vec::new();
        for r in self.catalog.config.reporters.iter().filter(|r| r.events.contains(&event)) {
            let grace = if event == NotifyEvent::WorkerMissing { worker_grace(r) } else { 0 };
            if event == NotifyEvent::WorkerBack && !transition::back_is_news(self.last_said(&r.name, worker_id).await?)
            {
                continue;
            }
            let facts = Facts {
                event: event.name().to_string(),
                events: vec![event.name().to_string()],
                worker: Some(worker.to_string()),
                worker_id: Some(worker_id),
                url: format!("{base}/workers/{worker_id}"),
                to: owner.clone().into_iter().collect(),
                ..Facts::default()
            };
            let due_at = transition::missing_due(at, self.up_since, grace);
            out.push(NewNotification {
                reporter: r.name.clone(),
                dedupe: format!("{}:{worker_id}:{event_id}", event.name()),
                event_id,
                build_id: None,
                body: serde_json::to_string(&facts).unwrap_or_default(),
                give_up_at: due_at.saturating_add(i64::try_from(r.give_up_after.as_secs()).unwrap_or(i64::MAX)),
                due_at,
            });
        }
        Ok(out)
    }

    /// The last worker event a reporter said (sent) about a worker.
    async fn last_said(&self, reporter: &str, worker_id: i64) -> Result<Option<NotifyEvent>, StoreError> {
        let last = self.store.last_worker_notification(reporter, worker_id).await?;
        let said = last.filter(|(_, state)| *state == NotificationState::Sent);
        Ok(said.and_then(|(key, _)| NotifyEvent::parse(key.split(':').next()?)))
    }

    /// Whether a due `worker_missing` is still true (`transition::still_missing`).
    async fn still_missing(&self, reporter: &str, worker_id: i64, dedupe: &str) -> Result<bool, StoreError> {
        let connected = self.store.worker_connected_since().await?.contains_key(&worker_id);
        let last = self.store.last_worker_notification(reporter, worker_id).await?;
        let lost_again = last.is_some_and(|(key, _)| key != dedupe);
        Ok(transition::still_missing(connected, lost_again))
    }

    /// What there is to say about a build.
    async fn facts(
        &self,
        build_id: i64,
        builder: &cascade_config::BuilderConfig,
        results: Option<Results>,
        events: &[NotifyEvent],
    ) -> Result<Option<Facts>, StoreError> {
        let Some(build) = self.store.get_build(build_id).await? else { return Ok(None) };
        let props = self.store.build_properties(build_id).await?;
        let prop = |n: &str| {
            props
                .iter()
                .find(|(k, _, _)| k == n)
                .and_then(|(_, v, _)| v.as_str().map(str::to_string))
                .filter(|v| !v.is_empty())
        };
        let changes = self.store.build_changes_page(build_id, 0, 100).await?.items;
        let mut authors: Vec<String> = Vec::new();
        for c in &changes {
            let name = c.author.split(" <").next().unwrap_or(&c.author).to_string();
            if !authors.contains(&name) {
                authors.push(name);
            }
        }
        let only = (changes.len() == 1).then(|| &changes[0]);
        let (failed_tests, leaks, tracebacks) = self.test_facts(build_id).await?;
        Ok(Some(Facts {
            event: String::new(),
            events: events.iter().map(|e| e.name().to_string()).collect(),
            builder: builder.name.clone(),
            builder_id: build.builderid,
            build_id,
            number: build.number,
            results: results.map(|r| r.name().to_string()),
            // A PR build checks out GitHub's merge commit; its status belongs
            // on the PR's head (for PR builds only: a forced build's
            // properties are anyone's).
            revision: prop("pr_head_sha")
                .filter(|_| prop("branch").is_some_and(|b| cascade_model::pull::number_of(&b).is_some()))
                .or_else(|| prop("got_revision"))
                .or_else(|| prop("revision"))
                .or_else(|| only.and_then(|c| c.revision.clone())),
            branch: builder.branch.clone(),
            authors,
            url: format!(
                "{}/builders/{}/builds/{}",
                self.catalog.config.master.url.trim_end_matches('/'),
                build.builderid,
                build.number
            ),
            tags: builder.tags.clone(),
            failed_tests,
            leaks,
            tracebacks,
            // A merged PR's number only: a PR build's own results go to its head's statuses.
            pull_request: only.and_then(|c| merged_pull_request(&c.comments)),
            title: only.and_then(|c| c.comments.lines().next().map(str::to_string)),
            ..Facts::default()
        }))
    }

    /// Failed test files, leak lines and the first tracebacks of a build.
    async fn test_facts(&self, build_id: i64) -> Result<(Vec<String>, Vec<String>, Vec<(String, String)>), StoreError> {
        let mut failed = self.store.failed_test_files(&[build_id]).await?.remove(&build_id).unwrap_or_default();
        let mut tracebacks = Vec::new();
        for p in self.store.test_problems_of(&[build_id]).await?.into_iter().filter(|p| !p.flaky) {
            if let Some(m) = &p.method
                && tracebacks.len() < TRACEBACKS
                && !p.detail.is_empty()
            {
                tracebacks.push((m.clone(), p.detail.chars().take(TRACEBACK_CHARS).collect()));
            }
        }
        let leaks = self.store.test_runs_of(&[build_id]).await?.into_iter().flat_map(|r| r.leaks).take(100).collect();
        failed.truncate(200);
        Ok((failed, leaks, tracebacks))
    }

    async fn send_loop(self: Arc<Self>, mut stopped: watch::Receiver<bool>) {
        while !*stopped.borrow() {
            let sent = match self.send_once().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "sending notifications failed; retrying");
                    0
                }
            };
            if sent == 0 {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stopped.changed() => {}
                }
            }
        }
    }

    /// Claims what is due and sends it; returns how many were tried.
    pub async fn send_once(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let due = self.store.claim_notifications(self.catalog.master_id, now, now + LEASE_SECS, BATCH).await?;
        let tried = due.len();
        for n in due {
            self.send_one(n).await?;
        }
        Ok(tried)
    }

    async fn send_one(&self, n: NotificationRecord) -> Result<(), StoreError> {
        let Some(reporter) = self.catalog.config.reporters.iter().find(|r| r.name == n.reporter) else {
            // Its reporter was removed from the config: nothing will send it.
            return self.store.notification_failed(n.id, "no such reporter any more", i64::MAX, true).await;
        };
        let facts: Facts = match serde_json::from_str(&n.body) {
            Ok(f) => f,
            Err(e) => return self.store.notification_failed(n.id, &format!("unreadable: {e}"), i64::MAX, true).await,
        };
        let target = Target {
            reporter,
            url: self.secrets.reporter_urls.get(&reporter.name).map(cascade_config::SecretString::expose),
            github_api: &self.catalog.config.github.api_url,
            github_token: self.secrets.github_token.as_ref().map(cascade_config::SecretString::expose),
            repository: self.catalog.config.github.repository.as_deref(),
        };
        let now = self.clock.now();
        let span = tracing::info_span!("notify", reporter = %reporter.name, build = ?n.build_id, event = %facts.event);
        let _guard = span.enter();
        if let Some(worker_id) = facts.worker_id.filter(|_| facts.event == NotifyEvent::WorkerMissing.name()) {
            // Written before this master's start (it was down): workers get their grace from now.
            let earliest = transition::missing_due(i64::MIN, self.up_since, worker_grace(reporter));
            if now < earliest {
                return self
                    .store
                    .notification_failed(n.id, "workers reconnect after a master start", earliest, false)
                    .await;
            }
            if !self.still_missing(&reporter.name, worker_id, &n.dedupe).await? {
                tracing::info!("the worker came back within its grace time; nothing to say");
                return self.store.notification_skipped(n.id, "the worker came back within its grace time").await;
            }
        }
        // A start's `pending` sent after the build ended would hide its result.
        if matches!(reporter.kind, ReporterKind::GithubStatus { .. }) && facts.results.is_none() {
            let ended = self.store.get_build(facts.build_id).await?.is_some_and(|b| b.complete);
            if ended {
                return self.store.notification_skipped(n.id, "the build ended before its start was reported").await;
            }
        }
        let outcome = match &reporter.kind {
            ReporterKind::Irc(c) => self.post_irc(&reporter.name, irc::line(&facts, c.colours)).await,
            ReporterKind::Mail(m) => self.mail(&reporter.name, m, &facts, n.id).await,
            _ => deliver::send(&self.http, &target, &facts).await,
        };
        match outcome {
            Outcome::Sent => {
                self.metrics.notifications_sent.inc(&[&reporter.name]);
                tracing::info!("notification sent");
                self.store.notification_sent(n.id, now).await
            }
            Outcome::Wait(d, why) => {
                tracing::info!(reason = %why, "the receiver asks to wait");
                self.store.notification_failed(n.id, &why, now + d.as_secs() as i64, false).await
            }
            Outcome::Retry(why) => {
                self.metrics.notification_failures.inc(&[&reporter.name]);
                let retry_at = now + backoff(n.attempts);
                if retry_at > n.give_up_at {
                    tracing::warn!(reason = %why, attempts = n.attempts + 1, "notification given up");
                } else {
                    tracing::info!(reason = %why, "notification failed; retrying");
                }
                self.store.notification_failed(n.id, &why, retry_at, true).await
            }
            Outcome::Refused(why) => {
                self.metrics.notification_failures.inc(&[&reporter.name]);
                tracing::warn!(reason = %why, "notification refused; given up");
                self.store.notification_failed(n.id, &why, i64::MAX, true).await
            }
        }
    }
}

impl Notifier {
    async fn mail(&self, reporter: &str, m: &cascade_config::MailReporter, facts: &Facts, id: i64) -> Outcome {
        let settings = mail::SmtpSettings {
            server: &m.smtp,
            starttls: m.starttls,
            username: m.username.as_deref(),
            password: self.secrets.reporter_passwords.get(reporter).map(cascade_config::SecretString::expose),
            from: &m.from,
            ca_file: m.ca_file.as_deref(),
        };
        let to = if facts.to.is_empty() { &m.to } else { &facts.to };
        if to.is_empty() {
            return Outcome::Refused("nobody to mail".into());
        }
        let subject = match &facts.worker {
            Some(w) if facts.event == NotifyEvent::WorkerBack.name() => format!("worker {w} is back"),
            Some(w) => format!("worker {w} is missing"),
            None => format!("{}: {} #{}", facts.event, facts.builder, facts.number),
        };
        let mut body = message::line(facts);
        if !facts.failed_tests.is_empty() {
            body.push_str(&format!("\n\nFailed tests: {}\n", facts.failed_tests.join(" ")));
        }
        let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S +0000").to_string();
        let host = self
            .catalog
            .config
            .master
            .url
            .split("//")
            .nth(1)
            .unwrap_or("cascade")
            .split('/')
            .next()
            .unwrap_or("cascade");
        let id = format!("notification-{id}@{host}");
        mail::send(&settings, &mail::Mail { to, subject: &subject, body: &body }, &date, &id).await
    }

    async fn post_irc(&self, reporter: &str, line: String) -> Outcome {
        let handle = self.irc.lock().get(reporter).cloned();
        match handle {
            Some(h) if h.post(line, Duration::from_secs(15)).await => Outcome::Sent,
            Some(_) => Outcome::Retry("not connected to the IRC server".into()),
            None => Outcome::Retry("the IRC connection is not running".into()),
        }
    }
}

/// Seconds before attempt `attempts + 1`: 2, 4, 8, ... up to ten minutes.
pub fn backoff(attempts: i64) -> i64 {
    2_i64.saturating_pow(u32::try_from(attempts.clamp(0, 20)).unwrap_or(20) + 1).min(600)
}

/// Whether a reporter's filters take this builder.
pub fn admits(r: &ReporterConfig, b: &cascade_config::BuilderConfig) -> bool {
    let tags = r.tags.is_empty() || r.tags.iter().any(|t| b.tags.contains(t));
    let builders = r.builders.is_empty() || r.builders.iter().any(|n| *n == b.name || *n == b.definition);
    let branches = r.branches.is_empty() || b.branch.as_ref().is_some_and(|br| r.branches.contains(br));
    tags && builders && branches
}

#[cfg(test)]
mod tests {
    use super::backoff;

    #[test]
    fn backoff_doubles_up_to_ten_minutes() {
        assert_eq!((backoff(0), backoff(1), backoff(2)), (2, 4, 8));
        assert_eq!(backoff(50), 600);
        assert_eq!(backoff(-3), 2);
    }
}

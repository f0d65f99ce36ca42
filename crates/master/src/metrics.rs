//! What `/metrics` reports, in Prometheus's text format: counters and
//! histograms kept in memory by the parts that count (webhook, runner,
//! schedulers, reporters, janitor), and gauges read when scraped. Each
//! master counts its own; Prometheus sums over the masters it scrapes.
//!
//! Label values come only from the configuration (builder tags, reporter
//! names) or from fixed vocabularies, never from what a caller sent, so the
//! number of series stays bounded.

use std::collections::BTreeMap;
use std::fmt::Write;

use parking_lot::Mutex;

/// Bucket bounds, in seconds, for webhook and store latencies.
pub const FAST: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];
/// Bucket bounds, in seconds, for build durations.
pub const SLOW: &[f64] = &[10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0];

/// Label values, in the order of the family's label names.
type Labels = Vec<String>;

fn key_of(labels: &[&str]) -> Labels {
    labels.iter().map(|l| (*l).to_owned()).collect()
}

/// Counters of one name, by label values.
#[derive(Debug)]
pub struct Counters {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    values: Mutex<BTreeMap<Labels, u64>>,
}

impl Counters {
    /// A family with these label names (none: one plain counter).
    pub const fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Counters {
        Counters { name, help, labels, values: Mutex::new(BTreeMap::new()) }
    }

    /// Adds `n` to the counter with these label values.
    pub fn add(&self, labels: &[&str], n: u64) {
        let key = key_of(labels);
        *self.values.lock().entry(key).or_insert(0) += n;
    }

    /// One more.
    pub fn inc(&self, labels: &[&str]) {
        self.add(labels, 1);
    }

    /// The count for these label values (tests, and gauges built on it).
    pub fn get(&self, labels: &[&str]) -> u64 {
        let key = key_of(labels);
        self.values.lock().get(&key).copied().unwrap_or(0)
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "counter");
        let values = self.values.lock();
        if values.is_empty() && self.labels.is_empty() {
            let _ = writeln!(out, "{} 0", self.name);
        }
        for (labels, v) in values.iter() {
            let _ = writeln!(out, "{}{} {v}", self.name, label_set(self.labels, labels, None));
        }
    }
}

/// Histograms of one name, by label values.
#[derive(Debug)]
pub struct Histograms {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    bounds: &'static [f64],
    values: Mutex<BTreeMap<Labels, Histogram>>,
}

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Observations at or below each bound (not cumulative).
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Histograms {
    /// A family with these label names and bucket bounds (ascending).
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        bounds: &'static [f64],
    ) -> Histograms {
        Histograms { name, help, labels, bounds, values: Mutex::new(BTreeMap::new()) }
    }

    /// Records one observation of `seconds`.
    pub fn observe(&self, labels: &[&str], seconds: f64) {
        let key = key_of(labels);
        let mut values = self.values.lock();
        let h = values
            .entry(key)
            .or_insert_with(|| Histogram { buckets: vec![0; self.bounds.len()], ..Default::default() });
        if let Some(i) = self.bounds.iter().position(|b| seconds <= *b) {
            h.buckets[i] += 1;
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// How many observations these label values have.
    pub fn count(&self, labels: &[&str]) -> u64 {
        let key = key_of(labels);
        self.values.lock().get(&key).map_or(0, |h| h.count)
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "histogram");
        for (labels, h) in self.values.lock().iter() {
            let mut cumulative = 0;
            for (bound, n) in self.bounds.iter().zip(&h.buckets) {
                cumulative += n;
                let le = format!("{bound}");
                let _ = writeln!(out, "{}_bucket{} {cumulative}", self.name, label_set(self.labels, labels, Some(&le)));
            }
            let _ = writeln!(out, "{}_bucket{} {}", self.name, label_set(self.labels, labels, Some("+Inf")), h.count);
            let _ = writeln!(out, "{}_sum{} {}", self.name, label_set(self.labels, labels, None), h.sum);
            let _ = writeln!(out, "{}_count{} {}", self.name, label_set(self.labels, labels, None), h.count);
        }
    }
}

/// A value read at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct Gauge {
    /// Its name.
    pub name: &'static str,
    /// What it measures.
    pub help: &'static str,
    /// Its values: label pairs and the value.
    pub values: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Gauge {
    /// A gauge with one unlabelled value.
    pub fn one(name: &'static str, help: &'static str, value: f64) -> Gauge {
        Gauge { name, help, values: vec![(vec![], value)] }
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "gauge");
        for (labels, v) in &self.values {
            let names: Vec<&str> = labels.iter().map(|(n, _)| *n).collect();
            let values: Labels = labels.iter().map(|(_, v)| v.clone()).collect();
            let _ = writeln!(out, "{}{} {v}", self.name, label_set(&names, &values, None));
        }
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `{a="x",b="y"}` (with `le` last for buckets), or nothing without labels.
fn label_set(names: &[&str], values: &[String], le: Option<&str>) -> String {
    let mut pairs: Vec<String> = names.iter().zip(values).map(|(n, v)| format!("{n}=\"{}\"", escape(v))).collect();
    if let Some(le) = le {
        pairs.push(format!("le=\"{le}\""));
    }
    if pairs.is_empty() { String::new() } else { format!("{{{}}}", pairs.join(",")) }
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Everything this master counts.
#[derive(Debug)]
pub struct Metrics {
    /// Builds started here, by builder tag (`""` for an untagged builder).
    pub builds_started: Counters,
    /// Builds finished here, by builder tag and result.
    pub builds_finished: Counters,
    /// How long builds took, by result.
    pub build_duration: Histograms,
    /// Webhook deliveries, by event and outcome.
    pub webhook_deliveries: Counters,
    /// How long a delivery took to answer, by event.
    pub webhook_duration: Histograms,
    /// Scheduler passes.
    pub scheduler_passes: Counters,
    /// Buildsets the schedulers made.
    pub buildsets_fired: Counters,
    /// Notifications sent, by reporter.
    pub notifications_sent: Counters,
    /// Notification attempts that failed, by reporter.
    pub notification_failures: Counters,
    /// Log bytes stored.
    pub log_bytes: Counters,
    /// Rows the janitor removed, by what they were.
    pub janitor_removed: Counters,
    /// Janitor sweeps finished (the first runs at start-up).
    pub janitor_sweeps: Counters,
    /// Reloads, by outcome (`applied`, `refused`).
    pub reloads: Counters,
    /// How long the store took, by operation (`ingest`: a push's changes,
    /// `claim`: a build's requests, `log_lines`: a batch of log lines).
    pub store_duration: Histograms,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            builds_started: Counters::new("cascade_builds_started_total", "Builds started by this master.", &["tag"]),
            builds_finished: Counters::new(
                "cascade_builds_finished_total",
                "Builds finished on this master.",
                &["tag", "result"],
            ),
            build_duration: Histograms::new(
                "cascade_build_duration_seconds",
                "How long builds took.",
                &["result"],
                SLOW,
            ),
            webhook_deliveries: Counters::new(
                "cascade_webhook_deliveries_total",
                "GitHub webhook deliveries answered.",
                &["event", "outcome"],
            ),
            webhook_duration: Histograms::new(
                "cascade_webhook_duration_seconds",
                "How long a webhook delivery took to answer.",
                &["event"],
                FAST,
            ),
            scheduler_passes: Counters::new("cascade_scheduler_passes_total", "Scheduler passes.", &[]),
            buildsets_fired: Counters::new("cascade_buildsets_fired_total", "Buildsets the schedulers made.", &[]),
            notifications_sent: Counters::new(
                "cascade_notifications_sent_total",
                "Notifications delivered.",
                &["reporter"],
            ),
            notification_failures: Counters::new(
                "cascade_notification_failures_total",
                "Notification attempts that failed.",
                &["reporter"],
            ),
            log_bytes: Counters::new("cascade_log_bytes_total", "Log bytes stored.", &[]),
            janitor_removed: Counters::new("cascade_janitor_removed_total", "Rows the janitor removed.", &["what"]),
            janitor_sweeps: Counters::new("cascade_janitor_sweeps_total", "Janitor sweeps finished.", &[]),
            reloads: Counters::new("cascade_reloads_total", "Configuration reloads.", &["outcome"]),
            store_duration: Histograms::new(
                "cascade_store_duration_seconds",
                "How long the store took, by operation.",
                &["operation"],
                FAST,
            ),
        }
    }
}

impl Metrics {
    /// The text format: every counter and histogram, then `gauges`.
    pub fn render(&self, gauges: &[Gauge]) -> String {
        let mut out = String::new();
        for c in [
            &self.builds_started,
            &self.builds_finished,
            &self.webhook_deliveries,
            &self.scheduler_passes,
            &self.buildsets_fired,
            &self.notifications_sent,
            &self.notification_failures,
            &self.log_bytes,
            &self.janitor_removed,
            &self.janitor_sweeps,
            &self.reloads,
        ] {
            c.render(&mut out);
        }
        self.build_duration.render(&mut out);
        self.webhook_duration.render(&mut out);
        self.store_duration.render(&mut out);
        for g in gauges {
            g.render(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_histograms_and_gauges_read_as_the_text_format() {
        let m = Metrics::default();
        m.builds_finished.inc(&["stable", "success"]);
        m.builds_finished.add(&["stable", "success"], 2);
        m.webhook_duration.observe(&["push"], 0.003);
        m.webhook_duration.observe(&["push"], 20.0);
        let text = m.render(&[Gauge { name: "g", help: "h", values: vec![(vec![("k", "a\"b".into())], 1.5)] }]);
        assert!(text.contains("cascade_builds_finished_total{tag=\"stable\",result=\"success\"} 3\n"), "{text}");
        assert!(text.contains("cascade_scheduler_passes_total 0\n"), "an unlabelled counter reads 0: {text}");
        assert!(text.contains("cascade_webhook_duration_seconds_bucket{event=\"push\",le=\"0.0025\"} 0\n"));
        assert!(text.contains("cascade_webhook_duration_seconds_bucket{event=\"push\",le=\"0.005\"} 1\n"));
        assert!(text.contains("cascade_webhook_duration_seconds_bucket{event=\"push\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("cascade_webhook_duration_seconds_count{event=\"push\"} 2\n"));
        assert!(text.contains("g{k=\"a\\\"b\"} 1.5\n"), "label values are escaped: {text}");
        assert!(text.contains("# TYPE cascade_build_duration_seconds histogram\n"));
    }
}

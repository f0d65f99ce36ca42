//! A step's `stdio` log as it grows: whole lines, each tagged with its
//! [`Stream`], written in batches and announced on the bus once stored.

use std::time::{Duration, Instant};

use cascade_diagnosis::TestReport;
use cascade_diagnosis::regrtest::Parser;
use cascade_model::log::Stream;
use cascade_store::{Store, StoreError};

use crate::clock::Clock;
use crate::events::Bus;

const FLUSH_LINES: usize = 2000;
const FLUSH_AFTER: Duration = Duration::from_millis(250);
/// A line a worker has not ended yet is cut here, so none grows without bound.
const MAX_PARTIAL: usize = 64 * 1024;

/// Buffers a log's lines and writes them in batches.
pub struct LogWriter {
    store: Store,
    bus: Bus,
    clock: Clock,
    /// The log written to.
    pub log_id: i64,
    buffered: Vec<String>,
    written: i64,
    oldest: Option<Instant>,
    /// Reads the output as regrtest's while it streams, when asked to.
    tests: Option<Parser>,
    /// The unended last line of stdout and of stderr: workers send output
    /// in chunks that may end mid-line.
    partial: [String; 2],
    /// Where the bytes stored are counted.
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

impl LogWriter {
    /// A writer for the (empty) log `log_id`.
    pub fn new(store: Store, log_id: i64, bus: Bus, clock: Clock) -> LogWriter {
        LogWriter {
            store,
            bus,
            clock,
            log_id,
            buffered: Vec::new(),
            written: 0,
            oldest: None,
            tests: None,
            partial: Default::default(),
            metrics: None,
        }
    }

    /// Counts the bytes it stores in `metrics`.
    pub fn counted(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> LogWriter {
        self.metrics = Some(metrics);
        self
    }

    /// Reads the command output that follows as a test run's.
    pub fn watch_tests(&mut self) {
        self.tests.get_or_insert_with(Parser::new);
    }

    /// What the output said as a test run, if it was one.
    pub fn take_tests(&mut self) -> Option<TestReport> {
        self.end_partials();
        self.tests.take().map(Parser::finish).filter(|r| !r.is_empty())
    }

    /// Adds output of a stream: whole lines are logged now, an unended last
    /// line when its end comes (or the log ends). The master's own text
    /// (`Stream::Header`) is whole lines.
    pub async fn add(&mut self, stream: Stream, text: &str) -> Result<(), StoreError> {
        let lines = match stream {
            Stream::Header => {
                self.end_partials();
                let text = text.strip_suffix('\n').unwrap_or(text);
                text.split('\n').map(str::to_string).collect()
            }
            Stream::Stdout | Stream::Stderr => self.whole_lines(stream, text),
        };
        self.log_lines(stream, lines).await
    }

    /// The lines `text` completes on `stream`; the rest waits for its end.
    fn whole_lines(&mut self, stream: Stream, text: &str) -> Vec<String> {
        let partial = &mut self.partial[usize::from(stream == Stream::Stderr)];
        partial.push_str(text);
        let mut lines = Vec::new();
        if let Some(end) = partial.rfind('\n') {
            let rest = partial.split_off(end + 1);
            let complete = std::mem::replace(partial, rest);
            lines.extend(complete[..end].split('\n').map(str::to_string));
        }
        if partial.len() > MAX_PARTIAL {
            lines.push(std::mem::take(partial));
        }
        lines
    }

    /// Logs the unended lines as they are (before the master speaks, and at the end).
    fn end_partials(&mut self) {
        for (i, stream) in [Stream::Stdout, Stream::Stderr].into_iter().enumerate() {
            let line = std::mem::take(&mut self.partial[i]);
            if !line.is_empty() {
                self.feed(stream, std::slice::from_ref(&line));
                self.buffered.push(stream.tagged(&line));
            }
        }
    }

    fn feed(&mut self, stream: Stream, lines: &[String]) {
        if let Some(parser) = self.tests.as_mut().filter(|_| stream != Stream::Header) {
            lines.iter().for_each(|line| parser.line(line));
        }
    }

    async fn log_lines(&mut self, stream: Stream, lines: Vec<String>) -> Result<(), StoreError> {
        if lines.is_empty() && self.buffered.is_empty() {
            return Ok(());
        }
        self.feed(stream, &lines);
        self.buffered.extend(lines.iter().map(|line| stream.tagged(line)));
        self.oldest.get_or_insert_with(Instant::now);
        if self.buffered.len() >= FLUSH_LINES || self.oldest.is_some_and(|t| t.elapsed() >= FLUSH_AFTER) {
            self.flush().await?;
        }
        Ok(())
    }

    /// Adds what the master says about the step.
    pub async fn header(&mut self, text: &str) -> Result<(), StoreError> {
        self.add(Stream::Header, text).await
    }

    /// Writes what is buffered.
    pub async fn flush(&mut self) -> Result<(), StoreError> {
        if self.buffered.is_empty() {
            return Ok(());
        }
        let first_line = self.written;
        let started = std::time::Instant::now();
        self.written = self.store.append_log_lines(self.log_id, first_line, &self.buffered).await?;
        if let Some(metrics) = &self.metrics {
            metrics.store_duration.observe(&["log_lines"], started.elapsed().as_secs_f64());
            let bytes: usize = self.buffered.iter().map(|l| l.len() + 1).sum();
            metrics.log_bytes.add(&[], bytes as u64);
        }
        // Stored first, published second: a live view never shows a line the
        // store could not give it on reload.
        let lines = std::mem::take(&mut self.buffered);
        self.bus.publish_lines(self.log_id, first_line, lines, self.clock.now());
        self.oldest = None;
        Ok(())
    }

    /// Writes the rest and marks the log complete.
    pub async fn finish(mut self) -> Result<(), StoreError> {
        self.end_partials();
        self.flush().await?;
        self.store.finish_log(self.log_id).await
    }
}

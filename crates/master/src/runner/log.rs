//! A step's `stdio` log as it grows: whole lines, each tagged with its
//! [`Stream`], written in batches and announced on the bus once stored.

use std::time::{Duration, Instant};

use cascade_model::log::Stream;
use cascade_store::{Store, StoreError};

use crate::clock::Clock;
use crate::events::Bus;

const FLUSH_LINES: usize = 2000;
const FLUSH_AFTER: Duration = Duration::from_millis(250);

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
}

impl LogWriter {
    /// A writer for the (empty) log `log_id`.
    pub fn new(store: Store, log_id: i64, bus: Bus, clock: Clock) -> LogWriter {
        LogWriter { store, bus, clock, log_id, buffered: Vec::new(), written: 0, oldest: None }
    }

    /// Adds text (one or more lines) from a stream; a final line without
    /// `\n` is kept whole.
    pub async fn add(&mut self, stream: Stream, text: &str) -> Result<(), StoreError> {
        let text = text.strip_suffix('\n').unwrap_or(text);
        self.buffered.extend(text.split('\n').map(|line| stream.tagged(line)));
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
        self.written = self.store.append_log_lines(self.log_id, first_line, &self.buffered).await?;
        // Stored first, published second: a live view never shows a line the
        // store could not give it on reload.
        let lines = std::mem::take(&mut self.buffered);
        self.bus.publish_lines(self.log_id, first_line, lines, self.clock.now());
        self.oldest = None;
        Ok(())
    }

    /// Writes the rest and marks the log complete.
    pub async fn finish(mut self) -> Result<(), StoreError> {
        self.flush().await?;
        self.store.finish_log(self.log_id).await
    }
}

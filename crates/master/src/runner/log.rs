//! A step's `stdio` log as it grows: whole lines, each tagged with its
//! stream (`o` stdout, `e` stderr, `h` header), written in batches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cascade_store::{Store, StoreError};
use tokio::sync::broadcast;

/// Lines just added to a log, for live views: lines `first_line..` of `log_id`.
#[derive(Debug, Clone)]
pub struct LiveLines {
    pub log_id: i64,
    pub first_line: i64,
    pub lines: Arc<Vec<String>>,
}

const FLUSH_LINES: usize = 2000;
const FLUSH_AFTER: Duration = Duration::from_millis(250);

pub struct LogWriter {
    store: Store,
    live: broadcast::Sender<LiveLines>,
    pub log_id: i64,
    buffered: Vec<String>,
    written: i64,
    oldest: Option<Instant>,
}

impl LogWriter {
    pub fn new(store: Store, log_id: i64, live: broadcast::Sender<LiveLines>) -> LogWriter {
        LogWriter { store, live, log_id, buffered: Vec::new(), written: 0, oldest: None }
    }

    /// Adds text (one or more lines) from a stream; a final line without
    /// `\n` is kept whole.
    pub async fn add(&mut self, stream: char, text: &str) -> Result<(), StoreError> {
        let text = text.strip_suffix('\n').unwrap_or(text);
        for line in text.split('\n') {
            let mut tagged = String::with_capacity(line.len() + 1);
            tagged.push(stream);
            tagged.push_str(line);
            self.buffered.push(tagged);
        }
        self.oldest.get_or_insert_with(Instant::now);
        if self.buffered.len() >= FLUSH_LINES || self.oldest.is_some_and(|t| t.elapsed() >= FLUSH_AFTER) {
            self.flush().await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<(), StoreError> {
        if self.buffered.is_empty() {
            return Ok(());
        }
        let first_line = self.written;
        self.written = self.store.append_log_lines(self.log_id, first_line, &self.buffered).await?;
        // Stored first, published second: a live view never shows a line the
        // store could not give it on reload. No subscriber is not an error.
        let lines = Arc::new(std::mem::take(&mut self.buffered));
        let _ = self.live.send(LiveLines { log_id: self.log_id, first_line, lines });
        self.oldest = None;
        Ok(())
    }

    pub async fn finish(mut self) -> Result<(), StoreError> {
        self.flush().await?;
        self.store.finish_log(self.log_id).await
    }
}

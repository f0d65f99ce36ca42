//! How an import shows its progress: a line per table with counts and a
//! rate; a bar redrawn in place on a terminal, a plain line every few
//! seconds otherwise.

use std::io::Write;
use std::time::{Duration, Instant};

/// Told as each table is copied.
pub trait Progress {
    /// A table begins: `done` of its `total` source rows are in already.
    fn start(&mut self, table: &str, done: i64, total: i64);
    /// A batch of it was committed.
    fn advance(&mut self, table: &str, done: i64, total: i64);
    /// It is copied to the end.
    fn finish(&mut self, table: &str, done: i64, total: i64, elapsed: Duration);
}

/// Shows nothing.
pub struct Silent;

impl Progress for Silent {
    fn start(&mut self, _: &str, _: i64, _: i64) {}
    fn advance(&mut self, _: &str, _: i64, _: i64) {}
    fn finish(&mut self, _: &str, _: i64, _: i64, _: Duration) {}
}

/// Writes progress to a stream (standard error, for the command).
pub struct Printer<W: Write> {
    out: W,
    terminal: bool,
    began: Instant,
    first: i64,
    shown: Option<Instant>,
}

impl<W: Write> Printer<W> {
    /// `terminal`: redraw a bar in place rather than print lines.
    pub fn new(out: W, terminal: bool) -> Printer<W> {
        Printer { out, terminal, began: Instant::now(), first: 0, shown: None }
    }

    fn rate(&self, done: i64) -> f64 {
        (done - self.first) as f64 / self.began.elapsed().as_secs_f64().max(1e-3)
    }
}

/// `done/total` as a bar of `width` characters.
pub fn bar(done: i64, total: i64, width: usize) -> String {
    let filled =
        if total <= 0 { width } else { ((done.clamp(0, total) as f64 / total as f64) * width as f64) as usize };
    format!("[{}{}]", "#".repeat(filled), " ".repeat(width - filled.min(width)))
}

/// One progress line: table, counts, percentage and rate.
pub fn line(table: &str, done: i64, total: i64, rate: f64) -> String {
    let percent = if total <= 0 { 100.0 } else { 100.0 * done as f64 / total as f64 };
    format!("{table:<20} {done:>10}/{total:<10} {percent:5.1}%  {rate:>9.0} rows/s")
}

impl<W: Write> Progress for Printer<W> {
    fn start(&mut self, table: &str, done: i64, total: i64) {
        self.began = Instant::now();
        self.first = done;
        self.shown = None;
        self.advance(table, done, total);
    }

    fn advance(&mut self, table: &str, done: i64, total: i64) {
        let every = if self.terminal { Duration::from_millis(100) } else { Duration::from_secs(5) };
        if self.shown.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.shown = Some(Instant::now());
        let text = line(table, done, total, self.rate(done));
        let _ = if self.terminal {
            write!(self.out, "\r{text} {}\x1b[K", bar(done, total, 30))
        } else if self.began.elapsed() >= every {
            writeln!(self.out, "{text}")
        } else {
            Ok(())
        };
        let _ = self.out.flush();
    }

    fn finish(&mut self, table: &str, done: i64, total: i64, elapsed: Duration) {
        let text = line(table, done, total, self.rate(done));
        let (start, clear) = if self.terminal { ("\r", "\x1b[K") } else { ("", "") };
        let _ = writeln!(self.out, "{start}{text}  in {:.1} s{clear}", elapsed.as_secs_f64());
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_and_lines() {
        assert_eq!(bar(0, 10, 10), "[          ]");
        assert_eq!(bar(5, 10, 10), "[#####     ]");
        assert_eq!(bar(12, 10, 4), "[####]");
        assert_eq!(bar(0, 0, 4), "[####]");
        assert_eq!(
            line("builds", 500, 1000, 250.0),
            "builds                      500/1000        50.0%        250 rows/s"
        );
    }

    #[test]
    fn plain_output_has_one_line_per_finished_table() {
        let mut out = Vec::new();
        let mut p = Printer::new(&mut out, false);
        p.start("builds", 0, 2);
        p.advance("builds", 1, 2);
        p.finish("builds", 2, 2, Duration::from_millis(1500));
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.starts_with("builds") && text.contains("2/2") && text.contains("in 1.5 s"), "{text}");
    }
}

//! What time it is, as the master sees it: the system's clock in
//! production, a hand-set one in tests that must say what time it is.
//! Everything below the edges takes its time from here (or as an argument).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Unix seconds now, by the system clock (for the command-line tools).
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A master's clock.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system's clock.
    #[default]
    System,
    /// A clock that moves only when told to.
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// A hand-set clock, starting at `start` (Unix seconds).
    pub fn manual(start: i64) -> Clock {
        Clock::Manual(Arc::new(AtomicI64::new(start)))
    }

    /// Unix seconds now.
    pub fn now(&self) -> i64 {
        match self {
            Clock::System => now(),
            Clock::Manual(t) => t.load(Ordering::SeqCst),
        }
    }

    /// Unix milliseconds now (a hand-set clock is at whole seconds).
    pub fn now_ms(&self) -> i64 {
        match self {
            Clock::System => chrono::Utc::now().timestamp_millis(),
            Clock::Manual(t) => t.load(Ordering::SeqCst).saturating_mul(1000),
        }
    }

    /// Moves a hand-set clock to `t`; the system's clock is not ours to set.
    pub fn set(&self, t: i64) {
        if let Clock::Manual(now) = self {
            now.store(t, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_when_told_and_clones_share_it() {
        let c = Clock::manual(100);
        let other = c.clone();
        assert_eq!(c.now(), 100);
        other.set(250);
        assert_eq!(c.now(), 250);
        assert_eq!(c.now_ms(), 250_000);
        let system = Clock::System;
        system.set(0);
        assert!(system.now() > 1_700_000_000);
    }
}

//! Attempts per key (an address, a worker's name): after `attempts` within
//! `window`, the key waits until the oldest of them leaves the window. An
//! attempt counts when it begins, before the check it stands for, so fifty
//! attempts sent at once get `attempts` checks, not fifty; a success takes
//! back its own attempt and no other (a good login between bad ones does
//! not forgive them). Plain data with the clock passed in, so it is tested
//! without waiting.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Keys tracked at most; past that the oldest entries go (an attacker with
/// many addresses gains nothing but a flush of others' counters).
const MAX_KEYS: usize = 100_000;

/// Recent attempts per key.
pub struct Limiter<K> {
    attempts: usize,
    window: Duration,
    recent: Mutex<HashMap<K, VecDeque<Instant>>>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    /// At most `attempts` per key within `window`.
    pub fn new(attempts: u32, window: Duration) -> Limiter<K> {
        Limiter { attempts: attempts.max(1) as usize, window, recent: Mutex::new(HashMap::new()) }
    }

    /// Begins an attempt for `key` at `now`: `Err(wait)` when the key has
    /// used its attempts and must wait this long; otherwise the attempt is
    /// counted (a [success](Limiter::succeeded) forgets it again).
    pub fn begin(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut map = self.recent.lock();
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            make_room(&mut map, self.window, now);
        }
        let times = map.entry(key.clone()).or_default();
        while times.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
            times.pop_front();
        }
        if times.len() >= self.attempts {
            let oldest = times.front().copied().unwrap_or(now);
            return Err(self.window.saturating_sub(now.duration_since(oldest)).max(Duration::from_secs(1)));
        }
        times.push_back(now);
        Ok(())
    }

    /// An attempt of `key` succeeded: it no longer counts.
    pub fn succeeded(&self, key: &K) {
        let mut map = self.recent.lock();
        if let Some(times) = map.get_mut(key) {
            times.pop_back();
            if times.is_empty() {
                map.remove(key);
            }
        }
    }
}

/// Drops keys whose attempts have all left the window; if that is not
/// enough, the quarter idle longest (never a wholesale reset, which would
/// let whoever fills the map wipe everyone's counts).
fn make_room<K: Hash + Eq + Clone>(map: &mut HashMap<K, VecDeque<Instant>>, window: Duration, now: Instant) {
    map.retain(|_, t| t.back().is_some_and(|last| now.duration_since(*last) < window));
    if map.len() < MAX_KEYS {
        return;
    }
    let mut last_seen: Vec<(Instant, K)> =
        map.iter().filter_map(|(k, t)| t.back().map(|last| (*last, k.clone()))).collect();
    last_seen.sort_by_key(|(last, _)| *last);
    for (_, k) in last_seen.into_iter().take(MAX_KEYS / 4) {
        map.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    #[test]
    fn a_key_waits_after_its_attempts_and_others_do_not() {
        let limiter: Limiter<IpAddr> = Limiter::new(3, Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(limiter.begin(&a, t0 + Duration::from_secs(i)), Ok(()));
        }
        assert_eq!(limiter.begin(&a, t0 + Duration::from_secs(10)), Err(Duration::from_secs(50)));
        assert_eq!(limiter.begin(&b, t0 + Duration::from_secs(10)), Ok(()), "other keys are not affected");
        // The first attempt leaves the window: one more.
        assert_eq!(limiter.begin(&a, t0 + Duration::from_secs(60)), Ok(()));
        // Attempts at 1 s, 2 s and 60 s: full again until 61 s.
        assert_eq!(limiter.begin(&a, t0 + Duration::from_millis(60_500)), Err(Duration::from_secs(1)));
    }

    #[test]
    fn a_success_takes_back_its_own_attempt_only() {
        let limiter: Limiter<IpAddr> = Limiter::new(3, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let now = Instant::now();
        // Wrong, wrong, right (not counted), wrong: the third failure fills it.
        for _ in 0..2 {
            assert_eq!(limiter.begin(&a, now), Ok(()));
        }
        assert_eq!(limiter.begin(&a, now), Ok(()));
        limiter.succeeded(&a);
        assert_eq!(limiter.begin(&a, now), Ok(()));
        assert!(limiter.begin(&a, now).is_err(), "a good login between bad ones forgives none of them");
    }

    #[test]
    fn attempts_begun_at_once_are_counted_before_any_ends() {
        let limiter: Limiter<String> = Limiter::new(5, Duration::from_secs(60));
        let now = Instant::now();
        let let_through = (0..50).filter(|_| limiter.begin(&"w1".to_string(), now).is_ok()).count();
        assert_eq!(let_through, 5, "fifty at once get five checks");
    }
}

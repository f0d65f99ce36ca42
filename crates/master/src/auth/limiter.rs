//! Failed logins per address: after `attempts` failures within `window`, an
//! address waits until the oldest of them leaves the window. Plain data
//! with the clock passed in, so it is tested without waiting.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Addresses tracked at most; past that the oldest entries go (an attacker
/// with many addresses gains nothing but a flush of others' counters).
const MAX_ADDRESSES: usize = 100_000;

pub struct LoginLimiter {
    attempts: usize,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl LoginLimiter {
    pub fn new(attempts: u32, window: Duration) -> LoginLimiter {
        LoginLimiter { attempts: attempts.max(1) as usize, window, failures: Mutex::new(HashMap::new()) }
    }

    /// `Err(wait)` when this address must wait before trying again.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut map = self.failures.lock();
        let Some(times) = map.get_mut(&ip) else { return Ok(()) };
        while times.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
            times.pop_front();
        }
        if times.is_empty() {
            map.remove(&ip);
            return Ok(());
        }
        if times.len() >= self.attempts {
            let oldest = times.front().copied().unwrap_or(now);
            return Err(self.window.saturating_sub(now.duration_since(oldest)));
        }
        Ok(())
    }

    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut map = self.failures.lock();
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&ip) {
            let window = self.window;
            map.retain(|_, t| t.back().is_some_and(|last| now.duration_since(*last) < window));
            if map.len() >= MAX_ADDRESSES {
                map.clear();
            }
        }
        let times = map.entry(ip).or_default();
        times.push_back(now);
        while times.len() > self.attempts {
            times.pop_front();
        }
    }

    /// A successful login clears the address's record.
    pub fn succeeded(&self, ip: IpAddr) {
        self.failures.lock().remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_waits_after_too_many_failures_and_others_do_not() {
        let limiter = LoginLimiter::new(3, Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(limiter.check(a, t0 + Duration::from_secs(i)), Ok(()));
            limiter.failed(a, t0 + Duration::from_secs(i));
        }
        assert_eq!(limiter.check(a, t0 + Duration::from_secs(10)), Err(Duration::from_secs(50)));
        assert_eq!(limiter.check(b, t0 + Duration::from_secs(10)), Ok(()), "other addresses are not affected");
        // The first failure leaves the window: one more try.
        assert_eq!(limiter.check(a, t0 + Duration::from_secs(60)), Ok(()));
        limiter.failed(a, t0 + Duration::from_secs(60));
        // Failures at 1 s, 2 s and 60 s: full again until 61 s.
        assert_eq!(limiter.check(a, t0 + Duration::from_millis(60_500)), Err(Duration::from_millis(500)));
        limiter.succeeded(a);
        assert_eq!(limiter.check(a, t0 + Duration::from_millis(60_500)), Ok(()));
    }
}

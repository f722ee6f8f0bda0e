//! A per-client budget for public-page requests that memory cannot answer: each one costs a
//! database query, so a client inventing slugs or versions is slowed to
//! PUBLIC_MISSES_PER_IP_PER_MINUTE. Kept in memory per process (counting in the database would
//! cost the very query it protects), keyed by [`network_key`](crate::http::client_ip::network_key),
//! and bounded: the least recently seen clients are forgotten first.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cache::WeightedLru;
use crate::limits::Rate;

/// Clients remembered at most.
const MAX_CLIENTS: usize = 100_000;

#[derive(Debug)]
pub struct MissLimiter {
    /// Each client's GCRA "theoretical arrival time".
    clients: Mutex<WeightedLru<String, Instant>>,
}

impl Default for MissLimiter {
    fn default() -> Self {
        MissLimiter {
            clients: Mutex::new(WeightedLru::new(MAX_CLIENTS)),
        }
    }
}

impl MissLimiter {
    /// Counts one miss of `client`. Err(retry_after) when over `rate` (and then nothing is
    /// counted).
    pub fn check(&self, client: &str, rate: Rate, now: Instant) -> Result<(), Duration> {
        let interval = rate.period / rate.limit.max(1);
        let Ok(mut clients) = self.clients.lock() else {
            return Ok(());
        };
        let key = client.to_string();
        let tat = clients.get(&key).map_or(now, |tat| tat.max(now)) + interval;
        if tat - now > rate.period {
            return Err(tat - rate.period - now);
        }
        clients.insert(key, tat, 1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_burst_then_waits() {
        let limiter = MissLimiter::default();
        let rate = Rate::per_minute(3);
        let now = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check("192.0.2.1", rate, now).is_ok());
        }
        let wait = limiter.check("192.0.2.1", rate, now).expect_err("over");
        assert!(wait > Duration::from_secs(19) && wait <= Duration::from_secs(20));
        assert!(
            limiter.check("192.0.2.2", rate, now).is_ok(),
            "others unaffected"
        );
        assert!(limiter.check("192.0.2.1", rate, now + wait).is_ok());
    }
}

//! Retrying later: how long background work (the email outbox, the storage clean-up) waits
//! before trying a failed item again.

use std::time::Duration;

use rand::Rng;

/// The longest wait between attempts, whatever the backoff or a provider asks.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Exponential backoff with jitter after `attempts` failed attempts: about 2s, 4s, 8s... capped
/// at [`MAX_BACKOFF`].
pub fn backoff(attempts: i32) -> Duration {
    let exp = attempts.clamp(1, 20) - 1;
    let base = Duration::from_secs(2).saturating_mul(1u32 << exp.min(16));
    let capped = base.min(MAX_BACKOFF);
    let jitter = rand::rng().random_range(0.8..1.2);
    capped.mul_f64(jitter).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let first = backoff(1);
        assert!(first >= Duration::from_millis(1600) && first <= Duration::from_millis(2400));
        let third = backoff(3);
        assert!(third >= Duration::from_millis(6400) && third <= Duration::from_millis(9600));
        assert!(backoff(30) <= MAX_BACKOFF);
    }
}

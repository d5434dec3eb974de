//! Retry delays: exponential with jitter, shared by everything that waits on a server.

use std::time::Duration;

/// The delay before retry `attempt` (1-based): doubling from `base`, capped at `max`, then
/// jittered down by up to half so that many tasks do not retry in step.
pub fn delay(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let capped = exp.min(max);
    let half = capped / 2;
    half + half.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(10);
        for attempt in 1..40 {
            let d = delay(attempt, base, max);
            let full = (base * 2u32.pow((attempt - 1).min(20))).min(max);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
    }
}

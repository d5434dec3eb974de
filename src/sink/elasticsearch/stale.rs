//! Stale writes per partition, and a warning when a partition's writes are mostly stale.
//!
//! A stale write (409) is normal while a replay catches up: after a restart or rebalance the
//! records since the last commit are written again, and all of them are stale. A partition whose
//! writes stay mostly stale past that is the sign of source positions that went backwards (a
//! binlog reset, a failover to a server with lower binlog file numbers, a topic recreated under
//! `version.source=offset`): Elasticsearch then keeps refusing every change of the rows those
//! documents hold, and the index silently stops following the source. That is worth a warning
//! that says what to do (docs/versions.md).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Writes per judgement.
const WINDOW: u64 = 1_000;
/// Share of stale writes in a window that raises the warning.
const STALE_SHARE: f64 = 0.9;
/// At most one warning per partition this often.
const QUIET: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Clone)]
struct Partition {
    written: u64,
    stale: u64,
    window_written: u64,
    window_stale: u64,
    warned: Option<Instant>,
}

/// Written and stale writes of each (topic, partition) a task wrote.
#[derive(Debug, Default)]
pub struct StaleWatch {
    partitions: BTreeMap<(Arc<str>, i32), Partition>,
}

impl StaleWatch {
    /// Counts the writes of one partition in a finished batch; returns a warning to log when
    /// its last [`WINDOW`] writes were mostly stale.
    pub fn record(
        &mut self,
        topic: &Arc<str>,
        partition: i32,
        written: u64,
        stale: u64,
        now: Instant,
    ) -> Option<String> {
        let p = self
            .partitions
            .entry((topic.clone(), partition))
            .or_default();
        p.written += written;
        p.stale += stale;
        p.window_written += written;
        p.window_stale += stale;
        let total = p.window_written + p.window_stale;
        if total < WINDOW {
            return None;
        }
        let share = p.window_stale as f64 / total as f64;
        p.window_written = 0;
        p.window_stale = 0;
        if share < STALE_SHARE || p.warned.is_some_and(|w| now.duration_since(w) < QUIET) {
            return None;
        }
        p.warned = Some(now);
        Some(format!(
            "topic {topic} partition {partition}: {:.0}% of the last {total} writes were stale (an equal or newer \
             version was already in Elasticsearch; {} stale of {} writes in all). Expected for a while after a \
             restart or rebalance. If it goes on, the source positions went backwards (binlog reset, failover, \
             topic recreated with version.source=offset) and these documents no longer follow the source: see \
             docs/versions.md",
            share * 100.0,
            p.stale,
            p.stale + p.written
        ))
    }

    /// (topic, partition) → (written, stale), for status.
    pub fn totals(&self) -> BTreeMap<String, (u64, u64)> {
        self.partitions
            .iter()
            .map(|((t, p), s)| (format!("{t}/{p}"), (s.written, s.stale)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_whose_writes_stay_stale_is_warned_about_once_a_minute() {
        let mut w = StaleWatch::default();
        let t: Arc<str> = "t".into();
        let now = Instant::now();
        assert_eq!(w.record(&t, 0, 0, 999, now), None, "not a whole window yet");
        let warning = w.record(&t, 0, 0, 1, now).expect("warned");
        assert!(
            warning.contains("topic t partition 0: 100% of the last 1000 writes were stale"),
            "{warning}"
        );
        assert!(warning.contains("1000 stale of 1000 writes"), "{warning}");
        assert_eq!(
            w.record(&t, 0, 0, 1000, now + Duration::from_secs(10)),
            None,
            "quiet"
        );
        assert!(
            w.record(&t, 0, 50, 950, now + Duration::from_secs(70))
                .is_some()
        );
        // A replay, then fresh writes: no warning.
        assert_eq!(w.record(&t, 2, 0, 500, now), None);
        assert_eq!(w.record(&t, 2, 600, 0, now), None);
        // Mostly written: no warning.
        assert_eq!(w.record(&t, 1, 900, 100, now), None);
        assert_eq!(w.totals()["t/1"], (900, 100));
    }
}

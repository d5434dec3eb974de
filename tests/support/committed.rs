//! The delivery guarantee, checked while it runs: every record at or below a group's committed
//! offset must already be in Elasticsearch, at a version at least its own.
//!
//! A watcher samples the committed offsets, then reads the index (Elasticsearch only moves
//! forward, so what it holds after the sample must cover what the sample claims). A worker that
//! committed an offset before writing the records below it fails this check; one that versions
//! by something other than the source position fails the final version comparison.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use super::history::Logged;
use super::{es, kafka};

/// A running watcher.
pub struct Watch {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<(usize, Vec<String>)>,
}

impl Watch {
    /// Stops watching; panics with the violations found, if any. Returns how many samples
    /// were checked.
    pub fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let (samples, violations) = self.handle.join().expect("watcher");
        assert!(
            violations.is_empty(),
            "committed offsets ran ahead of Elasticsearch ({} violations): {:?}",
            violations.len(),
            &violations[..violations.len().min(10)]
        );
        samples
    }
}

/// Watches `group` on `topic` (index `index`), whose records are `log` in produce order.
pub fn watch(topic: &str, index: &str, partitions: i32, group: &str, log: &[Logged]) -> Watch {
    let stop = Arc::new(AtomicBool::new(false));
    let (topic, index, group, log) = (
        topic.to_string(),
        index.to_string(),
        group.to_string(),
        log.to_vec(),
    );
    let s = stop.clone();
    let handle = thread::spawn(move || {
        let mut samples = 0;
        let mut violations = Vec::new();
        while !s.load(Ordering::Relaxed) && violations.is_empty() {
            let committed = kafka::committed(&group, &topic, partitions);
            if !committed.is_empty() {
                violations = check(&log, &committed, &es::versions(&index));
                samples += 1;
            }
            thread::sleep(Duration::from_millis(300));
        }
        (samples, violations)
    });
    Watch { stop, handle }
}

/// The records below `committed` (partition → next offset) that `docs` (id → version) does not
/// account for.
pub fn check(
    log: &[Logged],
    committed: &BTreeMap<i32, i64>,
    docs: &BTreeMap<String, u64>,
) -> Vec<String> {
    // The highest version of a delete of each id anywhere in the history: a document may be
    // absent because a later delete was written already.
    let mut deleted: BTreeMap<&str, u64> = BTreeMap::new();
    for l in log.iter().filter(|l| l.delete) {
        let v = deleted.entry(&l.id).or_default();
        *v = (*v).max(l.version);
    }
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    let mut out = Vec::new();
    for l in log {
        let offset = next.entry(l.partition).or_default();
        let at = *offset;
        *offset += 1;
        if at >= committed.get(&l.partition).copied().unwrap_or(0) {
            continue;
        }
        let ok = match docs.get(&l.id) {
            Some(&v) => v >= l.version,
            None => l.delete || deleted.get(l.id.as_str()).is_some_and(|d| *d >= l.version),
        };
        if !ok {
            out.push(format!(
                "partition {} offset {at} ({} of `{}` at version {}) is committed, but the index has {:?}",
                l.partition,
                if l.delete { "delete" } else { "write" },
                l.id,
                l.version,
                docs.get(&l.id)
            ));
        }
    }
    out
}

/// Asserts that every document of `index` has exactly the version `expected` says.
pub fn assert_versions(index: &str, expected: &BTreeMap<String, u64>) {
    let got = es::versions(index);
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(id, v)| got.get(*id) != Some(v))
        .take(10)
        .map(|(id, v)| format!("{id}: expected version {v}, got {:?}", got.get(id)))
        .collect();
    assert!(
        wrong.is_empty() && got.len() == expected.len(),
        "document versions differ from the source positions of the rows' last changes ({} documents, {} expected): {wrong:?}",
        got.len(),
        expected.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(partition: i32, id: &str, version: u64) -> Logged {
        Logged {
            partition,
            id: id.into(),
            delete: false,
            version,
        }
    }

    #[test]
    fn the_check_sees_a_commit_ahead_of_the_index() {
        let mut d = w(0, "a", 7);
        d.delete = true;
        let log = vec![w(0, "a", 5), w(1, "b", 6), d, w(0, "c", 8)];
        let docs = BTreeMap::from([("b".to_string(), 6), ("c".to_string(), 8)]);
        // Everything committed and written: "a" was deleted at 7.
        assert!(check(&log, &BTreeMap::from([(0, 3), (1, 1)]), &docs).is_empty());
        // "c" committed, but the index has an older version of it.
        let stale = BTreeMap::from([("b".to_string(), 6), ("c".to_string(), 2)]);
        assert_eq!(check(&log, &BTreeMap::from([(0, 3)]), &stale).len(), 1);
        // "b" committed but absent, and never deleted.
        let missing = BTreeMap::from([("c".to_string(), 8)]);
        assert_eq!(check(&log, &BTreeMap::from([(1, 1)]), &missing).len(), 1);
    }
}

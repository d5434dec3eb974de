//! Which assigned partitions the consumer reads. A task reads all of them, none (the sink is
//! full, the user paused it, a record waits for the schema registry), or, while it remembers
//! too many records it cannot commit yet, only those a snapshot's end waits for: pausing them
//! too would leave the snapshot's end, and so everything remembered behind it, waiting for ever.

use rdkafka::consumer::Consumer as _;
use rdkafka::topic_partition_list::TopicPartitionList;
use tracing::warn;

use super::{Consumer, RebalanceHandler};

/// What the consumer is told to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Paused {
    /// Every assigned partition is read.
    #[default]
    No,
    /// None is.
    All,
    /// Only these (topic, partition) are.
    AllBut(Vec<(String, i32)>),
}

impl Paused {
    /// Whether the consumer reads nothing at all.
    pub fn all(&self) -> bool {
        *self == Paused::All
    }

    fn reads(&self, topic: &str, partition: i32) -> bool {
        match self {
            Paused::No => true,
            Paused::All => false,
            Paused::AllBut(keep) => keep.iter().any(|(t, p)| t == topic && *p == partition),
        }
    }
}

/// Moves the consumer's current assignment from reading as `from` says to reading as `to`
/// says: pauses only what `from` read and `to` does not, resumes only the reverse. A partition
/// is never resumed that was not paused: a resume restarts its fetch.
pub fn apply<H: RebalanceHandler>(consumer: &Consumer<H>, from: &Paused, to: &Paused) {
    let Ok(assigned) = consumer.assignment() else {
        return;
    };
    let (mut stop, mut go) = (TopicPartitionList::new(), TopicPartitionList::new());
    for e in assigned.elements() {
        let (t, p) = (e.topic(), e.partition());
        match (from.reads(t, p), to.reads(t, p)) {
            (true, false) => stop.add_partition(t, p),
            (false, true) => go.add_partition(t, p),
            _ => continue,
        };
    }
    for (what, list) in [("pause", &stop), ("resume", &go)] {
        if list.count() == 0 {
            continue;
        }
        let result = if what == "pause" {
            consumer.pause(list)
        } else {
            consumer.resume(list)
        };
        if let Err(e) = result {
            warn!("cannot {what} partitions: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_but_reads_only_the_partitions_it_names() {
        let keep = Paused::AllBut(vec![("t".into(), 1)]);
        assert!(keep.reads("t", 1));
        assert!(!keep.reads("t", 0));
        assert!(!keep.reads("u", 1));
        assert!(Paused::No.reads("t", 0));
        assert!(!Paused::All.reads("t", 0));
        assert!(Paused::All.all() && !keep.all() && !Paused::No.all());
    }
}

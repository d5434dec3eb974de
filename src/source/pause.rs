//! Which assigned partitions the consumer reads. A task reads all of them, none (the sink is
//! full, the user paused it, a record waits for the schema registry), or, while it remembers
//! too many records it cannot commit yet, all but those the records pile up in
//! (`offsets::Offsets::piling_up`): pausing every partition there would also stop the ones a
//! snapshot's end waits for (its own task's, or another task's whose partitions this one
//! reads), and so wait for ever.

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
    /// All but these (topic, partition).
    These(Vec<(String, i32)>),
}

impl Paused {
    /// Forgets `partitions` (revoked, or assigned anew with nothing remembered yet) from the
    /// ones not read.
    pub fn forget(&mut self, partitions: &[(String, i32)]) {
        if let Paused::These(these) = self {
            these.retain(|tp| !partitions.contains(tp));
        }
    }

    /// Whether the consumer reads nothing at all.
    pub fn all(&self) -> bool {
        *self == Paused::All
    }

    fn reads(&self, topic: &str, partition: i32) -> bool {
        match self {
            Paused::No => true,
            Paused::All => false,
            Paused::These(these) => !these.iter().any(|(t, p)| t == topic && *p == partition),
        }
    }
}

/// Moves the consumer's current assignment from reading as `from` says to reading as `to`
/// says, pausing or resuming only the partitions whose state changes. False when the
/// assignment could not be read: nothing changed.
pub fn apply<H: RebalanceHandler>(consumer: &Consumer<H>, from: &Paused, to: &Paused) -> bool {
    let Ok(assigned) = consumer.assignment() else {
        return false;
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
    set(consumer, &stop, &go);
    true
}

/// Sets newly assigned `partitions` to what `paused` says, each explicitly: librdkafka keeps
/// an application's pause of a partition after the partition is revoked (it clears only its
/// own, rdkafka_assignment.c), so a partition paused in an earlier assignment comes back
/// paused. Resuming one that is not paused does nothing (librdkafka 2.4, #4636).
pub fn assigned<H: RebalanceHandler>(
    consumer: &Consumer<H>,
    partitions: &[(String, i32)],
    paused: &Paused,
) {
    let (mut stop, mut go) = (TopicPartitionList::new(), TopicPartitionList::new());
    for (t, p) in partitions {
        if paused.reads(t, *p) {
            go.add_partition(t, *p);
        } else {
            stop.add_partition(t, *p);
        }
    }
    set(consumer, &stop, &go);
}

fn set<H: RebalanceHandler>(
    consumer: &Consumer<H>,
    stop: &TopicPartitionList,
    go: &TopicPartitionList,
) {
    if stop.count() > 0
        && let Err(e) = consumer.pause(stop)
    {
        warn!("cannot pause partitions: {e}");
    }
    if go.count() > 0
        && let Err(e) = consumer.resume(go)
    {
        warn!("cannot resume partitions: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn these_are_the_partitions_not_read() {
        let these = Paused::These(vec![("t".into(), 1)]);
        assert!(!these.reads("t", 1));
        assert!(these.reads("t", 0));
        assert!(these.reads("u", 1));
        assert!(Paused::No.reads("t", 0));
        assert!(!Paused::All.reads("t", 0));
        assert!(Paused::All.all() && !these.all() && !Paused::No.all());
    }
}

//! What a task's consumer subscribes to, and keeping a `topics.regex` subscription up to date.
//!
//! `topics` are subscribed to as they are. A `topics.regex` is matched here, with the `regex`
//! crate (the syntax the connector's config was validated with, and that `verify`, `rebuild` and
//! the dead-letter queue's checks use), against the cluster's topic names, and the consumer
//! subscribes to the names it matches. librdkafka's own pattern subscription matches with the C
//! library's POSIX regular expressions instead: in those `\d` is the letter `d` and `(?:…)` does
//! not compile, so a pattern written for Kafka Connect's Java regular expressions read nothing,
//! without a word. The names are looked up again every `topic.metadata.refresh.interval.ms`
//! (5 s for such connectors), as librdkafka looked its pattern up; a change subscribes again,
//! which rebalances the group (the revoked partitions are committed first, as in any rebalance).

use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer as _;
use regex::Regex;
use tracing::{info, warn};

use super::{Consumer, RebalanceHandler};
use crate::connector::Subscription;

/// How long one look at the cluster's topics may take before the task goes on without it.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Topics Kafka keeps for itself, which a pattern never subscribes to (as Kafka's Java consumer,
/// whose `exclude.internal.topics` is true by default).
const INTERNAL: [&str; 3] = [
    "__consumer_offsets",
    "__transaction_state",
    "__share_group_state",
];

/// The subscription of one task's consumer.
pub struct Subscribed {
    /// For `topics.regex`: the pattern (anchored: whole names), how often it is looked up, when
    /// next, and the names subscribed to now (sorted).
    pattern: Option<Pattern>,
}

struct Pattern {
    regex: Regex,
    every: Duration,
    next: Instant,
    topics: Vec<String>,
    label: String,
}

impl Subscribed {
    /// Subscribes `consumer` to `subscription`; `refresh_ms`: how often a pattern is looked up.
    pub fn new<H: RebalanceHandler>(
        consumer: &Consumer<H>,
        subscription: &Subscription,
        refresh_ms: u64,
        label: &str,
    ) -> Result<Subscribed, String> {
        match subscription {
            Subscription::Topics(t) => {
                let refs: Vec<&str> = t.iter().map(String::as_str).collect();
                consumer
                    .subscribe(&refs)
                    .map_err(|e| format!("cannot subscribe to {t:?}: {e}"))?;
                Ok(Subscribed { pattern: None })
            }
            Subscription::Regex(r) => {
                let regex = Regex::new(&Subscription::whole_name(r))
                    .map_err(|e| format!("topics.regex: {e}"))?;
                let mut s = Subscribed {
                    pattern: Some(Pattern {
                        regex,
                        every: Duration::from_millis(refresh_ms.max(100)),
                        next: Instant::now(),
                        topics: Vec::new(),
                        label: label.to_string(),
                    }),
                };
                s.refresh(consumer)?;
                Ok(s)
            }
        }
    }

    /// For a pattern, when it is due: looks the topics up and subscribes again if the names it
    /// matches changed. A failed lookup keeps the subscription as it is until the next one.
    pub fn refresh<H: RebalanceHandler>(&mut self, consumer: &Consumer<H>) -> Result<(), String> {
        let Some(p) = self.pattern.as_mut() else {
            return Ok(());
        };
        if Instant::now() < p.next {
            return Ok(());
        }
        p.next = Instant::now() + p.every;
        let metadata = match consumer.fetch_metadata(None, LOOKUP_TIMEOUT) {
            Ok(m) => m,
            Err(e) => {
                warn!(task = %p.label, "cannot look up the topics topics.regex matches: {e}");
                return Ok(());
            }
        };
        let mut topics: Vec<String> = metadata
            .topics()
            .iter()
            .map(|t| t.name())
            .filter(|name| !INTERNAL.contains(name) && p.regex.is_match(name))
            .map(String::from)
            .collect();
        topics.sort();
        topics.dedup();
        if topics == p.topics {
            return Ok(());
        }
        if topics.is_empty() {
            consumer.unsubscribe();
        } else {
            let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
            consumer
                .subscribe(&refs)
                .map_err(|e| format!("cannot subscribe to {topics:?}: {e}"))?;
        }
        info!(task = %p.label, ?topics, "topics.regex matches these topics");
        p.topics = topics;
        Ok(())
    }
}

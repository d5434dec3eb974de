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
use tracing::{info, warn};

use super::{Consumer, RebalanceHandler};
use crate::connector::{Subscription, TopicPattern};

/// How long one look at the cluster's topics may take before the task goes on without it (a
/// healthy cluster answers in milliseconds; the task's acks and commits wait meanwhile).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest wait between two looks while they fail (Kafka unreachable).
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The subscription of one task's consumer.
pub struct Subscribed {
    /// For `topics.regex`: what it matches and when it is looked up next.
    pattern: Option<Pattern>,
}

struct Pattern {
    pattern: TopicPattern,
    /// How often the topics are looked up; `None`: only until a look succeeds
    /// (`topic.metadata.refresh.interval.ms=-1`).
    every: Option<Duration>,
    next: Option<Instant>,
    /// The wait after the last failed look, doubled at each further one.
    backoff: Duration,
    /// The names subscribed to now (sorted); `None` before the first look that succeeded.
    topics: Option<Vec<String>>,
    label: String,
}

impl Subscribed {
    /// Subscribes `consumer` to `subscription`; `refresh_ms`: how often a pattern is looked up
    /// (negative: never again, once found).
    pub fn new<H: RebalanceHandler>(
        consumer: &Consumer<H>,
        subscription: &Subscription,
        refresh_ms: i64,
        label: &str,
    ) -> Result<Subscribed, String> {
        let Some(pattern) = subscription.pattern()? else {
            let Subscription::Topics(t) = subscription else {
                return Err("a topics.regex without its pattern".into());
            };
            let refs: Vec<&str> = t.iter().map(String::as_str).collect();
            consumer
                .subscribe(&refs)
                .map_err(|e| format!("cannot subscribe to {t:?}: {e}"))?;
            return Ok(Subscribed { pattern: None });
        };
        let every = u64::try_from(refresh_ms)
            .ok()
            .map(|ms| Duration::from_millis(ms.max(100)));
        let mut s = Subscribed {
            pattern: Some(Pattern {
                pattern,
                every,
                next: Some(Instant::now()),
                backoff: Duration::ZERO,
                topics: None,
                label: label.to_string(),
            }),
        };
        s.refresh(consumer)?;
        Ok(s)
    }

    /// For a pattern, when it is due: looks the topics up and subscribes again if the names it
    /// matches changed. A failed look keeps the subscription as it is, and the next one waits
    /// longer (up to a minute).
    pub fn refresh<H: RebalanceHandler>(&mut self, consumer: &Consumer<H>) -> Result<(), String> {
        let Some(p) = self.pattern.as_mut() else {
            return Ok(());
        };
        if p.next.is_none_or(|n| Instant::now() < n) {
            return Ok(());
        }
        let metadata = match consumer.fetch_metadata(None, LOOKUP_TIMEOUT) {
            Ok(m) => m,
            Err(e) => {
                p.backoff = (p.backoff * 2)
                    .max(p.every.unwrap_or(Duration::from_secs(5)))
                    .min(MAX_BACKOFF);
                p.next = Some(Instant::now() + p.backoff);
                warn!(task = %p.label, "cannot look up the topics topics.regex matches (again in {:?}): {e}", p.backoff);
                return Ok(());
            }
        };
        p.backoff = Duration::ZERO;
        p.next = p.every.map(|every| Instant::now() + every);
        let mut topics: Vec<String> = metadata
            .topics()
            .iter()
            .map(|t| t.name())
            .filter(|name| p.pattern.reads(name))
            .map(String::from)
            .collect();
        topics.sort();
        topics.dedup();
        if p.topics.as_ref() == Some(&topics) {
            return Ok(());
        }
        if topics.is_empty() {
            if p.topics.as_ref().is_some_and(|t| !t.is_empty()) {
                consumer.unsubscribe();
            }
            info!(task = %p.label, "topics.regex matches no topic (yet)");
        } else {
            let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
            consumer
                .subscribe(&refs)
                .map_err(|e| format!("cannot subscribe to {topics:?}: {e}"))?;
            info!(task = %p.label, ?topics, "topics.regex matches these topics");
        }
        p.topics = Some(topics);
        Ok(())
    }
}

//! Which table feeds each index, as far as this task has seen: reconciling an index after a
//! table's snapshot removes every document the snapshot did not write, which is right only
//! when the index holds the documents of that one table (docs/reconcile.md).
//!
//! One lookup per written record, skipped when the record has the same index, topic and table
//! as the one before (the common case: records come in runs from one partition).

use std::sync::Arc;

#[derive(Debug)]
struct Scope {
    topic: Box<str>,
    table: Option<Box<str>>,
    /// Why the index is not one table's, once seen.
    shared: Option<String>,
}

/// The (index, topic, table) of the last record noted.
type Last = (Arc<str>, Box<str>, Option<Box<str>>);

/// Per index: the Kafka topic and source table its documents come from.
#[derive(Debug, Default)]
pub struct Scopes {
    by_index: crate::FastMap<Arc<str>, Scope>,
    last: Option<Last>,
}

impl Scopes {
    /// Notes that `index` received a document of `table` read from Kafka topic `topic`.
    pub fn wrote(&mut self, index: &Arc<str>, topic: &str, table: Option<&str>) {
        if let Some((i, t, tb)) = &self.last
            && Arc::ptr_eq(i, index)
            && **t == *topic
            && tb.as_deref() == table
        {
            return;
        }
        self.last = Some((index.clone(), topic.into(), table.map(Box::from)));
        let scope = self.by_index.entry(index.clone()).or_insert_with(|| Scope {
            topic: topic.into(),
            table: table.map(Box::from),
            shared: None,
        });
        if scope.shared.is_some() {
            return;
        }
        if *scope.topic != *topic {
            scope.shared = Some(format!(
                "it receives documents from topics `{}` and `{topic}`",
                scope.topic
            ));
        } else if let (Some(a), Some(b)) = (scope.table.as_deref(), table)
            && a != b
        {
            scope.shared = Some(format!(
                "topic `{topic}` carries rows of tables `{a}` and `{b}`"
            ));
        } else if scope.table.is_none() {
            scope.table = table.map(Box::from);
        }
    }

    /// Why `index` is not known to hold one table's documents only, if it is not.
    pub fn shared(&self, index: &str) -> Option<&str> {
        match self.by_index.get(index) {
            Some(s) => s.shared.as_deref(),
            None => Some("nothing was written to it"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_fed_by_two_topics_or_two_tables_is_shared() {
        let mut s = Scopes::default();
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        s.wrote(&a, "db.public.a", Some("a"));
        s.wrote(&a, "db.public.a", Some("a"));
        assert_eq!(s.shared("a"), None);
        s.wrote(&b, "db.public.b1", Some("b1"));
        s.wrote(&b, "db.public.b2", Some("b2"));
        assert!(s.shared("b").unwrap().contains("db.public.b2"));
        let c: Arc<str> = "c".into();
        s.wrote(&c, "routed", Some("x"));
        s.wrote(&c, "routed", None);
        assert_eq!(
            s.shared("c"),
            None,
            "a record without source is no other table"
        );
        s.wrote(&c, "routed", Some("y"));
        assert!(s.shared("c").unwrap().contains("tables `x` and `y`"));
        assert!(s.shared("never").is_some());
    }
}

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

/// The (index, topic, [db, schema, table]) of the last record noted.
type Last = (Arc<str>, Box<str>, [Option<Box<str>>; 3]);

/// A table as `source` names it: db, schema, table (each may be absent).
pub type TableId<'a> = [Option<&'a str>; 3];

/// Per index: the Kafka topic and source table its documents come from.
#[derive(Debug, Default)]
pub struct Scopes {
    by_index: crate::FastMap<Arc<str>, Scope>,
    last: Option<Last>,
}

impl Scopes {
    /// Notes that `index` received a document of table `id` read from Kafka topic `topic`.
    pub fn wrote(&mut self, index: &Arc<str>, topic: &str, id: TableId<'_>) {
        if let Some((i, t, tb)) = &self.last
            && Arc::ptr_eq(i, index)
            && **t == *topic
            && tb.iter().zip(id).all(|(a, b)| a.as_deref() == b)
        {
            return;
        }
        self.last = Some((index.clone(), topic.into(), id.map(|p| p.map(Box::from))));
        // `db.schema.table`, as far as known; nothing without a table.
        let joined = id[2].map(|_| id.into_iter().flatten().collect::<Vec<_>>().join("."));
        let table = joined.as_deref();
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
        let t = |name| [None, None, Some(name)];
        s.wrote(&a, "db.public.a", t("a"));
        s.wrote(&a, "db.public.a", t("a"));
        assert_eq!(s.shared("a"), None);
        s.wrote(&b, "db.public.b1", t("b1"));
        s.wrote(&b, "db.public.b2", t("b2"));
        assert!(s.shared("b").unwrap().contains("db.public.b2"));
        let c: Arc<str> = "c".into();
        s.wrote(&c, "routed", t("x"));
        s.wrote(&c, "routed", [None, None, None]);
        assert_eq!(
            s.shared("c"),
            None,
            "a record without source is no other table"
        );
        s.wrote(&c, "routed", t("y"));
        assert!(s.shared("c").unwrap().contains("tables `x` and `y`"));
        // The same table name in two databases is two tables.
        let d: Arc<str> = "d".into();
        s.wrote(&d, "merged", [Some("db1"), None, Some("orders")]);
        s.wrote(&d, "merged", [Some("db2"), None, Some("orders")]);
        assert!(s.shared("d").unwrap().contains("db1.orders"));
        assert!(s.shared("never").is_some());
    }
}

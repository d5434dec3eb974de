//! Retry decisions: pure functions from a bulk response (whole, or per item) to what to do.

/// What became of one bulk item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    Written,
    /// 409: an equal or newer version is already there. Counted, and a success.
    Stale,
    /// Try this item again later; the text says why (for metrics and status).
    Retry(String),
    /// Elasticsearch will never take this document as it is (a mapping or argument problem):
    /// `behavior.on.malformed.documents` decides.
    Malformed(String),
    /// Anything else (no permission, no such index…): never acknowledged; the task fails.
    Fail(String),
}

/// The error types the Confluent sink counts as malformed documents (its `MALFORMED_DOC_ERRORS`):
/// only these may be skipped under `behavior.on.malformed.documents=warn|ignore`.
const MALFORMED: &[&str] = &[
    "strict_dynamic_mapping_exception",
    "mapper_parsing_exception",
    "illegal_argument_exception",
    "action_request_validation_exception",
    "document_parsing_exception",
];

/// What an `illegal_argument_exception` says when it refuses where a document goes, not the
/// document: an alias with no write index (two indices, none marked `is_write_index`), or a data
/// stream (which takes only `create`, never an externally versioned `index`), or an ingest
/// pipeline the index names (`index.default_pipeline`, `index.final_pipeline`) that does not
/// exist. Every document sent there is refused alike, so under
/// `behavior.on.malformed.documents=warn|ignore` the whole stream would be skipped and committed
/// as malformed; these fail the task instead. (The Confluent sink counts any
/// `illegal_argument_exception` as malformed.)
const WRONG_TARGET: &[&str] = &[
    "no write index is defined for alias [",
    "only write ops with an op_type of create are allowed in data streams",
    "pipeline with id [",
];

/// Whether an item's `error.type` is a write block (`cluster_block_exception`: a read-only
/// index at the disk's flood stage, a rebuild's block, a cluster not yet recovered): it clears,
/// so the write is retried, and not counted against `max.retries`.
pub fn write_block(error_type: Option<&str>) -> bool {
    error_type == Some("cluster_block_exception")
}

/// Classifies one item result (`status`, `error.type`, `error.reason`).
pub fn item(
    is_delete: bool,
    status: u16,
    error_type: Option<&str>,
    reason: Option<&str>,
) -> ItemOutcome {
    let describe = || match (error_type, reason) {
        (Some(t), Some(r)) => format!("{status} {t}: {r}"),
        (Some(t), None) => format!("{status} {t}"),
        _ => format!("status {status}"),
    };
    match status {
        200..=299 => ItemOutcome::Written,
        // Deleting a document that is not there is done; so is deleting from an index that is
        // not there. Elasticsearch creates an index for a delete only when it is externally
        // versioned, so an unversioned delete (a tombstone whose delete event this task did
        // not read: a compacted topic, `version.source=none`) that comes first for its index
        // is answered 404 `index_not_found_exception`: there was nothing to delete.
        404 if is_delete && matches!(error_type, None | Some("index_not_found_exception")) => {
            ItemOutcome::Written
        }
        409 => ItemOutcome::Stale,
        429 => ItemOutcome::Retry(describe()),
        _ if error_type == Some("es_rejected_execution_exception") => {
            ItemOutcome::Retry(describe())
        }
        // A read-only index (disk flood stage) or a cluster not yet recovered: it clears.
        _ if write_block(error_type) => ItemOutcome::Retry(describe()),
        500..=599 => ItemOutcome::Retry(describe()),
        400 if error_type.is_some_and(|t| MALFORMED.contains(&t))
            && !(error_type == Some("illegal_argument_exception")
                && reason.is_some_and(|r| WRONG_TARGET.iter().any(|w| r.starts_with(w)))) =>
        {
            ItemOutcome::Malformed(describe())
        }
        _ => ItemOutcome::Fail(describe()),
    }
}

/// Which written items of a bulk response must be sent again with the items retried: those
/// that follow a retried item of the same document (`keys`: each item's index and id, in the
/// batch's order). A batch may hold several writes of one document (when malformed documents
/// are skipped, every write is kept); sending the retried one alone would put it after a later
/// write that already landed, and with equal versions (two changes of one row in one source
/// transaction) or none, Elasticsearch would take it: the older state would win. Sent again
/// after it, the later write lands last, as it was read.
pub fn resend_in_order<'k>(
    keys: impl Iterator<Item = (&'k str, &'k str)>,
    outcomes: &[ItemOutcome],
) -> Vec<bool> {
    let mut resend = vec![false; outcomes.len()];
    if !outcomes.iter().any(|o| matches!(o, ItemOutcome::Retry(_))) {
        return resend;
    }
    let mut retried = std::collections::HashSet::new();
    for ((key, outcome), again) in keys.zip(outcomes).zip(&mut resend) {
        match outcome {
            ItemOutcome::Retry(_) => {
                retried.insert(key);
            }
            ItemOutcome::Written => *again = retried.contains(&key),
            _ => {}
        }
    }
    resend
}

/// What to do with a whole bulk response that is not a 200.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// Read the items.
    Items,
    Retry(String),
    Fail(String),
}

pub fn request(status: u16, body: &str) -> RequestOutcome {
    let snippet: String = body.chars().take(300).collect();
    match status {
        200 => RequestOutcome::Items,
        429 | 500..=599 => RequestOutcome::Retry(format!("HTTP {status}: {snippet}")),
        413 => RequestOutcome::Fail(format!(
            "HTTP 413: the bulk request is larger than Elasticsearch accepts; lower bulk.size.bytes ({snippet})"
        )),
        401 | 403 => RequestOutcome::Fail(format!(
            "HTTP {status}: not allowed; check connection.username/password or connection.api.key ({snippet})"
        )),
        _ => RequestOutcome::Fail(format!("HTTP {status} from the bulk API: {snippet}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_after_a_retried_write_of_its_document_is_sent_again_after_it() {
        let retry = || ItemOutcome::Retry("429".into());
        let keys = [("i", "x"), ("i", "x"), ("i", "y"), ("j", "x"), ("i", "x")];
        let outcomes = [
            retry(),
            ItemOutcome::Written,
            ItemOutcome::Written,
            ItemOutcome::Written,
            ItemOutcome::Stale,
        ];
        assert_eq!(
            resend_in_order(keys.into_iter(), &outcomes),
            [false, true, false, false, false]
        );
        // A write before the retried one stays done.
        let outcomes = [ItemOutcome::Written, retry()];
        assert_eq!(
            resend_in_order(keys[..2].iter().copied(), &outcomes),
            [false, false]
        );
    }

    #[test]
    fn items_are_classified_by_status_and_type() {
        assert_eq!(item(false, 201, None, None), ItemOutcome::Written);
        assert_eq!(item(true, 404, None, None), ItemOutcome::Written);
        assert_eq!(
            item(true, 404, Some("index_not_found_exception"), None),
            ItemOutcome::Written
        );
        // Indexing into a missing index with auto-creation off still fails the task.
        assert!(matches!(
            item(false, 404, Some("index_not_found_exception"), None),
            ItemOutcome::Fail(_)
        ));
        assert_eq!(
            item(false, 409, Some("version_conflict_engine_exception"), None),
            ItemOutcome::Stale
        );
        assert!(matches!(
            item(false, 429, Some("es_rejected_execution_exception"), None),
            ItemOutcome::Retry(_)
        ));
        assert!(matches!(
            item(false, 503, Some("unavailable_shards_exception"), None),
            ItemOutcome::Retry(_)
        ));
        assert_eq!(
            item(
                false,
                400,
                Some("mapper_parsing_exception"),
                Some("failed to parse field [a]")
            ),
            ItemOutcome::Malformed(
                "400 mapper_parsing_exception: failed to parse field [a]".into()
            )
        );
        assert!(matches!(
            item(false, 400, Some("document_parsing_exception"), None),
            ItemOutcome::Malformed(_)
        ));
    }

    #[test]
    fn operational_item_errors_are_never_malformed_documents() {
        for (status, ty) in [
            (404, "index_not_found_exception"),
            (401, "security_exception"),
            (403, "security_exception"),
            (400, "invalid_index_name_exception"),
            (404, "type_missing_exception"),
        ] {
            assert!(
                matches!(item(false, status, Some(ty), None), ItemOutcome::Fail(_)),
                "{status} {ty}"
            );
        }
        for status in [403, 429] {
            assert!(matches!(
                item(
                    false,
                    status,
                    Some("cluster_block_exception"),
                    Some(
                        "index [i] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark, index has read-only-allow-delete block]"
                    )
                ),
                ItemOutcome::Retry(_)
            ));
        }
        // An argument Elasticsearch refuses about the target, not the document.
        for reason in [
            "no write index is defined for alias [a]. The write index may be explicitly disabled using is_write_index=false or the alias points to multiple indices without one being designated as a write index",
            "only write ops with an op_type of create are allowed in data streams",
        ] {
            assert!(
                matches!(
                    item(false, 400, Some("illegal_argument_exception"), Some(reason)),
                    ItemOutcome::Fail(_)
                ),
                "{reason}"
            );
        }
        assert!(matches!(
            item(
                false,
                400,
                Some("illegal_argument_exception"),
                Some("mapper [n] cannot be changed from type [long] to [text]")
            ),
            ItemOutcome::Malformed(_)
        ));
        // The document's own text quoted in a reason is no sign of a wrong target.
        assert!(matches!(
            item(
                false,
                400,
                Some("document_parsing_exception"),
                Some(
                    "[1:9] failed to parse field [n] of type [long] in document with id '1'. Preview of field's value: 'only write ops with an op_type of create are allowed in data streams'"
                )
            ),
            ItemOutcome::Malformed(_)
        ));
    }

    #[test]
    fn whole_requests() {
        assert_eq!(request(200, ""), RequestOutcome::Items);
        assert!(matches!(request(503, "busy"), RequestOutcome::Retry(_)));
        assert!(matches!(request(429, ""), RequestOutcome::Retry(_)));
        assert!(matches!(request(413, ""), RequestOutcome::Fail(_)));
        assert!(matches!(request(401, ""), RequestOutcome::Fail(_)));
    }
}

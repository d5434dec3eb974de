//! Debezium's `source` block: where a change comes from, and its position in the source log.
//!
//! The position becomes the document version (DESIGN §3): a number that only grows for a
//! given row, whatever replays and restarts happen upstream.

use std::borrow::Cow;

use serde::Deserialize;

use super::{DecodeError, Row};

/// The fields of `source` that sinks use, plus the whole block for `add.fields`.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub json: Row,
    pub connector: Option<Box<str>>,
    pub db: Option<Box<str>>,
    pub schema: Option<Box<str>>,
    pub table: Option<Box<str>>,
    /// When the change was committed in the source database.
    pub ts_ms: Option<i64>,
    /// The change's position in the source log, as a version; `None` when the connector is
    /// not one whose position is known; an error when the position does not fit.
    pub position: Result<Option<u64>, String>,
}

/// A number that some connectors write as a string (Oracle `scn`).
#[derive(Deserialize)]
#[serde(untagged)]
enum Num<'a> {
    Int(u64),
    #[serde(borrow)]
    Text(Cow<'a, str>),
}

impl Num<'_> {
    fn value(&self) -> Result<u64, String> {
        match self {
            Num::Int(v) => Ok(*v),
            Num::Text(s) => s
                .trim()
                .parse()
                .map_err(|_| format!("`{s}` is not a number")),
        }
    }
}

#[derive(Deserialize, Default)]
struct Fields<'a> {
    #[serde(borrow, default)]
    connector: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    db: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    schema: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    table: Option<Cow<'a, str>>,
    #[serde(default)]
    ts_ms: Option<i64>,
    // PostgreSQL
    #[serde(borrow, default)]
    lsn: Option<Num<'a>>,
    // MySQL, MariaDB
    #[serde(borrow, default)]
    file: Option<Cow<'a, str>>,
    #[serde(default)]
    pos: Option<u64>,
    #[serde(default)]
    row: Option<u64>,
    // SQL Server
    #[serde(borrow, default)]
    change_lsn: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    commit_lsn: Option<Cow<'a, str>>,
    // Oracle
    #[serde(borrow, default)]
    scn: Option<Num<'a>>,
    // MongoDB
    #[serde(default)]
    ord: Option<u64>,
}

/// Bits of a MySQL version given to the position within a binlog file (`pos + row`).
const BINLOG_OFFSET_BITS: u32 = 40;
const MAX_VERSION: u64 = i64::MAX as u64;

impl Source {
    /// Reads the fields sinks use from a decoded `source` block.
    pub fn from_row(json: Row) -> Result<Source, DecodeError> {
        let f: Fields<'_> = serde_json::from_str(json.as_str())
            .map_err(|e| DecodeError::new(format!("`source` block is malformed: {e}")))?;
        let position = position(&f);
        let boxed = |c: &Option<Cow<'_, str>>| c.as_deref().map(Box::from);
        Ok(Source {
            connector: boxed(&f.connector),
            db: boxed(&f.db),
            schema: boxed(&f.schema),
            table: boxed(&f.table),
            ts_ms: f.ts_ms,
            position,
            json,
        })
    }
}

/// The version a change's source position gives, per connector (DESIGN §3):
/// * PostgreSQL: `lsn`;
/// * MySQL / MariaDB: binlog file index << 40 | (`pos` + `row`). Each row of a rows event
///   takes at least a byte, so `pos + row` grows strictly within a file, and the file index
///   keeps it growing over a binlog rollover;
/// * SQL Server: `change_lsn` (or `commit_lsn` for snapshot reads), packed;
/// * Oracle: `scn`;
/// * MongoDB: oplog seconds << 32 | `ord`.
fn position(f: &Fields<'_>) -> Result<Option<u64>, String> {
    // Old Debezium versions have no `connector` field; their position fields tell.
    let connector = f
        .connector
        .as_deref()
        .or(if f.file.is_some() && f.pos.is_some() {
            Some("mysql")
        } else if f.lsn.is_some() {
            Some("postgresql")
        } else {
            None
        });
    let version = match connector {
        Some("postgresql") => match &f.lsn {
            Some(lsn) => lsn.value()?,
            None => return Ok(None),
        },
        Some("mysql") | Some("mariadb") => {
            let (Some(file), Some(pos)) = (f.file.as_deref().filter(|f| !f.is_empty()), f.pos)
            else {
                // No binlog position (some snapshot tools write an empty file name).
                return Ok(None);
            };
            let index = binlog_index(file)?;
            let offset = pos + f.row.unwrap_or(0);
            if offset >= 1 << BINLOG_OFFSET_BITS || index >= 1 << (63 - BINLOG_OFFSET_BITS) {
                return Err(format!(
                    "binlog position {file}:{pos} does not fit in a version"
                ));
            }
            index << BINLOG_OFFSET_BITS | offset
        }
        Some("sqlserver") => match f.change_lsn.as_deref().or(f.commit_lsn.as_deref()) {
            Some(lsn) => sqlserver_lsn(lsn)?,
            None => return Ok(None),
        },
        Some("oracle") => match &f.scn {
            Some(scn) => scn.value()?,
            None => return Ok(None),
        },
        Some("mongodb") => match (f.ts_ms, f.ord) {
            (Some(ts), Some(ord)) if ts >= 0 && ord < 1 << 32 => (ts as u64 / 1000) << 32 | ord,
            (Some(_), Some(_)) => return Err("MongoDB oplog position out of range".into()),
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    if version > MAX_VERSION {
        return Err(format!(
            "source position {version} exceeds Elasticsearch's largest version"
        ));
    }
    Ok(Some(version))
}

/// `mysql-bin.000003` → 3.
fn binlog_index(file: &str) -> Result<u64, String> {
    let digits = file.rsplit('.').next().unwrap_or("");
    digits
        .parse()
        .map_err(|_| format!("binlog file name `{file}` does not end in a number"))
}

/// `00000027:00000758:0005` (VLF sequence : log block : slot, hex) packed into 63 bits as
/// 25 : 24 : 14 bits.
fn sqlserver_lsn(lsn: &str) -> Result<u64, String> {
    let bad = || format!("SQL Server LSN `{lsn}` is not of the form xxxxxxxx:xxxxxxxx:xxxx");
    let mut parts = lsn.split(':').map(|p| u64::from_str_radix(p, 16));
    let (Some(Ok(vlf)), Some(Ok(block)), Some(Ok(slot)), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if vlf >= 1 << 25 || block >= 1 << 24 || slot >= 1 << 14 {
        return Err(format!(
            "SQL Server LSN `{lsn}` does not fit in a version; use version.source=offset"
        ));
    }
    Ok(vlf << 38 | block << 14 | slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(json: &str) -> Result<Option<u64>, String> {
        Source::from_row(Row::from_json(json)).unwrap().position
    }

    #[test]
    fn postgres_version_is_the_lsn() {
        assert_eq!(
            pos(r#"{"connector":"postgresql","lsn":24023128}"#),
            Ok(Some(24_023_128))
        );
    }

    #[test]
    fn mysql_versions_grow_over_rows_events_and_binlog_rollover() {
        let v = |file: &str, p: u64, r: u64| {
            pos(&format!(
                r#"{{"connector":"mysql","file":"{file}","pos":{p},"row":{r}}}"#
            ))
            .unwrap()
            .unwrap()
        };
        assert!(v("mysql-bin.000003", 1442, 0) < v("mysql-bin.000003", 1442, 1));
        assert!(v("mysql-bin.000003", 1442, 1) < v("mysql-bin.000003", 1831, 0));
        assert!(v("mysql-bin.000003", 900_000_000, 5) < v("mysql-bin.000004", 4, 0));
        assert_eq!(v("mysql-bin.000003", 392, 0), 3 << 40 | 392);
        assert!(pos(r#"{"connector":"mariadb","file":"bin","pos":4}"#).is_err());
        assert_eq!(
            pos(r#"{"connector":"mysql","file":"","pos":0,"row":0}"#),
            Ok(None)
        );
        // Debezium 0.x had no `connector` field.
        assert_eq!(
            pos(r#"{"name":"dbserver1","file":"mysql-bin.000003","pos":154,"row":0}"#),
            Ok(Some(3 << 40 | 154))
        );
    }

    #[test]
    fn sqlserver_oracle_mongodb_positions() {
        let a = pos(
            r#"{"connector":"sqlserver","change_lsn":"00000027:00000758:0005","commit_lsn":"00000027:00000758:0007"}"#,
        );
        let b = pos(r#"{"connector":"sqlserver","change_lsn":"00000027:00000760:0002"}"#);
        assert!(a.unwrap().unwrap() < b.unwrap().unwrap());
        assert_eq!(
            pos(r#"{"connector":"oracle","scn":"2122184"}"#),
            Ok(Some(2_122_184))
        );
        assert_eq!(
            pos(r#"{"connector":"mongodb","ts_ms":1558965508000,"ord":3}"#),
            Ok(Some(1_558_965_508 << 32 | 3))
        );
    }

    #[test]
    fn unknown_connectors_have_no_position() {
        assert_eq!(pos(r#"{"connector":"db2","change_lsn":"x"}"#), Ok(None));
        assert_eq!(pos(r#"{"ts_ms":1}"#), Ok(None));
    }
}

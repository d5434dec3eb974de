//! Debezium's `source` block: where a change comes from, and its position in the source log.
//!
//! The position becomes the document version (docs/versions.md): a number that only grows for a
//! given row, whatever replays and restarts happen upstream.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::{Deserializer, Visitor};
use serde_json::value::RawValue;

use super::row::{some_raw_text, some_str};
use super::{DecodeError, Row};

/// The fields of `source` that sinks use, plus the whole block for `add.fields`.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// The whole block, when the decoder was asked to keep it (`Options::keep_source`).
    pub json: Option<Row>,
    pub connector: Option<Box<str>>,
    pub db: Option<Box<str>>,
    pub schema: Option<Box<str>>,
    pub table: Option<Box<str>>,
    /// When the change was committed in the source database.
    pub ts_ms: Option<i64>,
    /// The change's position in the source log, as a version; `None` when the connector is
    /// not one whose position is known; an error when the position does not fit.
    pub position: Result<Option<u64>, String>,
    /// How the position relates to snapshot reads of the same partition (PostgreSQL).
    pub ordering: Ordering,
    /// Where the event stands in a snapshot (`source.snapshot`).
    pub snapshot: SnapshotMark,
}

/// Debezium's `source.snapshot`: whether an event is a snapshot read, and whether it is the
/// last read of its table in a snapshot (`last_in_data_collection`, or `last` for the last table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotMark {
    /// Streamed (`false`, or absent).
    #[default]
    No,
    /// A read of a snapshot that is not its table's last: `true`, `first`,
    /// `first_in_data_collection`, and every read of an incremental snapshot (`incremental`),
    /// whose end Debezium does not mark in the data.
    Read,
    /// The last read of its table: every row the snapshot found in the table came before it in
    /// the table's topic.
    EndOfTable,
}

impl SnapshotMark {
    /// `source.snapshot`: a string in Debezium ≥ 1.x, a boolean in some older connectors.
    fn parse(raw: Option<&str>) -> Result<SnapshotMark, String> {
        let Some(raw) = raw else {
            return Ok(SnapshotMark::No);
        };
        Ok(match raw {
            "null" | "false" => SnapshotMark::No,
            "true" => SnapshotMark::Read,
            _ if raw.starts_with('"') => match text(raw)?.as_ref() {
                "last" | "last_in_data_collection" => SnapshotMark::EndOfTable,
                "false" => SnapshotMark::No,
                _ => SnapshotMark::Read,
            },
            _ => {
                return Err(format!(
                    "`snapshot` is `{raw}`, neither a boolean nor a string"
                ));
            }
        })
    }
}

/// A JSON string's content. `raw` is one valid JSON value (serde_json took it whole, or the
/// Avro reader wrote it): without a backslash its content stands as it is, borrowed, and no
/// parser is set up for it. (Through a parser every time, `from_members` rose from 16–18% to
/// 21–22% of the Avro value decoder.)
fn text(raw: &str) -> Result<Cow<'_, str>, String> {
    match raw.as_bytes() {
        [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => {
            Ok(Cow::Borrowed(&raw[1..raw.len() - 1]))
        }
        _ => super::row::unquote(raw).map_err(|e| format!("`{raw}` is not a JSON string: {e}")),
    }
}

/// What a sink must add to [`Source::position`] to keep commit order across a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ordering {
    /// The position alone orders the change.
    #[default]
    Plain,
    /// A snapshot read: later changes of the first transaction after the snapshot must be
    /// ordered after it (see [`Ordering::AfterSnapshot`]).
    SnapshotRead,
    /// A change of the first transaction streamed after a snapshot (PostgreSQL with no
    /// `lastCommitLsn` yet): its position is its own WAL position, which may lie before the
    /// snapshot's when the transaction was open while the snapshot read. It must be ordered
    /// after every snapshot read of its partition.
    AfterSnapshot,
    /// The position is the change's own place in the log, not its commit order (PostgreSQL
    /// events without `sequence`, from Debezium versions before it): a change of a transaction
    /// open while a snapshot read lies below the snapshot's position although the snapshot did
    /// not see it. Versions as [`Ordering::Plain`]; a snapshot of such records is not
    /// reconciled, which would remove those rows.
    OwnPosition,
}

/// A number that some connectors write as a string (Oracle `scn`); `None` for null.
///
/// Read from the raw text rather than through a serde untagged enum, which buffers every
/// value it tries: that made `source` a fifth of the hot path (docs/performance-log.md).
fn number(field: &str, raw: Option<&str>) -> Result<Option<u64>, String> {
    let Some(raw) = raw.filter(|r| *r != "null") else {
        return Ok(None);
    };
    let digits = if raw.starts_with('"') {
        text(raw)?
    } else {
        Cow::Borrowed(raw)
    };
    digits
        .trim()
        .parse()
        .map(Some)
        .map_err(|_| format!("`source.{field}` `{digits}` is not a number"))
}

#[derive(Deserialize, Default)]
struct Fields<'a> {
    #[serde(borrow, default, deserialize_with = "some_str")]
    connector: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "some_str")]
    db: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "some_str")]
    schema: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "some_str")]
    table: Option<Cow<'a, str>>,
    #[serde(default)]
    ts_ms: Option<i64>,
    #[serde(borrow, default, deserialize_with = "some_raw_text")]
    snapshot: Option<&'a str>,
    // PostgreSQL
    #[serde(borrow, default, deserialize_with = "some_raw_text")]
    lsn: Option<&'a str>,
    /// `["<lastCommitLsn>","<lsn>"]`, as a string of JSON.
    #[serde(borrow, default, deserialize_with = "some_str")]
    sequence: Option<Cow<'a, str>>,
    // MySQL, MariaDB
    #[serde(borrow, default, deserialize_with = "some_str")]
    file: Option<Cow<'a, str>>,
    #[serde(default)]
    pos: Option<u64>,
    // SQL Server
    #[serde(borrow, default, deserialize_with = "some_str")]
    change_lsn: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "some_str")]
    commit_lsn: Option<Cow<'a, str>>,
    // Oracle
    #[serde(borrow, default, deserialize_with = "some_raw_text")]
    scn: Option<&'a str>,
    #[serde(borrow, default, deserialize_with = "some_raw_text")]
    commit_scn: Option<&'a str>,
    // MongoDB
    #[serde(default)]
    ord: Option<i64>,
}

/// The residue modulo 4 of a PostgreSQL version of a change streamed before the first commit
/// after a snapshot, when the sink could not raise it above the snapshot's reads.
pub const PG_AFTER_SNAPSHOT: u64 = 3;

/// Bits of a MySQL version given to the position within a binlog file (`pos`).
const BINLOG_OFFSET_BITS: u32 = 40;
const MAX_VERSION: u64 = i64::MAX as u64;
/// Bits of a MongoDB version given to `ord` (the oplog increment within a second): 31, so that
/// seconds fit until the year 2106.
const MONGO_ORD_BITS: u32 = 31;

impl Source {
    /// Reads the fields sinks use from a `source` block's JSON; `read`: the event is a
    /// snapshot read (`op: r`); `keep`: keep the block itself as [`Source::json`].
    pub fn parse(json: &str, read: bool, keep: bool) -> Result<Source, DecodeError> {
        // serde's derived structs also take an array, field by position.
        if !json.trim_start().starts_with('{') {
            return Err(malformed(format!("`{json}` is not a JSON object")));
        }
        let f: Fields<'_> = serde_json::from_str(json).map_err(malformed)?;
        let source = Source::new(&f, read).map_err(malformed)?;
        Ok(Source {
            json: keep.then(|| Row::from_json(json)),
            ..source
        })
    }

    /// The same from a block already written as `json`, with the JSON text of each member
    /// sinks read known (the Avro decoder writes them itself, and knows which field is which
    /// from its schema, [`Member::of`]): parsing the block again was a third of the Avro value
    /// decoder (docs/performance-log.md).
    pub fn from_members<'a>(
        json: &'a str,
        members: impl IntoIterator<Item = (Member, &'a str)>,
        read: bool,
        keep: bool,
    ) -> Result<Source, DecodeError> {
        let mut f = Fields::default();
        for (member, raw) in members {
            f.set(member, raw).map_err(malformed)?;
        }
        let source = Source::new(&f, read).map_err(malformed)?;
        Ok(Source {
            json: keep.then(|| Row::from_json(json)),
            ..source
        })
    }

    /// Everything but `json`, which the caller sets (`f` borrows from it).
    fn new(f: &Fields<'_>, read: bool) -> Result<Source, String> {
        let snapshot = SnapshotMark::parse(f.snapshot)?;
        let (position, ordering) = match position(f, read) {
            Ok((p, o)) => (Ok(p), o),
            Err(e) => (Err(e), Ordering::Plain),
        };
        let boxed = |c: &Option<Cow<'_, str>>| c.as_deref().map(Box::from);
        Ok(Source {
            connector: boxed(&f.connector),
            db: boxed(&f.db),
            schema: boxed(&f.schema),
            table: boxed(&f.table),
            ts_ms: f.ts_ms,
            position,
            ordering,
            snapshot,
            json: None,
        })
    }
}

/// A `source` block's fields, read in the same pass as the envelope around it: the envelope's
/// walk skipped the block, then [`Source::parse`] walked it again (docs/performance-log.md).
/// Only an object is taken; anything the walk refuses, the caller reads again through
/// [`Source::parse`], which names the problem.
pub(crate) struct Inline<'a>(Fields<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for Inline<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Fields::deserialize(ObjectOnly(d)).map(Inline)
    }
}

impl<'a> Inline<'a> {
    /// No field read yet (for a reader that reads them one by one, [`Inline::set`]).
    pub(crate) fn empty() -> Inline<'a> {
        Inline(Fields::default())
    }

    /// Sets `member` from its JSON text `raw` as serde's derived reading would. Each member at
    /// most once: a block naming one twice is for the caller to refuse, as serde does.
    pub(crate) fn set(&mut self, member: Member, raw: &'a str) -> Result<(), String> {
        self.0.set(member, raw)
    }

    /// Sets `member` from the content of a JSON string without escapes, when `member` is
    /// read as a string (serde's `some_str`); `false` for any other member.
    pub(crate) fn set_plain_str(&mut self, member: Member, content: &'a str) -> bool {
        let f = &mut self.0;
        let slot = match member {
            Member::Connector => &mut f.connector,
            Member::Db => &mut f.db,
            Member::Schema => &mut f.schema,
            Member::Table => &mut f.table,
            Member::Sequence => &mut f.sequence,
            Member::File => &mut f.file,
            Member::ChangeLsn => &mut f.change_lsn,
            Member::CommitLsn => &mut f.commit_lsn,
            _ => return false,
        };
        *slot = Some(Cow::Borrowed(content));
        true
    }

    /// The same as [`Source::parse`] without the block kept; `read`: a snapshot read.
    pub(crate) fn source(&self, read: bool) -> Result<Source, DecodeError> {
        Source::new(&self.0, read).map_err(malformed)
    }
}

/// Asks for a map where serde's derived code asks for a struct, which serde_json also reads
/// from an array, field by position.
struct ObjectOnly<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for ObjectOnly<D> {
    type Error = D::Error;
    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(v)
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

fn malformed(e: impl std::fmt::Display) -> DecodeError {
    DecodeError::new(format!("`source` block is malformed: {e}"))
}

/// A field of `source` that sinks read: [`Fields`]' fields, by name once per schema rather
/// than once per record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    Connector,
    Db,
    Schema,
    Table,
    TsMs,
    Snapshot,
    Lsn,
    Sequence,
    File,
    Pos,
    ChangeLsn,
    CommitLsn,
    Scn,
    CommitScn,
    Ord,
}

impl Member {
    const NAMED: [(&'static str, Member); 15] = [
        ("connector", Member::Connector),
        ("db", Member::Db),
        ("schema", Member::Schema),
        ("table", Member::Table),
        ("ts_ms", Member::TsMs),
        ("snapshot", Member::Snapshot),
        ("lsn", Member::Lsn),
        ("sequence", Member::Sequence),
        ("file", Member::File),
        ("pos", Member::Pos),
        ("change_lsn", Member::ChangeLsn),
        ("commit_lsn", Member::CommitLsn),
        ("scn", Member::Scn),
        ("commit_scn", Member::CommitScn),
        ("ord", Member::Ord),
    ];

    /// The member a field of `source` named `name` is; `None` for fields no sink reads.
    /// (A `match`, not a search of [`Member::NAMED`]: the JSON reader of our own looks up
    /// every field of every record's block; a unit test checks the two agree.)
    pub fn of(name: &str) -> Option<Member> {
        Some(match name {
            "connector" => Member::Connector,
            "db" => Member::Db,
            "schema" => Member::Schema,
            "table" => Member::Table,
            "ts_ms" => Member::TsMs,
            "snapshot" => Member::Snapshot,
            "lsn" => Member::Lsn,
            "sequence" => Member::Sequence,
            "file" => Member::File,
            "pos" => Member::Pos,
            "change_lsn" => Member::ChangeLsn,
            "commit_lsn" => Member::CommitLsn,
            "scn" => Member::Scn,
            "commit_scn" => Member::CommitScn,
            "ord" => Member::Ord,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        Member::NAMED
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("", |(n, _)| n)
    }
}

impl<'a> Fields<'a> {
    /// Sets `member` from its JSON text `raw`, with the types the derived deserializer asks
    /// for. A member given twice would keep its last value where the derived deserializer
    /// fails; Avro records cannot have two fields of one name (apache-avro refuses such a
    /// schema before it is compiled).
    fn set(&mut self, member: Member, raw: &'a str) -> Result<(), String> {
        // The member's name is looked up only for an error.
        fn string<'a>(name: Member, raw: &'a str) -> Result<Option<Cow<'a, str>>, String> {
            match raw.as_bytes() {
                b"null" => Ok(None),
                [b'"', ..] => text(raw).map(Some),
                _ => Err(format!(
                    "`{}` is `{raw}`, expected a string or null",
                    name.name()
                )),
            }
        }
        // `-0` refused as serde refuses it (serde_json reads it as a float); the Avro reader
        // never writes it.
        fn int<T: std::str::FromStr>(name: Member, raw: &str) -> Result<Option<T>, String> {
            match raw {
                "null" => Ok(None),
                "-0" => Err(format!("`{}` is `-0`, not an integer", name.name())),
                _ => raw.parse().map(Some).map_err(|_| {
                    format!("`{}` is `{raw}`, expected an integer or null", name.name())
                }),
            }
        }
        match member {
            Member::Connector => self.connector = string(member, raw)?,
            Member::Db => self.db = string(member, raw)?,
            Member::Schema => self.schema = string(member, raw)?,
            Member::Table => self.table = string(member, raw)?,
            Member::TsMs => self.ts_ms = int(member, raw)?,
            Member::Snapshot => self.snapshot = Some(raw),
            Member::Lsn => self.lsn = Some(raw),
            Member::Sequence => self.sequence = string(member, raw)?,
            Member::File => self.file = string(member, raw)?,
            Member::Pos => self.pos = int(member, raw)?,
            Member::ChangeLsn => self.change_lsn = string(member, raw)?,
            Member::CommitLsn => self.commit_lsn = string(member, raw)?,
            Member::Scn => self.scn = Some(raw),
            Member::CommitScn => self.commit_scn = Some(raw),
            Member::Ord => self.ord = int(member, raw)?,
        }
        Ok(())
    }
}

/// The version a change's source position gives, per connector. A version must follow the
/// source's *commit* order for each row: a change committed later must never get a lower
/// version than any snapshot read or change it must win over. (docs/versions.md explains each.)
///
/// * PostgreSQL: `4 × sequence[0] + phase`, where `sequence[0]` is the end LSN of the last
///   transaction committed before this event (Debezium's `lastCommitLsn`), and phase is 0 for
///   snapshot reads (`op: r`: initial, blocking and incremental snapshots), 1 for streamed
///   changes. Not `lsn`: a streamed change carries its own WAL position, which lies *before*
///   the snapshot point when its transaction was open while the snapshot read; and a
///   transaction's commit LSN is not in the event. Before the first commit after a snapshot
///   `sequence[0]` is null: `4 × lsn + phase`, phase 3 for streamed changes (so that one left
///   below the snapshot stays recognisable), with [`Ordering`] telling the sink to raise
///   that first transaction above the snapshot reads (`sink::snapshot_floors`). Old Debezium
///   versions without `sequence`: `lsn`.
/// * MySQL / MariaDB: binlog file index << 40 | `pos`. The binlog is in commit order, `pos`
///   grows from one rows event to the next within a file, and the file index keeps it
///   growing over a rollover; the rows of one event (or of one compressed transaction) share
///   a version.
/// * SQL Server: `commit_lsn` (the transaction's commit LSN; the snapshot's highest LSN for
///   snapshot reads), packed.
/// * Oracle: `commit_scn` (streamed changes), else `scn` (snapshot reads: the snapshot's SCN).
/// * MongoDB: oplog seconds << 31 | `ord`; snapshot reads 0 (the change stream replays from the
///   snapshot's start).
fn position(f: &Fields<'_>, snapshot: bool) -> Result<(Option<u64>, Ordering), String> {
    // Old Debezium versions have no `connector` field; their position fields tell.
    let connector = f
        .connector
        .as_deref()
        .or(if f.file.is_some() && f.pos.is_some() {
            Some("mysql")
        } else if f.lsn.is_some_and(|l| l != "null") {
            Some("postgresql")
        } else {
            None
        });
    let version = match connector {
        Some("postgresql") => {
            let lsn = number("lsn", f.lsn)?;
            let (last_commit, own) = match &f.sequence {
                Some(seq) => last_commit_lsn(seq)?,
                None => (None, None),
            };
            // Phase: 0 snapshot read, 1 streamed, 3 streamed before the first commit after a
            // snapshot (marks a change whose version may lie below the snapshot's: see
            // `sink::snapshot_floors` and docs/reconcile.md).
            let quad = |v: u64, phase: u64| {
                v.checked_mul(4)
                    .map(|d| d + phase)
                    .ok_or_else(|| format!("PostgreSQL LSN {v} does not fit in a version"))
            };
            match (&f.sequence, last_commit, lsn.or(own)) {
                // Old Debezium versions without `sequence`: the lsn, the change's own place
                // in the WAL, not its commit order.
                (None, _, Some(lsn)) => return Ok((Some(check(lsn)?), Ordering::OwnPosition)),
                (None, _, None) => return Ok((None, Ordering::Plain)),
                (Some(_), Some(c), _) => quad(c, u64::from(!snapshot))?,
                // No commit seen since the snapshot (or a fresh snapshot): the position.
                (Some(_), None, Some(p)) => {
                    let ordering = if snapshot {
                        Ordering::SnapshotRead
                    } else {
                        Ordering::AfterSnapshot
                    };
                    let phase = if snapshot { 0 } else { PG_AFTER_SNAPSHOT };
                    return Ok((Some(check(quad(p, phase)?)?), ordering));
                }
                (Some(_), None, None) => return Ok((None, Ordering::Plain)),
            }
        }
        Some("mysql") | Some("mariadb") => {
            let (Some(file), Some(pos)) = (f.file.as_deref().filter(|f| !f.is_empty()), f.pos)
            else {
                // No binlog position (some snapshot tools write an empty file name).
                return Ok((None, Ordering::Plain));
            };
            let index = binlog_index(file)?;
            // `pos` alone, not `pos + row`: the rows of a compressed MySQL transaction (one
            // TRANSACTION_PAYLOAD event) all carry that event's `pos`, with `row` from 0 again
            // for each rows event in it, so `pos + row` could go down within a transaction, and
            // the next transaction, after a payload smaller than its row count, could get less
            // than the one before. Rows of one event, or of one compressed transaction, share a
            // version and are written in their Kafka order.
            let offset = pos;
            if offset >= 1 << BINLOG_OFFSET_BITS || index >= 1 << (63 - BINLOG_OFFSET_BITS) {
                return Err(format!(
                    "binlog position {file}:{pos} does not fit in a version"
                ));
            }
            index << BINLOG_OFFSET_BITS | offset
        }
        Some("sqlserver") => match f.commit_lsn.as_deref().or(f.change_lsn.as_deref()) {
            Some(lsn) => sqlserver_lsn(lsn)?,
            None => return Ok((None, Ordering::Plain)),
        },
        Some("oracle") => {
            match number("commit_scn", f.commit_scn)?
                .map_or_else(|| number("scn", f.scn), |c| Ok(Some(c)))?
            {
                Some(scn) => scn,
                None => return Ok((None, Ordering::Plain)),
            }
        }
        Some("mongodb") => match (f.ts_ms, f.ord) {
            _ if snapshot => 0,
            (Some(ts), Some(ord))
                if (0..1i64 << (63 - MONGO_ORD_BITS)).contains(&(ts / 1000))
                    && ts >= 0
                    && (0..1 << MONGO_ORD_BITS).contains(&ord) =>
            {
                (ts as u64 / 1000) << MONGO_ORD_BITS | ord as u64
            }
            (Some(_), Some(_)) => return Err("MongoDB oplog position out of range".into()),
            _ => return Ok((None, Ordering::Plain)),
        },
        _ => return Ok((None, Ordering::Plain)),
    };
    Ok((Some(check(version)?), Ordering::Plain))
}

fn check(version: u64) -> Result<u64, String> {
    if version > MAX_VERSION {
        return Err(format!(
            "source position {version} exceeds Elasticsearch's largest version"
        ));
    }
    Ok(version)
}

/// PostgreSQL's `sequence` (`["24023119","24023128"]`): the end LSN of the last commit before
/// the event (null before the first commit after a snapshot), and the event's own LSN.
fn last_commit_lsn(sequence: &str) -> Result<(Option<u64>, Option<u64>), String> {
    let parts: Vec<&RawValue> = serde_json::from_str(sequence)
        .map_err(|_| format!("`sequence` `{sequence}` is not a JSON array of LSNs"))?;
    let value = |i: usize| {
        number("sequence", parts.get(i).map(|p| p.get()))
            .map_err(|e| format!("`sequence` `{sequence}` is not a JSON array of LSNs: {e}"))
    };
    if parts.is_empty() {
        return Err(format!("`sequence` `{sequence}` is empty"));
    }
    Ok((value(0)?, value(1)?))
}

/// `mysql-bin.000003` → 3. (`memrchr`, not `rsplit('.')`: the reverse char search took 360
/// instructions a record, 4% of decoding an Avro value; docs/performance-log.md.)
fn binlog_index(file: &str) -> Result<u64, String> {
    let digits = match memchr::memrchr(b'.', file.as_bytes()) {
        Some(dot) => &file[dot + 1..],
        None => file,
    };
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
            "SQL Server LSN `{lsn}` does not fit in a version (a virtual log file past 2^25 or a block past 2^24); an index versioned by LSN cannot take it: rebuild it under version.source=offset"
        ));
    }
    Ok(vlf << 38 | block << 14 | slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_found_by_their_names_and_nothing_else() {
        for (name, member) in Member::NAMED {
            assert_eq!(Member::of(name), Some(member));
            assert_eq!(member.name(), name);
            for other in [&name[1..], &format!("{name}_"), &name.to_uppercase()] {
                assert_eq!(Member::of(other), None, "{other}");
            }
        }
        assert_eq!(Member::of("version"), None);
    }

    /// `source` read from JSON text, checked to read the same from its members (as the Avro
    /// decoder gives them), and the same without the block kept.
    fn read_source(json: &str, read: bool) -> Result<Source, DecodeError> {
        // Read without the block, then given it: the same as read with it.
        let with_block = |s: Result<Source, DecodeError>| {
            s.map(|s| Source {
                json: Some(Row::from_json(json)),
                ..s
            })
        };
        let parsed = Source::parse(json, read, true);
        if let Ok(a) = &parsed {
            assert_eq!(a.json.as_ref().map(Row::as_str), Some(json));
        }
        assert_eq!(
            parsed,
            with_block(Source::parse(json, read, false)),
            "{json}"
        );
        let mut members = vec![];
        crate::decode::row::for_each_field(json, |k, v| {
            if let Some(m) = Member::of(k) {
                assert_eq!(m.name(), k);
                members.push((m, v.get()));
            }
            Ok(())
        })
        .unwrap();
        let from_members = |keep| Source::from_members(json, members.iter().copied(), read, keep);
        let from_members_kept = from_members(true);
        assert_eq!(parsed.is_ok(), from_members_kept.is_ok(), "{json}");
        if let (Ok(a), Ok(b)) = (&parsed, &from_members_kept) {
            assert_eq!(a, b, "{json}");
        }
        assert_eq!(from_members_kept, with_block(from_members(false)), "{json}");
        // In the envelope's own pass: the same, or refused as a whole (and then read as above).
        let inline = serde_json::from_str::<Inline>(json)
            .map_err(malformed)
            .and_then(|f| f.source(read));
        assert_eq!(inline.is_ok(), parsed.is_ok(), "{json}: {inline:?}");
        if let Ok(inline) = inline {
            assert_eq!(with_block(Ok(inline)), parsed, "{json}");
        }
        parsed
    }

    /// The version of a streamed change, or of a snapshot read when `source.snapshot` is set.
    fn pos(json: &str) -> Result<Option<u64>, String> {
        let read = json.contains(r#""snapshot":"#) && !json.contains(r#""snapshot":"false""#);
        read_source(json, read).unwrap().position
    }

    #[test]
    fn source_fields_read_alike_by_serde_and_from_members() {
        for json in [
            r#"{"connector":5}"#,
            r#"{"ts_ms":"1"}"#,
            r#"{"ts_ms":1.5}"#,
            r#"{"pos":-1}"#,
            r#"{"snapshot":{}}"#,
        ] {
            let e = read_source(json, false).unwrap_err().message;
            assert!(e.starts_with("`source` block is malformed"), "{json}: {e}");
        }
        let s = read_source(
            r#"{"connector":"mysql","db":"in\u0076","table":null,"ts_ms":null,"snapshot":"true"}"#,
            true,
        )
        .unwrap();
        assert_eq!(s.db.as_deref(), Some("inv"));
        assert_eq!((s.table, s.ts_ms), (None, None));
        assert_eq!(s.snapshot, SnapshotMark::Read);
        let s = read_source(
            r#"{"connector":"sqlserver","db":"d","schema":"dbo","table":"t","ts_ms":5,"change_lsn":"00000027:00000758:0005","commit_lsn":null}"#,
            false,
        )
        .unwrap();
        assert_eq!(
            (s.connector.as_deref(), s.db.as_deref(), s.schema.as_deref()),
            (Some("sqlserver"), Some("d"), Some("dbo"))
        );
        assert_eq!((s.table.as_deref(), s.ts_ms), (Some("t"), Some(5)));
        assert_eq!(s.position, Ok(Some(0x27 << 38 | 0x758 << 14 | 5)));
    }

    #[test]
    fn members_are_found_by_their_names_and_only_by_them() {
        for (name, member) in Member::NAMED {
            assert_eq!(Member::of(name), Some(member), "{name}");
            assert_eq!(member.name(), name);
            assert_eq!(Member::of(&name.to_uppercase()), None);
        }
        for name in ["", "version", "name", "server_id", "txId", "lsn ", "ts_us"] {
            assert_eq!(Member::of(name), None, "{name}");
        }
    }

    #[test]
    fn malformed_blocks_are_named_as_serde_names_them() {
        let e = |json: &str| Source::parse(json, false, false).unwrap_err().message;
        assert_eq!(
            e(r#"{"db":"a","db":"b"}"#),
            "`source` block is malformed: duplicate field `db` at line 1 column 14"
        );
        assert_eq!(
            e(r#"{"ts_ms":1.5}"#),
            "`source` block is malformed: invalid type: floating point `1.5`, expected i64 at line 1 column 12"
        );
        assert_eq!(
            e(r#"{"pos":-1}"#),
            "`source` block is malformed: invalid value: integer `-1`, expected u64 at line 1 column 9"
        );
        assert_eq!(
            e(r#"{"pos":"1"}"#),
            "`source` block is malformed: invalid type: string \"1\", expected u64 at line 1 column 10"
        );
        assert_eq!(
            e(r#"{"table":5}"#),
            "`source` block is malformed: invalid type: integer `5`, expected a string or null at line 1 column 10"
        );
        assert_eq!(
            e(r#"{"table":"a"#),
            "`source` block is malformed: EOF while parsing a string at line 1 column 11"
        );
        // Escaped names and values are read; unknown fields of any type are passed over.
        let s = Source::parse(
            r#"{"t\u0061ble":"t\u0031","version":[1,{"a":null}],"ts_ms":null,"ord":-3}"#,
            false,
            false,
        )
        .unwrap();
        assert_eq!((s.table.as_deref(), s.ts_ms), (Some("t1"), None));
    }

    #[test]
    fn snapshot_marks_say_where_a_table_ends() {
        let mark = |v: &str| {
            read_source(&format!(r#"{{"snapshot":{v}}}"#), true)
                .unwrap()
                .snapshot
        };
        // Escaped, the same words: read through a parser rather than borrowed.
        for v in [
            r#""last""#,
            r#""last_in_data_collection""#,
            r#""l\u0061st""#,
        ] {
            assert_eq!(mark(v), SnapshotMark::EndOfTable, "{v}");
        }
        assert_eq!(mark(r#""f\u0061lse""#), SnapshotMark::No);
        for v in [
            r#""true""#,
            r#""first""#,
            r#""first_in_data_collection""#,
            r#""incremental""#,
            "true",
        ] {
            assert_eq!(mark(v), SnapshotMark::Read, "{v}");
        }
        for v in [r#""false""#, "false", "null"] {
            assert_eq!(mark(v), SnapshotMark::No, "{v}");
        }
    }

    #[test]
    fn postgres_versions_follow_commit_order() {
        // Old Debezium versions without `sequence`: the lsn.
        assert_eq!(
            pos(r#"{"connector":"postgresql","lsn":24023128}"#),
            Ok(Some(24_023_128))
        );
        // Streamed: four times the last commit before it, plus one.
        assert_eq!(
            pos(
                r#"{"connector":"postgresql","snapshot":"false","lsn":24023128,"sequence":"[\"24023119\",\"24023128\"]"}"#
            ),
            Ok(Some(4 * 24_023_119 + 1))
        );
        // A fresh snapshot (no commit seen yet) reads at LSN 5000: 4 × 5000, and the sink is
        // told to order the first transaction after it above it. A change of a transaction
        // that was open during the snapshot carries its own LSN 4000, before the snapshot
        // point: 4 × 4000 + 3, marked to be raised above the partition's snapshot reads
        // (sink::snapshot_floors). The next transaction has a last commit past the snapshot.
        let full = |json: &str| {
            let read = json.contains(r#""snapshot":"last""#);
            let s = read_source(json, read).unwrap();
            (s.position.unwrap().unwrap(), s.ordering)
        };
        assert_eq!(
            full(
                r#"{"connector":"postgresql","snapshot":"last","lsn":5000,"sequence":"[null,\"5000\"]"}"#
            ),
            (20_000, Ordering::SnapshotRead)
        );
        assert_eq!(
            full(
                r#"{"connector":"postgresql","snapshot":"false","lsn":4000,"sequence":"[null,\"4000\"]"}"#
            ),
            (16_003, Ordering::AfterSnapshot)
        );
        let next_streamed = full(
            r#"{"connector":"postgresql","snapshot":"false","lsn":4100,"sequence":"[\"5200\",\"4100\"]"}"#,
        );
        assert_eq!(next_streamed, (20_801, Ordering::Plain));
        // A fresh snapshot taken later (offsets lost): its reads are above every change
        // before it, so they overwrite what changed in between.
        assert!(
            full(r#"{"connector":"postgresql","snapshot":"last","lsn":12000,"sequence":"[null,\"12000\"]"}"#).0
                > next_streamed.0
        );
        // A snapshot taken while Debezium had offsets (blocking, or after a restart): its
        // reads carry the last commit, and earlier changes stay below them.
        assert_eq!(
            full(
                r#"{"connector":"postgresql","snapshot":"last","lsn":9000,"sequence":"[\"8800\",\"9000\"]"}"#
            ),
            (35_200, Ordering::Plain)
        );
        // An incremental snapshot read (no lsn) at the window's close, and the changes of
        // transactions committed before and after it.
        let chunk = pos(
            r#"{"connector":"postgresql","snapshot":"incremental","sequence":"[\"7000\",\"7100\"]"}"#,
        );
        let before = pos(
            r#"{"connector":"postgresql","snapshot":"false","lsn":6900,"sequence":"[\"6800\",\"6900\"]"}"#,
        );
        let after = pos(
            r#"{"connector":"postgresql","snapshot":"false","lsn":7050,"sequence":"[\"7300\",\"7050\"]"}"#,
        );
        assert!(
            before < chunk && chunk < after,
            "{before:?} {chunk:?} {after:?}"
        );
        assert!(pos(r#"{"connector":"postgresql","sequence":"nope"}"#).is_err());
    }

    #[test]
    fn mysql_versions_grow_over_rows_events_compressed_transactions_and_binlog_rollover() {
        let v = |file: &str, p: u64, r: u64| {
            pos(&format!(
                r#"{{"connector":"mysql","file":"{file}","pos":{p},"row":{r}}}"#
            ))
            .unwrap()
            .unwrap()
        };
        // Rows of one rows event share a version; the next event is above them.
        assert_eq!(
            v("mysql-bin.000003", 1442, 0),
            v("mysql-bin.000003", 1442, 1)
        );
        assert!(v("mysql-bin.000003", 1442, 1) < v("mysql-bin.000003", 1831, 0));
        assert!(v("mysql-bin.000003", 900_000_000, 5) < v("mysql-bin.000004", 4, 0));
        // A compressed transaction of 1 000 rows in two rows events, in a payload event of
        // 100 bytes at 5 000: every row has `pos` 5 000, `row` from 0 in each rows event. Its
        // rows never go down, and the next transaction is above all of them.
        let payload = [(5_000, 0), (5_000, 999), (5_000, 0), (5_000, 3)];
        for w in payload.windows(2) {
            assert!(
                v("b.3", w[0].0, w[0].1) <= v("b.3", w[1].0, w[1].1),
                "{w:?}"
            );
        }
        assert!(v("b.3", 5_000, 999) < v("b.3", 5_100, 0));
        assert_eq!(v("mysql-bin.000003", 392, 0), 3 << 40 | 392);
        assert!(pos(r#"{"connector":"mariadb","file":"bin","pos":4}"#).is_err());
        assert!(pos(r#"{"connector":"mariadb","file":"bin.","pos":4}"#).is_err());
        assert_eq!(v("host.bin.000007", 4, 0), 7 << 40 | 4);
        assert_eq!(v("77", 4, 0), 77 << 40 | 4);
        // A position past what a version holds is an error.
        let past = r#"{"connector":"mysql","file":"b.3","pos":1099511627776,"row":0}"#;
        assert!(pos(past).unwrap_err().contains("does not fit"));
        let huge_row = r#"{"connector":"mysql","file":"b.3","pos":5,"row":18446744073709551615}"#;
        assert_eq!(pos(huge_row), Ok(Some(3 << 40 | 5)));
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
        // SQL Server: by commit_lsn first; a snapshot read carries the snapshot's highest LSN.
        let snapshot = pos(
            r#"{"connector":"sqlserver","snapshot":"true","commit_lsn":"00000027:00000760:0001"}"#,
        );
        let open_during_snapshot = pos(
            r#"{"connector":"sqlserver","change_lsn":"00000027:00000758:0005","commit_lsn":"00000027:00000768:0007"}"#,
        );
        assert!(snapshot.unwrap().unwrap() < open_during_snapshot.unwrap().unwrap());
        // Oracle: commit_scn for streamed changes, scn (the snapshot's) for snapshot reads.
        assert_eq!(
            pos(r#"{"connector":"oracle","snapshot":"true","scn":"2122184"}"#),
            Ok(Some(2_122_184))
        );
        assert_eq!(
            pos(r#"{"connector":"oracle","scn":"2122100","commit_scn":"2122190"}"#),
            Ok(Some(2_122_190))
        );
        assert_eq!(
            pos(r#"{"connector":"mongodb","ts_ms":1558965508000,"ord":3}"#),
            Ok(Some(1_558_965_508 << 31 | 3))
        );
        // Past 2038 (2^31 seconds) and up to 2106.
        let y2100 = 4_102_444_800_000i64;
        assert_eq!(
            pos(&format!(
                r#"{{"connector":"mongodb","ts_ms":{y2100},"ord":7}}"#
            )),
            Ok(Some((4_102_444_800u64 << 31) | 7))
        );
        assert!(pos(r#"{"connector":"mongodb","ts_ms":1558965508000,"ord":2147483648}"#).is_err());
        // Seconds past 2^32 would shift out of the version (and wrap past 2^64 into a small
        // one): refused.
        assert!(pos(r#"{"connector":"mongodb","ts_ms":8589934593000,"ord":5}"#).is_err());
        assert!(pos(r#"{"connector":"mongodb","ts_ms":4294967295999,"ord":5}"#).is_ok());
        // Snapshot reads (ord -1) lose to every streamed change.
        assert_eq!(
            pos(r#"{"connector":"mongodb","snapshot":"true","ts_ms":1558965508000,"ord":-1}"#),
            Ok(Some(0))
        );
    }

    #[test]
    fn unknown_connectors_have_no_position() {
        assert_eq!(pos(r#"{"connector":"db2","change_lsn":"x"}"#), Ok(None));
        assert_eq!(pos(r#"{"ts_ms":1}"#), Ok(None));
    }
}

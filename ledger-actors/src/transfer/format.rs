//! The JSON Lines formats: the export file (header line, one line per record, end line) and
//! the `ledger append` input line. `docs/OPERATIONS.md` ("Export format") documents both for
//! other tools.
//!
//! Every line is parsed strictly: duplicate keys anywhere are refused (parsers disagree on
//! which one wins), unknown keys are refused (a misspelt `paylod` must not pass as a missing
//! optional field), and each problem is a [`FieldError`] naming the field.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, SecondsFormat, Utc};
use ledger_entities::{LedgerRecord, NewRecord, Payload, RecordHash};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

/// The key that marks the header line; its value is the format version.
pub const HEADER_KEY: &str = "avl_export";
/// The key of the end line.
pub const END_KEY: &str = "avl_export_end";
/// The export format version this build writes and reads.
pub const FORMAT_VERSION: u64 = 1;

/// The keys of a record line, in the order they are written.
pub const RECORD_FIELDS: [&str; 11] = [
    "rid",
    "anchor_id",
    "slot",
    "kind",
    "ts",
    "prev_hash",
    "hash",
    "payload",
    "sig",
    "producer",
    "version",
];

/// The keys of an append line (`rid` and `sig` optional).
pub const APPEND_FIELDS: [&str; 7] = [
    "anchor_id",
    "slot",
    "kind",
    "payload",
    "producer",
    "rid",
    "sig",
];

/// What is wrong with one line: the field (a key, or a JSON pointer into the payload such
/// as `payload/a/0`; `None` when the line as a whole is wrong) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field, if the problem is in one.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    fn at(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.to_owned()),
            message: message.into(),
        }
    }

    /// An error about the whole line.
    pub fn whole_line(message: impl Into<String>) -> Self {
        Self {
            field: None,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl From<ledger_entities::Error> for FieldError {
    fn from(e: ledger_entities::Error) -> Self {
        Self {
            field: e.field().map(str::to_owned),
            message: e.to_string(),
        }
    }
}

/// `ts` as written in every line: RFC 3339, UTC, always six fractional digits
/// (`2026-11-25T21:47:46.123456Z`).
pub fn format_ts(ts: DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses an RFC 3339 timestamp (any offset), refusing digits below the microsecond: the
/// ledger keeps microseconds, so such a value could not be stored as written.
pub fn parse_ts(text: &str) -> Result<DateTime<Utc>, String> {
    let ts = DateTime::parse_from_rfc3339(text)
        .map_err(|e| format!("{text:?} is not an RFC 3339 timestamp ({e})"))?
        .with_timezone(&Utc);
    if ts.timestamp_subsec_nanos() % 1000 != 0 {
        return Err(format!(
            "{text:?} has digits below the microsecond, which the ledger does not keep"
        ));
    }
    Ok(ts)
}

/// What [`read_line`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineRead {
    /// A line is in the buffer (without its `\n`).
    Line,
    /// A line longer than the limit was read and discarded; its length in bytes.
    TooLong(usize),
    /// The input is exhausted.
    Eof,
}

/// Reads one `\n`-terminated line (the last may lack it) into `buf`, holding at most `max`
/// bytes of it: a longer line is consumed up to its end but not kept, so a hostile input
/// cannot make the reader's memory grow beyond `max`.
pub async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    input: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<LineRead> {
    use tokio::io::AsyncBufReadExt as _;
    buf.clear();
    let mut len = 0usize;
    let mut any = false;
    loop {
        let available = input.fill_buf().await?;
        if available.is_empty() {
            return Ok(match (any, len > max) {
                (false, _) => LineRead::Eof,
                (true, false) => LineRead::Line,
                (true, true) => LineRead::TooLong(len),
            });
        }
        any = true;
        let (chunk, used, done) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        len += chunk.len();
        if len <= max {
            buf.extend_from_slice(chunk);
        } else {
            buf.clear();
        }
        input.consume(used);
        if done {
            return Ok(if len > max {
                LineRead::TooLong(len)
            } else {
                LineRead::Line
            });
        }
    }
}

/// The header line of an export.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Header {
    /// The format version ([`FORMAT_VERSION`]), under the key [`HEADER_KEY`].
    pub avl_export: u64,
    /// When the export started (RFC 3339, microseconds).
    pub exported_at: String,
    /// What wrote the file, e.g. `avl-ledger 0.1.0`.
    pub generator: String,
    /// The `--anchor` filter, if any.
    pub anchor: Option<Uuid>,
    /// The `--since` filter (RFC 3339), if any.
    pub since: Option<String>,
}

/// The last line of an export: how many record lines precede it. A file without it was cut
/// short.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct End {
    /// Record lines in the file.
    pub records: u64,
}

/// One record line, borrowed from the record it describes.
#[derive(Serialize)]
struct RecordLine<'a> {
    rid: Uuid,
    anchor_id: Uuid,
    slot: &'a str,
    kind: &'a str,
    ts: String,
    prev_hash: Option<RecordHash>,
    hash: RecordHash,
    payload: Value,
    sig: Option<String>,
    producer: &'a str,
    version: &'a str,
}

/// Appends `record` as one JSON line (with its `\n`) to `out`.
pub fn write_record(out: &mut Vec<u8>, record: &LedgerRecord) -> Result<(), serde_json::Error> {
    let line = RecordLine {
        rid: record.rid,
        anchor_id: record.anchor_id,
        slot: &record.slot,
        kind: &record.kind,
        ts: format_ts(record.ts),
        prev_hash: record.prev_hash,
        hash: record.hash,
        payload: record.payload.to_value(),
        sig: record.sig.as_ref().map(|s| BASE64.encode(s)),
        producer: &record.producer,
        version: &record.version,
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.push(b'\n');
    Ok(())
}

/// What a line of an export is.
#[derive(Debug)]
pub enum Line {
    /// The header, with its format version.
    Header(u64),
    /// A record.
    Record(Box<LedgerRecord>),
    /// The end line, with its record count.
    End(u64),
}

/// Parses one line of an export. A record line's fields are checked for type and shape
/// only; whether the record hashes and links is the importer's business.
pub fn parse_export_line(text: &str) -> Result<Line, (FieldError, Option<Uuid>)> {
    let mut map = parse_object(text).map_err(|e| (e, None))?;
    if let Some(v) = map.get(HEADER_KEY) {
        return v
            .as_u64()
            .map(Line::Header)
            .ok_or_else(|| (FieldError::at(HEADER_KEY, "must be a version number"), None));
    }
    if let Some(v) = map.get(END_KEY) {
        return v
            .get("records")
            .and_then(Value::as_u64)
            .map(Line::End)
            .ok_or_else(|| {
                (
                    FieldError::at(END_KEY, "must be {\"records\": <count>}"),
                    None,
                )
            });
    }
    // The rid first, so that every later error can name the record.
    let rid = take_uuid(&mut map, "rid").map_err(|e| (e, None))?;
    record_fields(rid, map)
        .map(|r| Line::Record(Box::new(r)))
        .map_err(|e| (e, Some(rid)))
}

fn record_fields(rid: Uuid, mut map: Map<String, Value>) -> Result<LedgerRecord, FieldError> {
    refuse_unknown(&map, &RECORD_FIELDS)?;
    let anchor_id = take_uuid(&mut map, "anchor_id")?;
    let slot = take_string(&mut map, "slot")?;
    let kind = take_string(&mut map, "kind")?;
    let ts_text = take_string(&mut map, "ts")?;
    let ts = parse_ts(&ts_text).map_err(|m| FieldError::at("ts", m))?;
    let prev_hash = take_optional_string(&mut map, "prev_hash")?
        .map(|text| parse_hash("prev_hash", &text))
        .transpose()?;
    let hash = parse_hash("hash", &take_string(&mut map, "hash")?)?;
    let payload = map
        .remove("payload")
        .ok_or_else(|| FieldError::at("payload", "missing"))?;
    // Canonicalized here (the record keeps only its canonical text); the importer then
    // validates it and checks that the hash covers exactly these bytes.
    let payload =
        Payload::from_value(&payload).map_err(|e| FieldError::at("payload", e.to_string()))?;
    let sig = take_sig(&mut map)?;
    let producer = take_string(&mut map, "producer")?;
    let version = take_string(&mut map, "version")?;
    Ok(LedgerRecord {
        rid,
        anchor_id,
        slot,
        kind,
        ts,
        prev_hash,
        hash,
        payload,
        sig,
        producer,
        version,
    })
}

/// Parses one `ledger append` line: `anchor_id`, `slot`, `kind`, `payload`, `producer`, and
/// optionally `rid` (makes the append idempotent) and `sig` (base64).
pub fn parse_append_line(text: &str) -> Result<NewRecord, FieldError> {
    let mut map = parse_object(text)?;
    refuse_unknown(&map, &APPEND_FIELDS)?;
    let anchor_id = take_uuid(&mut map, "anchor_id")?;
    new_record_fields(map, anchor_id)
}

/// The keys of a batch line of `ledger append` (`expected_head` optional).
pub const BATCH_FIELDS: [&str; 3] = ["anchor_id", "records", "expected_head"];

/// The keys of a record inside a batch line (`anchor_id`, `rid` and `sig` optional; an
/// `anchor_id` must be the line's).
pub const BATCH_RECORD_FIELDS: [&str; 7] = APPEND_FIELDS;

/// A `ledger append` input line: one record, or an atomic batch.
#[derive(Debug)]
pub enum AppendLine {
    /// A single-record line ([`parse_append_line`]).
    One(NewRecord),
    /// `{"anchor_id": …, "records": [ … ], "expected_head": "<hash>" | null}`: appended as
    /// one atomic batch (`Ledger::append_all`); `expected_head` absent is
    /// [`crate::Expect::Any`], `null` is [`crate::Expect::NoStream`].
    Batch {
        /// The anchor.
        anchor_id: Uuid,
        /// The records, in chain order.
        records: Vec<NewRecord>,
        /// What the anchor's head must be.
        expect: crate::Expect,
    },
}

/// Parses one `ledger append` line: a batch line when it has the key `records`, else a
/// single-record line. Errors name the field, inside a batch as `records/<index>/<field>`.
pub fn parse_append_input(text: &str) -> Result<AppendLine, FieldError> {
    let mut map = parse_object(text)?;
    if !map.contains_key("records") {
        refuse_unknown(&map, &APPEND_FIELDS)?;
        let anchor_id = take_uuid(&mut map, "anchor_id")?;
        return new_record_fields(map, anchor_id).map(AppendLine::One);
    }
    refuse_unknown(&map, &BATCH_FIELDS)?;
    let anchor_id = take_uuid(&mut map, "anchor_id")?;
    let expect = match map.remove("expected_head") {
        None => crate::Expect::Any,
        Some(Value::Null) => crate::Expect::NoStream,
        Some(Value::String(h)) => crate::Expect::Head(parse_hash("expected_head", &h)?),
        Some(other) => {
            return Err(FieldError::at(
                "expected_head",
                format!("must be a record hash or null, found {}", type_name(&other)),
            ));
        }
    };
    let items = match map.remove("records") {
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(FieldError::at(
                "records",
                format!("must be an array of records, found {}", type_name(&other)),
            ));
        }
        None => return Err(FieldError::at("records", "missing")),
    };
    if items.is_empty() {
        return Err(FieldError::at("records", "must hold at least one record"));
    }
    let mut records = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let inside = |e: FieldError| FieldError {
            field: Some(match e.field {
                Some(f) => format!("records/{i}/{f}"),
                None => format!("records/{i}"),
            }),
            message: e.message,
        };
        let Value::Object(mut fields) = item else {
            return Err(inside(FieldError::whole_line("must be a JSON object")));
        };
        refuse_unknown(&fields, &BATCH_RECORD_FIELDS).map_err(inside)?;
        if fields.contains_key("anchor_id") {
            let own = take_uuid(&mut fields, "anchor_id").map_err(inside)?;
            if own != anchor_id {
                return Err(inside(FieldError::at(
                    "anchor_id",
                    format!("is {own}, the line's anchor_id is {anchor_id}"),
                )));
            }
        }
        records.push(new_record_fields(fields, anchor_id).map_err(inside)?);
    }
    Ok(AppendLine::Batch {
        anchor_id,
        records,
        expect,
    })
}

/// The record fields of an append line (all but `anchor_id`, already taken).
fn new_record_fields(
    mut map: Map<String, Value>,
    anchor_id: Uuid,
) -> Result<NewRecord, FieldError> {
    let slot = take_string(&mut map, "slot")?;
    let kind = take_string(&mut map, "kind")?;
    let payload = map
        .remove("payload")
        .ok_or_else(|| FieldError::at("payload", "missing"))?;
    let producer = take_string(&mut map, "producer")?;
    let rid = match map.remove("rid") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            Uuid::parse_str(&s).map_err(|e| FieldError::at("rid", format!("not a UUID: {e}")))?,
        ),
        Some(_) => return Err(FieldError::at("rid", "must be a UUID string")),
    };
    let sig = take_sig(&mut map)?;
    Ok(NewRecord {
        anchor_id,
        slot,
        kind,
        payload,
        producer,
        rid,
        sig,
    })
}

/// A line as a JSON object, duplicate keys refused.
fn parse_object(text: &str) -> Result<Map<String, Value>, FieldError> {
    match ledger_entities::validate::parse_json_strict(text, "") {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(FieldError::whole_line("the line is not a JSON object")),
        Err(ledger_entities::Error::DuplicateKey { field, key }) => {
            let place = if field.is_empty() {
                key.clone()
            } else {
                field.trim_start_matches('/').to_owned()
            };
            Err(FieldError::at(&place, format!("has the key {key:?} twice")))
        }
        Err(ledger_entities::Error::InvalidJson(e)) => {
            Err(FieldError::whole_line(format!("not valid JSON: {e}")))
        }
        // Errors inside the line (an inexact number, ...) name a pointer below the line's root.
        Err(e) => Err(FieldError {
            field: e.field().map(|f| f.trim_start_matches('/').to_owned()),
            message: e.to_string(),
        }),
    }
}

fn refuse_unknown(map: &Map<String, Value>, known: &[&str]) -> Result<(), FieldError> {
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(FieldError::at(
            k,
            format!("unknown field; expected only {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

fn parse_hash(field: &'static str, text: &str) -> Result<RecordHash, FieldError> {
    RecordHash::parse(field, text).map_err(|e| FieldError::at(field, e.to_string()))
}

fn take_string(map: &mut Map<String, Value>, field: &str) -> Result<String, FieldError> {
    match map.remove(field) {
        Some(Value::String(s)) => Ok(s),
        None => Err(FieldError::at(field, "missing")),
        Some(other) => Err(FieldError::at(
            field,
            format!("must be a string, found {}", type_name(&other)),
        )),
    }
}

fn take_optional_string(
    map: &mut Map<String, Value>,
    field: &str,
) -> Result<Option<String>, FieldError> {
    match map.remove(field) {
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Null) => Ok(None),
        None => Err(FieldError::at(field, "missing (null when absent)")),
        Some(other) => Err(FieldError::at(
            field,
            format!("must be a string or null, found {}", type_name(&other)),
        )),
    }
}

fn take_uuid(map: &mut Map<String, Value>, field: &str) -> Result<Uuid, FieldError> {
    let text = take_string(map, field)?;
    Uuid::parse_str(&text).map_err(|e| FieldError::at(field, format!("not a UUID: {e}")))
}

fn take_sig(map: &mut Map<String, Value>) -> Result<Option<Vec<u8>>, FieldError> {
    match map.remove("sig") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => BASE64
            .decode(s.as_bytes())
            .map(Some)
            .map_err(|e| FieldError::at("sig", format!("not standard base64: {e}"))),
        Some(other) => Err(FieldError::at(
            "sig",
            format!(
                "must be a base64 string or null, found {}",
                type_name(&other)
            ),
        )),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record() -> LedgerRecord {
        let new = NewRecord::new(Uuid::from_u128(2), "s", "k", json!({"b": [1, 2.5]}), "p")
            .with_sig(vec![0, 255, 7]);
        LedgerRecord::seal(new, Uuid::from_u128(1), micros(1_764_000_000_123_456), None)
            .expect("seals")
    }

    fn micros(us: i64) -> DateTime<Utc> {
        ledger_entities::record::micros_to_datetime(us)
    }

    /// A record written as a line parses back to the same record, every field included.
    #[test]
    fn record_line_round_trips() {
        let r = record();
        let mut buf = Vec::new();
        write_record(&mut buf, &r).expect("writes");
        let text = std::str::from_utf8(&buf).expect("utf-8");
        assert!(text.ends_with('\n') && !text[..text.len() - 1].contains('\n'));
        assert!(
            text.contains("\"ts\":\"2025-11-24T16:00:00.123456Z\""),
            "{text}"
        );
        assert!(text.contains("\"sig\":\"AP8H\""), "{text}");
        match parse_export_line(text.trim_end()).expect("parses") {
            Line::Record(back) => assert_eq!(*back, r),
            other => panic!("{other:?}"),
        }
    }

    /// Timestamps are written with six digits even on a whole second, and digits below the
    /// microsecond are refused on input.
    #[test]
    fn timestamps_keep_microseconds() {
        assert_eq!(
            format_ts(micros(1_764_000_000_000_000)),
            "2025-11-24T16:00:00.000000Z"
        );
        assert_eq!(
            parse_ts("2025-11-24T17:00:00.000001+01:00").map(|t| t.timestamp_micros()),
            Ok(1_764_000_000_000_001)
        );
        assert!(parse_ts("2025-11-24T16:00:00.0000001Z").is_err());
        assert!(parse_ts("yesterday").is_err());
    }

    /// Each malformed field is named: wrong type, missing, bad UUID, bad base64, unknown
    /// key, duplicate key.
    #[test]
    fn batch_line_parses_strictly_naming_the_field() {
        let a = Uuid::new_v4();
        let rec = |i: u64| json!({"slot": "s", "kind": "k", "payload": {"i": i}, "producer": "p"});
        let line =
            json!({"anchor_id": a.to_string(), "records": [rec(0), rec(1)], "expected_head": null});
        match parse_append_input(&line.to_string()).expect("a batch line") {
            AppendLine::Batch {
                anchor_id,
                records,
                expect,
            } => {
                assert_eq!(anchor_id, a);
                assert_eq!(records.len(), 2);
                assert!(records.iter().all(|r| r.anchor_id == a));
                assert_eq!(expect, crate::Expect::NoStream);
            }
            other => panic!("expected a batch, got {other:?}"),
        }
        let any = json!({"anchor_id": a.to_string(), "records": [rec(0)]});
        assert!(matches!(
            parse_append_input(&any.to_string()).expect("a batch line"),
            AppendLine::Batch {
                expect: crate::Expect::Any,
                ..
            }
        ));
        let single = json!({"anchor_id": a.to_string(), "slot": "s", "kind": "k", "payload": 1, "producer": "p"});
        assert!(matches!(
            parse_append_input(&single.to_string()).expect("a record line"),
            AppendLine::One(_)
        ));
        let field_of = |v: Value| {
            parse_append_input(&v.to_string())
                .expect_err("refused")
                .field
        };
        let mut bad = rec(1);
        bad.as_object_mut().expect("an object").remove("kind");
        assert_eq!(
            field_of(json!({"anchor_id": a.to_string(), "records": [rec(0), bad]})).as_deref(),
            Some("records/1/kind")
        );
        assert_eq!(
            field_of(
                json!({"anchor_id": a.to_string(), "records": [rec(0)], "expected_head": "zz"})
            )
            .as_deref(),
            Some("expected_head")
        );
        assert_eq!(
            field_of(json!({"anchor_id": a.to_string(), "records": []})).as_deref(),
            Some("records")
        );
        assert_eq!(
            field_of(json!({"anchor_id": a.to_string(), "records": [rec(0)], "extra": 1}))
                .as_deref(),
            Some("extra")
        );
        let mut other_anchor = rec(0);
        other_anchor["anchor_id"] = json!(Uuid::new_v4().to_string());
        assert_eq!(
            field_of(json!({"anchor_id": a.to_string(), "records": [other_anchor]})).as_deref(),
            Some("records/0/anchor_id")
        );
        assert_eq!(
            field_of(json!({"anchor_id": a.to_string(), "records": [1]})).as_deref(),
            Some("records/0")
        );
    }

    #[test]
    fn append_line_errors_name_the_field() {
        let anchor = Uuid::from_u128(5);
        let ok =
            json!({"anchor_id": anchor, "slot": "s", "kind": "k", "payload": {}, "producer": "p"});
        assert!(parse_append_line(&ok.to_string()).is_ok());
        let field_of = |text: &str| parse_append_line(text).expect_err(text).field;
        let mut bad = ok.clone();
        bad["slot"] = json!(3);
        assert_eq!(field_of(&bad.to_string()).as_deref(), Some("slot"));
        let mut bad = ok.clone();
        bad["anchor_id"] = json!("nope");
        assert_eq!(field_of(&bad.to_string()).as_deref(), Some("anchor_id"));
        let mut bad = ok.clone();
        bad["sig"] = json!("!!");
        assert_eq!(field_of(&bad.to_string()).as_deref(), Some("sig"));
        let mut bad = ok.clone();
        bad["paylod"] = json!(1);
        assert_eq!(field_of(&bad.to_string()).as_deref(), Some("paylod"));
        let mut bad = ok.clone();
        bad.as_object_mut().expect("object").remove("producer");
        assert_eq!(field_of(&bad.to_string()).as_deref(), Some("producer"));
        let dup = format!(
            r#"{{"anchor_id":"{anchor}","slot":"s","kind":"k","payload":{{"a":1,"a":2}},"producer":"p"}}"#
        );
        assert_eq!(field_of(&dup).as_deref(), Some("payload"));
        assert_eq!(field_of("[1]"), None);
        assert_eq!(field_of("{"), None);
    }

    /// Lines are split at `\n` (the last one may lack it); a line over the limit is
    /// consumed and reported with its length, not kept, and the next line reads normally.
    #[tokio::test]
    async fn read_line_bounds_memory() {
        let input = b"short\nxxxxxxxxxxxxxxxxxxxx\n\nlast".to_vec();
        let mut buf = Vec::new();
        let mut reader = tokio::io::BufReader::with_capacity(4, &input[..]);
        let mut lines = Vec::new();
        loop {
            match read_line(&mut reader, &mut buf, 10).await.expect("reads") {
                LineRead::Eof => break,
                LineRead::Line => lines.push(String::from_utf8(buf.clone()).expect("utf-8")),
                LineRead::TooLong(n) => {
                    assert!(buf.len() <= 10);
                    lines.push(format!("<{n}>"));
                }
            }
        }
        assert_eq!(lines, ["short", "<20>", "", "last"]);
    }

    /// Header and end lines are recognised by their keys.
    #[test]
    fn header_and_end_lines() {
        let header = Header {
            avl_export: FORMAT_VERSION,
            exported_at: format_ts(micros(0)),
            generator: "test".into(),
            anchor: None,
            since: None,
        };
        let text = serde_json::to_string(&header).expect("serializes");
        assert!(matches!(parse_export_line(&text), Ok(Line::Header(1))));
        let end = serde_json::to_string(&json!({ END_KEY: End { records: 7 } })).expect("json");
        assert!(matches!(parse_export_line(&end), Ok(Line::End(7))));
    }
}

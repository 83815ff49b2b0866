//! Validation of host input, run before anything is hashed or stored. Each failure is a
//! distinct [`Error`] naming the field, and a refused record changes nothing.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::Error;
use crate::hash::canonical_payload;
use crate::record::{LedgerRecord, NewRecord, Payload};

/// Maximum length in bytes of `slot`, `kind` and `producer`.
pub const MAX_LABEL_BYTES: usize = 256;
/// Maximum length in bytes of a detached signature.
pub const MAX_SIG_BYTES: usize = 4096;
/// Largest integer magnitude below which every integer is an exact IEEE-754 double (and so
/// hashed exactly by JCS): 2^53 − 1. Larger integers are accepted only when a double holds
/// them exactly (the number rule, see [`number_is_exact`]).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
/// Default maximum canonical payload size: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 1 << 20;
/// Default maximum nesting depth of arrays and objects in a payload.
pub const DEFAULT_MAX_DEPTH: usize = 64;

/// Limits applied by [`validate_new_record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum size of the canonical (JCS) payload in bytes.
    pub max_payload_bytes: usize,
    /// Maximum nesting depth of arrays/objects.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload_bytes: DEFAULT_MAX_PAYLOAD_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// Checks a host-supplied record and returns its payload in canonical (JCS) form, ready to
/// hash. The checks, in order: labels (empty, too long, NUL), signature size, payload depth
/// (iterative, [`check_depth`]), payload walk (NUL in keys/strings, numbers JCS cannot
/// record exactly), canonical size.
pub fn validate_new_record(new: &NewRecord, limits: &Limits) -> Result<Payload, Error> {
    check_label("slot", &new.slot)?;
    check_label("kind", &new.kind)?;
    check_label("producer", &new.producer)?;
    check_sig(new.sig.as_deref())?;
    check_payload(&new.payload, limits)
}

/// The checks of [`validate_new_record`] applied to a stored (or imported) record's fields,
/// returning its canonical payload: what an importer runs before trusting a record that did
/// not come through an append.
pub fn validate_record(record: &LedgerRecord, limits: &Limits) -> Result<Payload, Error> {
    check_label("slot", &record.slot)?;
    check_label("kind", &record.kind)?;
    check_label("producer", &record.producer)?;
    check_sig(record.sig.as_deref())?;
    check_payload(&record.payload.to_value(), limits)
}

fn check_sig(sig: Option<&[u8]>) -> Result<(), Error> {
    if let Some(sig) = sig
        && sig.len() > MAX_SIG_BYTES
    {
        return Err(Error::FieldTooLong {
            field: "sig",
            len: sig.len(),
            max: MAX_SIG_BYTES,
        });
    }
    Ok(())
}

/// Depth (iterative), the payload walk and the canonical size check; returns the canonical
/// bytes.
fn check_payload(payload: &Value, limits: &Limits) -> Result<Payload, Error> {
    check_depth(payload, limits.max_depth)?;
    let mut path = String::from("payload");
    check_value(payload, &mut path, 0, limits.max_depth)?;
    let canonical = canonical_payload(payload)?;
    if canonical.len() > limits.max_payload_bytes {
        return Err(Error::PayloadTooLarge {
            size: canonical.len(),
            limit: limits.max_payload_bytes,
        });
    }
    Payload::from_canonical(canonical)
}

fn check_label(field: &'static str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::EmptyField { field });
    }
    if value.len() > MAX_LABEL_BYTES {
        return Err(Error::FieldTooLong {
            field,
            len: value.len(),
            max: MAX_LABEL_BYTES,
        });
    }
    if value.contains('\0') {
        return Err(Error::NulCharacter {
            field: field.to_owned(),
        });
    }
    Ok(())
}

/// Walks the payload. `path` is a JSON pointer (prefixed `payload`) kept in one buffer and
/// truncated on the way back up, so the walk allocates only when it reports an error.
fn check_value(v: &Value, path: &mut String, depth: usize, max_depth: usize) -> Result<(), Error> {
    match v {
        Value::Null | Value::Bool(_) => Ok(()),
        Value::Number(n) => {
            let exact = match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => u <= MAX_SAFE_INTEGER || (u as f64) as u128 == u128::from(u),
                (None, Some(i)) => {
                    i.unsigned_abs() <= MAX_SAFE_INTEGER || (i as f64) as i128 == i128::from(i)
                }
                // serde_json holds only finite doubles; JCS writes every one of them exactly.
                _ => true,
            };
            if !exact {
                return Err(Error::InexactNumber {
                    field: path.clone(),
                    value: n.to_string(),
                    hashed_as: hashed_as(n),
                });
            }
            Ok(())
        }
        Value::String(s) => {
            if s.contains('\0') {
                return Err(Error::NulCharacter {
                    field: path.clone(),
                });
            }
            Ok(())
        }
        Value::Array(items) => {
            if depth >= max_depth {
                return Err(Error::NestingTooDeep {
                    field: path.clone(),
                    limit: max_depth,
                });
            }
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                check_value(item, path, depth + 1, max_depth)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Object(map) => {
            if depth >= max_depth {
                return Err(Error::NestingTooDeep {
                    field: path.clone(),
                    limit: max_depth,
                });
            }
            for (key, item) in map {
                let len = path.len();
                path.push('/');
                // JSON pointer escaping (RFC 6901) keeps the reported path unambiguous.
                path.push_str(&key.replace('~', "~0").replace('/', "~1"));
                if key.contains('\0') {
                    return Err(Error::NulCharacter {
                        field: format!("{path} (key)"),
                    });
                }
                check_value(item, path, depth + 1, max_depth)?;
                path.truncate(len);
            }
            Ok(())
        }
    }
}

/// What JCS writes for `n`.
fn hashed_as(n: &serde_json::Number) -> String {
    canonical_payload(&Value::Number(n.clone()))
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_else(|| "nothing (JCS refuses it)".to_owned())
}

/// Refuses a payload nesting arrays/objects deeper than `max_depth`, without recursion (so a
/// hostile payload nested 100,000 levels deep is refused on any stack). The error names the
/// JSON pointer where the limit is crossed.
pub fn check_depth(payload: &Value, max_depth: usize) -> Result<(), Error> {
    enum Children<'a> {
        Array(std::iter::Enumerate<std::slice::Iter<'a, Value>>),
        Object(serde_json::map::Iter<'a>),
    }
    fn children(v: &Value) -> Option<Children<'_>> {
        match v {
            Value::Array(a) => Some(Children::Array(a.iter().enumerate())),
            Value::Object(m) => Some(Children::Object(m.iter())),
            _ => None,
        }
    }
    let Some(root) = children(payload) else {
        return Ok(());
    };
    if max_depth == 0 {
        return Err(Error::NestingTooDeep {
            field: "payload".into(),
            limit: max_depth,
        });
    }
    // One open container per level, with the path segment that led to it.
    let mut stack: Vec<(Children<'_>, String)> = vec![(root, String::new())];
    while let Some((top, _)) = stack.last_mut() {
        let next = match top {
            Children::Array(it) => it.next().map(|(i, v)| (i.to_string(), v)),
            Children::Object(it) => it
                .next()
                .map(|(k, v)| (k.replace('~', "~0").replace('/', "~1"), v)),
        };
        let Some((segment, value)) = next else {
            stack.pop();
            continue;
        };
        if let Some(c) = children(value) {
            if stack.len() >= max_depth {
                let mut field = String::from("payload");
                for (_, seg) in stack.iter().skip(1) {
                    field.push('/');
                    field.push_str(seg);
                }
                field.push('/');
                field.push_str(&segment);
                return Err(Error::NestingTooDeep {
                    field,
                    limit: max_depth,
                });
            }
            stack.push((c, segment));
        }
    }
    Ok(())
}

/// Drops a JSON value without recursion. `serde_json::Value`'s own drop recurses once per
/// level, so dropping a value nested ~15,000 levels deep overflows a thread's stack and
/// aborts the process; the ledger disposes of refused payloads through here.
pub fn dispose(value: Value) {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

/// Parses payload text, refusing duplicate object keys (which `serde_json::from_str` would
/// silently resolve to the last one) and numbers the hash cannot record exactly (see
/// [`number_is_exact`]), naming the JSON pointer. Nesting is bounded by serde_json's
/// recursion limit (128). Use it where payloads arrive as text.
pub fn parse_payload(text: &str) -> Result<Value, Error> {
    parse_json_strict(text, "payload")
}

/// Parses any JSON text with the rules of [`parse_payload`] (no duplicate keys, only exact
/// numbers); errors name the place as a JSON pointer below `root` (`""` for a whole
/// document: a field of it is then reported as `/name/...`, and a duplicate top-level key
/// with the field `""`).
pub fn parse_json_strict(text: &str, root: &str) -> Result<Value, Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = StrictValue::new(root.to_owned())
        .deserialize(&mut de)
        .map_err(|e| decode_strict_error(&e))?;
    de.end().map_err(|e| Error::InvalidJson(e.to_string()))?;
    if let Err(e) = check_number_literals(text, root) {
        dispose(value);
        return Err(e);
    }
    Ok(value)
}

/// The number rule: a number written as `literal` is exact when its decimal value equals the
/// value of what JCS writes for it (the shortest form of the nearest IEEE-754 double).
/// `1.0`, `1e21`, `0.1` and `-0` are exact (JCS writes `1`, `1e+21`, `0.1`, `0`);
/// `9007199254740993`, `18446744073709551617` and `0.10000000000000000001` are not.
/// Returns what JCS writes when the number is not exact.
pub fn number_is_exact(literal: &str) -> Result<(), String> {
    let digits = literal.bytes().filter(u8::is_ascii_digit).count();
    if digits <= 15 && !literal.contains(['.', 'e', 'E']) {
        // An integer of at most 15 digits is an exact double.
        return Ok(());
    }
    let Ok(f) = literal.parse::<f64>() else {
        return Err("nothing (not a number)".to_owned());
    };
    let Some(n) = serde_json::Number::from_f64(f) else {
        return Err("nothing (not finite)".to_owned());
    };
    let jcs = hashed_as(&n);
    if decimal_value(literal).is_some() && decimal_value(literal) == decimal_value(&jcs) {
        Ok(())
    } else {
        Err(jcs)
    }
}

/// A decimal number as (negative, significant digits without leading or trailing zeros,
/// power of ten of the last digit); zero is `(false, "", 0)`.
fn decimal_value(text: &str) -> Option<(bool, String, i64)> {
    let (neg, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], body[i + 1..].parse::<i64>().ok()?),
        None => (body, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let all: String = int.chars().chain(frac.chars()).collect();
    let trimmed_start = all.trim_start_matches('0');
    let trimmed = trimmed_start.trim_end_matches('0');
    if trimmed.is_empty() {
        return Some((false, String::new(), 0));
    }
    let trailing = (trimmed_start.len() - trimmed.len()) as i64;
    let power = exp.checked_sub(frac.len() as i64)?.checked_add(trailing)?;
    Some((neg, trimmed.to_owned(), power))
}

/// Walks well-formed JSON text (already parsed once) and applies [`number_is_exact`] to every
/// number literal outside strings, tracking the JSON pointer for the error.
fn check_number_literals(text: &str, root: &str) -> Result<(), Error> {
    enum Frame {
        Array(usize),
        Object { key: String, want_key: bool },
    }
    let bytes = text.as_bytes();
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if let Some(Frame::Object { key, want_key }) = stack.last_mut()
                    && *want_key
                {
                    *key = text
                        .get(start..=i)
                        .and_then(|raw| serde_json::from_str::<String>(raw).ok())
                        .unwrap_or_default();
                }
            }
            b'{' => stack.push(Frame::Object {
                key: String::new(),
                want_key: true,
            }),
            b'[' => stack.push(Frame::Array(0)),
            b'}' | b']' => {
                stack.pop();
            }
            b':' => {
                if let Some(Frame::Object { want_key, .. }) = stack.last_mut() {
                    *want_key = false;
                }
            }
            b',' => match stack.last_mut() {
                Some(Frame::Array(n)) => *n += 1,
                Some(Frame::Object { want_key, .. }) => *want_key = true,
                None => {}
            },
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i + 1 < bytes.len()
                    && matches!(bytes[i + 1], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                let literal = &text[start..=i];
                if let Err(hashed_as) = number_is_exact(literal) {
                    let mut field = String::from(root);
                    for frame in &stack {
                        field.push('/');
                        match frame {
                            Frame::Array(n) => field.push_str(&n.to_string()),
                            Frame::Object { key, .. } => {
                                field.push_str(&key.replace('~', "~0").replace('/', "~1"))
                            }
                        }
                    }
                    return Err(Error::InexactNumber {
                        field,
                        value: literal.to_owned(),
                        hashed_as,
                    });
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Duplicate keys travel through serde's error channel as a tagged message; this turns the
/// tag back into [`Error::DuplicateKey`].
const DUP_TAG: &str = "\u{1}avl-duplicate-key\u{1}";

fn decode_strict_error(e: &serde_json::Error) -> Error {
    let msg = e.to_string();
    if let Some(rest) = msg.strip_prefix(DUP_TAG)
        && let Some((field, tail)) = rest.split_once(DUP_TAG)
    {
        let key = tail.split(DUP_TAG).next().unwrap_or_default();
        return Error::DuplicateKey {
            field: field.to_owned(),
            key: key.to_owned(),
        };
    }
    Error::InvalidJson(msg)
}

struct StrictValue {
    path: String,
}

impl StrictValue {
    fn new(path: String) -> Self {
        Self { path }
    }
}

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) =
            seq.next_element_seed(StrictValue::new(format!("{}/{}", self.path, out.len())))?
        {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "{DUP_TAG}{}{DUP_TAG}{key}{DUP_TAG}",
                    self.path
                )));
            }
            let child = format!(
                "{}/{}",
                self.path,
                key.replace('~', "~0").replace('/', "~1")
            );
            let v = map.next_value_seed(StrictValue::new(child))?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

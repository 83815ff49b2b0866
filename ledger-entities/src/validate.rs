//! Validation of host input, run before anything is hashed or stored. Each failure is a
//! distinct [`Error`] naming the field, and a refused record changes nothing.

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::Error;
use crate::hash::canonical_payload;
use crate::record::{LedgerRecord, NewRecord};

/// Maximum length in bytes of `slot`, `kind` and `producer`.
pub const MAX_LABEL_BYTES: usize = 256;
/// Maximum length in bytes of a detached signature.
pub const MAX_SIG_BYTES: usize = 4096;
/// Largest integer magnitude JCS (IEEE-754 double) represents exactly: 2^53 − 1.
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
/// hash. The checks, in order: labels (empty, too long, NUL), signature size, payload walk
/// (NUL in keys/strings, integers beyond ±(2^53−1), nesting depth), canonical size.
pub fn validate_new_record(new: &NewRecord, limits: &Limits) -> Result<Vec<u8>, Error> {
    check_label("slot", &new.slot)?;
    check_label("kind", &new.kind)?;
    check_label("producer", &new.producer)?;
    check_sig(new.sig.as_deref())?;
    check_payload(&new.payload, limits)
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

/// The payload walk and the canonical size check; returns the canonical bytes.
fn check_payload(payload: &Value, limits: &Limits) -> Result<Vec<u8>, Error> {
    let mut path = String::from("payload");
    check_value(payload, &mut path, 0, limits.max_depth)?;
    let canonical = canonical_payload(payload)?;
    if canonical.len() > limits.max_payload_bytes {
        return Err(Error::PayloadTooLarge {
            size: canonical.len(),
            limit: limits.max_payload_bytes,
        });
    }
    Ok(canonical)
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
            let out_of_range = if let Some(u) = n.as_u64() {
                u > MAX_SAFE_INTEGER
            } else if let Some(i) = n.as_i64() {
                i.unsigned_abs() > MAX_SAFE_INTEGER
            } else {
                // serde_json holds only finite doubles; JCS prints every one of them exactly.
                false
            };
            if out_of_range {
                return Err(Error::IntegerOutOfRange {
                    field: path.clone(),
                    value: n.to_string(),
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

/// Parses payload text, refusing duplicate object keys (which `serde_json::from_str` would
/// silently resolve to the last one). Use it where payloads arrive as text.
pub fn parse_payload(text: &str) -> Result<Value, Error> {
    parse_json_strict(text, "payload")
}

/// Parses any JSON text, refusing duplicate object keys like [`parse_payload`]; errors name
/// the place as a JSON pointer below `root` (`""` for a whole document, so a duplicate
/// top-level key is reported with the field `""`).
pub fn parse_json_strict(text: &str, root: &str) -> Result<Value, Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = StrictValue::new(root.to_owned())
        .deserialize(&mut de)
        .map_err(|e| decode_strict_error(&e))?;
    de.end().map_err(|e| Error::InvalidJson(e.to_string()))?;
    Ok(value)
}

/// The checks of [`validate_new_record`] applied to a stored (or imported) record's fields,
/// returning its canonical payload: what an importer runs before trusting a record that did
/// not come through an append.
pub fn validate_record(record: &LedgerRecord, limits: &Limits) -> Result<Vec<u8>, Error> {
    check_label("slot", &record.slot)?;
    check_label("kind", &record.kind)?;
    check_label("producer", &record.producer)?;
    check_sig(record.sig.as_deref())?;
    check_payload(&record.payload, limits)
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

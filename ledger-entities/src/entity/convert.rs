//! Conversions between the record model ([`LedgerRecord`]) and `ledger_records` rows.
//!
//! Writing is infallible. Reading fails when `producer` or `version` is NULL: the schema
//! allows NULL there, but the ledger always writes both, and both are covered by the record
//! hash, so a NULL means the row did not come from the ledger. Inventing a value (an empty
//! producer, the column default `'v1'`) would hide that from verification; the typed error
//! reports it instead.
//!
//! No value is normalised on the way in: `prev_hash`/`hash` must be exactly 64 lowercase hex
//! digits (a `CHAR(64)` shorter than that comes back space-padded and is reported as
//! [`RowConversionError::Malformed`], never repaired), the payload is canonicalized from the
//! JSONB value (JSONB's key order is irrelevant to the canonical form), and `ts` keeps the
//! microseconds PostgreSQL stored.

use sea_orm::ActiveValue::Set;
use uuid::Uuid;

use super::ledger_records;
use crate::hash::RecordHash;
use crate::record::{LedgerRecord, Payload};

/// A `ledger_records` row that cannot be turned into a [`LedgerRecord`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowConversionError {
    /// A column the ledger always writes is NULL.
    #[error("ledger_records row {rid}: column `{column}` is NULL, but the ledger always writes it")]
    NullColumn {
        /// The row's record id.
        rid: Uuid,
        /// The NULL column.
        column: &'static str,
    },
    /// A column holds a value the record model cannot represent (a hash that is not 64
    /// lowercase hex digits, a payload JCS cannot canonicalize).
    #[error("ledger_records row {rid}: column `{column}`: {reason}")]
    Malformed {
        /// The row's record id.
        rid: Uuid,
        /// The column.
        column: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl From<&LedgerRecord> for ledger_records::ActiveModel {
    /// Every column is `Set`, including `version`, so an insert never relies on the column
    /// default.
    fn from(record: &LedgerRecord) -> Self {
        Self {
            rid: Set(record.rid),
            anchor_id: Set(record.anchor_id),
            slot: Set(record.slot.clone()),
            kind: Set(record.kind.clone()),
            ts: Set(record.ts),
            prev_hash: Set(record.prev_hash.map(|h| h.to_hex())),
            hash: Set(record.hash.to_hex()),
            payload: Set(record.payload.to_value()),
            sig: Set(record.sig.clone()),
            producer: Set(Some(record.producer.clone())),
            version: Set(Some(record.version.clone())),
        }
    }
}

impl TryFrom<ledger_records::Model> for LedgerRecord {
    type Error = RowConversionError;

    fn try_from(row: ledger_records::Model) -> Result<Self, Self::Error> {
        let rid = row.rid;
        let null = |column| RowConversionError::NullColumn { rid, column };
        let producer = row.producer.ok_or_else(|| null("producer"))?;
        let version = row.version.ok_or_else(|| null("version"))?;
        let malformed = |column, e: crate::Error| RowConversionError::Malformed {
            rid,
            column,
            reason: e.to_string(),
        };
        let prev_hash = row
            .prev_hash
            .map(|h| RecordHash::parse("prev_hash", &h))
            .transpose()
            .map_err(|e| malformed("prev_hash", e))?;
        let hash = RecordHash::parse("hash", &row.hash).map_err(|e| malformed("hash", e))?;
        let payload = Payload::from_value(&row.payload).map_err(|e| malformed("payload", e))?;
        Ok(LedgerRecord {
            rid: row.rid,
            anchor_id: row.anchor_id,
            slot: row.slot,
            kind: row.kind,
            ts: row.ts,
            prev_hash,
            hash,
            payload,
            sig: row.sig,
            producer,
            version,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use sea_orm::TryIntoModel;
    use serde_json::json;

    use super::*;

    fn record() -> LedgerRecord {
        LedgerRecord {
            rid: Uuid::from_u128(1),
            anchor_id: Uuid::from_u128(2),
            slot: "slot-a".to_owned(),
            kind: "measurement".to_owned(),
            ts: Utc
                .timestamp_micros(1_764_000_000_123_456)
                .single()
                .expect("valid timestamp"),
            prev_hash: Some(RecordHash([0xaa; 32])),
            hash: RecordHash([0xbb; 32]),
            payload: Payload::from_value(&json!({"value": 42, "unit": "ms"})).expect("canonical"),
            sig: Some(vec![1, 2, 3]),
            producer: "sensor-7".to_owned(),
            version: "v1".to_owned(),
        }
    }

    /// A record written through the ActiveModel and read back as a Model is unchanged.
    #[test]
    fn record_round_trips_through_row() {
        let original = record();
        let row = ledger_records::ActiveModel::from(&original)
            .try_into_model()
            .expect("every column is set");
        assert_eq!(row.producer.as_deref(), Some("sensor-7"));
        assert_eq!(row.version.as_deref(), Some("v1"));
        let back = LedgerRecord::try_from(row).expect("row is complete");
        assert_eq!(back, original);
    }

    /// A genesis record (no prev_hash) and no signature stay NULL in the row.
    #[test]
    fn genesis_without_sig_maps_to_nulls() {
        let original = LedgerRecord {
            prev_hash: None,
            sig: None,
            ..record()
        };
        let row = ledger_records::ActiveModel::from(&original)
            .try_into_model()
            .expect("every column is set");
        assert_eq!(row.prev_hash, None);
        assert_eq!(row.sig, None);
        assert_eq!(
            LedgerRecord::try_from(row).expect("row is complete"),
            original
        );
    }

    /// NULL producer or version is reported with the row id and column, not papered over.
    #[test]
    fn null_producer_or_version_is_an_error() {
        let row = ledger_records::ActiveModel::from(&record())
            .try_into_model()
            .expect("every column is set");

        let no_producer = ledger_records::Model {
            producer: None,
            ..row.clone()
        };
        assert_eq!(
            LedgerRecord::try_from(no_producer),
            Err(RowConversionError::NullColumn {
                rid: Uuid::from_u128(1),
                column: "producer",
            })
        );

        let no_version = ledger_records::Model {
            version: None,
            ..row
        };
        assert_eq!(
            LedgerRecord::try_from(no_version),
            Err(RowConversionError::NullColumn {
                rid: Uuid::from_u128(1),
                column: "version",
            })
        );
    }
}

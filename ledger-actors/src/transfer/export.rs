//! Export: every record (or one anchor's, or those since a time) as JSON Lines, streamed a
//! page at a time, so memory stays constant whatever the number of records.

use chrono::{DateTime, Utc};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use uuid::Uuid;

use super::format::{self, End, FORMAT_VERSION, Header};
use crate::error::LedgerError;
use crate::store::{LedgerStore, RecordRange, ScanKey};

/// Records read from the store per page.
pub const EXPORT_PAGE: usize = 2000;

/// What to export.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// Only this anchor's records.
    pub anchor: Option<Uuid>,
    /// Only records with `ts >= since` (an incremental export: each anchor's first exported
    /// record then links to a record of an earlier export).
    pub since: Option<DateTime<Utc>>,
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Record lines written.
    pub records: u64,
    /// Distinct anchors among them.
    pub anchors: u64,
}

/// Writes the header line, every selected record (anchors in ascending id, each anchor's
/// records in chain order) and the end line to `out`, then flushes it. `progress` is called
/// after each page with the records written so far.
///
/// Errors: the store's ([`LedgerError::Unavailable`] and so on: the output is then
/// incomplete, without its end line) and [`LedgerError::Io`] when `out` fails.
pub async fn export<W: AsyncWrite + Unpin>(
    store: &dyn LedgerStore,
    out: &mut W,
    options: &ExportOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<ExportSummary, LedgerError> {
    let header = Header {
        avl_export: FORMAT_VERSION,
        exported_at: format::format_ts(Utc::now()),
        generator: format!("avl-ledger {}", env!("CARGO_PKG_VERSION")),
        anchor: options.anchor,
        since: options.since.map(format::format_ts),
    };
    let mut buf = json_line(&header)?;
    write(out, &buf).await?;
    let mut summary = ExportSummary::default();
    let mut last_anchor: Option<Uuid> = None;
    let mut after: Option<ScanKey> = None;
    let mut range = RecordRange {
        since: options.since,
        until: None,
        limit: EXPORT_PAGE,
    };
    loop {
        let page = match options.anchor {
            Some(anchor) => store.records(anchor, &range).await?,
            None => {
                store
                    .scan(after.as_ref(), options.since, EXPORT_PAGE)
                    .await?
            }
        };
        let Some(last) = page.last() else { break };
        range = range.after(last);
        after = Some(ScanKey::of(last));
        buf.clear();
        for record in &page {
            if last_anchor != Some(record.anchor_id) {
                last_anchor = Some(record.anchor_id);
                summary.anchors += 1;
            }
            format::write_record(&mut buf, record).map_err(|e| {
                LedgerError::Internal(format!("encoding record {}: {e}", record.rid))
            })?;
        }
        write(out, &buf).await?;
        summary.records += page.len() as u64;
        progress(summary.records);
        if page.len() < EXPORT_PAGE {
            break;
        }
    }
    let end = serde_json::json!({ format::END_KEY: End { records: summary.records } });
    write(out, &json_line(&end)?).await?;
    out.flush()
        .await
        .map_err(|e| LedgerError::Io(format!("flushing the export: {e}")))?;
    Ok(summary)
}

fn json_line<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, LedgerError> {
    let mut line = serde_json::to_vec(value)
        .map_err(|e| LedgerError::Internal(format!("encoding a header line: {e}")))?;
    line.push(b'\n');
    Ok(line)
}

async fn write<W: AsyncWrite + Unpin>(out: &mut W, bytes: &[u8]) -> Result<(), LedgerError> {
    out.write_all(bytes)
        .await
        .map_err(|e| LedgerError::Io(format!("writing the export: {e}")))
}

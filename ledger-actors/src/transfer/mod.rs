//! Moving records in and out of a ledger as JSON Lines: export, import, and the line format
//! `ledger append` reads. The format is specified in `docs/OPERATIONS.md` ("Export format").
//!
//! # Layout
//! - [`format`](mod@format): the line formats (header, record, end, append input), strict parsing with
//!   errors naming the field.
//! - [`export`](mod@export): [`export()`], streamed page by page (constant memory).
//! - [`import`](mod@import): [`import()`], verified, idempotent, resumable, batched.

pub mod export;
pub mod format;
pub mod import;

pub use export::{ExportOptions, ExportSummary, export};
pub use format::FieldError;
pub use import::{ImportOptions, ImportSummary, Refusal, RefusalReason, import};

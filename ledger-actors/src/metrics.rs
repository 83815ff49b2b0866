//! Metric names and recording helpers (the `metrics` facade: no-ops until an exporter is
//! installed).

/// Chain actors alive.
pub const ANCHORS_ACTIVE: &str = "ledger_anchors_active";
/// Chain actors stopped for idleness.
pub const ANCHORS_PASSIVATED_TOTAL: &str = "ledger_anchors_passivated_total";
/// Appends by outcome.
pub const APPENDS_TOTAL: &str = "ledger_appends_total";
/// End-to-end append latency.
pub const APPEND_DURATION_SECONDS: &str = "ledger_append_duration_seconds";

pub(crate) fn anchor_started() {
    metrics::gauge!(ANCHORS_ACTIVE).increment(1.0);
}

pub(crate) fn anchor_stopped() {
    metrics::gauge!(ANCHORS_ACTIVE).decrement(1.0);
}

pub(crate) fn anchor_passivated() {
    metrics::counter!(ANCHORS_PASSIVATED_TOTAL).increment(1);
}

pub(crate) fn append_finished(outcome: &'static str, seconds: f64) {
    metrics::counter!(APPENDS_TOTAL, "outcome" => outcome).increment(1);
    metrics::histogram!(APPEND_DURATION_SECONDS).record(seconds);
}

/// Chain breaks found by verification.
pub const CHAIN_BREAKS_TOTAL: &str = "ledger_chain_breaks_total";

pub(crate) fn chain_break_found() {
    metrics::counter!(CHAIN_BREAKS_TOTAL).increment(1);
}

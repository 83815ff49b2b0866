//! placeholder

pub mod metrics;

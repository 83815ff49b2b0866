//! Integration tests live in `tests/`; this crate's library holds what tests and the helper
//! binaries share: [`witness`], a C2SP tlog-witness over HTTP.

pub mod witness;

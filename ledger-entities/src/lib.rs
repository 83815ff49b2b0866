//! placeholder

pub mod entity;

//! Sources: where a list's bytes come from. Each source returns the bytes
//! and a version tag; only `axfr` exists so far.

pub mod axfr;

pub use axfr::{soa_serial, to_zone_text, transfer, AxfrError, Limits, Transfer, TsigKey};

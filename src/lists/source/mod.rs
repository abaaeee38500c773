//! Sources: where a list's bytes come from. Each source returns the bytes
//! and a version tag; only `axfr` exists so far.

pub mod axfr;

pub use axfr::{
    request_tsig_id, sign_reply, sign_request, soa_serial, to_zone_text, transfer, unsigned_error_record, verify_request, AxfrError, Limits,
    RequestTsigError, SignedRequest, Transfer, TsigKey,
};

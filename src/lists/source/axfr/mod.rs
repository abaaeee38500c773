//! Zone-transfer client (AXFR, RFC 5936; IXFR, RFC 1995) with TSIG
//! (RFC 8945, HMAC-SHA256), for RPZ feeds served by a primary. This file:
//! the public face of the source (the types a caller sees, and the
//! re-exports); each job lives in a file of its own:
//!
//! - `xfr`: the AXFR/IXFR request and the SOA framing of the answer
//!   (RFC 5936 §2.2, RFC 1995 §4) into a [`Transfer`];
//! - `probe`: the SOA serial check of a refresh (UDP, TCP fallback);
//! - `tsig`: keys, signing requests, verifying answers (and NOTIFYs for
//!   `server/notify.rs`);
//! - `message`: one DNS message on the wire: query building, TCP
//!   framing, decoding a reply in one pass;
//! - `zone_text`: records as zone-file lines, for the persisted copy.
//!
//! Our own reader over TCP, not hickory's `Client::zone_transfer` (STYLE
//! §4.8: it can run over UDP and has lost records after an SOA-only first
//! message). hickory-proto is used for the wire format only: message
//! header, names, records and the TSIG record layout. The MAC itself is
//! computed here with `hmac` + `sha2`, so hickory's `dnssec-ring` feature
//! (and `ring`) stays out of the build.
//!
//! Every byte from the network is bounds-checked: lengths come from the
//! two-byte TCP prefix, record counts from the header, and each record is
//! decoded by hickory's `BinDecoder`, which fails rather than panics.
//! The whole transfer runs under one deadline ([`Limits::timeout`]); the
//! record count and the byte count are capped as they arrive.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::Record;

mod message;
mod probe;
mod tsig;
mod xfr;
mod zone_text;

#[cfg(test)]
mod test_support;

pub use probe::soa_serial;
#[cfg(test)]
pub(crate) use tsig::reply_verifies;
pub use tsig::{request_tsig_id, sign_reply, sign_request, unsigned_error_record, verify_request, RequestTsigError, SignedRequest, TsigKey};
pub use xfr::transfer;
pub use zone_text::to_zone_text;

/// Caps on one transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// For the whole transfer: connect, request, every message.
    pub timeout: Duration,
    /// Answer records over all messages (SOAs included).
    pub max_records: usize,
    /// Bytes over all messages (length prefixes included).
    pub max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            max_records: 10_000_000,
            max_bytes: 1 << 30,
        }
    }
}

/// What a transfer brought.
#[derive(Debug, Clone, PartialEq)]
pub enum Transfer {
    /// A full zone (AXFR, or an IXFR answered with a full transfer): every record in order, first SOA included once.
    Full { serial: u32, records: Vec<Record> },
    /// RFC 1995 incremental: a sequence of (deleted, added) difference sequences, oldest first.
    ///
    /// The SOA records that frame each difference sequence are not in the
    /// lists: the chain `from_serial → … → serial` was checked while reading.
    Incremental {
        from_serial: u32,
        serial: u32,
        diffs: Vec<(Vec<Record>, Vec<Record>)>,
    },
    /// IXFR answered with only the current SOA: nothing new.
    UpToDate { serial: u32 },
}

impl Transfer {
    /// The zone serial the transfer brings the client to.
    pub fn serial(&self) -> u32 {
        match self {
            Transfer::Full { serial, .. } | Transfer::Incremental { serial, .. } | Transfer::UpToDate { serial } => {
                *serial
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AxfrError {
    #[error("talking to the primary")]
    Io(#[from] std::io::Error),
    #[error("the primary did not finish answering in time")]
    Timeout,
    #[error("the primary answered {0}")]
    Refused(ResponseCode),
    #[error("malformed answer from the primary: {0}")]
    Malformed(String),
    /// hickory could not decode a message of the primary's answer.
    #[error("undecodable message from the primary")]
    Decode(#[from] hickory_proto::serialize::binary::DecodeError),
    /// hickory could not encode our request (or a TSIG record of it).
    #[error("encoding the request")]
    Encode(#[source] hickory_proto::ProtoError),
    #[error("TSIG: {0}")]
    Tsig(String),
    #[error("TSIG key")]
    Key(#[from] crate::keys::KeyError),
    #[error("transfer exceeds the record or byte limit")]
    TooLarge,
    #[error("the primary closed the connection before the transfer ended")]
    Truncated,
}

/// A reply that decodes but breaks a rule of the protocol: `what` says which.
fn malformed(what: &str) -> AxfrError {
    AxfrError::Malformed(what.to_owned())
}

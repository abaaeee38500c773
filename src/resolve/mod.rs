//! Getting answers for names that the policy lets through: the reply cache
//! and the upstream forwarder.

pub mod cache;
pub mod forward;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::Record;

/// An upstream answer, with the OPT record removed (replies get a fresh one).
#[derive(Debug, Clone)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
    /// The upstream's AD bit.
    pub authentic_data: bool,
}

/// Why no answer could be had.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no upstream answered within {0:?}")]
    Timeout(std::time::Duration),
    #[error("too many upstream queries in flight")]
    Busy,
    #[error("no upstream servers configured")]
    NoServers,
}

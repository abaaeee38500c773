//! Getting answers for names that the policy lets through: the reply cache,
//! the upstream forwarder and, in recursive mode, the recursor.

pub mod cache;
pub mod forward;
pub mod recurse;
pub mod tcp;

use crate::wire::{self, scan};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, Record, RecordType};

/// An upstream answer decoded into records, with the OPT record removed
/// (replies get a fresh one). The hickory path builds its replies from it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
    /// The upstream's AD bit.
    pub authentic_data: bool,
}

impl Answer {
    /// The sections of a decoded reply, OPT left out.
    pub fn from_message(mut reply: Message) -> Self {
        let additionals = std::mem::take(&mut reply.additionals)
            .into_iter()
            .filter(|r| r.record_type() != RecordType::OPT)
            .collect();
        Answer {
            rcode: reply.metadata.response_code,
            answers: std::mem::take(&mut reply.answers),
            authorities: std::mem::take(&mut reply.authorities),
            additionals,
            authentic_data: reply.metadata.authentic_data,
        }
    }
}

/// An upstream reply as bytes, in the form the cache keeps: one question,
/// no OPT record, rcode in 4 bits; with what [`scan::scan`] found in it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub bytes: Vec<u8>,
    pub scan: scan::Scan,
}

impl Reply {
    /// An upstream reply (already matched to our question by
    /// [`crate::wire::query::answers`]) in cache form: its OPT record cut off the end.
    /// The rare shapes a cut cannot fix (OPT not last, extended rcode) are
    /// decoded and encoded again by hickory. `None`: malformed.
    /// Cost: one pass over the bytes; no copy when the OPT is last or absent.
    pub fn accept(mut bytes: Vec<u8>) -> Option<Reply> {
        let Some(mut scan) = scan::scan(&bytes) else {
            let m = Message::from_vec(&bytes).ok()?;
            let q = m.queries.first()?.clone();
            return Self::from_answer(q.name(), q.query_type(), q.query_class(), &Answer::from_message(m));
        };
        if let Some(at) = scan.opt_at.take() {
            bytes.truncate(at);
            let ar = wire::u16_at(&bytes, 10)?.checked_sub(1)?;
            bytes.get_mut(10..12)?.copy_from_slice(&ar.to_be_bytes());
        }
        Some(Reply { bytes, scan })
    }

    /// `answer` encoded by hickory as the reply to `qname`/`qtype`/`qclass`.
    /// `None` if encoding fails, the rcode needs more than 4 bits or the
    /// message is longer than 65535 bytes.
    pub fn from_answer(qname: &Name, qtype: RecordType, qclass: DNSClass, answer: &Answer) -> Option<Reply> {
        if u16::from(answer.rcode) > 15 {
            return None;
        }
        let mut m = Message::new(0, MessageType::Response, OpCode::Query);
        m.metadata.response_code = answer.rcode;
        m.metadata.authentic_data = answer.authentic_data;
        let mut q = Query::query(qname.clone(), qtype);
        q.set_query_class(qclass);
        m.add_query(q);
        m.insert_answers(answer.answers.clone());
        m.insert_authorities(answer.authorities.clone());
        m.insert_additionals(answer.additionals.clone());
        let bytes = m.to_vec().ok()?;
        let scan = scan::scan(&bytes)?;
        Some(Reply { bytes, scan })
    }

    pub fn rcode(&self) -> ResponseCode {
        ResponseCode::from(0, self.scan.rcode)
    }
}

/// Why no answer could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    #[error("no upstream answered within {0:?}")]
    Timeout(std::time::Duration),
    #[error("too many upstream queries in flight")]
    Busy,
    #[error("no upstream servers configured")]
    NoServers,
    /// Recursive mode: the iterator gave up (lame, unreachable or failing
    /// authorities, a limit).
    #[error("recursion failed: {0}")]
    Recursion(recurse::Failure),
}

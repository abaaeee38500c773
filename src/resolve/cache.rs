//! The reply cache: keyed on (name, qtype, qclass, DO, CD), bounded by entry
//! count (moka's TinyLFU eviction), TTLs clamped by config; negative answers
//! cached for min(SOA TTL, SOA MINIMUM) as RFC 2308 §5 says.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, RData, RecordType};

use super::Answer;
use crate::name::QName;

/// Cache key. The name is the normalised query name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub name: QName,
    pub qtype: RecordType,
    pub qclass: DNSClass,
    pub dnssec_ok: bool,
    pub checking_disabled: bool,
}

/// A cached answer and when it was stored.
#[derive(Debug)]
pub struct Entry {
    pub answer: Answer,
    /// The same answer pre-encoded as a reply (for the UDP fast path);
    /// `None` if it could not be encoded.
    pub wire: Option<Wire>,
    pub stored: Instant,
    pub ttl: u32,
}

/// An answer encoded once, at insert, as a whole reply message: header with
/// ID 0 and the answer's rcode, the question, and the answer, authority and
/// additional sections (no OPT). A hit copies it, writes the client's ID,
/// flags and question bytes over it (the question has the same length: the
/// cache key is the normalised name), lowers each TTL by the entry's age at
/// the recorded offsets and appends an OPT record if the client sent one.
#[derive(Debug)]
pub struct Wire {
    pub bytes: Box<[u8]>,
    /// Length of header plus question.
    pub question_end: u16,
    /// Offset of the TTL field of every record.
    pub ttl_offsets: Box<[u16]>,
}

impl Wire {
    /// Encodes `answer` as the reply to `qname`/`qtype`/`qclass`. `None` if
    /// encoding fails or the message is longer than 65535 bytes.
    /// Cost: one hickory encode (with name compression) and one walk over it.
    pub fn encode(qname: &hickory_proto::rr::Name, qtype: RecordType, qclass: DNSClass, answer: &Answer) -> Option<Wire> {
        use hickory_proto::op::{Message, MessageType, OpCode, Query};
        let mut m = Message::new(0, MessageType::Response, OpCode::Query);
        m.metadata.response_code = answer.rcode;
        let mut q = Query::query(qname.clone(), qtype);
        q.set_query_class(qclass);
        m.add_query(q);
        m.insert_answers(answer.answers.clone());
        m.insert_authorities(answer.authorities.clone());
        m.insert_additionals(answer.additionals.clone());
        let bytes = m.to_vec().ok()?;
        if bytes.len() > usize::from(u16::MAX) || u16::from(answer.rcode) > 15 {
            return None;
        }
        let (question_end, ttl_offsets) = ttl_offsets(&bytes)?;
        Some(Wire { bytes: bytes.into_boxed_slice(), question_end, ttl_offsets: ttl_offsets.into_boxed_slice() })
    }
}

fn skip_name(p: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let len = *p.get(i)?;
        match len & 0xc0 {
            0 if len == 0 => return Some(i + 1),
            0 => i += 1 + usize::from(len),
            0xc0 => return Some(i + 2),
            _ => return None,
        }
    }
}

/// End of the (single) question and the offset of every record's TTL.
fn ttl_offsets(p: &[u8]) -> Option<(u16, Vec<u16>)> {
    let count = |i: usize| Some(usize::from(u16::from_be_bytes([*p.get(i)?, *p.get(i + 1)?])));
    if count(4)? != 1 {
        return None;
    }
    let records = count(6)? + count(8)? + count(10)?;
    let mut i = skip_name(p, 12)? + 4;
    let question_end = u16::try_from(i).ok()?;
    let mut out = Vec::with_capacity(records);
    for _ in 0..records {
        i = skip_name(p, i)? + 4;
        out.push(u16::try_from(i).ok()?);
        i += 4;
        i += 2 + count(i)?;
    }
    (i == p.len()).then_some((question_end, out))
}

impl Entry {
    /// Seconds left, or `None` once expired.
    pub fn remaining(&self, now: Instant) -> Option<u32> {
        let age = u32::try_from(now.saturating_duration_since(self.stored).as_secs()).unwrap_or(u32::MAX);
        self.ttl.checked_sub(age).filter(|&r| r > 0)
    }

    /// Seconds elapsed since the entry was stored.
    pub fn age(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.stored).as_secs()).unwrap_or(u32::MAX)
    }
}

/// TTL limits (`[cache]`).
#[derive(Debug, Clone, Copy)]
pub struct TtlPolicy {
    pub min_ttl: u32,
    pub max_ttl: u32,
    pub max_negative_ttl: u32,
}

/// The reply cache.
pub struct Cache {
    inner: moka::sync::Cache<Key, Arc<Entry>, foldhash::fast::RandomState>,
    ttl: TtlPolicy,
}

impl Cache {
    pub fn new(max_entries: u64, ttl: TtlPolicy) -> Self {
        let inner = moka::sync::Cache::builder()
            .max_capacity(max_entries)
            .expire_after(Expiry)
            .build_with_hasher(foldhash::fast::RandomState::default());
        Self { inner, ttl }
    }

    /// A live entry for `key`. Cost: one hash + one concurrent map probe.
    pub fn get(&self, key: &Key, now: Instant) -> Option<Arc<Entry>> {
        let e = self.inner.get(key)?;
        e.remaining(now).map(|_| e)
    }

    /// Stores `answer` to the question `qname` (as asked; `key.name` is its
    /// normalised form) if it is cacheable (NOERROR or NXDOMAIN; not
    /// SERVFAIL, not truncated), with its TTL clamped, pre-encoded as a reply
    /// (`Wire`). Returns the stored entry.
    pub fn insert(&self, key: Key, qname: &hickory_proto::rr::Name, answer: Answer, now: Instant) -> Option<Arc<Entry>> {
        let wire = Wire::encode(qname, key.qtype, key.qclass, &answer);
        let (entry, cached) = self.store(key, answer, wire, now);
        cached.then_some(entry)
    }

    /// Like `insert` with the answer already encoded; returns the entry
    /// whether or not it was cached (TTL 0 there), and whether it was.
    pub fn store(&self, key: Key, answer: Answer, wire: Option<Wire>, now: Instant) -> (Arc<Entry>, bool) {
        let ttl = self.ttl_for(&answer).unwrap_or(0);
        let entry = Arc::new(Entry { answer, wire, stored: now, ttl });
        if ttl > 0 {
            self.inner.insert(key, Arc::clone(&entry));
        }
        (entry, ttl > 0)
    }

    /// Entries currently held. Runs moka's pending maintenance first, so it
    /// costs O(pending writes); call it from a scrape, not per query.
    pub fn len(&self) -> u64 {
        self.inner.run_pending_tasks();
        self.inner.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn ttl_for(&self, a: &Answer) -> Option<u32> {
        let negative_ttl = || {
            // RFC 2308 §5: min(SOA TTL, SOA MINIMUM); no SOA: do not cache.
            a.authorities.iter().find_map(|r| match &r.data {
                RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            })
        };
        match a.rcode {
            ResponseCode::NoError if !a.answers.is_empty() => {
                let min = a.answers.iter().map(|r| r.ttl).min()?;
                Some(min.clamp(self.ttl.min_ttl, self.ttl.max_ttl))
            }
            ResponseCode::NoError | ResponseCode::NXDomain => {
                negative_ttl().map(|t| t.clamp(self.ttl.min_ttl.min(self.ttl.max_negative_ttl), self.ttl.max_negative_ttl))
            }
            _ => None,
        }
    }
}

struct Expiry;

impl moka::Expiry<Key, Arc<Entry>> for Expiry {
    fn expire_after_create(&self, _key: &Key, value: &Arc<Entry>, _now: Instant) -> Option<Duration> {
        Some(Duration::from_secs(u64::from(value.ttl)))
    }
}

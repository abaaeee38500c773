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
    pub stored: Instant,
    pub ttl: u32,
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

    /// Stores `answer` if it is cacheable (NOERROR or NXDOMAIN; not SERVFAIL,
    /// not truncated), with its TTL clamped. Returns the TTL used.
    pub fn insert(&self, key: Key, answer: Answer, now: Instant) -> Option<u32> {
        let ttl = self.ttl_for(&answer)?;
        if ttl == 0 {
            return None;
        }
        self.inner.insert(key, Arc::new(Entry { answer, stored: now, ttl }));
        Some(ttl)
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

//! DNS messages as bytes: the one home for reading and writing them
//! without hickory's types, used by the UDP fast path, the forwarder, the
//! cache, the handler and the zone-transfer client.
//!
//! - [`header`]: the 12-byte header's flag bits and a writer;
//! - [`name`]: walking names on the wire (length, labels, pointers);
//! - [`opt`]: the OPT record we write (payload, DO, one EDE option);
//! - [`pad`]: EDNS padding of encrypted replies (RFC 7830, RFC 8467);
//! - [`soa`]: the SOA template of blocked negative answers;
//! - [`query`]: the query we send upstream and the reply-matching rule;
//! - [`scan`]: one pass over an upstream reply (rcode, TTL offsets,
//!   negative TTL, CNAME targets, addresses).
//!
//! Why bytes: decoding every upstream reply into `Record`s and encoding it
//! again for the cache stood out in a profile of the miss workload
//! (`benches/e2e/profile.sh miss`), and a blocked answer built from a
//! template is a few fixed-size copies where hickory's encoder walks records. The hickory path still gets records:
//! `cache::Entry::answer` decodes them on first use.

pub mod header;
pub mod name;
pub mod opt;
pub mod pad;
pub mod query;
pub mod scan;
pub mod soa;

/// The big-endian u16 at `i`, if the bytes reach that far.
pub fn u16_at(p: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(i)?, *p.get(i + 1)?]))
}

/// The big-endian u32 at `i`, if the bytes reach that far.
pub fn u32_at(p: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_be_bytes([*p.get(i)?, *p.get(i + 1)?, *p.get(i + 2)?, *p.get(i + 3)?]))
}

/// Writes `v` big-endian.
pub fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Record types the byte readers look at.
pub mod rtype {
    pub const A: u16 = 1;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const AAAA: u16 = 28;
    pub const OPT: u16 = 41;
}

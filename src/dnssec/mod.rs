//! DNSSEC validation as plain functions (RFC 4033/4034/4035, 5155, 6840):
//! a DNSKEY RRset against DS or a trust anchor, an RRset against its zone's
//! keys, and the NSEC/NSEC3 denial proofs. No I/O, no tokio, no clock: the
//! caller passes the records it received and `now` (seconds since the epoch,
//! truncated to u32 as RRSIG times are, RFC 4034 3.1.5).
//!
//! The cryptography is `hickory_proto::dnssec` (ring): RSASHA1,
//! RSASHA1-NSEC3-SHA1, RSASHA256, RSASHA512, ECDSAP256SHA256,
//! ECDSAP384SHA384 and ED25519; DS digests SHA-1, SHA-256, SHA-384; NSEC3
//! hash SHA-1. What is checked and what is not: `docs/recursion.md`,
//! "DNSSEC validation library".

mod anchor;
mod denial;
pub mod text;

#[cfg(test)]
mod tests;

use std::fmt;

use hickory_proto::dnssec::rdata::{DNSSECRData, DNSKEY, DS, RRSIG};
use hickory_proto::dnssec::{DigestType, PublicKey, Verifier};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

pub use anchor::{Anchor, AnchorError, TrustAnchors};
pub use denial::{prove_no_ds, prove_nodata, prove_nxdomain, prove_wildcard_answer, DenialProof};

/// NSEC3 iterations above which a denial is treated as insecure (RFC 9276
/// section 3.2; Unbound's and BIND's default is 150). Per zone keys it can be
/// changed with [`ZoneKeys::with_max_nsec3_iterations`].
pub const MAX_NSEC3_ITERATIONS: u16 = 150;

/// Signature verifications one RRset may cost (RRSIGs × keys sharing a key
/// tag). A zone's owner can make key tags collide and attach many RRSIGs;
/// without a bound that multiplies (KeyTrap, CVE-2023-50387). Past it the
/// RRset is bogus.
pub const MAX_SIGNATURE_CHECKS: usize = 8;

/// NSEC/NSEC3 RRsets whose signature one denial proof may check (a proof
/// needs at most three; the rest is margin for records a server adds). Bounds
/// the work a hostile authority can cause with a long authority section of
/// bad signatures. Per zone keys: [`ZoneKeys::with_max_denial_rrsets`].
pub const MAX_DENIAL_RRSETS: usize = 8;

/// Why an answer is bogus. `ede_code` gives the Extended DNS Error (RFC 8914).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bogus {
    /// Every usable RRSIG has expired.
    SignatureExpired,
    /// Every usable RRSIG has an inception time in the future.
    SignatureNotYetValid,
    /// No DNSKEY matches the DS/anchor, or the key an RRSIG names is absent.
    DnskeyMissing,
    /// No RRSIG by the zone covers the RRset.
    RrsigsMissing,
    /// The NSEC/NSEC3 records needed for a denial are absent.
    NsecMissing,
    /// Anything else (signature does not verify, contradicting NSEC, …).
    Other(&'static str),
}

impl Bogus {
    /// RFC 8914: 7 Signature Expired, 8 Signature Not Yet Valid, 9 DNSKEY
    /// Missing, 10 RRSIGs Missing, 12 NSEC Missing, 6 DNSSEC Bogus.
    pub fn ede_code(&self) -> u16 {
        match self {
            Self::SignatureExpired => 7,
            Self::SignatureNotYetValid => 8,
            Self::DnskeyMissing => 9,
            Self::RrsigsMissing => 10,
            Self::NsecMissing => 12,
            Self::Other(_) => 6,
        }
    }

    /// How telling the reason is, to report the best of several failures:
    /// a time window beats a failed signature, which beats a missing key.
    fn rank(&self) -> u8 {
        match self {
            Self::SignatureExpired | Self::SignatureNotYetValid => 4,
            Self::Other(_) => 3,
            Self::DnskeyMissing => 2,
            Self::NsecMissing => 1,
            Self::RrsigsMissing => 0,
        }
    }
}

impl fmt::Display for Bogus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SignatureExpired => "signature expired",
            Self::SignatureNotYetValid => "signature not yet valid",
            Self::DnskeyMissing => "no DNSKEY matches the DS or the signature",
            Self::RrsigsMissing => "RRSIGs missing",
            Self::NsecMissing => "NSEC/NSEC3 proof missing",
            Self::Other(why) => why,
        })
    }
}

impl std::error::Error for Bogus {}

/// What a DNSKEY RRset is checked against.
#[derive(Debug, Clone, Copy)]
pub enum Trust<'a> {
    /// The zone's DS RRset, from its validated parent.
    Ds(&'a [DS]),
    /// A configured trust anchor for the zone.
    Anchor(&'a Anchor),
}

/// The validated keys of one zone: every zone-flagged, unrevoked DNSKEY of a
/// supported algorithm in its authenticated DNSKEY RRset (RFC 4035 5.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneKeys {
    pub zone: Name,
    /// TTL the validated DNSKEY RRset may be kept for.
    pub ttl: u32,
    keys: Vec<(u16, DNSKEY)>,
    max_nsec3_iterations: u16,
    max_denial_rrsets: usize,
}

impl ZoneKeys {
    /// The keys with their key tags.
    pub fn keys(&self) -> impl Iterator<Item = (u16, &DNSKEY)> {
        self.keys.iter().map(|(t, k)| (*t, k))
    }

    /// NSEC3 denials with more iterations than `max` are [`DenialProof::Insecure`]
    /// (default [`MAX_NSEC3_ITERATIONS`]).
    pub fn with_max_nsec3_iterations(mut self, max: u16) -> Self {
        self.max_nsec3_iterations = max;
        self
    }

    pub fn max_nsec3_iterations(&self) -> u16 {
        self.max_nsec3_iterations
    }

    /// A denial proof checks the signatures of at most `max` NSEC/NSEC3
    /// RRsets, and is bogus when it needs more (default [`MAX_DENIAL_RRSETS`]).
    pub fn with_max_denial_rrsets(mut self, max: usize) -> Self {
        self.max_denial_rrsets = max;
        self
    }

    pub fn max_denial_rrsets(&self) -> usize {
        self.max_denial_rrsets
    }
}

/// A verified RRset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// `Some(*.closest-encloser)` when the RRSIG's labels field shows a
    /// wildcard expansion: the caller must then get
    /// [`prove_wildcard_answer`] for the owner.
    pub wildcard: Option<Name>,
    /// The least of the records' TTLs, the RRSIG's TTL and original TTL, and
    /// the seconds left until the signature expires (RFC 4035 5.3.3).
    pub ttl: u32,
}

/// The DS rdata of `records` (e.g. a verified DS RRset), for [`Trust::Ds`].
pub fn ds_records(records: &[Record]) -> Vec<DS> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::DS(d)) => Some(d.clone()),
            _ => None,
        })
        .collect()
}

/// `a` is before `b` in RFC 1982 serial arithmetic (32 bits).
fn serial_lt(a: u32, b: u32) -> bool {
    a != b && (b.wrapping_sub(a) as i32) > 0
}

fn rrsig_of(r: &Record) -> Option<&RRSIG> {
    match &r.data {
        RData::DNSSEC(DNSSECRData::RRSIG(s)) => Some(s),
        _ => None,
    }
}

fn dnskey_of(r: &Record) -> Option<&DNSKEY> {
    match &r.data {
        RData::DNSSEC(DNSSECRData::DNSKEY(k)) => Some(k),
        _ => None,
    }
}

/// The number of labels of `name`, a leading `*` included.
fn labels(name: &Name) -> usize {
    name.iter().count()
}

/// DS records a validator may use: a supported algorithm and digest type;
/// SHA-1 ones are dropped when a stronger digest is present (RFC 4509 3).
fn usable_ds(ds: &[DS]) -> Vec<&DS> {
    let ok: Vec<&DS> = ds.iter().filter(|d| d.algorithm().is_supported() && d.digest_type().is_supported()).collect();
    if ok.iter().any(|d| d.digest_type() != DigestType::SHA1) {
        ok.into_iter().filter(|d| d.digest_type() != DigestType::SHA1).collect()
    } else {
        ok
    }
}

fn usable_key(k: &DNSKEY) -> bool {
    k.zone_key() && !k.revoke() && k.algorithm().is_supported()
}

/// Checks the RRSIGs in `rrsigs` over `rrset` (already one RRset): signer
/// `signer`, covering its type, labels not above the owner's, inside the
/// validity window, then one signature verification per (RRSIG, key with the
/// RRSIG's tag and algorithm) until one verifies.
fn check_sigs(
    rrset: &[&Record],
    rrsigs: &[Record],
    signer: &Name,
    keys: &[(u16, &DNSKEY)],
    now: u32,
) -> Result<Verified, Bogus> {
    let Some(first) = rrset.first() else { return Err(Bogus::Other("empty RRset")) };
    let owner = &first.name;
    let class = first.dns_class;
    let rtype = first.record_type();
    let owner_labels = owner.num_labels();
    let mut candidates: Vec<(&Record, &RRSIG)> = rrsigs
        .iter()
        .filter_map(|r| rrsig_of(r).map(|s| (r, s)))
        .filter(|(r, s)| {
            r.name == *owner && r.dns_class == class && s.input().type_covered == rtype && s.input().signer_name == *signer
        })
        .collect();
    if candidates.is_empty() {
        return Err(Bogus::RrsigsMissing);
    }
    // non-wildcard signatures first: a plain match is the stronger claim
    candidates.sort_by_key(|(_, s)| s.input().num_labels != owner_labels);
    let mut worst: Option<Bogus> = None;
    let mut note = |b: Bogus| {
        if worst.as_ref().is_none_or(|w| b.rank() > w.rank()) {
            worst = Some(b);
        }
    };
    let mut checks = 0usize;
    for (sig_rec, sig) in candidates {
        let input = sig.input();
        if input.num_labels > owner_labels {
            note(Bogus::Other("RRSIG labels field exceeds the owner's labels"));
            continue;
        }
        let (inception, expiration) = (input.sig_inception.get(), input.sig_expiration.get());
        if serial_lt(now, inception) {
            note(Bogus::SignatureNotYetValid);
            continue;
        }
        if serial_lt(expiration, now) {
            note(Bogus::SignatureExpired);
            continue;
        }
        let mut tried = false;
        // hickory asserts (panics) on an unsupported algorithm: never pass one
        for (_, key) in keys.iter().filter(|(tag, k)| *tag == input.key_tag && k.algorithm() == input.algorithm && k.algorithm().is_supported()) {
            tried = true;
            checks += 1;
            if checks > MAX_SIGNATURE_CHECKS {
                return Err(Bogus::Other("too many signatures to check"));
            }
            if key.verify_rrsig(owner, class, sig, rrset.iter().copied()).is_ok() {
                let ttl = rrset
                    .iter()
                    .map(|r| r.ttl)
                    .min()
                    .unwrap_or(0)
                    .min(sig_rec.ttl)
                    .min(input.original_ttl)
                    .min(expiration.wrapping_sub(now));
                let wildcard = if input.num_labels < owner_labels {
                    owner.trim_to(usize::from(input.num_labels)).prepend_label("*").ok()
                } else {
                    None
                };
                return Ok(Verified { wildcard, ttl });
            }
        }
        note(if tried { Bogus::Other("signature does not verify") } else { Bogus::DnskeyMissing });
    }
    Err(worst.unwrap_or(Bogus::RrsigsMissing))
}

/// One RRset as a list of distinct records (RFC 4034 6.3: duplicates are
/// dropped before the signature is checked); fails if owners, types or
/// classes differ.
fn one_rrset(rrset: &[Record]) -> Result<Vec<&Record>, Bogus> {
    let Some(first) = rrset.first() else { return Err(Bogus::Other("empty RRset")) };
    let mut out: Vec<&Record> = Vec::with_capacity(rrset.len());
    for r in rrset {
        if r.name != first.name || r.record_type() != first.record_type() || r.dns_class != first.dns_class {
            return Err(Bogus::Other("records of more than one RRset"));
        }
        if !out.iter().any(|o| o.data == r.data) {
            out.push(r);
        }
    }
    Ok(out)
}

/// The DNSKEY RRset of `zone` checked against the DS set from its (validated)
/// parent or against an anchor: at least one DS-matching (or anchor-equal),
/// supported-algorithm, zone-flagged, unrevoked DNSKEY that signs the DNSKEY
/// RRset with a currently valid RRSIG (RFC 4035 5.2). Every key whose tag and
/// algorithm match a DS is tried, so key-tag collisions do not hide the right
/// key. `Ok(None)` when no DS/anchor uses a supported algorithm and digest:
/// the zone is then insecure (RFC 4035 5.2, RFC 6840 5.2).
///
/// Cost: one digest per (DS, DNSKEY) pair with matching tag and algorithm,
/// then one signature verification per candidate RRSIG and matching key.
pub fn verify_dnskeys(zone: &Name, dnskeys: &[Record], rrsigs: &[Record], trust: Trust<'_>, now: u32) -> Result<Option<ZoneKeys>, Bogus> {
    let (ds, anchor_keys): (Vec<&DS>, Vec<&DNSKEY>) = match trust {
        Trust::Ds(ds) => (usable_ds(ds), Vec::new()),
        Trust::Anchor(a) => (usable_ds(&a.ds), a.dnskeys.iter().filter(|k| usable_key(k)).collect()),
    };
    if ds.is_empty() && anchor_keys.is_empty() {
        return Ok(None);
    }
    let set: Vec<Record> = dnskeys
        .iter()
        .filter(|r| r.record_type() == RecordType::DNSKEY && r.name == *zone && r.dns_class == DNSClass::IN)
        .cloned()
        .collect();
    let set = if set.is_empty() { return Err(Bogus::DnskeyMissing) } else { one_rrset(&set)? };
    let keys: Vec<(u16, DNSKEY)> = set
        .iter()
        .filter_map(|r| dnskey_of(r))
        .filter(|k| usable_key(k))
        .filter_map(|k| Some((k.calculate_key_tag().ok()?, k.clone())))
        .collect();
    let entry: Vec<(u16, &DNSKEY)> = keys
        .iter()
        .filter(|(tag, k)| {
            ds.iter().any(|d| d.key_tag() == *tag && d.algorithm() == k.algorithm() && d.covers(zone, k).unwrap_or(false))
                || anchor_keys.iter().any(|a| a.algorithm() == k.algorithm() && a.public_key().public_bytes() == k.public_key().public_bytes())
        })
        .map(|(t, k)| (*t, k))
        .collect();
    if entry.is_empty() {
        return Err(Bogus::DnskeyMissing);
    }
    let v = check_sigs(&set, rrsigs, zone, &entry, now)?;
    Ok(Some(ZoneKeys {
        zone: zone.clone(),
        ttl: v.ttl,
        keys,
        max_nsec3_iterations: MAX_NSEC3_ITERATIONS,
        max_denial_rrsets: MAX_DENIAL_RRSETS,
    }))
}

/// One RRset (same owner, type, class) checked with the signer zone's keys:
/// RRSIGs whose signer name is `keys.zone` and which cover the RRset's type,
/// with a labels field not above the owner's, inside their validity window
/// (RFC 1982 serial arithmetic on `now`, RFC 4034 3.1.5), by a key of
/// `keys` with the RRSIG's tag and algorithm (every such key is tried). When
/// `rrsig.labels` is below the owner's label count the RRset is a wildcard
/// expansion and [`Verified::wildcard`] names the source `*.closest-encloser`,
/// for which the caller must get [`prove_wildcard_answer`].
///
/// Cost: one signature verification per RRSIG tried (and per colliding key
/// tag), never more than [`MAX_SIGNATURE_CHECKS`] (then bogus), plus building the canonical signed data (a sort of the RRset and one
/// buffer); RRSIGs failing the cheap checks (signer, type, time, labels) cost
/// no cryptography. No allocation beyond that buffer and two small vectors.
pub fn verify_rrset(rrset: &[Record], rrsigs: &[Record], keys: &ZoneKeys, now: u32) -> Result<Verified, Bogus> {
    let set = one_rrset(rrset)?;
    if let Some(first) = set.first() {
        if !keys.zone.zone_of(&first.name) {
            return Err(Bogus::Other("RRset owner outside the signer's zone"));
        }
    }
    let keyrefs: Vec<(u16, &DNSKEY)> = keys.keys.iter().map(|(t, k)| (*t, k)).collect();
    check_sigs(&set, rrsigs, &keys.zone, &keyrefs, now)
}

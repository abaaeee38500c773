//! The UDP fast path: one task per UDP socket (one socket per runtime
//! worker) reads datagrams in batches (`recvmmsg`) and answers the common
//! cases right there: blocked names (nxdomain, nodata, refused) from a
//! template, cache hits by copying the cached answer, all of them sent in
//! one `sendmmsg`. Cache misses are forwarded from here too, the batch's
//! queries together ([`crate::resolve::forward::Forwarder::batch`]); the
//! upstream socket's reader completes them. Clients outside the ACL are
//! answered here too, before any parsing beyond the header: dropped, or
//! REFUSED within a global budget (`[server] outside_acl`); so is the
//! per-client rate limit, and blocked queries are logged from here.
//! Everything else (unusual packets, other actions, EDNS options we do not
//! handle, CNAME-blocked answers) is handed to the hickory path unchanged,
//! which answers it on the same socket.
//!
//! One source of truth: the fast path reads the same `Policy` snapshot, the
//! same cache and the same metrics as the hickory path; the differential
//! integration test compares both paths' answers over many names.

use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::time::Instant;

use hickory_proto::rr::{DNSClass, RecordType};
use hickory_server::net::xfer::Protocol;
use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};

use super::handler::{chain_block, Shared};
use super::respond;
use crate::metrics::Outcome;
use crate::name::{NameBuf, NameRef};
use crate::outbox::to_std;
use crate::policy::{Answer as PolicyAnswer, Policy, Verdict};
use crate::resolve::cache::{Entry, Key, KeyRef, Lookup, Wire};
use crate::resolve::wire::u16_at;
use crate::resolve::Reply;

/// Datagrams read per `recvmmsg`.
const BATCH: usize = 32;
/// Largest datagram we read (bigger queries are not queries we answer).
const BUF: usize = 4096;

/// What the fast path decided for one datagram.
pub enum Fast {
    /// A reply, and the outcome to record for it.
    Reply(Vec<u8>, Outcome),
    /// Hand to the hickory path.
    Slow,
    /// No reply (a client outside the ACL, or rate limited with `drop`).
    Drop,
    /// Not cached: forward it from the fast path ([`start_miss`]).
    Miss(MissQuery),
}

/// A query the fast path forwards: a copy of its packet, what `parse` found
/// in it and its cache key, kept until the upstream reply arrives.
pub struct MissQuery {
    packet: Box<[u8]>,
    id: u16,
    rd: bool,
    cd: bool,
    ad: bool,
    qtype: RecordType,
    edns: Option<(u16, bool)>,
    question_len: usize,
    key: Key,
    /// The policy generation under which the fast path found the name not
    /// blocked, and whether an allow rule matched: the reply is checked
    /// again only if a reload came in between (at 1M rules each check is a
    /// few cold cache lines).
    checked: Option<(u64, bool)>,
}

impl MissQuery {
    fn new(q: &Simple<'_>, packet: &[u8], key: Key, checked: Option<(u64, bool)>) -> Self {
        Self {
            packet: packet.into(),
            id: q.id,
            rd: q.rd,
            cd: q.cd,
            ad: q.ad,
            qtype: q.qtype,
            edns: q.edns,
            question_len: q.question.len(),
            key,
            checked,
        }
    }

    /// From a packet the fast path would forward (`None`: it would not).
    pub fn parse(packet: &[u8], max_udp_payload: u16) -> Option<Self> {
        let mut qname = NameBuf::new();
        let q = parse(packet, &mut qname)?;
        let key = q.key(qname.as_name(), q.payload(max_udp_payload).0);
        Some(Self::new(&q, packet, key, None))
    }

    /// The parsed query again, borrowing the packet copy.
    fn view(&self) -> Simple<'_> {
        Simple {
            id: self.id,
            rd: self.rd,
            cd: self.cd,
            ad: self.ad,
            question: self.packet.get(12..12 + self.question_len).unwrap_or(&[]),
            qtype: self.qtype,
            edns: self.edns,
        }
    }
}

/// A parsed simple query: one question, optionally one OPT without options.
struct Simple<'p> {
    id: u16,
    rd: bool,
    cd: bool,
    /// The client's AD bit (RFC 6840 §5.7: it asks for AD in the reply).
    ad: bool,
    /// The question as sent (name + type + class), for echoing.
    question: &'p [u8],
    qtype: RecordType,
    edns: Option<(u16, bool)>, // (payload, DO)
}

/// Parses the header and question, and normalises the name (on the
/// stack); `None` for anything the fast path leaves to hickory.
/// Cost: O(name length), no allocation.
fn parse<'p>(p: &'p [u8], qname: &mut NameBuf) -> Option<Simple<'p>> {
    let id = u16_at(p, 0)?;
    let flags = u16_at(p, 2)?;
    let qr = flags & 0x8000 != 0;
    let opcode = (flags >> 11) & 0xf;
    let tc = flags & 0x0200 != 0;
    if qr || opcode != 0 || tc {
        return None;
    }
    if u16_at(p, 4)? != 1 || u16_at(p, 6)? != 0 || u16_at(p, 8)? != 0 {
        return None;
    }
    let arcount = u16_at(p, 10)?;
    if arcount > 1 {
        return None;
    }
    let mut i = 12 + qname.read_wire(p.get(12..)?)?;
    let qtype = RecordType::from(u16_at(p, i)?);
    let qclass = u16_at(p, i + 2)?;
    if qclass != 1 || matches!(qtype, RecordType::AXFR | RecordType::IXFR | RecordType::ANY | RecordType::OPT) {
        return None;
    }
    let question = p.get(12..i + 4)?;
    i += 4;
    let edns = if arcount == 1 {
        // OPT: root owner, type 41, class = payload, ttl = ext-rcode, version, flags; rdlen 0
        if *p.get(i)? != 0 || u16_at(p, i + 1)? != 41 {
            return None;
        }
        let payload = u16_at(p, i + 3)?;
        let (ext, version) = (*p.get(i + 5)?, *p.get(i + 6)?);
        let eflags = u16_at(p, i + 7)?;
        let rdlen = u16_at(p, i + 9)?;
        if ext != 0 || version != 0 || rdlen != 0 {
            return None; // options (cookies, ECS, …) and BADVERS go to hickory
        }
        i += 11;
        Some((payload, eflags & 0x8000 != 0))
    } else {
        None
    };
    if i != p.len() {
        return None; // trailing bytes
    }
    Some(Simple {
        id,
        rd: flags & 0x0100 != 0,
        cd: flags & 0x0010 != 0,
        ad: flags & 0x0020 != 0,
        question,
        qtype,
        edns,
    })
}

impl Simple<'_> {
    /// The cache key of this query (its name owned: one allocation).
    fn key(&self, name: NameRef<'_>, dnssec_ok: bool) -> Key {
        Key { name: name.to_qname(), qtype: self.qtype, qclass: DNSClass::IN, dnssec_ok, checking_disabled: self.cd }
    }

    /// [`Simple::key`] borrowing the name (no allocation).
    fn key_ref<'n>(&self, name: NameRef<'n>, dnssec_ok: bool) -> KeyRef<'n> {
        KeyRef { name: name.as_str(), qtype: self.qtype, qclass: DNSClass::IN, dnssec_ok, checking_disabled: self.cd }
    }

    /// (DO, the payload size our reply may use: 512 without EDNS).
    fn payload(&self, max_udp_payload: u16) -> (bool, u16) {
        match self.edns {
            Some((p, d)) => (d, p.max(512).min(max_udp_payload.max(512))),
            None => (false, 512),
        }
    }
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}


/// The sinkhole SOA's MNAME and RNAME.
const SOA_NAMES: &[u8] = b"\x06qalqan\x07invalid\x00\x0ahostmaster\x06qalqan\x07invalid\x00";

/// A blocked answer (NXDOMAIN / NODATA with SOA, or REFUSED) built from a
/// template; the EDE EXTRA-TEXT is the concatenation of its pieces.
/// Cost: one allocation of ~100 bytes plus the EDE text; the header, SOA
/// and OPT are each written as one fixed-size block.
fn blocked_reply(q: &Simple<'_>, rcode: u8, soa: Option<(u16, u32)>, ede: Option<(u16, &[&str])>, cap: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + q.question.len());
    let mut flags: u16 = 0x8000 | 0x0080 | u16::from(rcode & 0x0f); // QR, RA
    if q.rd {
        flags |= 0x0100;
    }
    if q.cd {
        flags |= 0x0010;
    }
    let [id0, id1] = q.id.to_be_bytes();
    let [f0, f1] = flags.to_be_bytes();
    out.extend_from_slice(&[id0, id1, f0, f1, 0, 1, 0, 0, 0, u8::from(soa.is_some()), 0, u8::from(q.edns.is_some())]);
    out.extend_from_slice(q.question);
    if let Some((owner_offset, ttl)) = soa {
        let [o0, o1] = (0xc000 | owner_offset).to_be_bytes();
        let [t0, t1, t2, t3] = ttl.to_be_bytes();
        let rdlen = (SOA_NAMES.len() + 20) as u16;
        let [r0, r1] = rdlen.to_be_bytes();
        // owner (pointer), SOA, IN, TTL, RDLENGTH
        out.extend_from_slice(&[o0, o1, 0, 6, 0, 1, t0, t1, t2, t3, r0, r1]);
        out.extend_from_slice(SOA_NAMES);
        // serial 1, refresh 3600, retry 600, expire 86400, minimum = TTL
        out.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0x0e, 0x10, 0, 0, 0x02, 0x58, 0, 0x01, 0x51, 0x80, t0, t1, t2, t3]);
    }
    if let Some((payload, dnssec_ok)) = q.edns {
        let [p0, p1] = payload.max(512).min(cap.max(512)).to_be_bytes();
        let do_bit = if dnssec_ok { 0x80 } else { 0 };
        // root owner, OPT, class = payload, ext rcode 0, version 0, flags
        let opt = [0, 0, 41, p0, p1, 0, 0, do_bit, 0];
        match ede {
            Some((code, parts)) => {
                let text_len: usize = parts.iter().map(|p| p.len()).sum();
                // an over-long text (it cannot be: list names are short) is left out
                let (len, keep) = match u16::try_from(2 + text_len) {
                    Ok(l) if l < u16::MAX - 4 => (l, true),
                    _ => (2, false),
                };
                let [d0, d1] = (len + 4).to_be_bytes();
                let [e0, e1] = respond::EDE_OPTION.to_be_bytes();
                let [l0, l1] = len.to_be_bytes();
                let [c0, c1] = code.to_be_bytes();
                out.extend_from_slice(&opt);
                out.extend_from_slice(&[d0, d1, e0, e1, l0, l1, c0, c1]);
                if keep {
                    for p in parts {
                        out.extend_from_slice(p.as_bytes());
                    }
                }
            }
            None => {
                out.extend_from_slice(&opt);
                out.extend_from_slice(&[0, 0]);
            }
        }
    }
    out
}

/// Decides one datagram. Never blocks; never panics on input.
///
/// `now` is when the datagram's batch was read; the caller records the
/// reply's latency (`Fast::Reply`'s outcome) once the batch is sent, so the
/// fast path reads the clock once per batch, not twice per query.
pub fn answer(s: &Shared, packet: &[u8], src: SocketAddr, now: Instant) -> Fast {
    answer_with(s, &s.policy.load(), packet, src, now)
}

/// [`answer`] under a policy snapshot the caller holds (the batch loop
/// takes one per batch: a reload applies from the next batch on).
///
/// The cache is asked first: an entry that already passed this policy
/// generation ([`Entry::passed`](crate::resolve::cache::Entry::passed)) is
/// answered without touching the policy index, so a cache hit costs the same
/// with 100k or 1M rules. Everything else is decided by the policy: a
/// blocked name is answered from the template; a cached answer is checked
/// (name, then CNAME chain and addresses) and stamped with the generation.
fn answer_with(s: &Shared, policy: &Arc<Policy>, packet: &[u8], src: SocketAddr, now: Instant) -> Fast {
    let mut qname = NameBuf::new();
    match take(s, packet, src, now, &mut qname) {
        Taken::Query(q) => answer_parsed(s, policy, &q, qname.as_name(), packet, src, now),
        Taken::Slow => Fast::Slow,
        Taken::Reply(r, o) => Fast::Reply(r, o),
        Taken::Drop => Fast::Drop,
    }
}

/// What [`take`] made of a datagram.
enum Taken<'p> {
    /// A simple query from a client the fast path serves.
    Query(Simple<'p>),
    /// For the hickory path.
    Slow,
    /// Answered already (a client outside the ACL, or rate limited).
    Reply(Vec<u8>, Outcome),
    /// No reply (counted as [`Outcome::Dropped`]).
    Drop,
}

/// The gate every datagram passes first. A client outside the ACL never
/// reaches the hickory path (no task, no decode; a NOTIFY from a list's
/// primary excepted): dropped, or REFUSED within the global
/// `outside_acl_refused_qps` budget. A client inside it: the per-client
/// rate limit, checked once per query that [`parse`] takes (the rest go
/// to the hickory path, which checks it for them), then the query.
/// Cost for an allowed client: the ACL lookup, [`parse`], and one token
/// bucket when `[limits]` is on.
fn take<'p>(s: &Shared, packet: &'p [u8], src: SocketAddr, now: Instant, qname: &mut NameBuf) -> Taken<'p> {
    if !s.acl.allows(src.ip()) {
        return outsider(s, packet, src, now, qname);
    }
    let Some(q) = parse(packet, qname) else { return Taken::Slow };
    if let Some((rl, drop)) = &s.rate_limit {
        if rl.check(src.ip(), now) == super::ratelimit::Decision::Limit {
            s.metrics.rate_limited.inc();
            if *drop {
                return Taken::Drop;
            }
            let ede = (respond::EDE_PROHIBITED, &["rate limited"][..]);
            return Taken::Reply(blocked_reply(&q, 5, None, Some(ede), s.max_udp_payload), Outcome::Refused);
        }
    }
    Taken::Query(q)
}

/// [`take`] for a client outside the ACL. Never answers a response (QR
/// set) or anything shorter than a header; REFUSED echoes the question of
/// a simple query, else it is the header alone.
fn outsider<'p>(s: &Shared, packet: &'p [u8], src: SocketAddr, now: Instant, qname: &mut NameBuf) -> Taken<'p> {
    let Some(flags) = u16_at(packet, 2) else { return Taken::Drop };
    if flags & 0x8000 != 0 {
        return Taken::Drop;
    }
    if (flags >> 11) & 0xf == 4 && s.is_notify_primary(src.ip()) {
        return Taken::Slow; // the handler checks zone and source (and TSIG)
    }
    if s.outsiders.drop || !s.outsiders.refused.take(now) {
        return Taken::Drop;
    }
    let reply = match parse(packet, qname) {
        Some(q) => blocked_reply(&q, 5, None, Some((respond::EDE_PROHIBITED, &["client not in allow_clients"])), s.max_udp_payload),
        None => {
            // ID, opcode and RD kept; QR, RA, REFUSED; no sections
            let mut h = packet.get(..12).map(<[u8]>::to_vec).unwrap_or_default();
            if h.len() < 12 {
                return Taken::Drop;
            }
            let f = (flags & 0x7900) | 0x8000 | 0x0080 | 5;
            h[2..4].copy_from_slice(&f.to_be_bytes());
            h[4..12].fill(0);
            h
        }
    };
    Taken::Reply(reply, Outcome::Refused)
}

/// [`answer_with`] for a query [`take`] parsed.
/// `name` is the query name `take` read ([`NameBuf::as_name`] checks the
/// text is UTF-8: once per query).
fn answer_parsed(s: &Shared, policy: &Arc<Policy>, q: &Simple<'_>, name: NameRef<'_>, packet: &[u8], src: SocketAddr, now: Instant) -> Fast {
    let (dnssec_ok, _) = q.payload(s.max_udp_payload);
    let cached = s.cache.get_ref(&q.key_ref(name, dnssec_ok), now);
    let f = match cached.as_deref().and_then(|entry| passed_reply(s, policy, q, entry, now)) {
        Some(f) => f,
        None => decide(s, policy, q, name, packet, src, now, cached),
    };
    // the batch loop counts its hits once per batch instead
    if matches!(f, Fast::Reply(_, Outcome::Cached)) {
        s.metrics.cache_hits.inc();
    }
    f
}

/// The reply to a query whose cache entry already passed this policy
/// generation ([`Entry::passed`]): the cached answer, policy untouched.
/// `None` when the entry has not passed it (the policy decides: [`decide`]).
/// Counts nothing and does no atomic read-modify-write (it runs under the
/// cache's locks in [`Cache::get_batch`](crate::resolve::cache::Cache::get_batch)).
fn passed_reply(s: &Shared, policy: &Policy, q: &Simple<'_>, entry: &Entry, now: Instant) -> Option<Fast> {
    entry.passed(policy.generation).then(|| {
        let (dnssec_ok, payload) = q.payload(s.max_udp_payload);
        cached_reply(q, entry, now, dnssec_ok, payload)
    })
}

/// [`answer_parsed`] once the cache was asked (`cached`: its live entry, if
/// any, that has not passed this policy generation): the policy decides.
#[allow(clippy::too_many_arguments)]
fn decide(
    s: &Shared,
    policy: &Arc<Policy>,
    q: &Simple<'_>,
    name: NameRef<'_>,
    packet: &[u8],
    src: SocketAddr,
    now: Instant,
    cached: Option<Arc<Entry>>,
) -> Fast {
    let (dnssec_ok, payload) = q.payload(s.max_udp_payload);
    let verdict = policy.check_name(name);
    if let Verdict::Blocked(hit) = verdict {
        let (rcode, soa) = match policy.answer(&hit) {
            PolicyAnswer::Nxdomain => (3u8, true),
            PolicyAnswer::Nodata => (0, true),
            PolicyAnswer::Refused => (5, false),
            _ => return Fast::Slow,
        };
        let soa = if soa {
            let idx = usize::from(hit.depth);
            // a label's wire offset is its text offset plus the header
            let Some(off) = name.label_start(idx) else { return Fast::Slow };
            Some((12 + u16::from(off), s.sinkhole.ttl))
        } else {
            None
        };
        let (code, text) = policy.ede_parts(&hit);
        let reply = blocked_reply(q, rcode, soa, Some((code, &text)), s.max_udp_payload);
        s.log_blocked(policy, &hit, name.as_str(), q.qtype, true, src.ip());
        if let Some(c) = s.blocked_counters.get(usize::from(hit.list)) {
            c.inc();
        }
        return Fast::Reply(reply, Outcome::Blocked);
    }
    let Some(entry) = cached else {
        let checked = Some((policy.generation, matches!(verdict, Verdict::Allowed(_))));
        return Fast::Miss(MissQuery::new(q, packet, q.key(name, dnssec_ok), checked));
    };
    if !matches!(verdict, Verdict::Allowed(_)) && chain_block(policy, &entry.wire).is_some() {
        return Fast::Slow;
    }
    entry.set_passed(policy.generation);
    cached_reply(q, &entry, now, dnssec_ok, payload)
}

/// A cache hit's reply (the policy let it through). The caller counts it.
fn cached_reply(q: &Simple<'_>, entry: &Entry, now: Instant, dnssec_ok: bool, payload: u16) -> Fast {
    let ad = entry.wire.authentic_data && (dnssec_ok || q.ad);
    let Some(reply) = from_wire(q, &entry.wire, entry.age(now), ad, payload) else { return Fast::Slow };
    Fast::Reply(reply, Outcome::Cached)
}

/// The reply to `q` from a pre-encoded answer: a copy of it with the
/// client's ID, flags and question bytes written in, every TTL lowered by
/// `age` and an OPT record appended if the client sent one. `None` (hand to
/// the hickory path) when it would not fit `payload` (truncation) or the
/// question lengths differ. Cost: one allocation and copy of the reply, a
/// 4-byte write per record; no parsing, no name compression.
fn from_wire(q: &Simple<'_>, w: &Wire, age: u32, ad: bool, payload: u16) -> Option<Vec<u8>> {
    let qe = usize::from(w.question_end);
    if qe != 12 + q.question.len() {
        return None;
    }
    let total = w.bytes.len() + if q.edns.is_some() { 11 } else { 0 };
    if total > usize::from(payload) {
        return None;
    }
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&w.bytes);
    let rcode = u16::from(*w.bytes.get(3)?) & 0x0f;
    let mut flags: u16 = 0x8000 | 0x0080 | rcode; // QR, RA
    if q.rd {
        flags |= 0x0100;
    }
    if ad {
        flags |= 0x0020;
    }
    if q.cd {
        flags |= 0x0010;
    }
    out.get_mut(0..2)?.copy_from_slice(&q.id.to_be_bytes());
    out.get_mut(2..4)?.copy_from_slice(&flags.to_be_bytes());
    out.get_mut(12..qe)?.copy_from_slice(q.question);
    if age > 0 {
        for &off in w.ttl_offsets.iter() {
            let f = out.get_mut(usize::from(off)..usize::from(off) + 4)?;
            let ttl = u32::from_be_bytes([f[0], f[1], f[2], f[3]]);
            f.copy_from_slice(&ttl.saturating_sub(age).to_be_bytes());
        }
    }
    if let Some((client_payload, dnssec_ok)) = q.edns {
        let ar = out.get_mut(10..12)?;
        let n = u16::from_be_bytes([ar[0], ar[1]]).checked_add(1)?;
        ar.copy_from_slice(&n.to_be_bytes());
        out.push(0);
        put16(&mut out, 41);
        put16(&mut out, client_payload.max(512).min(payload.max(512)));
        out.extend_from_slice(&[0, 0]); // ext rcode, version
        put16(&mut out, if dnssec_ok { 0x8000 } else { 0 });
        put16(&mut out, 0);
    }
    Some(out)
}

/// Answers a cache miss from the fast path: the same forwarder, cache and
/// policy as the hickory path, without decoding the query into a hickory
/// `Request`, and without a task of its own: the forwarder's reader task
/// runs the rest (`finish_miss`) when the upstream reply arrives, and hands
/// the reply to `deliver`. `deliver(Err(packet))` means "give it to the
/// hickory path": a name the policy blocks by now, a CNAME/address in the answer
/// that a list blocks (the answer is cached first, so the hickory path
/// answers it from the cache), a reply that needs truncation, a packet that
/// does not parse. `start` is when the query was read (for the latency
/// histogram). Cost: two small copies (packet, question) and one boxed
/// callback; no task, channel or timer.
pub fn start_miss(h: &super::handler::Handler, mq: MissQuery, start: Instant, deliver: Deliver) {
    let s = &*h.shared;
    let Ok(permit) = s.inflight.try_acquire() else {
        tracing::debug!("in-flight limit reached");
        s.metrics.observe(Protocol::Udp, Outcome::Servfail, start.elapsed());
        return deliver(Ok(blocked_reply(&mq.view(), 2, None, None, s.max_udp_payload)));
    };
    permit.forget(); // given back when the forwarder is done
    s.metrics.cache_misses.inc();
    let question = Box::<[u8]>::from(mq.view().question);
    let (dnssec_ok, cd) = (mq.key.dnssec_ok, mq.cd);
    let handler = h.clone();
    s.forwarder.resolve_then(
        question,
        dnssec_ok,
        cd,
        Box::new(move |r| {
            handler.shared.inflight.add_permits(1);
            finish_miss(&handler.shared, mq, start, r, deliver);
        }),
    );
}

/// Where a forwarded miss's reply goes; `Err(packet)`: the query, for the hickory path.
pub type Deliver = Box<dyn FnOnce(Result<Vec<u8>, Box<[u8]>>) + Send>;

/// The reply to a forwarded miss once the forwarder is done (see [`start_miss`]).
fn finish_miss(s: &Shared, mq: MissQuery, start: Instant, r: Result<Reply, crate::resolve::ResolveError>, deliver: Deliver) {
    let q = mq.view();
    let reply = match r {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(name = %mq.key.name, error = %e, "upstream failed");
            s.metrics.observe(Protocol::Udp, Outcome::Servfail, start.elapsed());
            return deliver(Ok(blocked_reply(&q, 2, None, None, s.max_udp_payload)));
        }
    };
    let payload = q.payload(s.max_udp_payload).1;
    let now = Instant::now();
    let policy = s.policy.load();
    // (blocked, allowed) under the policy now in force
    let (blocked, allowed) = match mq.checked {
        Some((generation, allowed)) if generation == policy.generation => (false, allowed),
        _ => match policy.check(&mq.key.name) {
            Verdict::Blocked(_) => (true, false),
            Verdict::Allowed(_) => (false, true),
            Verdict::Pass => (false, false),
        },
    };
    let (entry, _cached) = s.cache.insert(&mq.key, reply, now);
    let chain_blocked = blocked || (!allowed && chain_block(&policy, &entry.wire).is_some());
    if !chain_blocked {
        entry.set_passed(policy.generation);
    }
    // chain-blocked: the hickory path builds the blocked answer from the
    // cache entry (an uncacheable cloaked answer, TTL 0, is asked for again:
    // rare); not cacheable (TTL 0, SERVFAIL or REFUSED from every server, …):
    // answered as it came, like the hickory path does
    let ad = entry.wire.authentic_data && (mq.key.dnssec_ok || q.ad);
    match (!chain_blocked).then(|| from_wire(&q, &entry.wire, 0, ad, payload)).flatten() {
        Some(reply) => {
            s.metrics.observe(Protocol::Udp, Outcome::Forwarded, now.saturating_duration_since(start));
            deliver(Ok(reply));
        }
        None => {
            tracing::debug!(name = %mq.key.name, qtype = %mq.qtype, chain_blocked, "forwarded answer left to the hickory path");
            deliver(Err(mq.packet));
        }
    }
}

/// [`start_miss`] awaited: the reply to send, or the hickory path's.
pub async fn miss(s: &Shared, handler: &super::handler::Handler, packet: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
    let Some(mq) = MissQuery::parse(packet, s.max_udp_payload) else {
        return super::wire::handle_bytes(handler, packet, src).await;
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    start_miss(handler, mq, Instant::now(), Box::new(move |r| {
        let _ = tx.send(r);
    }));
    match rx.await {
        Ok(Ok(reply)) => Some(reply),
        _ => super::wire::handle_bytes(handler, packet, src).await,
    }
}

/// Runs `reply` (a forwarded miss or the hickory path) as its own task and
/// sends what it yields to `src` on `sock`.
fn reply_later(
    sock: &Arc<tokio::net::UdpSocket>,
    src: SocketAddr,
    reply: impl std::future::Future<Output = Option<Vec<u8>>> + Send + 'static,
) {
    let sock = Arc::clone(sock);
    tokio::spawn(async move {
        if let Some(reply) = reply.await {
            if let Err(e) = sock.send_to(&reply, src).await {
                tracing::debug!(error = %e, %src, "UDP send failed");
            }
        }
    });
}

/// Sends a forwarded miss's reply without waiting ([`crate::outbox::send`]:
/// batched with the other replies the reader's batch completes; a task
/// waits when the socket's send buffer is full), or hands the query to the hickory path
/// when there is none. Runs on the forwarder's reader task.
fn send_or_slow(sock: Arc<tokio::net::UdpSocket>, h: super::handler::Handler, src: SocketAddr, reply: Result<Vec<u8>, Box<[u8]>>) {
    match reply {
        // with the other replies of the reader's batch, in one sendmmsg
        Ok(r) => crate::outbox::send(&sock, src, r),
        Err(packet) => reply_later(&sock, src, async move { super::wire::handle_bytes(&h, &packet, src).await }),
    }
}

/// The `recvmmsg`/`sendmmsg` headers of this thread, kept between batches.
///
/// Building them per batch cost two allocations of 2–4 KiB that the
/// allocator retired and re-fetched a page for on every batch: a quarter of
/// the fast path's user-space instructions on the blocked workload
/// (callgrind). `MultiHeaders` holds raw pointers, so it cannot live in the
/// (`Send`) batch future; a thread-local is borrowed only inside one
/// synchronous system-call closure.
///
/// Receive headers are kept per address family: the kernel writes the
/// source address's length into a header, and a later receive into that
/// header is limited to it. A socket's source addresses all have its own
/// family's length (an IPv6 socket sees IPv4 clients as mapped addresses),
/// so headers shared by the sockets of one family stay right.
struct IoHeaders {
    rx_v4: Option<MultiHeaders<SockaddrStorage>>,
    rx_v6: Option<MultiHeaders<SockaddrStorage>>,
    tx: Option<MultiHeaders<SockaddrStorage>>,
}

thread_local! {
    static IO_HEADERS: std::cell::RefCell<IoHeaders> =
        const { std::cell::RefCell::new(IoHeaders { rx_v4: None, rx_v6: None, tx: None }) };
}

impl IoHeaders {
    fn rx(&mut self, v6: bool) -> &mut MultiHeaders<SockaddrStorage> {
        let slot = if v6 { &mut self.rx_v6 } else { &mut self.rx_v4 };
        slot.get_or_insert_with(|| MultiHeaders::preallocate(BATCH, None))
    }

    fn tx(&mut self) -> &mut MultiHeaders<SockaddrStorage> {
        self.tx.get_or_insert_with(|| MultiHeaders::preallocate(BATCH, None))
    }
}

/// A datagram of a batch: the packet, its source and, if the fast path may
/// answer it ([`take`]), the parsed query.
type Datagram<'p> = (&'p [u8], SocketAddr, Taken<'p>);

/// Runs the fast path as a task on the runtime that also runs the hickory
/// handler, so handing a datagram to the slow path is a task spawn on the
/// same thread, not a cross-thread wake-up. Reads with `recvmmsg(MSG_DONTWAIT)`
/// whenever the socket is readable; replies of one batch go out in one
/// `sendmmsg`. Ends when `stop` is cancelled.
pub async fn run_async(
    sock: Arc<tokio::net::UdpSocket>,
    shared: Arc<Shared>,
    handler: super::handler::Handler,
    stop: tokio_util::sync::CancellationToken,
) {
    let fd = sock.as_raw_fd();
    let v6 = sock.local_addr().is_ok_and(|a| a.is_ipv6());
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; BUF]).collect();
    let mut got: Vec<(usize, Option<SocketAddr>)> = Vec::with_capacity(BATCH);
    // the batch's query names, normalised (reused: `read_wire` overwrites)
    let mut names: Vec<NameBuf> = (0..BATCH).map(|_| NameBuf::new()).collect();
    let mut replies: Vec<(Vec<u8>, Outcome)> = Vec::with_capacity(BATCH);
    // the batch's cache lookups (kept: an array of these per batch was
    // copied in from a template and dropped element by element);
    // `Done(Some(reply))`: answered from the cache; `Done(None)`: a hit the
    // hickory path answers (it does not fit: `from_wire`)
    let mut looked: Vec<Option<Lookup<Option<Vec<u8>>>>> = Vec::with_capacity(BATCH);
    // the replies' destinations, in `sendmmsg`'s form (kept, not rebuilt per batch)
    let mut reply_to: Vec<Option<SockaddrStorage>> = Vec::with_capacity(BATCH);
    // One cancellation future for the task's life (a new one per batch
    // registered and dropped a waiter on the token each time), polled only
    // when the socket has nothing to read; a socket that stays readable
    // under load would starve it, so every 16th batch also asks the token.
    let cancelled = stop.cancelled();
    tokio::pin!(cancelled);
    let mut batches = 0u32;
    loop {
        batches = batches.wrapping_add(1);
        if batches.is_multiple_of(16) && stop.is_cancelled() {
            return;
        }
        tokio::select! {
            biased;
            r = sock.readable() => if r.is_err() { return },
            _ = &mut cancelled => return,
        }
        got.clear();
        let received = sock.try_io(tokio::io::Interest::READABLE, || {
            IO_HEADERS.with_borrow_mut(|h| {
                let mut it = bufs.iter_mut();
                let mut iovs: [[std::io::IoSliceMut<'_>; 1]; BATCH] =
                    std::array::from_fn(|_| [std::io::IoSliceMut::new(it.next().map_or(&mut [][..], |b| b.as_mut_slice()))]);
                match recvmmsg(fd, h.rx(v6), iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None) {
                    Ok(res) => {
                        for m in res {
                            got.push((m.bytes, m.address.as_ref().and_then(to_std)));
                        }
                        Ok(())
                    }
                    Err(e) => Err(std::io::Error::from(e)),
                }
            })
        });
        match received {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!(error = %e, "recvmmsg failed");
                continue;
            }
        }
        replies.clear();
        reply_to.clear();
        let now = Instant::now();
        let policy = shared.policy.load();
        // Passes over the batch: parse every datagram, hash the names, start
        // loading the names' policy slots, look every name up in the cache
        // (answering the hits), start loading the rule records the slots of
        // the rest point to, then decide those. At a million rules a blocked
        // name's two dependent cache misses were nine tenths of the policy
        // check, and a cache hit's four (slot, node, entry, answer) most of
        // its user time (perf annotate); this way the batch's misses overlap.
        // `datagrams[k]`: see `Datagram` (the query's name is `names[k]`);
        // every pass runs over the `n` datagrams read, not the whole arrays
        let n = got.len().min(BATCH);
        let mut datagrams: [Option<Datagram<'_>>; BATCH] = [const { None }; BATCH];
        for ((((len, src), buf), name), d) in got.iter().zip(bufs.iter()).zip(names.iter_mut()).zip(datagrams.iter_mut()) {
            let (Some(packet), Some(src)) = (buf.get(..*len), src) else { continue };
            if *len > BUF - 1 {
                continue;
            }
            *d = Some((packet, *src, take(&shared, packet, *src, now, name)));
        }
        let datagrams = datagrams.get_mut(..n).unwrap_or(&mut []);
        let mut dropped = 0u64;
        // The cache keys of every datagram the fast path may answer, all
        // looked up at once (their misses overlap: `Cache::get_batch`); a hit
        // that already passed this policy is answered right there. Their
        // policy slots start loading first, so those loads overlap the cache
        // lookups; the rule records only for the datagrams the policy decides.
        // `ahead[k]`: (name, hash) of datagram k's name
        let mut keys: [Option<KeyRef<'_>>; BATCH] = [None; BATCH];
        let mut ahead: [Option<(NameRef<'_>, u64)>; BATCH] = [None; BATCH];
        for (((d, name), k), a) in datagrams.iter().zip(names.iter()).zip(keys.iter_mut()).zip(ahead.iter_mut()) {
            if let Some((_, _, Taken::Query(q))) = d {
                let name = name.as_name();
                *k = Some(q.key_ref(name, q.payload(shared.max_udp_payload).0));
                *a = Some((name, policy.index.name_hash(name)));
            }
        }
        let ahead = ahead.get(..n).unwrap_or(&[]);
        // loops this short keep all the batch's loads in flight at once
        for &(_, h) in ahead.iter().flatten() {
            policy.index.prefetch_slot(h);
        }
        looked.clear();
        looked.resize_with(n, || None);
        shared.cache.get_batch(keys.get(..n).unwrap_or(&[]), now, &mut looked, |i, entry| {
            let (_, _, Taken::Query(q)) = datagrams.get(i)?.as_ref()? else { return None };
            passed_reply(&shared, &policy, q, entry, now).map(|f| match f {
                Fast::Reply(r, _) => Some(r),
                _ => None,
            })
        });
        for (a, l) in ahead.iter().zip(looked.iter()) {
            if let (Some((_, h)), Some(Lookup::Miss | Lookup::Entry(_))) = (a, l) {
                policy.index.prefetch_rule(*h);
            }
        }
        // the misses of this batch go upstream together (one socket, one sendmmsg)
        shared.forwarder.batch(|| {
            for ((d, a), l) in datagrams.iter_mut().zip(ahead.iter()).zip(looked.iter_mut()) {
                let Some((packet, src, q)) = d else { continue };
                let decided = match (q, a, l.take()) {
                    (_, _, Some(Lookup::Done(Some(r)))) => Fast::Reply(r, Outcome::Cached),
                    (_, _, Some(Lookup::Done(None))) => Fast::Slow,
                    (Taken::Query(q), Some((name, _)), Some(Lookup::Entry(e))) => {
                        decide(&shared, &policy, q, *name, packet, *src, now, Some(e))
                    }
                    (Taken::Query(q), Some((name, _)), Some(Lookup::Miss)) => decide(&shared, &policy, q, *name, packet, *src, now, None),
                    (Taken::Reply(r, o), _, _) => Fast::Reply(std::mem::take(r), *o),
                    (Taken::Drop, _, _) => Fast::Drop,
                    _ => Fast::Slow,
                };
                match decided {
                    Fast::Reply(r, outcome) => {
                        replies.push((r, outcome));
                        reply_to.push(Some(SockaddrStorage::from(*src)));
                    }
                    Fast::Miss(mq) => {
                        let (sock, h, src) = (Arc::clone(&sock), handler.clone(), *src);
                        start_miss(&handler, mq, now, Box::new(move |reply| send_or_slow(sock, h, src, reply)));
                    }
                    Fast::Slow => {
                        let (handler, bytes, src) = (handler.clone(), packet.to_vec(), *src);
                        reply_later(&sock, src, async move { super::wire::handle_bytes(&handler, &bytes, src).await });
                    }
                    Fast::Drop => dropped += 1,
                }
            }
        });
        if dropped > 0 {
            shared.metrics.observe_n(Protocol::Udp, Outcome::Dropped, now.elapsed(), dropped);
        }
        drop(policy);
        if replies.is_empty() {
            continue;
        }
        let sent = sock.try_io(tokio::io::Interest::WRITABLE, || {
            // at most BATCH replies (one per datagram read); sendmmsg sends
            // as many as both `slices` and `reply_to` hold
            let slices: [[std::io::IoSlice<'_>; 1]; BATCH] =
                std::array::from_fn(|i| [std::io::IoSlice::new(replies.get(i).map_or(&[][..], |(r, _)| r))]);
            IO_HEADERS.with_borrow_mut(|h| {
                sendmmsg(fd, h.tx(), slices.iter(), &reply_to, [], MsgFlags::MSG_DONTWAIT)
                    .map(|r| r.count())
                    .map_err(std::io::Error::from)
            })
        });
        // a full send buffer (error, or only part sent): the rest one by one, awaited
        let done = sent.as_ref().map_or(0, |&n| n);
        if done < replies.len() {
            tracing::debug!(sent = done, of = replies.len(), "sendmmsg short; sending the rest one by one");
            for ((r, _), a) in replies.iter().zip(reply_to.iter().flatten()).skip(done) {
                if let Some(dst) = to_std(a) {
                    let _ = sock.send_to(r, dst).await;
                }
            }
        }
        // latency of every reply of the batch: from the read to the send,
        // counted per outcome (replies of one outcome share it)
        let elapsed = now.elapsed();
        for outcome in [Outcome::Blocked, Outcome::Cached] {
            let n = replies.iter().filter(|(_, o)| *o == outcome).count() as u64;
            shared.metrics.observe_n(Protocol::Udp, outcome, elapsed, n);
            if outcome == Outcome::Cached && n > 0 {
                // (not per hit: see `passed_reply`)
                shared.metrics.cache_hits.inc_by(n);
            }
        }
        for (_, outcome) in replies.iter().filter(|(_, o)| !matches!(o, Outcome::Blocked | Outcome::Cached)) {
            shared.metrics.observe(Protocol::Udp, *outcome, elapsed);
        }
    }
}

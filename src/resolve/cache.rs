//! The reply cache: keyed on (name, qtype, qclass, DO, CD), bounded by entry
//! count and by bytes (CLOCK eviction over sharded tables; a reply bigger
//! than `max_reply_bytes` is served but not kept), TTLs clamped by config;
//! negative answers cached for min(SOA TTL, SOA MINIMUM) as RFC 2308 §5
//! says. No record is served with a TTL above the time its entry has left:
//! the stored records' TTLs are lowered to the entry's clamped TTL.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, RecordType};

use super::{Answer, Reply};
use crate::name::QName;
use smallvec::SmallVec;

/// Cache key. The name is the normalised query name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub name: QName,
    pub qtype: RecordType,
    pub qclass: DNSClass,
    pub dnssec_ok: bool,
    pub checking_disabled: bool,
}

/// A [`Key`] with a borrowed name (the fast path looks up without
/// allocating); it hashes and compares like the `Key` it names.
#[derive(Debug, Clone, Copy)]
pub struct KeyRef<'a> {
    /// The normalised name's text ([`QName::as_str`]).
    pub name: &'a str,
    pub qtype: RecordType,
    pub qclass: DNSClass,
    pub dnssec_ok: bool,
    pub checking_disabled: bool,
}

impl Key {
    pub fn as_ref(&self) -> KeyRef<'_> {
        KeyRef {
            name: self.name.as_str(),
            qtype: self.qtype,
            qclass: self.qclass,
            dnssec_ok: self.dnssec_ok,
            checking_disabled: self.checking_disabled,
        }
    }
}

impl KeyRef<'_> {
    /// Everything but the name, in one word.
    fn rest(&self) -> u64 {
        u64::from(u16::from(self.qtype)) << 32
            | u64::from(u16::from(self.qclass)) << 16
            | u64::from(self.dnssec_ok)
            | u64::from(self.checking_disabled) << 1
    }

    fn matches(&self, k: &NodeKey) -> bool {
        k.rest == self.rest() && k.name.as_slice() == self.name.as_bytes()
    }
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        // the name, then everything else in one word (one mixing step, not four)
        h.write(self.name.as_bytes());
        h.write_u64(self.rest());
    }
}

/// A cache node's copy of its key, compared on every hit: the name's text
/// inline for names up to 48 bytes (most), so that the node's own cache
/// line holds it, not a separate allocation: one dependent cache miss fewer
/// per cold hit (`cache_hit_cold_100k/get_ref` in `benches/hot_path.rs`
/// measures a cold hit).
#[derive(Debug)]
struct NodeKey {
    name: SmallVec<[u8; 48]>,
    rest: u64,
}

impl NodeKey {
    fn of(k: &KeyRef<'_>) -> Self {
        NodeKey { name: SmallVec::from_slice(k.name.as_bytes()), rest: k.rest() }
    }
}

impl Hash for Key {
    /// The name's text stands for the name (its label starts follow from it).
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.as_ref().hash(h);
    }
}

/// A cached answer and when it was stored.
#[derive(Debug)]
pub struct Entry {
    /// The answer as a reply message (what the UDP fast path copies).
    pub wire: Wire,
    /// The answer decoded into records, made on first use (the hickory path).
    answer: OnceLock<Answer>,
    pub stored: Instant,
    pub ttl: u32,
    /// 1 + the policy generation under which the query name and the
    /// answer's CNAME chain and addresses were last found not blocked; 0:
    /// never. A hit under that same generation skips the policy (the
    /// probes into a 1M-rule index miss the CPU cache); any publish makes
    /// the next hit check again. See [`Entry::passed`].
    pass_gen: AtomicU64,
    /// A background refresh of this entry was started ([`Entry::claim_prefetch`]).
    prefetch: std::sync::atomic::AtomicBool,
}

/// An answer as a whole reply message, as the upstream sent it: header
/// with ID 0 and the upstream's flags and rcode, the question, and the
/// answer, authority and additional sections (no OPT). A hit copies it,
/// writes the client's ID, flags and question bytes over it (the question
/// has the same length: the cache key is the normalised name), lowers each
/// TTL by the entry's age at the recorded offsets and appends an OPT record
/// if the client sent one.
#[derive(Debug)]
pub struct Wire {
    pub bytes: Box<[u8]>,
    /// Length of header plus question.
    pub question_end: u16,
    /// Offset of the TTL field of every record (inline up to 8 records, so
    /// that a hit reads them from the entry's own cache lines).
    pub ttl_offsets: SmallVec<[u16; 8]>,
    /// Records in the answer section.
    pub answers: u16,
    /// The answer section has a CNAME / an address (the chain check reads them).
    pub has_cname: bool,
    pub has_addr: bool,
    /// The upstream's AD bit.
    pub authentic_data: bool,
}

impl Wire {
    /// The cache's form of `r`, every record's TTL lowered to at most
    /// `ttl` (the entry's, after the config's clamps) when it is not 0: a
    /// hit then never serves a TTL longer than the entry lives.
    fn from_reply(r: Reply, ttl: u32) -> Wire {
        let mut bytes = r.bytes;
        if let Some(id) = bytes.get_mut(0..2) {
            id.copy_from_slice(&[0, 0]);
        }
        if ttl > 0 {
            for &off in &r.scan.ttl_offsets {
                if let Some(f) = bytes.get_mut(usize::from(off)..usize::from(off) + 4) {
                    let t = u32::from_be_bytes([f[0], f[1], f[2], f[3]]);
                    if t > ttl {
                        f.copy_from_slice(&ttl.to_be_bytes());
                    }
                }
            }
        }
        Wire {
            bytes: bytes.into_boxed_slice(),
            question_end: r.scan.question_end,
            ttl_offsets: SmallVec::from_slice(&r.scan.ttl_offsets),
            answers: r.scan.answers,
            has_cname: r.scan.has_cname,
            has_addr: r.scan.has_addr,
            authentic_data: r.scan.authentic_data,
        }
    }
}

impl Entry {
    /// The answer decoded into records (decoded once, on first use; the
    /// UDP fast path never needs it). An answer hickory cannot decode,
    /// which the byte scan let through, reads as SERVFAIL.
    pub fn answer(&self) -> &Answer {
        self.answer.get_or_init(|| match hickory_proto::op::Message::from_vec(&self.wire.bytes) {
            Ok(m) => Answer::from_message(m),
            Err(e) => {
                tracing::debug!(error = %e, "cached answer does not decode");
                Answer {
                    rcode: ResponseCode::ServFail,
                    answers: Vec::new(),
                    authorities: Vec::new(),
                    additionals: Vec::new(),
                    authentic_data: false,
                }
            }
        })
    }

    /// Seconds left, or `None` once expired.
    pub fn remaining(&self, now: Instant) -> Option<u32> {
        let age = u32::try_from(now.saturating_duration_since(self.stored).as_secs()).unwrap_or(u32::MAX);
        self.ttl.checked_sub(age).filter(|&r| r > 0)
    }

    /// Whether this hit should refresh the entry in the background: it is
    /// in the last tenth of a TTL of at least 10 s, and no refresh was
    /// started for it yet (the first such hit claims it). Cost: a
    /// subtraction and compare per hit; the atomic swap only for the hit
    /// that claims, a relaxed load for the ones after it.
    pub fn claim_prefetch(&self, now: Instant) -> bool {
        if self.ttl < 10 {
            return false;
        }
        let Some(left) = self.remaining(now) else { return false };
        left.saturating_mul(10) <= self.ttl
            && !self.prefetch.load(Ordering::Relaxed)
            && !self.prefetch.swap(true, Ordering::Relaxed)
    }

    /// Whether the policy of `generation` was found to let this answer
    /// through ([`Entry::set_passed`]). Cost: one relaxed load.
    pub fn passed(&self, generation: u64) -> bool {
        self.pass_gen.load(Ordering::Relaxed) == generation.wrapping_add(1)
    }

    /// Records that the policy of `generation` lets the query name and this
    /// answer through. A racing store from an older snapshot only costs the
    /// next hit a fresh check: the stamp never claims a generation that did
    /// not pass.
    pub fn set_passed(&self, generation: u64) {
        self.pass_gen.store(generation.wrapping_add(1), Ordering::Relaxed);
    }

    /// Bytes the entry holds in the cache, as the byte budget counts them:
    /// the reply, the TTL offsets that spill out of line, and the entry's
    /// and node's fixed part.
    pub fn footprint(&self) -> usize {
        let spilled = if self.wire.ttl_offsets.spilled() { self.wire.ttl_offsets.len() * 2 } else { 0 };
        self.wire.bytes.len() + spilled + ENTRY_OVERHEAD
    }

    /// Seconds elapsed since the entry was stored.
    pub fn age(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.stored).as_secs()).unwrap_or(u32::MAX)
    }
}

/// Fixed bytes per cached entry besides its reply: the `Entry` and its
/// `Arc`, the node (key inline), the table slot.
const ENTRY_OVERHEAD: usize = std::mem::size_of::<Entry>() + 16 + std::mem::size_of::<Node>() + 8;

/// Size limits (`[cache] max_entries`, `max_bytes`, `max_reply_bytes`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_entries: u64,
    /// Bytes all entries hold at most ([`Entry::footprint`]).
    pub max_bytes: u64,
    /// A reply longer than this is answered but not cached.
    pub max_reply_bytes: usize,
}

impl Limits {
    /// `max_entries` entries; bytes bounded only by the entry count.
    pub fn entries(max_entries: u64) -> Self {
        Self { max_entries, max_bytes: u64::MAX, max_reply_bytes: usize::from(u16::MAX) }
    }
}

/// TTL limits (`[cache]`).
#[derive(Debug, Clone, Copy)]
pub struct TtlPolicy {
    pub min_ttl: u32,
    pub max_ttl: u32,
    pub max_negative_ttl: u32,
    /// RFC 8767: seconds past expiry [`Cache::get_stale`] still returns an
    /// entry; 0 = serve-stale off.
    pub stale_max: u32,
}

/// The TTL of every record of a stale answer (RFC 8767 §4: 30 seconds).
pub const STALE_TTL: u32 = 30;

/// The reply cache: `SHARDS` independently locked shards, each a hash table
/// of indices into a fixed-capacity node array, evicting with CLOCK (second
/// chance): a hit sets the node's `visited` bit; when a full shard needs room
/// the hand sweeps the array, clearing set bits and evicting the first node
/// that is unvisited or expired. Expired entries are not returned and are the
/// first to go. Why not moka: its per-operation bookkeeping (key hashing
/// several times, frequency sketch, write log, timer wheel) stood out in a
/// profile of the miss workload (`benches/e2e/profile.sh miss`), and it
/// costs several hundred bytes per entry.
pub struct Cache {
    shards: Box<[Mutex<Shard>]>,
    hasher: foldhash::fast::RandomState,
    ttl: TtlPolicy,
    max_reply_bytes: usize,
}

/// Shards (a power of two): enough that workers rarely meet on one lock.
/// At most 32 ([`Cache::get_batch`] keeps a bit per shard).
const SHARDS: usize = 16;

/// Keys [`Cache::get_batch`] looks up under one set of locks.
pub const GET_BATCH: usize = 32;

/// One key's result in [`Cache::get_batch`].
#[derive(Debug)]
pub enum Lookup<T> {
    /// No live entry.
    Miss,
    /// A live entry the caller's `on_hit` did not answer from.
    Entry(Arc<Entry>),
    /// What `on_hit` made of a live entry.
    Done(T),
}

struct Node {
    hash: u64,
    key: NodeKey,
    entry: Arc<Entry>,
    visited: bool,
}

struct Shard {
    /// Indices into `nodes`, hashed by `Node::hash`.
    table: hashbrown::HashTable<u32>,
    nodes: Vec<Node>,
    hand: usize,
    /// Most nodes.
    cap: usize,
    /// Sum of the nodes' [`Entry::footprint`], and its most.
    bytes: usize,
    byte_cap: usize,
}

impl Shard {
    fn find(&self, hash: u64, key: &KeyRef<'_>) -> Option<usize> {
        let nodes = &self.nodes;
        self.table
            .find(hash, |&i| nodes.get(i as usize).is_some_and(|n| n.hash == hash && key.matches(&n.key)))
            .map(|&i| i as usize)
    }

    /// Stores `entry` under `key`, evicting (CLOCK) until both the node
    /// count and the byte budget have room. An entry bigger than the
    /// whole budget is not stored.
    fn insert(&mut self, hash: u64, key: &KeyRef<'_>, entry: Arc<Entry>, now: Instant) {
        let size = entry.footprint();
        if size > self.byte_cap {
            return;
        }
        if let Some(i) = self.find(hash, key) {
            if let Some(n) = self.nodes.get_mut(i) {
                self.bytes = self.bytes.saturating_sub(n.entry.footprint()) + size;
                n.entry = entry;
            }
            while self.bytes > self.byte_cap && self.evict(now) {}
            return;
        }
        while (self.nodes.len() >= self.cap || self.bytes + size > self.byte_cap) && self.evict(now) {}
        if self.nodes.len() >= self.cap || self.bytes + size > self.byte_cap {
            return;
        }
        let Ok(i) = u32::try_from(self.nodes.len()) else { return };
        self.bytes += size;
        self.nodes.push(Node { hash, key: NodeKey::of(key), entry, visited: false });
        let nodes = &self.nodes;
        self.table.insert_unique(hash, i, |&j| nodes.get(j as usize).map_or(0, |n| n.hash));
    }

    /// Evicts one node chosen by CLOCK (the first unvisited or expired one
    /// from the hand on; at most two sweeps, the first clears every bit it
    /// passes). The last node moves into its place. False when empty.
    fn evict(&mut self, now: Instant) -> bool {
        let len = self.nodes.len();
        if len == 0 {
            return false;
        }
        let mut victim = self.hand % len;
        for _ in 0..2 * len {
            let h = self.hand % len;
            self.hand = (h + 1) % len;
            let Some(n) = self.nodes.get_mut(h) else { continue };
            if n.visited && n.entry.remaining(now).is_some() {
                n.visited = false;
                continue;
            }
            victim = h;
            break;
        }
        let Some(old_hash) = self.nodes.get(victim).map(|n| n.hash) else { return false };
        if let Ok(e) = self.table.find_entry(old_hash, |&j| j as usize == victim) {
            e.remove();
        }
        let gone = self.nodes.swap_remove(victim);
        self.bytes = self.bytes.saturating_sub(gone.entry.footprint());
        // the node that was last now sits at `victim`: repoint its slot
        if let Some(moved) = self.nodes.get(victim) {
            let last = self.nodes.len();
            if let (Ok(e), Ok(v)) = (self.table.find_entry(moved.hash, |&j| j as usize == last), u32::try_from(victim)) {
                *e.into_mut() = v;
            }
        }
        self.hand = victim;
        true
    }
}

impl Cache {
    /// A cache of at most `max_entries` answers (at least one per shard).
    pub fn new(max_entries: u64, ttl: TtlPolicy) -> Self {
        Self::with_limits(Limits::entries(max_entries), ttl)
    }

    /// A cache within `limits` (each shard gets a sixteenth of the entry
    /// count and of the bytes, at least one entry).
    pub fn with_limits(limits: Limits, ttl: TtlPolicy) -> Self {
        let per_shard = usize::try_from(limits.max_entries.div_ceil(SHARDS as u64)).unwrap_or(usize::MAX).max(1);
        let bytes_per_shard = usize::try_from(limits.max_bytes / SHARDS as u64).unwrap_or(usize::MAX);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    table: hashbrown::HashTable::new(),
                    nodes: Vec::new(),
                    hand: 0,
                    cap: per_shard,
                    bytes: 0,
                    byte_cap: bytes_per_shard,
                })
            })
            .collect();
        Self { shards, hasher: foldhash::fast::RandomState::default(), ttl, max_reply_bytes: limits.max_reply_bytes }
    }

    fn shard(&self, key: &KeyRef<'_>) -> (u64, Option<&Mutex<Shard>>) {
        let (hash, i) = self.shard_index(key);
        (hash, self.shards.get(i))
    }

    /// `key`'s hash and the index of its shard: the one rule every lookup
    /// and insert (single or [`Cache::get_batch`]) follows.
    fn shard_index(&self, key: &KeyRef<'_>) -> (u64, usize) {
        use std::hash::BuildHasher as _;
        let hash = self.hasher.hash_one(key);
        // high bits pick the shard; hashbrown uses the low and top-7 bits
        (hash, (hash >> 32) as usize % SHARDS)
    }

    /// A live entry for `key`. Cost: one hash of the key, one uncontended
    /// lock, one table probe and a key compare; no allocation
    /// (`cache_hit_cold_100k/get_ref` in `benches/hot_path.rs`).
    pub fn get(&self, key: &Key, now: Instant) -> Option<Arc<Entry>> {
        self.get_ref(&key.as_ref(), now)
    }

    /// [`Cache::get`] by a borrowed key (the fast path: no allocation).
    pub fn get_ref(&self, key: &KeyRef<'_>, now: Instant) -> Option<Arc<Entry>> {
        let (hash, shard) = self.shard(key);
        let mut s = shard?.lock().ok()?;
        let i = s.find(hash, key)?;
        let n = s.nodes.get_mut(i)?;
        n.entry.remaining(now)?;
        n.visited = true;
        Some(Arc::clone(&n.entry))
    }

    /// An expired entry for `key` that is still within `stale_max` of its
    /// expiry (serve-stale, RFC 8767), or a live one. `None` when
    /// serve-stale is off. Cost: as [`Cache::get`]; only called once
    /// resolution has failed.
    pub fn get_stale(&self, key: &Key, now: Instant) -> Option<Arc<Entry>> {
        if self.ttl.stale_max == 0 {
            return None;
        }
        let key = key.as_ref();
        let (hash, shard) = self.shard(&key);
        let s = shard?.lock().ok()?;
        let i = s.find(hash, &key)?;
        let e = &s.nodes.get(i)?.entry;
        (e.ttl > 0 && e.age(now) <= e.ttl.saturating_add(self.ttl.stale_max)).then(|| Arc::clone(e))
    }

    /// Whether serve-stale is on.
    pub fn serves_stale(&self) -> bool {
        self.ttl.stale_max > 0
    }

    /// [`Cache::get_ref`] for a batch of keys (`None`: nothing to look up):
    /// each shard the keys fall in is locked once, in ascending order (so
    /// batches on several workers cannot deadlock), and all of them are held
    /// while every key is looked up. `on_hit(i, entry)` runs under the locks
    /// for each live hit: `Some(t)` answers key `i` from the entry
    /// ([`Lookup::Done`]; its reference count is not touched), `None` asks
    /// for the entry ([`Lookup::Entry`]). `out[i]` gets key `i`'s result.
    ///
    /// Why: a lookup is a chain of dependent cache misses (table slot, node,
    /// entry, answer bytes), and each lock, unlock and reference count
    /// change is an atomic read-modify-write that waits for every earlier
    /// load. One at a time, no two lookups' misses overlap; here the
    /// lookups are independent loads in one stretch of code, and the CPU
    /// runs several at once. `on_hit` should therefore do no atomic
    /// read-modify-write either (count hits after the call).
    ///
    /// Cost: per key one hash, one table probe and key compare; one lock and
    /// unlock per distinct shard; no allocation beyond `on_hit`'s. The locks
    /// are held for the whole batch's lookups (`cache_hit_cold_100k/get_batch_*`
    /// in `benches/hot_path.rs` measures a batch).
    pub fn get_batch<T>(
        &self,
        keys: &[Option<KeyRef<'_>>],
        now: Instant,
        out: &mut [Option<Lookup<T>>],
        mut on_hit: impl FnMut(usize, &Entry) -> Option<T>,
    ) {
        for (c, (keys, out)) in keys.chunks(GET_BATCH).zip(out.chunks_mut(GET_BATCH)).enumerate() {
            self.get_chunk(keys, now, out, |i, e| on_hit(c * GET_BATCH + i, e));
        }
    }

    /// [`Cache::get_batch`] of at most [`GET_BATCH`] keys (fixed arrays: no
    /// allocation, nothing moved).
    fn get_chunk<T>(
        &self,
        keys: &[Option<KeyRef<'_>>],
        now: Instant,
        out: &mut [Option<Lookup<T>>],
        mut on_hit: impl FnMut(usize, &Entry) -> Option<T>,
    ) {
        // (hash, shard) of each key; shard SHARDS: no key
        let mut at = [(0u64, SHARDS); GET_BATCH];
        let mut wanted = 0u32;
        for (key, a) in keys.iter().zip(at.iter_mut()) {
            if let Some(k) = key {
                *a = self.shard_index(k);
                wanted |= 1 << a.1;
            }
        }
        if wanted == 0 {
            return;
        }
        let mut guards: [Option<std::sync::MutexGuard<'_, Shard>>; SHARDS] = std::array::from_fn(|_| None);
        for (i, (s, g)) in self.shards.iter().zip(guards.iter_mut()).enumerate() {
            if wanted & (1 << i) != 0 {
                *g = s.lock().ok();
            }
        }
        let node_of = |s: usize, i: usize| guards.get(s).and_then(|g| g.as_deref()).and_then(|g| g.nodes.get(i));
        // In passes, so that each pass's loads are independent of each other
        // and overlap: find every key's node (table slot, node), then read
        // every found entry's header, then touch every answer's first bytes,
        // then hand the hits to `on_hit` (by then all of it is cached).
        // `found[k]`: (shard, node) of key k's live entry
        let mut found = [None::<(usize, usize)>; GET_BATCH];
        for ((key, &(hash, s)), f) in keys.iter().zip(at.iter()).zip(found.iter_mut()) {
            if let (Some(key), Some(shard)) = (key, guards.get(s).and_then(|g| g.as_deref())) {
                *f = shard.find(hash, key).map(|n| (s, n));
            }
        }
        for f in found.iter_mut().take(keys.len()) {
            if let Some((s, i)) = *f {
                if node_of(s, i).is_none_or(|n| n.entry.remaining(now).is_none()) {
                    *f = None;
                }
            }
        }
        for &(s, i) in found.iter().take(keys.len()).flatten() {
            if let Some(n) = node_of(s, i) {
                std::hint::black_box(n.entry.wire.bytes.first());
            }
        }
        for (i, ((key, f), o)) in keys.iter().zip(found.iter()).zip(out.iter_mut()).enumerate() {
            if key.is_none() {
                continue;
            }
            let node = f.and_then(|(s, i)| guards.get_mut(s)?.as_deref_mut()?.nodes.get_mut(i));
            *o = Some(match node {
                Some(node) => {
                    node.visited = true;
                    match on_hit(i, &node.entry) {
                        Some(t) => Lookup::Done(t),
                        None => Lookup::Entry(Arc::clone(&node.entry)),
                    }
                }
                None => Lookup::Miss,
            });
        }
    }

    /// Makes an entry of the upstream reply `reply` to the question of
    /// `key` and stores it if it is cacheable (NOERROR or NXDOMAIN; not
    /// SERVFAIL; at most `max_reply_bytes`), with its TTL clamped (and
    /// every record's TTL lowered to it). Returns the entry whether or not it
    /// was stored (TTL 0 then), and whether it was. Cost: no copy of the
    /// reply or of the key's name beyond the node's; one lock and table
    /// insert when stored.
    pub fn insert(&self, key: &Key, reply: Reply, now: Instant) -> (Arc<Entry>, bool) {
        let ttl = if reply.bytes.len() > self.max_reply_bytes { 0 } else { self.ttl_for(&reply.scan).unwrap_or(0) };
        let entry = Arc::new(Entry {
            wire: Wire::from_reply(reply, ttl),
            answer: OnceLock::new(),
            stored: now,
            ttl,
            pass_gen: AtomicU64::new(0),
            prefetch: std::sync::atomic::AtomicBool::new(false),
        });
        if ttl > 0 {
            let key = key.as_ref();
            let (hash, shard) = self.shard(&key);
            if let Some(mut s) = shard.and_then(|s| s.lock().ok()) {
                s.insert(hash, &key, Arc::clone(&entry), now);
            }
        }
        (entry, ttl > 0)
    }

    /// An entry for `reply` that is answered once and never stored (TTL 0):
    /// a recursed CNAME chain cut short at a blocked name, which must not
    /// outlive the policy that cut it.
    pub fn uncached(reply: Reply, now: Instant) -> Arc<Entry> {
        Arc::new(Entry {
            wire: Wire::from_reply(reply, 0),
            answer: OnceLock::new(),
            stored: now,
            ttl: 0,
            pass_gen: AtomicU64::new(0),
            prefetch: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// [`Cache::insert`] for an answer in records (tests, benches, fuzzing;
    /// feature `testing`): encoded
    /// by hickory as the reply to `qname` first. `None` if it cannot be.
    #[cfg(any(test, feature = "testing"))]
    pub fn insert_answer(&self, key: &Key, qname: &hickory_proto::rr::Name, answer: &Answer, now: Instant) -> Option<(Arc<Entry>, bool)> {
        let reply = Reply::from_answer(qname, key.qtype, key.qclass, answer)?;
        Some(self.insert(key, reply, now))
    }

    /// Entries held (expired ones included until evicted). Takes every
    /// shard's lock in turn: call it from a scrape, not per query.
    pub fn len(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().map_or(0, |s| s.nodes.len() as u64)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the entries hold ([`Entry::footprint`]); like [`Cache::len`],
    /// for a scrape.
    pub fn bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().map_or(0, |s| s.bytes as u64)).sum()
    }

    fn ttl_for(&self, s: &crate::wire::scan::Scan) -> Option<u32> {
        // RFC 2308 §5: negative answers for min(SOA TTL, SOA MINIMUM); no SOA: do not cache.
        let negative = || {
            s.negative_ttl.map(|t| t.clamp(self.ttl.min_ttl.min(self.ttl.max_negative_ttl), self.ttl.max_negative_ttl))
        };
        match ResponseCode::from(0, s.rcode) {
            ResponseCode::NoError if s.answers > 0 => Some(s.answer_min_ttl?.clamp(self.ttl.min_ttl, self.ttl.max_ttl)),
            ResponseCode::NoError | ResponseCode::NXDomain => negative(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::{rdata::A, Name, RData, Record};
    use std::time::Duration;

    fn key(n: &str) -> Key {
        Key { name: QName::parse(n).unwrap(), qtype: RecordType::A, qclass: DNSClass::IN, dnssec_ok: false, checking_disabled: false }
    }

    fn answer(n: &str, ttl: u32) -> Answer {
        let owner = Name::from_ascii(n).unwrap();
        Answer {
            rcode: ResponseCode::NoError,
            answers: vec![Record::from_rdata(owner, ttl, RData::A(A::new(192, 0, 2, 1)))],
            authorities: vec![],
            additionals: vec![],
            authentic_data: false,
        }
    }

    fn ttl() -> TtlPolicy {
        TtlPolicy { min_ttl: 0, max_ttl: 86_400, max_negative_ttl: 3600, stale_max: 0 }
    }

    fn put(c: &Cache, n: &str, ttl: u32, now: Instant) {
        let (_, cached) = c.insert_answer(&key(n), &Name::from_ascii(n).unwrap(), &answer(n, ttl), now).unwrap();
        assert!(cached, "{n} cacheable");
    }

    #[test]
    fn a_batch_lookup_finds_what_single_lookups_find() {
        let c = Cache::new(10_000, ttl());
        let now = Instant::now();
        // more keys than one set of locks takes (GET_BATCH), over every shard
        for i in (0..80).step_by(2) {
            put(&c, &format!("b{i}.example."), 300, now);
        }
        put(&c, "short.example.", 5, now);
        let later = now + Duration::from_secs(10);
        let mut names: Vec<Option<Key>> = (0..80).map(|i| Some(key(&format!("b{i}.example.")))).collect();
        names.push(Some(key("short.example.")));
        names.insert(3, None);
        let keys: Vec<Option<KeyRef<'_>>> = names.iter().map(|k| k.as_ref().map(Key::as_ref)).collect();
        let mut out: Vec<Option<Lookup<usize>>> = (0..keys.len()).map(|_| None).collect();
        let mut asked = Vec::new();
        // answers the keys at even positions, asks for the entry of the others
        // (on_hit runs under the shards' locks: it must not ask the cache)
        c.get_batch(&keys, later, &mut out, |i, e| {
            assert!(!e.wire.bytes.is_empty());
            asked.push(i);
            (i % 2 == 0).then_some(i)
        });
        for (i, (k, o)) in names.iter().zip(out.iter()).enumerate() {
            let single = k.as_ref().and_then(|k| c.get(k, later));
            match (k, o) {
                (None, None) => {}
                (Some(_), Some(Lookup::Miss)) => assert!(single.is_none(), "key {i}: batch missed, single found"),
                (Some(_), Some(Lookup::Done(t))) => assert!(single.is_some() && *t == i && i % 2 == 0, "key {i}"),
                (Some(_), Some(Lookup::Entry(e))) => {
                    assert!(i % 2 == 1, "key {i}: on_hit answered but got an entry");
                    assert!(Arc::ptr_eq(e, &single.unwrap()), "key {i}: another entry");
                }
                other => panic!("key {i}: {other:?}"),
            }
        }
        assert!(asked.windows(2).all(|w| w[0] < w[1]), "on_hit in key order: {asked:?}");
        assert_eq!(asked.len(), 40, "the 40 live entries (the expired one and the absent ones not)");
        assert!(matches!(out.last(), Some(Some(Lookup::Miss))), "an expired entry is a miss");
    }

    #[test]
    fn capacity_is_a_hard_bound() {
        let c = Cache::new(64, ttl());
        let now = Instant::now();
        for i in 0..10_000 {
            put(&c, &format!("n{i}.example."), 300, now);
        }
        assert!(c.len() <= 64, "{}", c.len());
        assert!(c.get(&key("n9999.example."), now).is_some(), "the newest entry is held");
    }

    #[test]
    fn byte_budget_is_a_hard_bound_and_big_replies_are_not_kept() {
        let limits = Limits { max_entries: 100_000, max_bytes: 64 * 1024, max_reply_bytes: 600 };
        let c = Cache::with_limits(limits, ttl());
        let now = Instant::now();
        for i in 0..5_000 {
            put(&c, &format!("n{i}.example."), 300, now);
            assert!(c.bytes() <= 64 * 1024, "after {i}: {} bytes", c.bytes());
        }
        assert!(c.len() > 50, "the budget holds many small entries: {}", c.len());
        assert_eq!(c.bytes(), c.shards.iter().map(|s| s.lock().unwrap().nodes.iter().map(|n| n.entry.footprint() as u64).sum::<u64>()).sum::<u64>());
        assert!(c.get(&key("n4999.example."), now).is_some(), "the newest entry is held");
        // every surviving node is reachable through the table (eviction moved nodes)
        for s in c.shards.iter() {
            let s = s.lock().unwrap();
            for (i, n) in s.nodes.iter().enumerate() {
                assert_eq!(s.table.find(n.hash, |&j| j as usize == i).copied(), Some(i as u32));
            }
        }
        // a reply over max_reply_bytes: answered, not stored
        let big = Answer {
            answers: (0..40).map(|k| Record::from_rdata(Name::from_ascii("big.example.").unwrap(), 300, RData::A(A::new(192, 0, 2, k)))).collect(),
            ..answer("big.example.", 300)
        };
        let (e, cached) = c.insert_answer(&key("big.example."), &Name::from_ascii("big.example.").unwrap(), &big, now).unwrap();
        assert!(!cached && e.wire.bytes.len() > 600);
        assert!(c.get(&key("big.example."), now).is_none());
    }

    #[test]
    fn served_ttls_never_exceed_the_clamped_entry_ttl() {
        let c = Cache::new(100, TtlPolicy { min_ttl: 0, max_ttl: 60, max_negative_ttl: 3600, stale_max: 0 });
        let now = Instant::now();
        let (e, _) = c.insert_answer(&key("long.example."), &Name::from_ascii("long.example.").unwrap(), &answer("long.example.", 86_400), now).unwrap();
        assert_eq!(e.ttl, 60);
        assert_eq!(e.answer().answers[0].ttl, 60, "the record's TTL is lowered to what the entry has left");
        let off = usize::from(e.wire.ttl_offsets[0]);
        assert_eq!(u32::from_be_bytes(e.wire.bytes[off..off + 4].try_into().unwrap()), 60);
    }

    #[test]
    fn a_hit_entry_survives_a_sweep_that_evicts_unvisited_ones() {
        // one shard's worth: SHARDS entries of capacity 1 would be too small to
        // show CLOCK, so use a cache where every shard holds 4
        let c = Cache::new(4 * SHARDS as u64, ttl());
        let now = Instant::now();
        put(&c, "hot.example.", 300, now);
        let (_, hot_shard) = c.shard_index(&key("hot.example.").as_ref());
        let mut same_shard = Vec::new();
        let mut i = 0;
        while same_shard.len() < 8 {
            let n = format!("c{i}.example.");
            if c.shard_index(&key(&n).as_ref()).1 == hot_shard {
                same_shard.push(n);
            }
            i += 1;
        }
        for n in &same_shard {
            assert!(c.get(&key("hot.example."), now).is_some(), "hot entry evicted before {n}");
            put(&c, n, 300, now);
        }
        assert!(c.get(&key("hot.example."), now).is_some());
        assert!(c.get(&key(&same_shard[0]), now).is_none(), "cold entries make room");
    }

    #[test]
    fn expired_entries_are_not_returned_and_ttl_is_kept() {
        let c = Cache::new(100, ttl());
        let t0 = Instant::now();
        put(&c, "short.example.", 5, t0);
        let e = c.get(&key("short.example."), t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(e.remaining(t0 + Duration::from_secs(2)), Some(3));
        assert!(c.get(&key("short.example."), t0 + Duration::from_secs(5)).is_none());
    }

    #[test]
    fn wire_form_records_every_ttl_offset_and_decodes_lazily() {
        let c = Cache::new(100, ttl());
        let now = Instant::now();
        let (e, _) = c.insert_answer(&key("w.example."), &Name::from_ascii("w.example.").unwrap(), &answer("w.example.", 300), now).unwrap();
        let w = &e.wire;
        assert_eq!(w.ttl_offsets.len(), 1);
        let off = usize::from(w.ttl_offsets[0]);
        assert_eq!(u32::from_be_bytes(w.bytes[off..off + 4].try_into().unwrap()), 300);
        assert_eq!(usize::from(w.question_end), 12 + "w.example.".len() + 1 + 4);
        assert!(w.has_addr && !w.has_cname);
        let a = e.answer();
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert_eq!(a.answers.len(), 1);
        assert_eq!(a.answers[0].ttl, 300);
    }

    #[test]
    fn negative_ttl_follows_rfc_2308() {
        use hickory_proto::rr::rdata::SOA;
        let c = Cache::new(100, ttl());
        let soa = |ttl, minimum| {
            Record::from_rdata(
                Name::from_ascii("example.").unwrap(),
                ttl,
                RData::SOA(SOA::new(Name::from_ascii("ns.example.").unwrap(), Name::from_ascii("h.example.").unwrap(), 1, 2, 3, 4, minimum)),
            )
        };
        let cases = [("soa ttl smaller", 60, 600, 60), ("minimum smaller", 900, 120, 120), ("capped", 90_000, 90_000, 3600)];
        for (label, soa_ttl, minimum, want) in cases {
            let a = Answer {
                rcode: ResponseCode::NXDomain,
                answers: vec![],
                authorities: vec![soa(soa_ttl, minimum)],
                additionals: vec![],
                authentic_data: false,
            };
            let (e, cached) = c.insert_answer(&key("gone.example."), &Name::from_ascii("gone.example.").unwrap(), &a, Instant::now()).unwrap();
            assert!(cached, "case `{label}`");
            assert_eq!(e.ttl, want, "case `{label}`");
        }
    }
}

//! Per-client rate limiting (`[limits] per_client_qps`, `burst`): a token
//! bucket per client prefix (IPv4 /24, IPv6 /56 by default, so one
//! subscriber's devices and one attacker's neighbours share a bucket).
//!
//! 64 mutex-protected shards keyed by the prefix; a shard that reaches its
//! share of `max_tracked` first forgets idle buckets (full ones), then, if
//! still full, its least recently used eighth (a flood of spoofed sources
//! must not grow memory without bound, nor reset the buckets of the
//! clients that are being limited: they are the recently used ones).
//! Cost per query: one hash, one uncontended lock, a few float operations;
//! a full shard's eviction is O(shard) once per eighth of a shard of new
//! prefixes.
//!
//! [`Budget`]: one global replies-per-second budget (REFUSED to clients
//! outside the ACL), one atomic operation per use.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

const SHARDS: usize = 64;

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// What `check` decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Limit,
}

/// The limiter.
pub struct RateLimiter {
    qps: f64,
    burst: f64,
    v4_prefix: u8,
    v6_prefix: u8,
    per_shard: usize,
    hasher: foldhash::fast::RandomState,
    shards: Vec<Mutex<HashMap<u128, Bucket>>>,
}

impl RateLimiter {
    /// `qps` sustained, `burst` at most at once, buckets keyed by the
    /// client's `/v4_prefix` or `/v6_prefix`, at most `max_tracked` buckets.
    pub fn new(qps: f64, burst: f64, v4_prefix: u8, v6_prefix: u8, max_tracked: usize) -> Self {
        Self {
            qps,
            burst: burst.max(1.0),
            v4_prefix: v4_prefix.min(32),
            v6_prefix: v6_prefix.min(128),
            per_shard: (max_tracked / SHARDS).max(16),
            hasher: foldhash::fast::RandomState::default(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn key(&self, ip: IpAddr) -> u128 {
        match ip {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let mask = if self.v4_prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(self.v4_prefix)) };
                u128::from(bits & mask) | (1u128 << 127) // tag v4 apart from v6
            }
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return self.key(IpAddr::V4(v4));
                }
                let bits = u128::from(v6);
                let mask = if self.v6_prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(self.v6_prefix)) };
                (bits & mask) & !(1u128 << 127)
            }
        }
    }

    /// Takes one token for `ip` at `now`.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Decision {
        let key = self.key(ip);
        let shard_no = (self.hasher.hash_one(key) as usize) % SHARDS;
        let Some(shard) = self.shards.get(shard_no) else { return Decision::Allow };
        let mut map = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= self.per_shard && !map.contains_key(&key) {
            let (qps, burst) = (self.qps, self.burst);
            map.retain(|_, b| b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * qps < burst);
            if map.len() >= self.per_shard {
                evict_least_recent(&mut map, self.per_shard / 8);
            }
        }
        let b = map.entry(key).or_insert(Bucket { tokens: self.burst, last: now });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.qps).min(self.burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Decision::Allow
        } else {
            Decision::Limit
        }
    }
}

/// Removes the (at least) `n` buckets used longest ago.
fn evict_least_recent(map: &mut HashMap<u128, Bucket>, n: usize) {
    let mut lasts: Vec<Instant> = map.values().map(|b| b.last).collect();
    let n = n.clamp(1, lasts.len().max(1));
    if lasts.is_empty() {
        return;
    }
    let cut = *lasts.select_nth_unstable(n - 1).1;
    map.retain(|_, b| b.last > cut);
}

/// A shared budget of `per_second` uses per wall-clock second (of the
/// process's clock), across all threads: what the UDP fast path spends on
/// REFUSED replies to clients outside the ACL, so spoofed floods cannot
/// turn the resolver into a reflector. Cost: one atomic load and one
/// compare-exchange per use.
pub struct Budget {
    per_second: u32,
    epoch: Instant,
    /// (second since `epoch`) << 32 | uses in that second.
    state: std::sync::atomic::AtomicU64,
}

impl Budget {
    pub fn new(per_second: u32) -> Self {
        Self { per_second, epoch: Instant::now(), state: std::sync::atomic::AtomicU64::new(0) }
    }

    /// Takes one use at `now`; false once this second's are spent.
    pub fn take(&self, now: Instant) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let sec = now.saturating_duration_since(self.epoch).as_secs() & 0xffff_ffff;
        let mut cur = self.state.load(Relaxed);
        loop {
            let (s, used) = (cur >> 32, cur & 0xffff_ffff);
            let next = if s == sec {
                if used >= u64::from(self.per_second) {
                    return false;
                }
                cur + 1
            } else {
                if self.per_second == 0 {
                    return false;
                }
                sec << 32 | 1
            };
            match self.state.compare_exchange_weak(cur, next, Relaxed, Relaxed) {
                Ok(_) => return true,
                Err(seen) => cur = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills_and_prefixes_share() {
        let rl = RateLimiter::new(10.0, 5.0, 24, 56, 1000);
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let same24: IpAddr = "192.0.2.200".parse().unwrap();
        let other: IpAddr = "192.0.3.1".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(rl.check(a, t0), Decision::Allow);
        }
        assert_eq!(rl.check(same24, t0), Decision::Limit, "same /24 shares the bucket");
        assert_eq!(rl.check(other, t0), Decision::Allow, "another /24 has its own");
        assert_eq!(rl.check(a, t0 + Duration::from_millis(100)), Decision::Allow, "refilled 1 token in 100 ms");
        assert_eq!(rl.check(a, t0 + Duration::from_millis(100)), Decision::Limit);
        let v6a: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:0:1:ffff::1".parse().unwrap();
        for _ in 0..5 {
            rl.check(v6a, t0);
        }
        assert_eq!(rl.check(v6b, t0), Decision::Limit, "same /56");
    }

    #[test]
    fn a_flood_of_new_prefixes_does_not_reset_a_limited_client() {
        let rl = RateLimiter::new(1.0, 2.0, 24, 56, 64 * 16);
        let t0 = Instant::now();
        let abuser: IpAddr = "198.51.100.7".parse().unwrap();
        // the abuser spends its burst, then keeps asking through a flood of
        // spoofed sources that fills every shard many times over
        assert_eq!(rl.check(abuser, t0), Decision::Allow);
        assert_eq!(rl.check(abuser, t0), Decision::Allow);
        for i in 0..20_000u32 {
            let t = t0 + std::time::Duration::from_micros(u64::from(i));
            rl.check(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8))), t);
            if i % 500 == 0 {
                assert_eq!(rl.check(abuser, t), Decision::Limit, "flood #{i} reset the abuser's bucket");
            }
        }
    }

    #[test]
    fn budget_spends_per_second() {
        let b = Budget::new(3);
        let t0 = Instant::now();
        assert_eq!((0..5).filter(|_| b.take(t0)).count(), 3);
        assert!(b.take(t0 + std::time::Duration::from_secs(1)), "a new second, a new budget");
        assert!(!Budget::new(0).take(t0));
    }

    #[test]
    fn memory_stays_bounded_under_spoofed_sources() {
        let rl = RateLimiter::new(1.0, 1.0, 32, 128, 64 * 16);
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            rl.check(IpAddr::V4(std::net::Ipv4Addr::from(i)), t0);
        }
        let total: usize = rl.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(total <= 64 * 16, "{total}");
    }
}

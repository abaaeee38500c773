//! Which authority to ask first: a smoothed round-trip time per server
//! address, and back-off for servers that stop answering (the "infra cache"
//! of Unbound).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The RTT assumed for a server never asked (Unbound's `UNKNOWN_SERVER_NICENESS`):
/// known fast servers are preferred, unknown ones still beat slow ones.
const UNKNOWN_RTT_MS: u32 = 376;
/// Servers whose RTTs differ by less than this are picked at random
/// among themselves (spreads load, makes our choice harder to predict).
const BAND_MS: u32 = 64;
/// Consecutive timeouts after which a server is left alone for a while.
const DOWN_AFTER: u8 = 3;
/// Longest back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy)]
struct Infra {
    srtt_ms: u32,
    timeouts: u8,
    down_until: Option<Instant>,
}

/// Per-address RTT and back-off, bounded to `max_entries` addresses.
pub(super) struct Servers {
    map: Mutex<HashMap<IpAddr, Infra>>,
    max_entries: usize,
    /// The longest we wait for one authority (`[recursion] server_timeout_ms`).
    max_timeout: Duration,
}

impl Servers {
    pub fn new(max_entries: usize, max_timeout: Duration) -> Self {
        Servers { map: Mutex::new(HashMap::new()), max_entries: max_entries.max(16), max_timeout }
    }

    /// `addrs` sorted best first: servers not backed off, by RTT band
    /// (random within a band), then backed-off ones (still tried when
    /// nothing else is left). Cost: O(n log n) for n addresses, one lock.
    pub fn order(&self, addrs: &mut [IpAddr], now: Instant) {
        use rand::seq::SliceRandom;
        addrs.shuffle(&mut rand::rng());
        let Ok(map) = self.map.lock() else { return };
        addrs.sort_by_cached_key(|ip| match map.get(ip) {
            None => (false, UNKNOWN_RTT_MS / BAND_MS),
            Some(i) => (i.down_until.is_some_and(|t| t > now), i.srtt_ms / BAND_MS),
        });
    }

    /// How long to wait for `ip`: four times its RTT plus 50 ms, at least
    /// 100 ms, at most the configured maximum (which a server never asked gets).
    pub fn timeout(&self, ip: IpAddr) -> Duration {
        let srtt = self.map.lock().ok().and_then(|m| m.get(&ip).map(|i| (i.srtt_ms, i.timeouts)));
        match srtt {
            Some((ms, 0)) => Duration::from_millis(u64::from(ms) * 4 + 50).clamp(Duration::from_millis(100), self.max_timeout),
            _ => self.max_timeout,
        }
    }

    /// `ip` answered after `rtt`.
    pub fn answered(&self, ip: IpAddr, rtt: Duration) {
        let ms = u32::try_from(rtt.as_millis()).unwrap_or(u32::MAX).max(1);
        self.update(ip, |i| {
            i.srtt_ms = if i.timeouts > 0 || i.srtt_ms == UNKNOWN_RTT_MS { ms } else { (i.srtt_ms * 7 + ms) / 8 };
            i.timeouts = 0;
            i.down_until = None;
        });
    }

    /// `ip` did not answer within its timeout: its RTT doubles (so it is
    /// asked last), and after [`DOWN_AFTER`] timeouts in a row it is backed
    /// off for 5 s, doubling per further timeout up to [`MAX_BACKOFF`].
    pub fn timed_out(&self, ip: IpAddr, now: Instant) {
        let max_ms = u32::try_from(self.max_timeout.as_millis()).unwrap_or(u32::MAX);
        self.update(ip, |i| {
            i.timeouts = i.timeouts.saturating_add(1);
            i.srtt_ms = i.srtt_ms.saturating_mul(2).max(max_ms).min(120_000);
            if i.timeouts >= DOWN_AFTER {
                let shift = u32::from(i.timeouts - DOWN_AFTER).min(5);
                i.down_until = Some(now + (Duration::from_secs(5) * (1 << shift)).min(MAX_BACKOFF));
            }
        });
    }

    /// Whether `ip` is backed off now.
    #[cfg(test)]
    pub fn is_down(&self, ip: IpAddr, now: Instant) -> bool {
        self.map.lock().ok().and_then(|m| m.get(&ip).and_then(|i| i.down_until)).is_some_and(|t| t > now)
    }

    fn update(&self, ip: IpAddr, f: impl FnOnce(&mut Infra)) {
        let Ok(mut map) = self.map.lock() else { return };
        if map.len() >= self.max_entries && !map.contains_key(&ip) {
            // full: forget the servers that are not backed off and slowest
            // first would cost a sort; dropping a quarter at random (the
            // map's order) keeps the bound at O(1) amortised
            let drop = map.len() / 4 + 1;
            let victims: Vec<IpAddr> = map.keys().take(drop).copied().collect();
            for v in victims {
                map.remove(&v);
            }
        }
        let entry = map.entry(ip).or_insert(Infra { srtt_ms: UNKNOWN_RTT_MS, timeouts: 0, down_until: None });
        f(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_servers_first_dead_ones_last() {
        let s = Servers::new(100, Duration::from_millis(800));
        let fast = IpAddr::from([192, 0, 2, 1]);
        let slow = IpAddr::from([192, 0, 2, 2]);
        let dead = IpAddr::from([192, 0, 2, 3]);
        let new = IpAddr::from([192, 0, 2, 4]);
        s.answered(fast, Duration::from_millis(5));
        s.answered(slow, Duration::from_millis(700));
        let now = Instant::now();
        for _ in 0..3 {
            s.timed_out(dead, now);
        }
        assert!(s.is_down(dead, now));
        for _ in 0..20 {
            let mut v = vec![dead, slow, new, fast];
            s.order(&mut v, now);
            assert_eq!(v, vec![fast, new, slow, dead]);
        }
        assert_eq!(s.timeout(fast), Duration::from_millis(100));
        assert_eq!(s.timeout(new), Duration::from_millis(800));
        assert!(!s.is_down(dead, now + Duration::from_secs(6)), "back-off ends");
        s.answered(dead, Duration::from_millis(3));
        assert!(!s.is_down(dead, now));
    }

    #[test]
    fn bounded() {
        let s = Servers::new(16, Duration::from_millis(800));
        for i in 0..1000u32 {
            s.answered(IpAddr::from(i.to_be_bytes()), Duration::from_millis(1));
        }
        assert!(s.map.lock().unwrap().len() <= 16);
    }
}

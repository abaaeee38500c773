//! Connection admission for the connection-oriented listeners (TCP, DoT,
//! DoH, DoQ), decided at accept before anything is read: a cap on all
//! connections of the gate and a cap per client prefix (/24 for IPv4, /56
//! for IPv6: one subscriber's addresses share a budget). A [`Slot`] holds
//! the place until it is dropped. When fewer than a tenth of the places are
//! free, [`Gate::pressure`] wakes the connections waiting idle, which close
//! first (RFC 7766 §6.2.3).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// All places taken.
    Total,
    /// The client's prefix holds its share.
    PerClient,
}

/// The places of one listener (TCP) or of all encrypted listeners together.
pub struct Gate {
    total: Arc<Semaphore>,
    max_total: usize,
    max_per_client: usize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    /// Signalled when places run low: idle connections close.
    pub pressure: Notify,
}

/// A place in a [`Gate`]; dropping it frees the place.
pub struct Slot {
    gate: Arc<Gate>,
    prefix: IpAddr,
    _permit: OwnedSemaphorePermit,
}

impl Gate {
    pub fn new(max_total: usize, max_per_client: usize) -> Arc<Self> {
        let max_total = max_total.max(1);
        Arc::new(Self {
            total: Arc::new(Semaphore::new(max_total)),
            max_total,
            max_per_client,
            per_client: Mutex::new(HashMap::new()),
            pressure: Notify::new(),
        })
    }

    /// A place for a connection from `ip`. Cost: a semaphore try-acquire and
    /// a map update under a lock.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let permit = Arc::clone(&self.total).try_acquire_owned();
        if self.total.available_permits() < self.max_total.div_ceil(10) {
            self.pressure.notify_waiters();
        }
        let Ok(permit) = permit else { return Err(Refusal::Total) };
        let prefix = client_prefix(ip);
        let mut m = self.per_client.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = m.entry(prefix).or_insert(0);
        if *n >= self.max_per_client {
            return Err(Refusal::PerClient);
        }
        *n += 1;
        Ok(Slot { gate: Arc::clone(self), prefix, _permit: permit })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.gate.per_client.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.prefix) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.prefix);
            }
        }
    }
}

/// The budget a client address counts against: its /24 (IPv4, or an
/// IPv4-mapped IPv6 address) or its /56 (IPv6, a subscriber's delegation).
pub fn client_prefix(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(std::net::Ipv4Addr::from(u32::from(a) & 0xffff_ff00)),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => client_prefix(IpAddr::V4(v4)),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a) & !((1u128 << 72) - 1))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps() {
        let g = Gate::new(3, 2);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let a = g.admit(ip("10.0.0.1")).unwrap();
        let _b = g.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(g.admit(ip("10.0.0.3")).err(), Some(Refusal::PerClient), "same /24");
        let _c = g.admit(ip("10.0.1.1")).unwrap();
        assert_eq!(g.admit(ip("10.0.2.1")).err(), Some(Refusal::Total));
        drop(a);
        assert!(g.admit(ip("10.0.0.3")).is_ok(), "a dropped slot frees its place");
    }
}

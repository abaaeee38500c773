//! The socket loop: one task per UDP socket reads datagrams in batches,
//! decides them together (cache and policy loads overlapped), and sends
//! the replies of a batch in one system call.

use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::time::Instant;

use hickory_server::net::xfer::Protocol;

use super::gate::{take, Taken};
use super::miss::start_miss;
use super::{decide, passed_reply, Fast};
use crate::metrics::Outcome;
use crate::name::{NameBuf, NameRef};
use crate::resolve::cache::{KeyRef, Lookup};
use crate::server::handler::{Prechecked, Shared};
use crate::sys::udp::{to_std, RawAddr};

/// Datagrams read per `recvmmsg`.
const BATCH: usize = 32;
/// Largest datagram we read (bigger queries are not queries we answer).
const BUF: usize = 4096;

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

/// Sends a forwarded miss's reply without waiting ([`crate::sys::outbox::send`]:
/// batched with the other replies the reader's batch completes; a task
/// waits when the socket's send buffer is full), or hands the query to the hickory path
/// when there is none. Runs on the forwarder's reader task.
/// `tapped`: the query's bytes and arrival time when dnstap is on.
fn send_or_slow(
    sock: Arc<tokio::net::UdpSocket>,
    h: crate::server::handler::Handler,
    src: SocketAddr,
    reply: Result<Vec<u8>, Box<[u8]>>,
    tapped: Option<(Box<[u8]>, std::time::SystemTime)>,
    pre: Prechecked,
) {
    match reply {
        // with the other replies of the reader's batch, in one sendmmsg
        Ok(r) => {
            if let (Some(tap), Some((query, at))) = (&h.shared.dnstap, &tapped) {
                tap.log(query, Some(&r), src, crate::metrics::Transport::Udp, Some(*at), None);
            }
            crate::sys::outbox::send(&sock, src, r)
        }
        Err(packet) => reply_later(&sock, src, async move {
            crate::server::slow::handle_bytes_checked(&h, &packet, src, crate::metrics::Transport::Udp, pre).await
        }),
    }
}

type Datagram<'p> = (&'p [u8], SocketAddr, Taken<'p>);

/// Runs the fast path as a task on the runtime that also runs the hickory
/// handler, so handing a datagram to the slow path is a task spawn on the
/// same thread, not a cross-thread wake-up. Reads with `recvmmsg(MSG_DONTWAIT)`
/// whenever the socket is readable; replies of one batch go out in one
/// `sendmmsg`. Ends when `stop` is cancelled.
pub async fn run_async(
    sock: Arc<tokio::net::UdpSocket>,
    shared: Arc<Shared>,
    handler: crate::server::handler::Handler,
    stop: tokio_util::sync::CancellationToken,
) {
    let fd = sock.as_raw_fd();
    let v6 = sock.local_addr().is_ok_and(|a| a.is_ipv6());
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; BUF]).collect();
    let mut got: Vec<crate::sys::udp::Received> = Vec::with_capacity(BATCH);
    // the batch's query names, normalised (reused: `read_wire` overwrites)
    let mut names: Vec<NameBuf> = (0..BATCH).map(|_| NameBuf::new()).collect();
    let mut replies: Vec<(Vec<u8>, Outcome)> = Vec::with_capacity(BATCH);
    // the batch's cache lookups (kept: an array of these per batch was
    // copied in from a template and dropped element by element);
    // `Done(Some(reply))`: answered from the cache; `Done(None)`: a hit the
    // hickory path answers (it does not fit: `from_wire`)
    let mut looked: Vec<Option<Lookup<Option<Vec<u8>>>>> = Vec::with_capacity(BATCH);
    // the replies' destinations, in `sendmmsg`'s form (kept, not rebuilt per batch)
    let mut reply_to: Vec<Option<RawAddr>> = Vec::with_capacity(BATCH);
    // with dnstap on: (datagram, reply) index pairs to report once the batch is sent
    let mut tapped: Vec<(usize, usize)> = Vec::new();
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
            crate::sys::udp::recv_batch(fd, v6, &mut bufs, &mut got).map(drop)
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
        tapped.clear();
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
        for (((r, buf), name), d) in got.iter().zip(bufs.iter()).zip(names.iter_mut()).zip(datagrams.iter_mut()) {
            let (len, src) = (&r.len, &r.from);
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
        // hits in their entry's last tenth: refreshed in the background ([cache] prefetch)
        let mut refresh = [false; BATCH];
        shared.cache.get_batch(keys.get(..n).unwrap_or(&[]), now, &mut looked, |i, entry| {
            if shared.prefetch && entry.claim_prefetch(now) {
                if let Some(f) = refresh.get_mut(i) {
                    *f = true;
                }
            }
            let (_, _, Taken::Query(q)) = datagrams.get(i)?.as_ref()? else { return None };
            passed_reply(&shared, &policy, q, entry, now).map(|f| match f {
                Fast::Reply(r, _) => Some(r),
                _ => None,
            })
        });
        if refresh.contains(&true) {
            for ((d, a), f) in datagrams.iter().zip(ahead.iter()).zip(refresh.iter()) {
                if let (true, Some((_, _, Taken::Query(q))), Some((name, _))) = (*f, d, a) {
                    let (dnssec_ok, _) = q.payload(shared.max_udp_payload);
                    crate::server::handler::prefetch(&shared, q.key(*name, dnssec_ok), Box::from(q.question));
                }
            }
        }
        for (a, l) in ahead.iter().zip(looked.iter()) {
            if let (Some((_, h)), Some(Lookup::Miss | Lookup::Entry(_))) = (a, l) {
                policy.index.prefetch_rule(*h);
            }
        }
        // the misses of this batch go upstream together (one socket per
        // server, one sendmmsg): the send batch, `sys::outbox`
        crate::sys::outbox::batch(|| {
            for (k, ((d, a), l)) in datagrams.iter_mut().zip(ahead.iter()).zip(looked.iter_mut()).enumerate() {
                let Some((packet, src, q)) = d else { continue };
                // a query `take` parsed has had its rate-limit token
                let rate_taken = matches!(q, Taken::Query(_));
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
                        // blocked replies went to dnstap with their policy (`decide_via`)
                        if shared.dnstap.is_some() && outcome != Outcome::Blocked {
                            tapped.push((k, replies.len()));
                        }
                        replies.push((r, outcome));
                        reply_to.push(Some(RawAddr::from(*src)));
                    }
                    Fast::Miss(mq) => {
                        let (sock, h, src) = (Arc::clone(&sock), handler.clone(), *src);
                        // dnstap on: the query's bytes and time, for when the reply comes
                        let tapped = shared.dnstap.as_ref().map(|_| (Box::<[u8]>::from(&**packet), std::time::SystemTime::now()));
                        // taken (rate-limited) and shadow-counted here: not again if the hickory path answers
                        let pre = Prechecked { rate: true, shadow: policy.has_shadow };
                        start_miss(&handler, mq, now, Box::new(move |reply| send_or_slow(sock, h, src, reply, tapped, pre)));
                    }
                    Fast::Slow => {
                        let pre = Prechecked { rate: rate_taken, shadow: false };
                        let (handler, bytes, src) = (handler.clone(), packet.to_vec(), *src);
                        reply_later(&sock, src, async move {
                            crate::server::slow::handle_bytes_checked(&handler, &bytes, src, crate::metrics::Transport::Udp, pre).await
                        });
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
            crate::sys::udp::send_batch(fd, &slices, &reply_to)
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
        if let Some(tap) = &shared.dnstap {
            // after the send and its latency: reporting never delays a reply
            for &(k, i) in &tapped {
                if let (Some(Some((packet, src, _))), Some((r, _))) = (datagrams.get(k), replies.get(i)) {
                    tap.log(packet, Some(r), *src, crate::metrics::Transport::Udp, None, None);
                }
            }
        }
    }
}

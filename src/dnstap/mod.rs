//! dnstap (`[dnstap]`): every answered query as a CLIENT_QUERY and a
//! CLIENT_RESPONSE message (wire bytes, client address and port,
//! transport, times) with the applied policy of a blocked one (list, rule,
//! action in dnstap's `Policy`), over Frame Streams to a reader on a unix
//! socket or TCP (`dnstap -u`, `fstrm_capture`, a collector).
//!
//! The query path hands over an [`Event`] with [`Dnstap::log`]: the query
//! and reply bytes copied, an `Arc` of the policy for a blocked one, a
//! clock read and a `try_send` into a bounded queue; nothing is encoded
//! there and nothing waits. With dnstap off (`Shared::dnstap` is `None`)
//! the query path pays one branch.
//!
//! Cost per query with it on: on the query path, two allocations and
//! copies (query ~40 bytes, reply ~100), the clock read and the channel
//! send: ~0.3-0.45 µs (`benches/dnstap.rs`, `dnstap/log_on_the_query_path`),
//! i.e. some 5-8 % of a cached or blocked answer's CPU. On the writer's
//! thread, encoding the CLIENT_QUERY + CLIENT_RESPONSE pair: ~0.13-0.21 µs,
//! ~0.22-0.27 µs with a blocked query's policy (`dnstap/encode_*`), plus
//! one `write` per batch of up to 64 KiB (~170 pairs of 380 bytes). A full
//! queue drops the event and counts it (`qalqan_dnstap_dropped_total`);
//! written frames are counted in `qalqan_dnstap_frames_total`.
//!
//! Files: this one (the handle), [`writer`] (connection, handshake,
//! batches, reconnect), [`encode`] (protobuf and Frame Streams bytes).

pub mod encode;
pub mod writer;

use std::net::SocketAddr;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::SystemTime;

use prometheus::IntCounter;

use crate::metrics::Transport;
use crate::policy::{Hit, Policy};
pub use writer::{Counters, Endpoint, Event, Settings};

/// The handle the query path holds.
pub struct Dnstap {
    tx: SyncSender<Event>,
    dropped: IntCounter,
    queries: bool,
    responses: bool,
}

impl Dnstap {
    /// Starts the writer thread (it connects in the background: a reader
    /// that is not there yet is retried, never waited for).
    pub fn start(settings: Settings, counters: Counters) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Event>(settings.queue.max(1));
        let dropped = counters.dropped.clone();
        let (queries, responses) = (settings.log_queries, settings.log_responses);
        std::thread::Builder::new().name("qalqan-dnstap".into()).spawn(move || writer::run(settings, rx, counters))?;
        Ok(Self { tx, dropped, queries, responses })
    }

    /// Queues one query and its reply (`None`: dropped, no reply sent);
    /// `blocked`: the policy and hit that blocked it; `query_time`: when it
    /// was read (`None`: now, for a query answered at once). Never blocks.
    /// Cost: see the module doc.
    pub fn log(
        &self,
        query: &[u8],
        response: Option<&[u8]>,
        client: SocketAddr,
        transport: Transport,
        query_time: Option<SystemTime>,
        blocked: Option<(&Arc<Policy>, &Hit)>,
    ) {
        let now = SystemTime::now();
        let e = Event {
            query_time: query_time.unwrap_or(now),
            response_time: now,
            client,
            transport,
            query: self.queries.then(|| Box::from(query)),
            response: response.filter(|_| self.responses).map(Box::from),
            blocked: blocked.map(|(p, h)| (Arc::clone(p), *h)),
        };
        match self.tx.try_send(e) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.dropped.inc(),
        }
    }
}

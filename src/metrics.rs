//! Prometheus metrics on an app-owned registry (never the global one).
//!
//! The query path only touches pre-resolved counter handles (one relaxed
//! atomic add each) and one histogram observation; no label lookup, no lock.

use std::time::Duration;

use hickory_server::net::xfer::Protocol;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// How a query ended (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Forwarded,
    /// Resolved from the root (`[upstream] mode = "recursive"`).
    Recursed,
    Cached,
    /// Answered from an expired entry because resolution failed (RFC 8767).
    Stale,
    Blocked,
    Refused,
    Servfail,
    Formerr,
    Dropped,
}

const OUTCOMES: [(Outcome, &str); 9] = [
    (Outcome::Forwarded, "forwarded"),
    (Outcome::Recursed, "recursed"),
    (Outcome::Cached, "cached"),
    (Outcome::Stale, "stale"),
    (Outcome::Blocked, "blocked"),
    (Outcome::Refused, "refused"),
    (Outcome::Servfail, "servfail"),
    (Outcome::Formerr, "formerr"),
    (Outcome::Dropped, "dropped"),
];

/// The transport a query came over (the `protocol` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    /// DNS over TLS (RFC 7858).
    Dot,
    /// DNS over HTTPS (RFC 8484).
    Doh,
    /// DNS over QUIC (RFC 9250).
    Doq,
}

impl Transport {
    /// Every transport, in label order.
    pub const ALL: [Transport; 5] = [Transport::Udp, Transport::Tcp, Transport::Dot, Transport::Doh, Transport::Doq];

    /// The `protocol` label value.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Dot => "dot",
            Transport::Doh => "doh",
            Transport::Doq => "doq",
        }
    }

    /// Whether replies over it are encrypted (and padded, RFC 8467).
    pub fn encrypted(self) -> bool {
        matches!(self, Transport::Dot | Transport::Doh | Transport::Doq)
    }
}

impl From<Protocol> for Transport {
    /// hickory's protocol of a request; our encrypted transports reach
    /// hickory as `Tcp` and say what they are themselves.
    fn from(p: Protocol) -> Self {
        if p == Protocol::Udp {
            Transport::Udp
        } else {
            Transport::Tcp
        }
    }
}

fn outcome_index(o: Outcome) -> usize {
    OUTCOMES.iter().position(|(x, _)| *x == o).unwrap_or(0)
}

/// Every metric qalqan exports.
pub struct Metrics {
    pub registry: Registry,
    /// [protocol: udp, tcp, dot, doh, doq ([`Transport::ALL`] order)][outcome]
    queries: Vec<Vec<IntCounter>>,
    durations: Vec<Histogram>,
    blocked_total: IntCounterVec,
    /// `qalqan_shadow_hits_total{list}`: queries a shadow list would have blocked.
    shadow_hits: IntCounterVec,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    /// `qalqan_stale_answers_total` (RFC 8767).
    pub stale_answers: IntCounter,
    /// `qalqan_prefetches_total`: entries refreshed before they expired.
    pub prefetches: IntCounter,
    pub cache_entries: IntGauge,
    pub cache_bytes: IntGauge,
    /// `qalqan_tcp_connections_open`.
    pub tcp_open: IntGauge,
    pub list_rules: IntGaugeVec,
    pub list_reloads: IntCounterVec,
    pub list_last_success: IntGaugeVec,
    pub policy_generation: IntGauge,
    /// Start of an update (gate + compile) to the publish of its policy.
    pub policy_build: Histogram,
    pub blocked_log_dropped: IntCounter,
    /// `qalqan_dnstap_frames_total`: dnstap frames written to the reader.
    pub dnstap_frames: IntCounter,
    /// `qalqan_dnstap_dropped_total`: dnstap events dropped (queue full,
    /// no reader, or lost with a failed write).
    pub dnstap_dropped: IntCounter,
    pub rate_limited: IntCounter,
    pub tcp_refused: IntCounter,
    list_version: IntGaugeVec,
    /// `qalqan_list_serial{list}`: SOA serial of the zone version in force
    /// (axfr:// lists and catalog members): what a fleet compares.
    list_serial: IntGaugeVec,
    list_version_seen: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// `qalqan_list_updates_total{list,kind}`: published updates, by how
    /// they were built (`delta`: layered over the base; `full`: a new base).
    pub list_updates: IntCounterVec,
    /// `qalqan_guard_held_total{list}`: remote updates the guard stopped
    /// (held whole, or applied without the lines that block protected names).
    pub guard_held: IntCounterVec,
    /// `qalqan_guard_held_names{list}`: protected names the held update
    /// of each list would newly block (0: nothing held).
    pub guard_held_names: IntGaugeVec,
    /// `qalqan_guard_confirmed_total{list}`: held updates released by an operator.
    pub guard_confirmed: IntCounterVec,
    /// `qalqan_guard_protected_names`: names in `[guard] protected`.
    pub guard_protected: IntGauge,
    /// `qalqan_update_enforce_seconds{list}`: an update received by its
    /// channel (file change seen, PATCH/PUT read, transfer done) to its
    /// policy published.
    pub update_enforce: prometheus::HistogramVec,
    /// `qalqan_list_age_seconds{list}`: set from `list_confirmed` at encode.
    list_age: prometheus::GaugeVec,
    /// `qalqan_list_refresh_seconds{list}`: `refresh_s` of pulled lists
    /// (http, axfr), what the age alert compares with.
    pub list_refresh: IntGaugeVec,
    /// Unix time each list's version in force was last confirmed by its source.
    list_confirmed: std::sync::Mutex<std::collections::HashMap<String, f64>>,
    upstream_requests: IntCounterVec,
    upstream_duration: prometheus::HistogramVec,
    dnssec: IntCounterVec,
    /// `qalqan_encrypted_connections_open{protocol}` (dot, doh, doq).
    encrypted_open: IntGaugeVec,
    /// `qalqan_encrypted_connections_refused_total{protocol,reason}`.
    encrypted_refused: IntCounterVec,
    /// `qalqan_tls_certificate_expiry_timestamp_seconds`: notAfter of the certificate in use.
    pub tls_cert_expiry: IntGauge,
    /// `qalqan_tls_certificate_reloads_total{result}` (success|error).
    pub tls_cert_reloads: IntCounterVec,
    /// `qalqan_blockpage_requests_total{list,status}`.
    blockpage_requests: IntCounterVec,
    /// `qalqan_blockpage_connections_closed_total{reason}` (acl|limit|idle|timeout).
    blockpage_closed: IntCounterVec,
}

/// Metric handles of one upstream server.
pub struct UpstreamMetrics {
    ok: IntCounter,
    servfail: IntCounter,
    refused: IntCounter,
    other_rcode: IntCounter,
    timeout: IntCounter,
    error: IntCounter,
    duration: Histogram,
}

impl UpstreamMetrics {
    /// Counts one attempt: `Ok(rcode)` or `Err(timed_out)`.
    pub fn record(&self, r: &Result<hickory_proto::op::ResponseCode, bool>, took: Duration) {
        use hickory_proto::op::ResponseCode as R;
        let c = match r {
            Ok(R::NoError | R::NXDomain) => &self.ok,
            Ok(R::ServFail) => &self.servfail,
            Ok(R::Refused) => &self.refused,
            Ok(_) => &self.other_rcode,
            Err(true) => &self.timeout,
            Err(false) => &self.error,
        };
        c.inc();
        self.duration.observe(took.as_secs_f64());
    }
}

impl Metrics {
    /// Builds and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let queries_vec = IntCounterVec::new(
            Opts::new("qalqan_queries_total", "DNS queries answered, by protocol and outcome"),
            &["protocol", "outcome"],
        )?;
        registry.register(Box::new(queries_vec.clone()))?;
        let mut queries = Vec::new();
        for t in Transport::ALL {
            let mut row = Vec::new();
            for (_, name) in OUTCOMES {
                row.push(queries_vec.get_metric_with_label_values(&[t.label(), name])?);
            }
            queries.push(row);
        }
        let dur_vec = prometheus::HistogramVec::new(
            HistogramOpts::new("qalqan_query_duration_seconds", "Time from request to reply, by outcome").buckets(vec![
                0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                2.5, 5.0,
            ]),
            &["outcome"],
        )?;
        registry.register(Box::new(dur_vec.clone()))?;
        let mut durations = Vec::new();
        for (_, name) in OUTCOMES {
            durations.push(dur_vec.get_metric_with_label_values(&[name])?);
        }
        let blocked_total =
            IntCounterVec::new(Opts::new("qalqan_blocked_total", "Blocked queries, by deciding list"), &["list"])?;
        registry.register(Box::new(blocked_total.clone()))?;
        let shadow_hits = IntCounterVec::new(
            Opts::new("qalqan_shadow_hits_total", "Queries a shadow list (mode = \"shadow\") would have blocked, by list; never enforced"),
            &["list"],
        )?;
        registry.register(Box::new(shadow_hits.clone()))?;
        let cache_hits = IntCounter::new("qalqan_cache_hits_total", "Answers served from the cache")?;
        registry.register(Box::new(cache_hits.clone()))?;
        let cache_misses = IntCounter::new("qalqan_cache_misses_total", "Cache look-ups that went upstream")?;
        registry.register(Box::new(cache_misses.clone()))?;
        let stale_answers =
            IntCounter::new("qalqan_stale_answers_total", "Answers served from expired cache entries because resolution failed (RFC 8767)")?;
        registry.register(Box::new(stale_answers.clone()))?;
        let prefetches = IntCounter::new("qalqan_prefetches_total", "Cache entries refreshed in the background before they expired")?;
        registry.register(Box::new(prefetches.clone()))?;
        let cache_entries = IntGauge::new("qalqan_cache_entries", "Entries in the reply cache")?;
        registry.register(Box::new(cache_entries.clone()))?;
        let cache_bytes = IntGauge::new("qalqan_cache_bytes", "Bytes the reply cache holds (replies and bookkeeping; [cache] max_bytes bounds it)")?;
        registry.register(Box::new(cache_bytes.clone()))?;
        let tcp_open = IntGauge::new("qalqan_tcp_connections_open", "DNS-over-TCP connections open now")?;
        registry.register(Box::new(tcp_open.clone()))?;
        let list_rules = IntGaugeVec::new(Opts::new("qalqan_list_rules", "Rules in force, by list"), &["list"])?;
        registry.register(Box::new(list_rules.clone()))?;
        let list_reloads = IntCounterVec::new(
            Opts::new("qalqan_list_reloads_total", "List loads, by list and result (success|error)"),
            &["list", "result"],
        )?;
        registry.register(Box::new(list_reloads.clone()))?;
        let list_last_success = IntGaugeVec::new(
            Opts::new("qalqan_list_last_success_timestamp_seconds", "Unix time of the last successful load, by list"),
            &["list"],
        )?;
        registry.register(Box::new(list_last_success.clone()))?;
        let policy_generation = IntGauge::new("qalqan_policy_generation", "Generation of the published policy")?;
        registry.register(Box::new(policy_generation.clone()))?;
        let policy_build = Histogram::with_opts(
            HistogramOpts::new(
                "qalqan_policy_build_seconds",
                "Time from the start of a list update (gate and compile) to the publish of its policy",
            )
            .buckets(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
        )?;
        registry.register(Box::new(policy_build.clone()))?;
        let blocked_log_dropped = IntCounter::new(
            "qalqan_blocked_log_dropped_total",
            "Blocked-query log records dropped because the writer lagged",
        )?;
        registry.register(Box::new(blocked_log_dropped.clone()))?;
        let dnstap_frames = IntCounter::new("qalqan_dnstap_frames_total", "dnstap frames written to the reader")?;
        registry.register(Box::new(dnstap_frames.clone()))?;
        let dnstap_dropped = IntCounter::new(
            "qalqan_dnstap_dropped_total",
            "dnstap messages dropped: the queue was full, no reader was connected, or a write failed",
        )?;
        registry.register(Box::new(dnstap_dropped.clone()))?;
        let rate_limited =
            IntCounter::new("qalqan_rate_limited_total", "Queries refused or dropped by the per-client rate limit")?;
        registry.register(Box::new(rate_limited.clone()))?;
        let tcp_refused = IntCounter::new(
            "qalqan_tcp_connections_refused_total",
            "TCP connections closed at accept (max_tcp_connections or max_tcp_per_client)",
        )?;
        registry.register(Box::new(tcp_refused.clone()))?;
        let list_version = IntGaugeVec::new(
            Opts::new("qalqan_list_version_info", "Version (content hash) of each list in force; value 1"),
            &["list", "version"],
        )?;
        registry.register(Box::new(list_version.clone()))?;
        let list_serial = IntGaugeVec::new(
            Opts::new("qalqan_list_serial", "SOA serial of the zone in force, by list (axfr:// lists and catalog members)"),
            &["list"],
        )?;
        registry.register(Box::new(list_serial.clone()))?;
        let list_updates = IntCounterVec::new(
            Opts::new("qalqan_list_updates_total", "Published list updates, by list and kind (delta: layered over the base index; full: a new base)"),
            &["list", "kind"],
        )?;
        registry.register(Box::new(list_updates.clone()))?;
        let guard_held = IntCounterVec::new(
            Opts::new("qalqan_guard_held_total", "Remote list updates the guard stopped because they would newly block protected names, by list"),
            &["list"],
        )?;
        registry.register(Box::new(guard_held.clone()))?;
        let guard_held_names = IntGaugeVec::new(
            Opts::new("qalqan_guard_held_names", "Protected names the update held for each list would newly block (0: nothing held)"),
            &["list"],
        )?;
        registry.register(Box::new(guard_held_names.clone()))?;
        let guard_confirmed = IntCounterVec::new(
            Opts::new("qalqan_guard_confirmed_total", "Held list updates released by an operator (POST /v1/lists/NAME/confirm), by list"),
            &["list"],
        )?;
        registry.register(Box::new(guard_confirmed.clone()))?;
        let guard_protected = IntGauge::new("qalqan_guard_protected_names", "Names in the [guard] protected file (0: no guard)")?;
        registry.register(Box::new(guard_protected.clone()))?;
        let update_enforce = prometheus::HistogramVec::new(
            HistogramOpts::new(
                "qalqan_update_enforce_seconds",
                "Time from a list update received by its channel to its policy published (enforced), by list",
            )
            .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["list"],
        )?;
        registry.register(Box::new(update_enforce.clone()))?;
        let list_age = prometheus::GaugeVec::new(
            Opts::new(
                "qalqan_list_age_seconds",
                "Seconds since the source last confirmed the list version in force (a load, a push, an unchanged SOA serial, HTTP 304, an unchanged file), by list",
            ),
            &["list"],
        )?;
        registry.register(Box::new(list_age.clone()))?;
        let list_refresh = IntGaugeVec::new(
            Opts::new("qalqan_list_refresh_seconds", "Configured refresh_s of a pulled list (http, axfr): how often its source is asked"),
            &["list"],
        )?;
        registry.register(Box::new(list_refresh.clone()))?;
        let upstream_requests = IntCounterVec::new(
            Opts::new(
                "qalqan_upstream_requests_total",
                "Upstream attempts, by server and result (ok|servfail|refused|other_rcode|timeout|error)",
            ),
            &["server", "result"],
        )?;
        registry.register(Box::new(upstream_requests.clone()))?;
        let upstream_duration = prometheus::HistogramVec::new(
            HistogramOpts::new("qalqan_upstream_duration_seconds", "Upstream attempt time, by server").buckets(vec![
                0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["server"],
        )?;
        registry.register(Box::new(upstream_duration.clone()))?;
        let dnssec = IntCounterVec::new(
            Opts::new("qalqan_dnssec_total", "Recursive answers validated, by result (secure|insecure|bogus|indeterminate)"),
            &["result"],
        )?;
        registry.register(Box::new(dnssec.clone()))?;
        for r in ["secure", "insecure", "bogus", "indeterminate"] {
            dnssec.with_label_values(&[r]);
        }
        let encrypted_open = IntGaugeVec::new(
            Opts::new("qalqan_encrypted_connections_open", "DoT, DoH and DoQ connections open now, by protocol"),
            &["protocol"],
        )?;
        registry.register(Box::new(encrypted_open.clone()))?;
        let encrypted_refused = IntCounterVec::new(
            Opts::new(
                "qalqan_encrypted_connections_refused_total",
                "DoT, DoH and DoQ connections closed before serving a query, by protocol and reason (acl|limit|handshake)",
            ),
            &["protocol", "reason"],
        )?;
        registry.register(Box::new(encrypted_refused.clone()))?;
        let tls_cert_expiry = IntGauge::new(
            "qalqan_tls_certificate_expiry_timestamp_seconds",
            "Unix time at which the served TLS certificate expires (notAfter); 0 before one is loaded",
        )?;
        registry.register(Box::new(tls_cert_expiry.clone()))?;
        let tls_cert_reloads = IntCounterVec::new(
            Opts::new("qalqan_tls_certificate_reloads_total", "TLS certificate (re)loads, by result (success|error)"),
            &["result"],
        )?;
        registry.register(Box::new(tls_cert_reloads.clone()))?;
        let blockpage_requests = IntCounterVec::new(
            Opts::new(
                "qalqan_blockpage_requests_total",
                "Block page requests, by deciding list (empty when none) and HTTP status",
            ),
            &["list", "status"],
        )?;
        registry.register(Box::new(blockpage_requests.clone()))?;
        let blockpage_closed = IntCounterVec::new(
            Opts::new(
                "qalqan_blockpage_connections_closed_total",
                "Block page connections closed without an answer, by reason (acl|limit at accept; idle, timeout)",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(blockpage_closed.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))?;
        Ok(Self {
            registry,
            queries,
            durations,
            blocked_total,
            shadow_hits,
            cache_hits,
            cache_misses,
            stale_answers,
            prefetches,
            cache_entries,
            cache_bytes,
            tcp_open,
            list_rules,
            list_reloads,
            list_last_success,
            policy_generation,
            policy_build,
            blocked_log_dropped,
            dnstap_frames,
            dnstap_dropped,
            rate_limited,
            tcp_refused,
            list_version,
            list_serial,
            list_version_seen: std::sync::Mutex::new(std::collections::HashMap::new()),
            list_updates,
            guard_held,
            guard_held_names,
            guard_confirmed,
            guard_protected,
            update_enforce,
            list_age,
            list_refresh,
            list_confirmed: std::sync::Mutex::new(std::collections::HashMap::new()),
            upstream_requests,
            upstream_duration,
            dnssec,
            encrypted_open,
            encrypted_refused,
            tls_cert_expiry,
            tls_cert_reloads,
            blockpage_requests,
            blockpage_closed,
        })
    }

    /// Notes that the source of `list` confirmed its version in force now
    /// (`qalqan_list_age_seconds` counts from here).
    pub fn confirm_list(&self, list: &str) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        if let Ok(mut c) = self.list_confirmed.lock() {
            c.insert(list.to_owned(), now);
        }
        self.list_age.with_label_values(&[list]).set(0.0);
    }

    /// Seconds since the source of `list` last confirmed its version in force.
    pub fn list_age(&self, list: &str) -> Option<f64> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        self.list_confirmed.lock().ok()?.get(list).map(|at| (now - at).max(0.0))
    }

    /// Sets `qalqan_list_version_info{list,version} 1`, removing the old version's series.
    pub fn set_list_version(&self, list: &str, version: &str) {
        if let Ok(mut seen) = self.list_version_seen.lock() {
            if let Some(old) = seen.insert(list.to_owned(), version.to_owned()) {
                if old != version {
                    let _ = self.list_version.remove_label_values(&[list, &old]);
                }
            }
        }
        self.list_version.with_label_values(&[list, version]).set(1);
    }

    /// Sets `qalqan_list_serial{list}`.
    pub fn set_list_serial(&self, list: &str, serial: u32) {
        self.list_serial.with_label_values(&[list]).set(i64::from(serial));
    }

    /// Drops every per-list series of `list` (a catalog member that left the
    /// catalog): its rules, version, serial, age and refresh interval.
    pub fn forget_list(&self, list: &str) {
        let _ = self.list_rules.remove_label_values(&[list]);
        let _ = self.list_serial.remove_label_values(&[list]);
        let _ = self.list_last_success.remove_label_values(&[list]);
        let _ = self.list_refresh.remove_label_values(&[list]);
        let _ = self.list_age.remove_label_values(&[list]);
        // its counters too: members come and go, their series must not pile up
        for result in ["success", "error", "unchanged"] {
            let _ = self.list_reloads.remove_label_values(&[list, result]);
        }
        for kind in ["full", "delta"] {
            let _ = self.list_updates.remove_label_values(&[list, kind]);
        }
        let _ = self.update_enforce.remove_label_values(&[list]);
        if let Ok(mut c) = self.list_confirmed.lock() {
            c.remove(list);
        }
        if let Ok(mut seen) = self.list_version_seen.lock() {
            if let Some(old) = seen.remove(list) {
                let _ = self.list_version.remove_label_values(&[list, &old]);
            }
        }
    }

    /// Handles for upstream `server` (a configured address: bounded label set).
    /// `qalqan_dnssec_total{result}` handles: secure, insecure, bogus, indeterminate.
    pub fn dnssec_results(&self) -> [IntCounter; 4] {
        ["secure", "insecure", "bogus", "indeterminate"].map(|r| self.dnssec.with_label_values(&[r]))
    }

    pub fn upstream(&self, server: &str) -> UpstreamMetrics {
        let c = |result: &str| self.upstream_requests.with_label_values(&[server, result]);
        UpstreamMetrics {
            ok: c("ok"),
            servfail: c("servfail"),
            refused: c("refused"),
            other_rcode: c("other_rcode"),
            timeout: c("timeout"),
            error: c("error"),
            duration: self.upstream_duration.with_label_values(&[server]),
        }
    }

    /// Counts one answered query. Cost: two relaxed atomic adds and one
    /// histogram bucket search (16 buckets); `metrics/observe` in
    /// `benches/hot_path.rs`.
    pub fn observe(&self, protocol: impl Into<Transport>, outcome: Outcome, took: Duration) {
        let p = protocol.into() as usize;
        let o = outcome_index(outcome);
        if let Some(c) = self.queries.get(p).and_then(|row| row.get(o)) {
            c.inc();
        }
        if let Some(h) = self.durations.get(o) {
            h.observe(took.as_secs_f64());
        }
    }

    /// Counts `n` queries answered with the same outcome and latency (the
    /// UDP fast path's batch: its replies share one read and one send).
    /// Cost: one atomic add for the counter and, for the histogram, `n`
    /// plain adds into a local copy flushed with a few atomic adds (below 4,
    /// `n` ordinary observations: the local copy costs an allocation).
    pub fn observe_n(&self, protocol: impl Into<Transport>, outcome: Outcome, took: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let p = protocol.into() as usize;
        let o = outcome_index(outcome);
        if let Some(c) = self.queries.get(p).and_then(|row| row.get(o)) {
            c.inc_by(n);
        }
        if let Some(h) = self.durations.get(o) {
            if n < 4 {
                // a local copy costs an allocation and a flush of every bucket
                for _ in 0..n {
                    h.observe(took.as_secs_f64());
                }
                return;
            }
            let local = h.local();
            let secs = took.as_secs_f64();
            for _ in 0..n {
                local.observe(secs);
            }
            local.flush();
        }
    }

    /// The open-connections gauge of an encrypted transport.
    pub fn encrypted_open(&self, t: Transport) -> IntGauge {
        self.encrypted_open.with_label_values(&[t.label()])
    }

    /// Counts a connection of transport `t` closed before serving:
    /// `reason` is "acl", "limit" or "handshake".
    pub fn encrypted_refused(&self, t: Transport, reason: &'static str) {
        self.encrypted_refused.with_label_values(&[t.label(), reason]).inc();
    }

    /// Counts a block page answer: `list` is the deciding list's name
    /// (configured names: a bounded label set) or `""`, `status` the HTTP code.
    pub fn blockpage_request(&self, list: &str, status: u16) {
        let mut buf = [0u8; 3];
        let code = status_label(status, &mut buf);
        self.blockpage_requests.with_label_values(&[list, code]).inc();
    }

    /// Counts a block page connection closed without an answer (`reason`:
    /// acl|limit at accept, idle, timeout).
    pub fn blockpage_closed(&self, reason: &'static str) {
        self.blockpage_closed.with_label_values(&[reason]).inc();
    }

    /// Counts a block by `list` (a configured list name: bounded label set).
    /// Costs a label lookup (`metrics/blocked_by_list` in
    /// `benches/hot_path.rs`): the query path uses [`Metrics::blocked_handles`].
    pub fn blocked(&self, list: &str) {
        self.blocked_total.with_label_values(&[list]).inc();
    }

    /// One pre-resolved `qalqan_blocked_total{list}` handle per configured
    /// list, in config order (the query path indexes it with the hit's list
    /// id: no lookup, no lock).
    pub fn blocked_handles(&self, lists: &[String]) -> Vec<IntCounter> {
        lists.iter().map(|l| self.blocked_total.with_label_values(&[l])).collect()
    }

    /// One pre-resolved `qalqan_shadow_hits_total{list}` handle per
    /// configured list, in config order (see [`Metrics::blocked_handles`]).
    pub fn shadow_handles(&self, lists: &[String]) -> Vec<IntCounter> {
        lists.iter().map(|l| self.shadow_hits.with_label_values(&[l])).collect()
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        if let Ok(c) = self.list_confirmed.lock() {
            for (list, at) in c.iter() {
                self.list_age.with_label_values(&[list]).set((now - at).max(0.0));
            }
        }
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// An HTTP status as its three digits, without allocating.
fn status_label(status: u16, buf: &mut [u8; 3]) -> &str {
    let s = status.min(999);
    *buf = [b'0' + (s / 100) as u8, b'0' + (s / 10 % 10) as u8, b'0' + (s % 10) as u8];
    std::str::from_utf8(buf).unwrap_or("000")
}

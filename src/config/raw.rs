//! Serde structs that mirror the config file exactly. Unknown keys are
//! rejected by name (`deny_unknown_fields`); defaults live here.

use serde::{Deserialize, Serialize};

use crate::rules::{Action, Format, ListKind};

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub cache: RawCache,
    #[serde(default)]
    pub sinkhole: RawSinkhole,
    #[serde(default)]
    pub metrics: RawMetrics,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub state: RawState,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub recursion: RawRecursion,
    #[serde(default)]
    pub dnssec: RawDnssec,
    pub admin: Option<RawAdmin>,
    /// Certificate and key of DoT, DoH and DoQ (`[server] dot_listen` …).
    pub tls: Option<RawTls>,
    /// The HTTP block page on the sinkhole address (RFC 7725); omitted = off.
    pub blockpage: Option<RawBlockpage>,
    /// dnstap output (Frame Streams to a reader); omitted = off.
    pub dnstap: Option<RawDnstap>,
    /// `[sde]`: structured DNS errors (JSON EXTRA-TEXT) in blocked answers.
    #[serde(default)]
    pub sde: RawSde,
    /// The collateral-damage guard on remote list updates; omitted = off.
    pub guard: Option<RawGuard>,
    #[serde(default)]
    pub lists: Vec<RawList>,
    /// `[[views]]`: which lists apply to which client prefixes.
    #[serde(default)]
    pub views: Vec<RawView>,
    /// RFC 9432 catalog zones: each member zone becomes an `axfr://` list.
    #[serde(default)]
    pub catalogs: Vec<RawCatalog>,
}

/// `[sde]`: structured DNS errors (draft-ietf-dnsop-structured-dns-error):
/// the EDE EXTRA-TEXT of a blocked answer as I-JSON.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSde {
    /// "signalled" (default: JSON to clients that ask), "always", "off".
    #[serde(default = "default_sde_mode")]
    pub mode: String,
    /// The EDNS option code of the draft's SDE option (no IANA code yet).
    #[serde(default = "default_sde_option_code")]
    pub option_code: u16,
    /// `c`: contact URIs (`mailto:`, `tel:`).
    #[serde(default)]
    pub contact: Vec<String>,
    /// `o`: the filtering organisation.
    pub organization: Option<String>,
    /// `l`: language of `j` and `o` (RFC 5646 tag).
    #[serde(default = "default_sde_language")]
    pub language: String,
    /// `j` template for lists without their own `sde_justification`.
    pub justification: Option<String>,
}

impl Default for RawSde {
    fn default() -> Self {
        Self {
            mode: default_sde_mode(),
            option_code: default_sde_option_code(),
            contact: Vec::new(),
            organization: None,
            language: default_sde_language(),
            justification: None,
        }
    }
}

fn default_sde_mode() -> String {
    "signalled".to_owned()
}
fn default_sde_option_code() -> u16 {
    65001
}
fn default_sde_language() -> String {
    "en".to_owned()
}

/// `[[views]]`: the lists applied to queries from some client prefixes.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawView {
    pub name: String,
    /// Client prefixes (`10.0.0.0/8`, `2001:db8::/32`, a bare address = /32 or /128).
    pub clients: Vec<String>,
    /// The lists this view applies (regulator lists apply anyway).
    #[serde(default)]
    pub lists: Vec<String>,
    /// Regulator lists this view explicitly does not apply.
    #[serde(default)]
    pub except: Vec<String>,
}

/// `[dnstap]`: every query and reply as dnstap messages to a reader.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDnstap {
    /// Path of the reader's unix socket (exactly one of `socket`, `tcp`).
    pub socket: Option<String>,
    /// `ip:port` of a reader over TCP.
    pub tcp: Option<String>,
    /// `identity` of every message; omitted = the host name.
    pub identity: Option<String>,
    /// `version` of every message; omitted = `qalqan VERSION`.
    pub version: Option<String>,
    #[serde(default = "yes")]
    pub log_queries: bool,
    #[serde(default = "yes")]
    pub log_responses: bool,
    /// Queries waiting for the writer; past it they are dropped and counted.
    #[serde(default = "default_log_queue")]
    pub queue: usize,
    /// First wait before reconnecting to a reader that is gone; doubles.
    #[serde(default = "default_dnstap_reconnect_min_ms")]
    pub reconnect_min_ms: u64,
    /// Longest wait between reconnection attempts.
    #[serde(default = "default_dnstap_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Limit of one handshake step or one batch write to the reader.
    #[serde(default = "default_dnstap_timeout_ms")]
    pub timeout_ms: u64,
}

fn yes() -> bool {
    true
}
fn default_dnstap_reconnect_min_ms() -> u64 {
    250
}
fn default_dnstap_reconnect_max_ms() -> u64 {
    30_000
}
fn default_dnstap_timeout_ms() -> u64 {
    2_000
}

/// `[guard]`: names a remote list update must not newly block without an
/// operator's confirmation (`POST /v1/lists/NAME/confirm`).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGuard {
    /// File of protected names, one a line, `#` comments.
    pub protected: String,
    /// `"hold_all"` (the version in force stays) or `"apply_rest"` (the
    /// update is applied without the lines that would block a protected name).
    #[serde(default = "default_on_hit")]
    pub on_hit: crate::rules::GuardOnHit,
}

fn default_on_hit() -> crate::rules::GuardOnHit {
    crate::rules::GuardOnHit::HoldAll
}

/// `[[catalogs]]`: a catalog zone (RFC 9432) whose member zones become lists.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCatalog {
    /// `axfr://HOST:PORT/CATALOG-ZONE`: the catalog and every member come from this primary.
    pub source: String,
    /// TSIG key of the catalog and member transfers (and their NOTIFYs), the `kdig -y` form.
    pub tsig: Option<String>,
    /// Seconds between SOA checks of the catalog and of each member.
    #[serde(default = "default_refresh_s")]
    pub refresh_s: u64,
    /// Transfer timeout (catalog and members).
    #[serde(default = "default_fetch_timeout_ms")]
    pub timeout_ms: u64,
    /// Most member zones taken from the catalog (the rest are logged and left out).
    #[serde(default = "default_max_members")]
    pub max_members: usize,
    /// What every member list is.
    #[serde(default)]
    pub defaults: RawCatalogDefaults,
    /// A member's `group` property (RFC 9432 §4.4.2) mapped to what its list does instead.
    #[serde(default)]
    pub groups: std::collections::BTreeMap<String, RawCatalogGroup>,
}

/// `[catalogs.defaults]`: the list keys every member zone gets.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCatalogDefaults {
    #[serde(default = "default_catalog_format")]
    pub format: Format,
    #[serde(default = "default_kind")]
    pub kind: ListKind,
    #[serde(default = "default_action")]
    pub action: Action,
    #[serde(default = "default_ede")]
    pub ede: u16,
    #[serde(default)]
    pub mode: crate::rules::ListMode,
    #[serde(default = "default_max_shrink")]
    pub max_shrink: f64,
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    #[serde(default = "default_max_rules")]
    pub max_rules: usize,
}

impl Default for RawCatalogDefaults {
    fn default() -> Self {
        Self {
            format: default_catalog_format(),
            kind: default_kind(),
            action: default_action(),
            ede: default_ede(),
            mode: crate::rules::ListMode::default(),
            max_shrink: default_max_shrink(),
            max_bytes: default_max_bytes(),
            max_rules: default_max_rules(),
        }
    }
}

/// `[catalogs.groups.NAME]`: what a member with `group` NAME does instead of the defaults.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCatalogGroup {
    pub kind: Option<ListKind>,
    pub action: Option<Action>,
    pub ede: Option<u16>,
    pub mode: Option<crate::rules::ListMode>,
}

fn default_catalog_format() -> Format {
    Format::Rpz
}
fn default_max_members() -> usize {
    64
}

/// `[blockpage]`: the page a blocked subscriber's browser is shown when the
/// sinkhole address is asked for a blocked name (451, RFC 7725).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBlockpage {
    /// `ip:port` (port 80 when omitted) of the plain-HTTP listeners; the
    /// sinkhole address(es) of `[sinkhole]`. Never 443.
    pub listen: Vec<String>,
    /// The operator's page; `NAME.LANG.html` beside it (`kk`, `ru`, `en`)
    /// serve those languages. Omitted = the shipped pages (compiled in).
    /// Spanned: a missing file is reported at this key's line.
    pub template: Option<toml::Spanned<String>>,
    /// Who to write to, shown on the page.
    #[serde(default)]
    pub contact: String,
    /// Request line plus headers; past it the answer is 431.
    #[serde(default = "default_bp_max_header_bytes")]
    pub max_header_bytes: usize,
    /// From accept to the last byte of the answer; a slower client is cut.
    #[serde(default = "default_bp_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// A connection that sends nothing for this long after accept is closed.
    #[serde(default = "default_bp_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Connections open at once, all clients.
    #[serde(default = "default_bp_max_connections")]
    pub max_connections: usize,
    /// Connections open at once per client prefix (/24, /56).
    #[serde(default = "default_bp_max_per_client")]
    pub max_per_client: usize,
}

fn default_bp_max_header_bytes() -> usize {
    8192
}
fn default_bp_request_timeout_ms() -> u64 {
    5_000
}
fn default_bp_idle_timeout_ms() -> u64 {
    2_000
}
fn default_bp_max_connections() -> usize {
    1024
}
fn default_bp_max_per_client() -> usize {
    16
}

/// `[dnssec]`: validation in recursive mode.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDnssec {
    /// Validate what the iterator finds (AD on secure answers, SERVFAIL with
    /// an EDE on bogus ones).
    #[serde(default = "default_true")]
    pub validate: bool,
    /// Trust anchors: RFC 7958 XML, or DS / DNSKEY lines; omitted = the IANA
    /// root KSKs compiled in.
    pub trust_anchor: Option<String>,
    /// RFC 7646: names at and below these are answered without validation.
    #[serde(default)]
    pub negative_trust_anchors: Vec<String>,
    /// NSEC3 iterations above this make a denial insecure (RFC 9276).
    #[serde(default = "default_max_nsec3_iterations")]
    pub max_nsec3_iterations: u16,
    /// NSEC/NSEC3 RRsets whose signatures one denial proof may check.
    #[serde(default = "default_max_denial_rrsets")]
    pub max_denial_rrsets: usize,
}

impl Default for RawDnssec {
    fn default() -> Self {
        Self {
            validate: true,
            trust_anchor: None,
            negative_trust_anchors: Vec::new(),
            max_nsec3_iterations: default_max_nsec3_iterations(),
            max_denial_rrsets: default_max_denial_rrsets(),
        }
    }
}

fn default_max_nsec3_iterations() -> u16 {
    150
}
fn default_max_denial_rrsets() -> usize {
    8
}

/// `[recursion]`: bounds of recursive mode (`[upstream] mode = "recursive"`).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecursion {
    /// Longest wait in milliseconds for one authority before the next is
    /// asked (servers with a known RTT get four times it plus 50 ms).
    #[serde(default = "default_server_timeout_ms")]
    pub server_timeout_ms: u64,
    /// Referrals followed for one name.
    #[serde(default = "default_max_referrals")]
    pub max_referrals: u8,
    /// CNAMEs followed for one question.
    #[serde(default = "default_max_cname_chain")]
    pub max_cname_chain: u8,
    /// Queries to authorities for one client question, nested lookups included.
    #[serde(default = "default_max_queries")]
    pub max_queries: u16,
    /// Nesting of lookups for glueless name servers' addresses.
    #[serde(default = "default_max_depth")]
    pub max_depth: u8,
    /// RFC 9156 QNAME minimisation.
    #[serde(default = "default_true")]
    pub qname_minimisation: bool,
    /// Ask authorities over IPv6 too.
    #[serde(default = "default_true")]
    pub ipv6: bool,
    /// Zone cuts remembered.
    #[serde(default = "default_zone_cache_entries")]
    pub zone_cache_entries: usize,
    /// Authority addresses whose round-trip time is remembered.
    #[serde(default = "default_zone_cache_entries")]
    pub server_cache_entries: usize,
}

impl Default for RawRecursion {
    fn default() -> Self {
        Self {
            server_timeout_ms: default_server_timeout_ms(),
            max_referrals: default_max_referrals(),
            max_cname_chain: default_max_cname_chain(),
            max_queries: default_max_queries(),
            max_depth: default_max_depth(),
            qname_minimisation: true,
            ipv6: true,
            zone_cache_entries: default_zone_cache_entries(),
            server_cache_entries: default_zone_cache_entries(),
        }
    }
}

fn default_server_timeout_ms() -> u64 {
    800
}
fn default_max_referrals() -> u8 {
    30
}
fn default_max_cname_chain() -> u8 {
    12
}
fn default_max_queries() -> u16 {
    64
}
fn default_max_depth() -> u8 {
    4
}
fn default_zone_cache_entries() -> usize {
    100_000
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain (leaf first); reloaded on change and on SIGHUP.
    pub cert: String,
    /// PEM private key; must not be readable by group or others.
    pub key: String,
    /// The name clients verify and DDR announces; omitted = the
    /// certificate's first DNS name.
    pub name: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Sustained queries per second per client prefix; omitted or 0 = no limit.
    #[serde(default)]
    pub per_client_qps: f64,
    /// Queries a client prefix may send at once (default: 2 × per_client_qps).
    pub burst: Option<f64>,
    #[serde(default = "default_v4_prefix")]
    pub ipv4_prefix: u8,
    #[serde(default = "default_v6_prefix")]
    pub ipv6_prefix: u8,
    /// What limited queries get: "refused" (REFUSED + EDE) or "drop".
    #[serde(default = "default_limit_action")]
    pub action: String,
    /// Client prefixes tracked at once (memory bound).
    #[serde(default = "default_max_tracked")]
    pub max_tracked_clients: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            per_client_qps: 0.0,
            burst: None,
            ipv4_prefix: default_v4_prefix(),
            ipv6_prefix: default_v6_prefix(),
            action: default_limit_action(),
            max_tracked_clients: default_max_tracked(),
        }
    }
}

fn default_v4_prefix() -> u8 {
    24
}
fn default_v6_prefix() -> u8 {
    56
}
fn default_limit_action() -> String {
    "refused".to_owned()
}
fn default_max_tracked() -> usize {
    1_000_000
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// Where the last good version of every remote (http, push, axfr) list is kept.
    pub dir: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// `ip:port` of the push API.
    pub listen: String,
    /// File holding the bearer token; must not be readable by group or others.
    pub token_file: String,
    /// Base64 Ed25519 public keys whose signatures are accepted on pushed lists.
    #[serde(default)]
    pub regulator_keys: Vec<String>,
    /// Reject pushes without a valid signature (default: when keys are configured).
    pub require_signature: Option<bool>,
    /// Largest request body (bytes).
    #[serde(default = "default_admin_body")]
    pub max_body_bytes: u64,
    /// A signed request's `X-Qalqan-Timestamp` may differ from our clock by
    /// at most this many seconds (either way).
    #[serde(default = "default_signature_max_age_s")]
    pub signature_max_age_s: u64,
}

fn default_signature_max_age_s() -> u64 {
    300
}

fn default_admin_body() -> u64 {
    256 << 20
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `"PATH"` or `"stderr"`: where blocked queries are logged as JSON lines; omitted = off.
    pub blocked: Option<String>,
    #[serde(default = "default_anonymize")]
    pub anonymize: crate::querylog::Anonymize,
    /// Key for `anonymize = "hash"` (stable hashes across restarts); omitted = random per start.
    pub hash_key: Option<String>,
    /// Records waiting for the writer; past it records are dropped and counted.
    #[serde(default = "default_log_queue")]
    pub queue: usize,
    /// `"PATH"`: the tamper-evident audit log (hash-chained JSON lines); omitted = off.
    pub audit: Option<String>,
}

impl Default for RawLog {
    fn default() -> Self {
        Self { blocked: None, anonymize: default_anonymize(), hash_key: None, queue: default_log_queue(), audit: None }
    }
}

fn default_anonymize() -> crate::querylog::Anonymize {
    crate::querylog::Anonymize::None
}
fn default_log_queue() -> usize {
    10_000
}

#[derive(Debug, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// `ip:port` of the HTTP endpoint (/metrics, /healthz, /readyz); omitted = off.
    pub listen: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Client networks served; omitted = loopback only (closed by default).
    pub allow_clients: Option<Vec<String>>,
    #[serde(default = "default_tcp_idle_timeout_ms")]
    pub tcp_idle_timeout_ms: u64,
    /// Largest UDP reply we send to EDNS clients (RFC 9715 / DNS flag day 2020: 1232).
    #[serde(default = "default_max_udp_payload")]
    pub max_udp_payload: u16,
    /// Queries handled at once; past it new queries get SERVFAIL at once.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: usize,
    /// How long shutdown waits for in-flight queries.
    #[serde(default = "default_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// Worker threads; omitted = one per core.
    pub threads: Option<usize>,
    /// Accepted as `true` only: UDP is always served by the batched fast
    /// path (the hickory-server UDP loop behind `false` was removed; it had
    /// none of the fast path's outsider budget and was never tested).
    #[serde(default = "default_fast_path")]
    pub fast_path: bool,
    /// SO_RCVBUF of UDP sockets: bursts and CPU stalls are absorbed here
    /// instead of dropped (the kernel caps it at net.core.rmem_max).
    #[serde(default = "default_udp_recv_buffer")]
    pub udp_recv_buffer_bytes: usize,
    /// Nice value (0..=19) of the thread that compiles a reloaded list: at 19
    /// the build only gets the CPU the query workers leave over, so a reload
    /// does not delay queries; 0 builds at the workers' priority.
    #[serde(default = "default_reload_nice")]
    pub reload_nice: i32,
    /// A list update that adds or removes a few name rules is published as
    /// a delta over the compiled base; past this share of the base's rules
    /// (lines removed plus lines added, all lists together) the deltas are
    /// folded into a fresh base by a full build.
    #[serde(default = "default_delta_merge_share")]
    pub delta_merge_share: f64,
    /// File and HTTP lists of at most this many lines keep 8 bytes a line
    /// (hash and rule count) so that a new version is diffed and published
    /// as a delta; larger ones are rebuilt in full on every change.
    #[serde(default = "default_delta_diff_max_lines")]
    pub delta_diff_max_lines: usize,
    /// TCP connections open at once; more are closed at accept.
    #[serde(default = "default_max_tcp")]
    pub max_tcp_connections: usize,
    /// TCP connections one client prefix (/24 for IPv4, /56 for IPv6) may hold open.
    #[serde(default = "default_max_tcp_per_client")]
    pub max_tcp_per_client: usize,
    /// A TCP connection is closed this long after it opened, busy or not.
    #[serde(default = "default_tcp_max_lifetime_ms")]
    pub tcp_max_lifetime_ms: u64,
    /// A TCP connection is closed after answering this many queries.
    #[serde(default = "default_tcp_max_queries")]
    pub tcp_max_queries: u32,
    /// What a UDP query from outside `allow_clients` gets: "refused"
    /// (REFUSED, within `outside_acl_refused_qps`; dropped past it) or "drop".
    #[serde(default = "default_limit_action")]
    pub outside_acl: String,
    /// REFUSED replies per second to clients outside the ACL, all of them
    /// together (spoofed floods must not make us a reflector).
    #[serde(default = "default_outside_acl_refused_qps")]
    pub outside_acl_refused_qps: u32,
    /// DNS over TLS (RFC 7858) listeners, `ip:port` (port 853 when omitted); needs `[tls]`.
    #[serde(default)]
    pub dot_listen: Vec<String>,
    /// DNS over HTTPS (RFC 8484) listeners, `ip:port` (443); path /dns-query.
    #[serde(default)]
    pub doh_listen: Vec<String>,
    /// DNS over QUIC (RFC 9250) listeners, `ip:port` (853, UDP).
    #[serde(default)]
    pub doq_listen: Vec<String>,
    /// RFC 9462: answer `_dns.resolver.arpa` SVCB with the encrypted endpoints.
    #[serde(default)]
    pub ddr: bool,
    /// `use-application-dns.net`: "nxdomain" (browsers keep their own DoH
    /// off) or "off" (resolved like any name).
    #[serde(default = "default_canary")]
    pub canary: String,
    /// A TLS (or QUIC) handshake not done within this long is cut.
    #[serde(default = "default_tls_handshake_timeout_ms")]
    pub tls_handshake_timeout_ms: u64,
    /// An encrypted connection with no query within this long is closed
    /// (a query must also arrive whole within it: slowloris).
    #[serde(default = "default_tls_idle_timeout_ms")]
    pub tls_idle_timeout_ms: u64,
    /// DoT, DoH and DoQ connections open at once, all listeners together.
    #[serde(default = "default_max_tls")]
    pub max_tls_connections: usize,
    /// Encrypted connections one client prefix (/24, /56) may hold open.
    #[serde(default = "default_max_tls_per_client")]
    pub max_tls_per_client: usize,
    /// An encrypted connection is closed this long after it opened.
    #[serde(default = "default_tls_max_lifetime_ms")]
    pub tls_max_lifetime_ms: u64,
    /// Queries answered at once on one DoT (pipelined), DoH (HTTP/2) or DoQ connection.
    #[serde(default = "default_tls_max_streams")]
    pub tls_max_streams: u32,
    /// Largest DoH request body (POST) or `dns=` parameter (GET), and largest DoQ query, in bytes.
    #[serde(default = "default_doh_max_body")]
    pub doh_max_body_bytes: usize,
}

fn default_canary() -> String {
    "off".to_owned()
}
fn default_tls_handshake_timeout_ms() -> u64 {
    5_000
}
fn default_tls_idle_timeout_ms() -> u64 {
    30_000
}
fn default_max_tls() -> usize {
    10_000
}
fn default_max_tls_per_client() -> usize {
    20
}
fn default_tls_max_lifetime_ms() -> u64 {
    3_600_000
}
fn default_tls_max_streams() -> u32 {
    100
}
fn default_doh_max_body() -> usize {
    4096
}

fn default_outside_acl_refused_qps() -> u32 {
    100
}

fn default_tcp_max_lifetime_ms() -> u64 {
    120_000
}
fn default_tcp_max_queries() -> u32 {
    1_000
}

fn default_max_tcp() -> usize {
    1_000
}
fn default_max_tcp_per_client() -> usize {
    20
}

fn default_reload_nice() -> i32 {
    19
}

fn default_delta_merge_share() -> f64 {
    0.02
}

fn default_delta_diff_max_lines() -> usize {
    2_000_000
}

fn default_udp_recv_buffer() -> usize {
    4 << 20
}

fn default_fast_path() -> bool {
    true
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            allow_clients: None,
            tcp_idle_timeout_ms: default_tcp_idle_timeout_ms(),
            max_udp_payload: default_max_udp_payload(),
            max_inflight: default_max_inflight(),
            drain_timeout_ms: default_drain_timeout_ms(),
            threads: None,
            fast_path: default_fast_path(),
            udp_recv_buffer_bytes: default_udp_recv_buffer(),
            reload_nice: default_reload_nice(),
            delta_merge_share: default_delta_merge_share(),
            delta_diff_max_lines: default_delta_diff_max_lines(),
            max_tcp_connections: default_max_tcp(),
            max_tcp_per_client: default_max_tcp_per_client(),
            tcp_max_lifetime_ms: default_tcp_max_lifetime_ms(),
            tcp_max_queries: default_tcp_max_queries(),
            outside_acl: default_limit_action(),
            outside_acl_refused_qps: default_outside_acl_refused_qps(),
            dot_listen: Vec::new(),
            doh_listen: Vec::new(),
            doq_listen: Vec::new(),
            ddr: false,
            canary: default_canary(),
            tls_handshake_timeout_ms: default_tls_handshake_timeout_ms(),
            tls_idle_timeout_ms: default_tls_idle_timeout_ms(),
            max_tls_connections: default_max_tls(),
            max_tls_per_client: default_max_tls_per_client(),
            tls_max_lifetime_ms: default_tls_max_lifetime_ms(),
            tls_max_streams: default_tls_max_streams(),
            doh_max_body_bytes: default_doh_max_body(),
        }
    }
}

fn default_listen() -> Vec<String> {
    vec!["127.0.0.1:5353".to_owned()]
}
fn default_tcp_idle_timeout_ms() -> u64 {
    10_000
}
fn default_max_udp_payload() -> u16 {
    1232
}
fn default_max_inflight() -> usize {
    10_000
}
fn default_drain_timeout_ms() -> u64 {
    5_000
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// `ip` or `ip:port`; omitted = the nameservers of /etc/resolv.conf.
    pub servers: Option<Vec<String>>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Upstream queries in flight at once; past it a miss gets SERVFAIL at
    /// once. Sized for the burst that follows a stall of the worker (a
    /// hypervisor steal, a reload on the same CPU): the queries queued in the
    /// listening socket meanwhile are read in a rush, and after a flood of
    /// unique names most of them are misses.
    #[serde(default = "default_upstream_inflight")]
    pub max_inflight: usize,
    /// UDP sockets shared by upstream queries (each on its own random port);
    /// 0 = a fresh socket (fresh random port) per query.
    #[serde(default = "default_udp_sockets")]
    pub udp_sockets: usize,
    /// Queries sent from one pooled socket before it is replaced by a socket
    /// on a new random port.
    #[serde(default = "default_udp_socket_queries")]
    pub udp_socket_queries: u32,
    /// Milliseconds a pooled socket is used before it is replaced by one on
    /// a new random port (also on a quiet node).
    #[serde(default = "default_udp_socket_lifetime_ms")]
    pub udp_socket_lifetime_ms: u64,
    /// Identical cache misses in flight share one upstream query; this many
    /// clients at most wait on one, the next get SERVFAIL (never a second query).
    #[serde(default = "default_max_waiters")]
    pub max_waiters: usize,
    /// 0x20: send questions upstream with the name's letters in random case
    /// and accept only replies that echo it exactly (turned off by itself,
    /// with a warning, once an upstream shows it does not preserve case).
    #[serde(default = "default_true")]
    pub case_randomization: bool,
    /// `"forward"` (to `servers`) or `"recursive"` (from the root, issue #21).
    #[serde(default = "default_upstream_mode")]
    pub mode: String,
    /// Recursive mode: a root hints file (zone format; its A/AAAA records
    /// are used); omitted = the IANA root servers compiled in.
    pub root_hints: Option<String>,
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            servers: None,
            timeout_ms: default_timeout_ms(),
            max_inflight: default_upstream_inflight(),
            udp_sockets: default_udp_sockets(),
            udp_socket_queries: default_udp_socket_queries(),
            udp_socket_lifetime_ms: default_udp_socket_lifetime_ms(),
            max_waiters: default_max_waiters(),
            case_randomization: true,
            mode: default_upstream_mode(),
            root_hints: None,
        }
    }
}

fn default_upstream_mode() -> String {
    "forward".to_owned()
}

fn default_udp_sockets() -> usize {
    64
}
fn default_true() -> bool {
    true
}
fn default_max_waiters() -> usize {
    1_000
}
fn default_udp_socket_lifetime_ms() -> u64 {
    5_000
}
fn default_udp_socket_queries() -> u32 {
    2_000
}
fn default_timeout_ms() -> u64 {
    2_000
}
fn default_upstream_inflight() -> usize {
    10_000
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
    /// Bytes the cached replies (and their bookkeeping) may hold in all.
    #[serde(default = "default_cache_max_bytes")]
    pub max_bytes: u64,
    /// A reply longer than this is answered but not cached.
    #[serde(default = "default_cache_max_reply_bytes")]
    pub max_reply_bytes: usize,
    #[serde(default)]
    pub min_ttl: u32,
    #[serde(default = "default_max_ttl")]
    pub max_ttl: u32,
    /// Cap for negative answers (RFC 2308 §5 suggests 1–3 hours).
    #[serde(default = "default_max_negative_ttl")]
    pub max_negative_ttl: u32,
    /// RFC 8767: when the upstreams or authorities fail, answer from an
    /// expired entry (TTL 30, EDE 3 Stale Answer).
    #[serde(default)]
    pub serve_stale: bool,
    /// Seconds past expiry an entry may still be served stale.
    #[serde(default = "default_stale_max_s")]
    pub stale_max_s: u32,
    /// Refresh an entry that is asked for in the last tenth of its TTL, in
    /// the background, so popular names never expire.
    #[serde(default)]
    pub prefetch: bool,
}

fn default_stale_max_s() -> u32 {
    86_400
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            max_entries: default_max_entries(),
            max_bytes: default_cache_max_bytes(),
            max_reply_bytes: default_cache_max_reply_bytes(),
            min_ttl: 0,
            max_ttl: default_max_ttl(),
            max_negative_ttl: default_max_negative_ttl(),
            serve_stale: false,
            stale_max_s: default_stale_max_s(),
            prefetch: false,
        }
    }
}

fn default_cache_max_bytes() -> u64 {
    128 << 20
}
fn default_cache_max_reply_bytes() -> usize {
    8_192
}
fn default_max_entries() -> u64 {
    100_000
}
fn default_max_ttl() -> u32 {
    86_400
}
fn default_max_negative_ttl() -> u32 {
    3_600
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSinkhole {
    #[serde(default = "default_a")]
    pub a: String,
    #[serde(default = "default_aaaa")]
    pub aaaa: String,
    #[serde(default = "default_sinkhole_ttl")]
    pub ttl: u32,
}

impl Default for RawSinkhole {
    fn default() -> Self {
        Self { a: default_a(), aaaa: default_aaaa(), ttl: default_sinkhole_ttl() }
    }
}

fn default_a() -> String {
    "0.0.0.0".to_owned()
}
fn default_aaaa() -> String {
    "::".to_owned()
}
fn default_sinkhole_ttl() -> u32 {
    300
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawList {
    pub name: String,
    pub source: String,
    #[serde(default = "default_format")]
    pub format: Format,
    #[serde(default = "default_kind")]
    pub kind: ListKind,
    #[serde(default = "default_action")]
    pub action: Action,
    /// "enforce" (default) or "shadow": evaluated and counted, never enforced.
    #[serde(default)]
    pub mode: crate::rules::ListMode,
    /// RFC 8914 INFO-CODE; default 15 (Blocked).
    #[serde(default = "default_ede")]
    pub ede: u16,
    /// Share of bad lines above which the whole list is rejected.
    #[serde(default = "default_max_bad_share")]
    pub max_bad_share: f64,
    /// Share of rules a new version may lose before it is rejected (1.0 = no check).
    #[serde(default = "default_max_shrink")]
    pub max_shrink: f64,
    /// Seconds between refreshes of http(s):// and axfr:// sources.
    #[serde(default = "default_refresh_s")]
    pub refresh_s: u64,
    /// Fetch / transfer timeout.
    #[serde(default = "default_fetch_timeout_ms")]
    pub timeout_ms: u64,
    /// Largest accepted source (bytes; HTTP bodies, pushed bodies, transfers).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Most rules one version of the list may have.
    #[serde(default = "default_max_rules")]
    pub max_rules: usize,
    /// TSIG key for axfr:// sources, `hmac-sha256:NAME:BASE64SECRET` (the `kdig -y` form).
    pub tsig: Option<String>,
    /// What listed addresses (registry IP column, IP-literal URL hosts,
    /// adblock `1.2.3.4^`) do: `"ignore"` (default: counted and exported
    /// for a firewall) or `"answer"` (block any answer carrying one). Unset,
    /// RPZ `rpz-ip` triggers are enforced; `"ignore"` turns them off too.
    pub ip_rules: Option<crate::config::IpRules>,
    /// Allow a plain `http://` source (default: https only; config error otherwise).
    #[serde(default)]
    pub allow_insecure: bool,
    /// Which HTTP redirects a pull follows: "same-origin" (default: same
    /// scheme, host and port), "none", or "any-host" (another host, never
    /// from https to http).
    #[serde(default = "default_redirects")]
    pub redirects: crate::config::Redirects,
    /// "required": every pulled version needs a detached Ed25519 signature
    /// by one of `[admin] regulator_keys`, fetched from `signature_url`;
    /// "none" (default): no signature is fetched.
    #[serde(default)]
    pub signature: crate::config::PullSignature,
    /// Where the signature of a pulled list is (default: the list URL + ".sig").
    pub signature_url: Option<String>,
    /// The block page's `Link: <URL>; rel="blocked-by"` (RFC 7725) for
    /// names this list blocks: the authority that ordered the block.
    pub authority_url: Option<String>,
    /// A regulator's list: applied in every view unless a view names it in `except`.
    #[serde(default)]
    pub regulator: bool,
    /// `j` of the structured error for this list's blocks (template).
    pub sde_justification: Option<String>,
    /// `s`: the draft's sub-error code for this list's blocks.
    pub sde_sub_error: Option<u8>,
}

fn default_redirects() -> crate::config::Redirects {
    crate::config::Redirects::SameOrigin
}

fn default_max_shrink() -> f64 {
    0.5
}
fn default_refresh_s() -> u64 {
    300
}
fn default_fetch_timeout_ms() -> u64 {
    30_000
}
fn default_max_bytes() -> u64 {
    256 << 20
}
fn default_max_rules() -> usize {
    20_000_000
}

fn default_format() -> Format {
    Format::Domains
}
fn default_kind() -> ListKind {
    ListKind::Block
}
fn default_action() -> Action {
    Action::Nxdomain
}
fn default_ede() -> u16 {
    15
}
fn default_max_bad_share() -> f64 {
    0.01
}

/// The config reference (`docs/configuration.md`) against the structs above,
/// and the relative links of the Markdown docs against the tree.
#[cfg(test)]
mod docs_tests {
    use super::*;
    use crate::config::{IpRules, PullSignature, Redirects};

    const CONFIGURATION_MD: &str = include_str!("../../docs/configuration.md");

    /// Every key set: each struct is written out field by field (no
    /// `..Default::default()`), so a new field does not compile here until it
    /// is given a value, and every `Option` is `Some` so that it serializes.
    fn every_key_set() -> RawConfig {
        RawConfig {
            server: RawServer {
                listen: default_listen(),
                allow_clients: Some(vec!["127.0.0.0/8".to_owned()]),
                tcp_idle_timeout_ms: default_tcp_idle_timeout_ms(),
                max_udp_payload: default_max_udp_payload(),
                max_inflight: default_max_inflight(),
                drain_timeout_ms: default_drain_timeout_ms(),
                threads: Some(2),
                fast_path: default_fast_path(),
                udp_recv_buffer_bytes: default_udp_recv_buffer(),
                reload_nice: default_reload_nice(),
                delta_merge_share: default_delta_merge_share(),
                delta_diff_max_lines: default_delta_diff_max_lines(),
                max_tcp_connections: default_max_tcp(),
                max_tcp_per_client: default_max_tcp_per_client(),
                tcp_max_lifetime_ms: default_tcp_max_lifetime_ms(),
                tcp_max_queries: default_tcp_max_queries(),
                outside_acl: default_limit_action(),
                outside_acl_refused_qps: default_outside_acl_refused_qps(),
                dot_listen: vec!["0.0.0.0:853".to_owned()],
                doh_listen: vec!["0.0.0.0:443".to_owned()],
                doq_listen: vec!["0.0.0.0:853".to_owned()],
                ddr: true,
                canary: "nxdomain".to_owned(),
                tls_handshake_timeout_ms: default_tls_handshake_timeout_ms(),
                tls_idle_timeout_ms: default_tls_idle_timeout_ms(),
                max_tls_connections: default_max_tls(),
                max_tls_per_client: default_max_tls_per_client(),
                tls_max_lifetime_ms: default_tls_max_lifetime_ms(),
                tls_max_streams: default_tls_max_streams(),
                doh_max_body_bytes: default_doh_max_body(),
            },
            upstream: RawUpstream {
                servers: Some(vec!["127.0.0.1:5300".to_owned()]),
                timeout_ms: default_timeout_ms(),
                max_inflight: default_upstream_inflight(),
                udp_sockets: default_udp_sockets(),
                udp_socket_queries: default_udp_socket_queries(),
                udp_socket_lifetime_ms: default_udp_socket_lifetime_ms(),
                max_waiters: default_max_waiters(),
                case_randomization: true,
                mode: default_upstream_mode(),
                root_hints: Some("config/root.hints".to_owned()),
            },
            cache: RawCache {
                max_entries: default_max_entries(),
                max_bytes: default_cache_max_bytes(),
                max_reply_bytes: default_cache_max_reply_bytes(),
                min_ttl: 0,
                max_ttl: default_max_ttl(),
                max_negative_ttl: default_max_negative_ttl(),
                serve_stale: true,
                stale_max_s: default_stale_max_s(),
                prefetch: true,
            },
            sinkhole: RawSinkhole { a: default_a(), aaaa: default_aaaa(), ttl: default_sinkhole_ttl() },
            metrics: RawMetrics { listen: Some("127.0.0.1:9153".to_owned()) },
            log: RawLog {
                blocked: Some("stderr".to_owned()),
                anonymize: default_anonymize(),
                hash_key: Some("key".to_owned()),
                queue: default_log_queue(),
                audit: Some("/var/log/qalqan/audit.jsonl".to_owned()),
            },
            state: RawState { dir: Some("/var/lib/qalqan".to_owned()) },
            limits: RawLimits {
                per_client_qps: 200.0,
                burst: Some(400.0),
                ipv4_prefix: default_v4_prefix(),
                ipv6_prefix: default_v6_prefix(),
                action: default_limit_action(),
                max_tracked_clients: default_max_tracked(),
            },
            recursion: RawRecursion::default(),
            dnssec: RawDnssec {
                validate: true,
                trust_anchor: Some("/etc/qalqan/root.key".to_owned()),
                negative_trust_anchors: vec!["broken.example".to_owned()],
                max_nsec3_iterations: default_max_nsec3_iterations(),
                max_denial_rrsets: default_max_denial_rrsets(),
            },
            admin: Some(RawAdmin {
                listen: "127.0.0.1:8053".to_owned(),
                token_file: "/etc/qalqan/admin.token".to_owned(),
                regulator_keys: vec!["BASE64".to_owned()],
                require_signature: Some(true),
                max_body_bytes: default_admin_body(),
                signature_max_age_s: default_signature_max_age_s(),
            }),
            tls: Some(RawTls {
                cert: "/etc/qalqan/tls/fullchain.pem".to_owned(),
                key: "/etc/qalqan/tls/key.pem".to_owned(),
                name: Some("dns.example.net".to_owned()),
            }),
            blockpage: Some(RawBlockpage {
                listen: vec!["198.51.100.7:80".to_owned()],
                template: Some(toml::Spanned::new(0..0, "config/blockpage.html".to_owned())),
                contact: "abuse@isp.example".to_owned(),
                max_header_bytes: default_bp_max_header_bytes(),
                request_timeout_ms: default_bp_request_timeout_ms(),
                idle_timeout_ms: default_bp_idle_timeout_ms(),
                max_connections: default_bp_max_connections(),
                max_per_client: default_bp_max_per_client(),
            }),
            dnstap: Some(RawDnstap {
                socket: Some("/run/qalqan/dnstap.sock".to_owned()),
                tcp: Some("127.0.0.1:6000".to_owned()),
                identity: Some("resolver-1".to_owned()),
                version: Some("qalqan".to_owned()),
                log_queries: true,
                log_responses: true,
                queue: default_log_queue(),
                reconnect_min_ms: default_dnstap_reconnect_min_ms(),
                reconnect_max_ms: default_dnstap_reconnect_max_ms(),
                timeout_ms: default_dnstap_timeout_ms(),
            }),
            guard: Some(RawGuard { protected: "config/protected.txt".to_owned(), on_hit: default_on_hit() }),
            lists: vec![RawList {
                name: "regulator".to_owned(),
                source: "https://lists.example/regulator.txt".to_owned(),
                format: default_format(),
                kind: default_kind(),
                action: default_action(),
                mode: crate::rules::ListMode::Shadow,
                ede: default_ede(),
                max_bad_share: default_max_bad_share(),
                max_shrink: default_max_shrink(),
                refresh_s: default_refresh_s(),
                timeout_ms: default_fetch_timeout_ms(),
                max_bytes: default_max_bytes(),
                max_rules: default_max_rules(),
                tsig: Some("hmac-sha256:NAME:BASE64".to_owned()),
                ip_rules: Some(IpRules::Ignore),
                allow_insecure: false,
                redirects: Redirects::SameOrigin,
                signature: PullSignature::Required,
                signature_url: Some("https://lists.example/regulator.txt.sig".to_owned()),
                authority_url: Some("https://regulator.example/".to_owned()),
                regulator: true,
                sde_justification: Some("{list}: decision {decision}".to_owned()),
                sde_sub_error: Some(5),
            }],
            sde: RawSde {
                mode: default_sde_mode(),
                option_code: default_sde_option_code(),
                contact: vec!["mailto:abuse@isp.example".to_owned()],
                organization: Some("ISP".to_owned()),
                language: default_sde_language(),
                justification: Some("blocked by {list}".to_owned()),
            },
            views: vec![RawView {
                name: "kids".to_owned(),
                clients: vec!["10.1.0.0/16".to_owned()],
                lists: vec!["regulator".to_owned()],
                except: vec!["regulator".to_owned()],
            }],
            catalogs: vec![RawCatalog {
                source: "axfr://192.0.2.53:53/catalog.example".to_owned(),
                tsig: Some("hmac-sha256:NAME:BASE64".to_owned()),
                refresh_s: default_refresh_s(),
                timeout_ms: default_fetch_timeout_ms(),
                max_members: default_max_members(),
                defaults: RawCatalogDefaults::default(),
                // a group's keys are documented under `[catalogs.groups.NAME]`
                groups: std::collections::BTreeMap::new(),
            }],
        }
    }

    /// `(table, key)` for every key below `table` (`""` at the top level);
    /// an array of tables (`[[lists]]`) is a table whose name is the array's.
    fn keys(table: &str, value: &toml::Table, out: &mut Vec<(String, String)>) {
        for (k, v) in value {
            let path = if table.is_empty() { k.clone() } else { format!("{table}.{k}") };
            match v {
                toml::Value::Table(t) => keys(&path, t, out),
                toml::Value::Array(a) if !a.is_empty() && a.iter().all(toml::Value::is_table) => {
                    for t in a.iter().filter_map(toml::Value::as_table) {
                        keys(&path, t, out);
                    }
                }
                _ => out.push((table.to_owned(), k.clone())),
            }
        }
    }

    /// Heading lines outside fenced code blocks: `(line index, level, text)`.
    fn headings(text: &str) -> Vec<(usize, usize, &str)> {
        let mut fenced = false;
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.starts_with("```") {
                fenced = !fenced;
            } else if !fenced && line.starts_with('#') {
                let level = line.bytes().take_while(|&b| b == b'#').count();
                if line[level..].starts_with(' ') {
                    out.push((i, level, line[level..].trim()));
                }
            }
        }
        out
    }

    /// The text of the section whose heading names `` `[table]` `` or
    /// `` `[[table]]` ``, up to the next heading of the same or a higher level.
    fn section(text: &str, table: &str) -> Option<String> {
        let heads = headings(text);
        let (pos, &(start, level, _)) = heads
            .iter()
            .enumerate()
            .find(|(_, (_, _, h))| h.contains(&format!("`[{table}]`")) || h.contains(&format!("`[[{table}]]`")))?;
        let end = heads[pos + 1..].iter().find(|(_, l, _)| *l <= level).map_or(usize::MAX, |(i, _, _)| *i);
        Some(
            text.lines()
                .enumerate()
                .filter(|(i, _)| (start..end).contains(i))
                .map(|(_, l)| l)
                .collect::<Vec<_>>()
                .join("\n"),
        )
    }

    /// `(table, key)` of every key of [`every_key_set`].
    fn every_key() -> Vec<(String, String)> {
        let value = toml::Value::try_from(every_key_set()).expect("the raw config serializes");
        let mut all = Vec::new();
        keys("", value.as_table().expect("a table"), &mut all);
        all
    }

    #[test]
    fn every_config_key_is_documented_in_its_section() {
        let all = every_key();
        assert!(all.len() > 60, "expected every key, got {}: {all:?}", all.len());
        let mut missing = Vec::new();
        for (table, key) in &all {
            let documented = if table.is_empty() {
                CONFIGURATION_MD.contains(&format!("`{key}`"))
            } else {
                // a row of the table's key table: | `key` | default | meaning |
                section(CONFIGURATION_MD, table)
                    .is_some_and(|s| s.lines().any(|l| l.starts_with(&format!("| `{key}` |"))))
            };
            if !documented {
                missing.push(if table.is_empty() { key.clone() } else { format!("{table}.{key}") });
            }
        }
        assert!(
            missing.is_empty(),
            "config keys not documented in docs/configuration.md (each needs a row `| KEY | default | meaning |`, KEY in backticks, in the section headed `[table]`): {}",
            missing.join(", ")
        );
    }

    #[test]
    fn documented_config_keys_exist() {
        let all = every_key();
        let mut tables: Vec<&str> = all.iter().map(|(t, _)| t.as_str()).collect();
        tables.sort_unstable();
        tables.dedup();
        let mut unknown = Vec::new();
        for table in tables {
            let Some(text) = section(CONFIGURATION_MD, table) else { continue };
            // first cell of each table row: `| `key` | default | meaning |`
            for row in text.lines().filter(|l| l.starts_with("| `")) {
                let key = row[3..].split('`').next().unwrap_or("");
                if !all.iter().any(|(t, k)| t == table && k == key) {
                    unknown.push(format!("{table}.{key}"));
                }
            }
        }
        assert!(
            unknown.is_empty(),
            "docs/configuration.md documents keys the config does not have: {}",
            unknown.join(", ")
        );
    }

    /// GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to `-`.
    fn slug(heading: &str) -> String {
        heading
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect()
    }

    /// Anchors of a Markdown file's headings (repeats get `-1`, `-2`, …).
    fn anchors(text: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (_, _, h) in headings(text) {
            let base = slug(h);
            let mut a = base.clone();
            let mut n = 0;
            while out.contains(&a) {
                n += 1;
                a = format!("{base}-{n}");
            }
            out.push(a);
        }
        out
    }

    /// Targets of inline links `[text](target)` outside code blocks and code spans.
    fn link_targets(text: &str) -> Vec<String> {
        let mut fenced = false;
        let mut out = Vec::new();
        for line in text.lines() {
            if line.starts_with("```") {
                fenced = !fenced;
                continue;
            }
            if fenced {
                continue;
            }
            // drop code spans: every other piece between backticks
            let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
            let mut rest = prose.as_str();
            while let Some(at) = rest.find("](") {
                let after = &rest[at + 2..];
                let Some(end) = after.find(')') else { break };
                out.push(after[..end].to_owned());
                rest = &after[end..];
            }
        }
        out
    }

    #[test]
    fn relative_links_in_the_docs_resolve() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = vec![root.join("README.md"), root.join("benches/RESULTS.md")];
        let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
            .expect("docs/ exists")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "md"))
            .collect();
        docs.sort();
        files.extend(docs);
        let mut broken = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).expect("readable");
            let shown = file.strip_prefix(root).unwrap_or(file).display().to_string();
            for target in link_targets(&text) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (path, fragment) = target.split_once('#').unwrap_or((target.as_str(), ""));
                let resolved = if path.is_empty() { file.clone() } else { file.parent().unwrap_or(root).join(path) };
                if !resolved.exists() {
                    broken.push(format!("{shown}: {target} (no such file)"));
                    continue;
                }
                if !fragment.is_empty() {
                    if resolved.extension().is_none_or(|x| x != "md") {
                        broken.push(format!("{shown}: {target} (anchor into a file that is not Markdown)"));
                        continue;
                    }
                    let linked = std::fs::read_to_string(&resolved).expect("readable");
                    if !anchors(&linked).iter().any(|a| a == fragment) {
                        broken.push(format!("{shown}: {target} (no heading with that anchor)"));
                    }
                }
            }
        }
        assert!(broken.is_empty(), "broken relative links:\n{}", broken.join("\n"));
    }

    #[test]
    fn anchors_follow_github() {
        assert_eq!(slug("Addresses in lists (`ip_rules`)"), "addresses-in-lists-ip_rules");
        assert_eq!(slug("HTTP endpoint (`[metrics] listen`)"), "http-endpoint-metrics-listen");
        assert_eq!(slug("Harness, 2026-12-02 15:20 and 15:32 (a48d152)"), "harness-2026-12-02-1520-and-1532-a48d152");
        assert_eq!(anchors("# A\n## A\n```\n# not a heading\n```\n"), ["a", "a-1"]);
        assert_eq!(link_targets("[a](x.md) `[b](y.md)` [c](z.md#h)"), ["x.md", "z.md#h"]);
    }
}

//! `RawConfig` (what the file says) → [`Config`] (checked values, parsed
//! addresses, ACL prefixes). Errors name the file and the key.

pub mod manpage;
pub mod raw;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::policy::Sinkhole;
use crate::rules::{Action, Format, ListId, ListKind, ListMode, Rule};

/// A config problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// toml's message already has the key, line and column.
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: `{key}`: {reason}")]
    Invalid { path: String, key: String, reason: String },
}

/// One configured list.
#[derive(Debug, Clone)]
pub struct ListConfig {
    pub name: String,
    /// As written in the config (used in messages).
    pub source: String,
    pub origin: SourceKind,
    pub format: Format,
    pub kind: ListKind,
    pub action: Action,
    /// `mode =`: enforced, or shadow (counted and logged, never enforced).
    pub mode: ListMode,
    pub ede: u16,
    pub max_bad_share: f64,
    pub max_shrink: f64,
    pub refresh: Duration,
    pub timeout: Duration,
    pub max_bytes: u64,
    pub max_rules: usize,
    pub tsig: Option<String>,
    /// `ip_rules =` as written (see [`IpRules`]); `None` when unset.
    pub ip_rules: Option<IpRules>,
    /// Which redirects a pull follows (http sources).
    pub redirects: Redirects,
    /// URL of the detached signature every pulled version needs (`signature = "required"`).
    pub signature_url: Option<String>,
    /// The block page's `Link: <URL>; rel="blocked-by"` for this list's names.
    pub authority_url: Option<String>,
    /// `regulator = true`: applied in every view (unless a view's `except` names it).
    pub regulator: bool,
    /// The structured EXTRA-TEXT of its blocks, prepared from `[sde]` and
    /// the list's `sde_*` keys; `None` with `[sde] mode = "off"` or an EDE
    /// code the draft does not structure.
    pub sde: Option<std::sync::Arc<crate::policy::sde::ListSde>>,
    /// The catalog zone this list is a member slot of (`[[catalogs]]`):
    /// its name and source then follow the catalog (see `lists/catalog.rs`).
    pub catalog: Option<String>,
}

/// `[sde]` as the server needs it (the lists' JSON is in [`ListConfig::sde`]).
pub type SdeConfig = crate::policy::sde::SdeSignal;

/// One `[[views]]` entry, checked: list names resolved to ids.
#[derive(Debug, Clone)]
pub struct ViewConfig {
    pub name: String,
    pub clients: Vec<ipnet::IpNet>,
    /// The lists applied: those named in `lists`, and every regulator list
    /// not named in `except`.
    pub lists: Vec<ListId>,
}

/// One `[[catalogs]]` entry (RFC 9432): where the catalog comes from and
/// what each member list is. See `lists/catalog.rs` and docs/lists.md.
#[derive(Debug, Clone)]
pub struct CatalogConfig {
    /// The catalog zone, without the final dot (`catalog.example`).
    pub zone: String,
    pub source: String,
    pub primary: SocketAddr,
    pub tsig: Option<String>,
    pub refresh: Duration,
    pub timeout: Duration,
    pub max_members: usize,
    /// A member list's config before its name and zone are filled in.
    pub template: ListConfig,
    /// `group` property value → what changes for such a member.
    pub groups: std::collections::BTreeMap<String, raw::RawCatalogGroup>,
}

impl CatalogConfig {
    /// The list name of member zone `zone` (no final dot): `catz:ZONE`.
    pub fn member_name(zone: &str) -> String {
        format!("catz:{zone}")
    }

    /// The config of the list for member `zone` (no final dot) with RFC
    /// 9432 `group` property `group`: the defaults, then the group's keys.
    pub fn member(&self, zone: &str, group: Option<&str>) -> ListConfig {
        let mut c = self.template.clone();
        c.name = Self::member_name(zone);
        c.source = format!("axfr://{}/{zone}", self.primary);
        c.origin = SourceKind::Axfr { primary: self.primary, zone: zone.to_owned() };
        if let Some(g) = group.and_then(|g| self.groups.get(g)) {
            c.kind = g.kind.unwrap_or(c.kind);
            c.action = g.action.unwrap_or(c.action);
            c.ede = g.ede.unwrap_or(c.ede);
            c.mode = g.mode.unwrap_or(c.mode);
        }
        c
    }

    /// An unused member slot (`n`: its place among the catalog's slots).
    pub fn vacant(&self, n: usize) -> ListConfig {
        let mut c = self.template.clone();
        c.name = format!("catz:{}#{n}", self.zone);
        c.source = self.source.clone();
        c.origin = SourceKind::Vacant;
        c
    }
}

/// Which HTTP redirects a pull follows (`redirects =` in `[[lists]]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Redirects {
    /// None: a redirect is an error.
    None,
    /// Only to the same scheme, host and port.
    SameOrigin,
    /// To another host too, but never from https to http (http targets
    /// need `allow_insecure`).
    AnyHost,
}

/// Whether pulled versions need a detached signature (`signature =`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PullSignature {
    #[default]
    None,
    Required,
}

/// What a list's addresses do (`ip_rules =` in `[[lists]]`).
///
/// In a registry dump the address column of a name or URL entry records
/// where the name pointed when it was listed; blocking every name that
/// resolves there blocks every site sharing the address (CDNs, shared
/// hosting). So listed addresses are not answer rules unless the list says
/// so. RPZ `rpz-ip` triggers are answer rules by definition and are
/// enforced unless the list says `"ignore"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IpRules {
    /// Listed addresses are counted and exported (`qalqan export --ips`), not enforced.
    Ignore,
    /// An answer carrying a listed address is blocked.
    Answer,
}

impl ListConfig {
    /// Whether `rule` takes part in the policy: `false` only for an address
    /// rule this list does not enforce (see [`IpRules`]).
    /// A shadow list watches names only: its address rules never take part.
    pub fn enforces(&self, rule: &Rule) -> bool {
        match rule {
            Rule::Ip { .. } | Rule::AnswerIp { .. } if self.mode == ListMode::Shadow => false,
            Rule::Ip { .. } => self.ip_rules == Some(IpRules::Answer),
            Rule::AnswerIp { .. } => self.ip_rules != Some(IpRules::Ignore),
            _ => true,
        }
    }
}

/// Where a list comes from (`source =`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// A path (relative to the working directory).
    File(PathBuf),
    /// `http://` or `https://` URL, pulled every `refresh_s`.
    Http(String),
    /// `push`: versions arrive through the admin API.
    Push,
    /// `axfr://HOST:PORT/ZONE`: an RPZ zone transferred from a primary.
    Axfr { primary: SocketAddr, zone: String },
    /// A `[[catalogs]]` member slot no member zone holds now: no rules,
    /// no source, not waited for.
    Vacant,
}

impl SourceKind {
    /// Whether the list comes from somewhere other than a local file (and so
    /// is persisted in the state directory).
    pub fn is_remote(&self) -> bool {
        !matches!(self, SourceKind::File(_))
    }
}

/// Per-client rate limiting (`[limits]`).
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    pub qps: f64,
    pub burst: f64,
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    pub drop: bool,
    pub max_tracked: usize,
}

/// The push API (`[admin]`).
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token_file: PathBuf,
    pub regulator_keys: Vec<[u8; 32]>,
    pub require_signature: bool,
    pub max_body_bytes: u64,
    /// Largest difference between a signed request's timestamp and our clock.
    pub signature_max_age: Duration,
}

/// `[tls]`: the certificate and key of the encrypted listeners.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    /// Checked at config time: exists, not readable by group or others.
    pub key: PathBuf,
    /// The name DDR announces and clients verify (`None`: the certificate's first DNS name).
    pub name: Option<String>,
}

/// Limits of the encrypted listeners (`[server] tls_*`, `max_tls_*`, `doh_max_body_bytes`).
#[derive(Debug, Clone, Copy)]
pub struct EncryptedLimits {
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_per_client: usize,
    pub max_lifetime: Duration,
    pub max_streams: u32,
    pub doh_max_body: usize,
}

/// `[blockpage]`: the HTTP block page (see `crate::blockpage`).
#[derive(Debug, Clone)]
pub struct BlockpageConfig {
    pub listen: Vec<SocketAddr>,
    /// The operator's page (its language variants beside it); `None` = the shipped pages.
    pub template: Option<PathBuf>,
    /// `FILE:LINE` of the `template` key, for the message when the file is missing.
    pub template_key_at: String,
    pub contact: String,
    pub max_header_bytes: usize,
    pub request_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_per_client: usize,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from (`<inline>` for strings).
    pub path: String,
    pub listen: Vec<SocketAddr>,
    pub allow_clients: Vec<ipnet::IpNet>,
    /// `[server] outside_acl = "drop"`: UDP queries from outside the ACL get no reply.
    pub outside_acl_drop: bool,
    /// `[server] outside_acl_refused_qps`.
    pub outside_acl_refused_qps: u32,
    pub tcp_idle_timeout: Duration,
    pub max_udp_payload: u16,
    pub max_inflight: usize,
    pub drain_timeout: Duration,
    pub threads: Option<usize>,
    pub udp_recv_buffer_bytes: usize,
    /// Nice value of the list-build thread of a reload (0..=19).
    pub reload_nice: i32,
    /// Deltas are folded into a fresh base past this share of its rules.
    pub delta_merge_share: f64,
    /// File lists up to this many lines are diffed on change.
    pub delta_diff_max_lines: usize,
    pub max_tcp_connections: usize,
    pub max_tcp_per_client: usize,
    pub tcp_max_lifetime: Duration,
    pub tcp_max_queries: u32,
    /// Empty = read /etc/resolv.conf at start.
    pub upstreams: Vec<SocketAddr>,
    pub upstream_timeout: Duration,
    pub upstream_max_inflight: usize,
    /// Pooled upstream UDP sockets (0 = one fresh socket per query).
    pub upstream_udp_sockets: usize,
    /// Queries per pooled socket before it moves to a new random port.
    pub upstream_udp_socket_queries: u32,
    /// Age at which a pooled socket moves to a new random port.
    pub upstream_udp_socket_lifetime: Duration,
    /// `[upstream] max_waiters`.
    pub upstream_max_waiters: usize,
    /// `[upstream] case_randomization` (0x20).
    pub upstream_case_randomization: bool,
    /// `[upstream] mode`.
    pub upstream_mode: UpstreamMode,
    /// Recursive mode: the root server addresses from `[upstream] root_hints`;
    /// empty = the IANA root servers compiled in.
    pub root_hints: Vec<IpAddr>,
    /// `[recursion]`: the iterator's bounds.
    pub recursion: crate::resolve::recurse::Limits,
    pub cache_max_entries: u64,
    pub cache_max_bytes: u64,
    pub cache_max_reply_bytes: usize,
    /// `[cache] serve_stale`: seconds past expiry an entry may be served
    /// (`stale_max_s`); 0 = never.
    pub cache_stale_max: u32,
    /// `[cache] prefetch`.
    pub cache_prefetch: bool,
    pub cache_min_ttl: u32,
    pub cache_max_ttl: u32,
    pub cache_max_negative_ttl: u32,
    pub sinkhole: Sinkhole,
    /// The operator HTTP endpoint, if enabled.
    pub metrics_listen: Option<SocketAddr>,
    pub blocked_log: Option<crate::querylog::Target>,
    pub log_anonymize: crate::querylog::Anonymize,
    pub log_hash_key: Option<String>,
    pub log_queue: usize,
    /// `[log] audit`: the hash-chained audit log file.
    pub audit_log: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub admin: Option<AdminConfig>,
    pub rate_limit: Option<RateLimitConfig>,
    /// `[tls]`, when configured.
    pub tls: Option<TlsConfig>,
    /// `[server] dot_listen`, `doh_listen`, `doq_listen`.
    pub dot_listen: Vec<SocketAddr>,
    pub doh_listen: Vec<SocketAddr>,
    pub doq_listen: Vec<SocketAddr>,
    /// `[server] ddr`.
    pub ddr: bool,
    /// `[server] canary = "nxdomain"`.
    pub canary_nxdomain: bool,
    pub encrypted: EncryptedLimits,
    /// `[blockpage]`, when configured.
    pub blockpage: Option<BlockpageConfig>,
    /// `[dnstap]`, when configured.
    pub dnstap: Option<crate::dnstap::Settings>,
    /// `[guard]`, when configured.
    pub guard: Option<GuardConfig>,
    pub lists: Vec<ListConfig>,
    /// `[sde]`: when blocked answers carry structured errors.
    pub sde: SdeConfig,
    /// `[[views]]`, in config order (empty: every client gets every list).
    pub views: Vec<ViewConfig>,
    /// `[[catalogs]]`: their member slots come after `lists` (see `lists/catalog.rs`).
    pub catalogs: Vec<CatalogConfig>,
}

/// `[guard]`: the protected-names file and what a hit does (the file is
/// read by `lists::guard::Guard::load` when the lists load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardConfig {
    pub protected: PathBuf,
    pub on_hit: crate::rules::GuardOnHit,
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        Self::from_toml_str(&text, &shown)
    }

    /// Parses and checks config text; `path` names it in errors.
    pub fn from_toml_str(text: &str, path: &str) -> Result<Self, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: syntax_message(text, &e),
        })?;
        // the line of `[blockpage] template`, for a missing file's message
        let template_line = raw.blockpage.as_ref().and_then(|b| b.template.as_ref()).map(|t| line_of(text, t.span().start));
        let mut cfg = Self::from_raw(raw, path)?;
        if let (Some(bp), Some(line)) = (cfg.blockpage.as_mut(), template_line) {
            bp.template_key_at = format!("{path}:{line}");
        }
        Ok(cfg)
    }

    fn from_raw(raw: raw::RawConfig, path: &str) -> Result<Self, ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            key: key.to_owned(),
            reason,
        };
        if raw.server.listen.is_empty() {
            return Err(invalid("server.listen", "at least one address is needed".into()));
        }
        let mut listen = Vec::new();
        for (i, a) in raw.server.listen.iter().enumerate() {
            let addr = parse_socket_addr(a, 53)
                .ok_or_else(|| invalid(&format!("server.listen[{i}]"), format!("`{a}` is not ip:port")))?;
            listen.push(addr);
        }
        let allow_raw = raw
            .server
            .allow_clients
            .unwrap_or_else(|| vec!["127.0.0.0/8".to_owned(), "::1/128".to_owned()]);
        let mut allow_clients = Vec::new();
        for (i, a) in allow_raw.iter().enumerate() {
            let net = crate::rules::parse_ip_net(a).ok_or_else(|| {
                invalid(&format!("server.allow_clients[{i}]"), format!("`{a}` is not an address or prefix"))
            })?;
            allow_clients.push(net.trunc());
        }
        if raw.server.max_udp_payload < 512 {
            return Err(invalid("server.max_udp_payload", "must be at least 512".into()));
        }
        if raw.server.max_inflight == 0 {
            return Err(invalid("server.max_inflight", "must be at least 1".into()));
        }
        if !(raw.server.delta_merge_share.is_finite() && raw.server.delta_merge_share >= 0.0) {
            return Err(invalid("server.delta_merge_share", format!("{} is not a share (0 = never publish by delta)", raw.server.delta_merge_share)));
        }
        if !(0..=19).contains(&raw.server.reload_nice) {
            return Err(invalid("server.reload_nice", format!("{} is not a nice value in 0..=19", raw.server.reload_nice)));
        }
        if raw.server.threads == Some(0) {
            return Err(invalid("server.threads", "must be at least 1".into()));
        }
        let mut upstreams = Vec::new();
        if let Some(servers) = &raw.upstream.servers {
            if servers.is_empty() {
                return Err(invalid("upstream.servers", "empty; omit the key to use /etc/resolv.conf".into()));
            }
            for (i, s) in servers.iter().enumerate() {
                let addr = parse_socket_addr(s, 53)
                    .ok_or_else(|| invalid(&format!("upstream.servers[{i}]"), format!("`{s}` is not ip or ip:port")))?;
                upstreams.push(addr);
            }
        }
        let upstream_mode = match raw.upstream.mode.as_str() {
            "forward" => UpstreamMode::Forward,
            "recursive" => UpstreamMode::Recursive,
            other => return Err(invalid("upstream.mode", format!("`{other}` is not \"forward\" or \"recursive\""))),
        };
        if upstream_mode == UpstreamMode::Recursive && raw.upstream.servers.is_some() {
            return Err(invalid("upstream.servers", "not used with mode = \"recursive\"; remove it".into()));
        }
        let mut root_hints = Vec::new();
        if let Some(file) = &raw.upstream.root_hints {
            if upstream_mode != UpstreamMode::Recursive {
                return Err(invalid("upstream.root_hints", "only used with mode = \"recursive\"".into()));
            }
            let text = std::fs::read_to_string(file).map_err(|e| invalid("upstream.root_hints", format!("reading {file}: {e}")))?;
            root_hints = parse_root_hints(&text).map_err(|reason| invalid("upstream.root_hints", format!("{file}: {reason}")))?;
        }
        let rc = &raw.recursion;
        if !(10..=30_000).contains(&rc.server_timeout_ms) {
            return Err(invalid("recursion.server_timeout_ms", "must be between 10 and 30000".into()));
        }
        for (key, v, min) in [
            ("recursion.max_referrals", u64::from(rc.max_referrals), 1),
            ("recursion.max_cname_chain", u64::from(rc.max_cname_chain), 1),
            ("recursion.max_queries", u64::from(rc.max_queries), 1),
            ("recursion.max_depth", u64::from(rc.max_depth), 0),
            ("recursion.zone_cache_entries", rc.zone_cache_entries as u64, 16),
            ("recursion.server_cache_entries", rc.server_cache_entries as u64, 16),
        ] {
            if v < min {
                return Err(invalid(key, format!("must be at least {min}")));
            }
        }
        let dnssec = if raw.dnssec.validate {
            let anchors = match &raw.dnssec.trust_anchor {
                None => crate::dnssec::TrustAnchors::builtin(),
                Some(file) => {
                    let text =
                        std::fs::read_to_string(file).map_err(|e| invalid("dnssec.trust_anchor", format!("reading {file}: {e}")))?;
                    let anchors = crate::dnssec::TrustAnchors::parse(&text, file)
                        .map_err(|e| invalid("dnssec.trust_anchor", e.to_string()))?;
                    if anchors.is_empty() {
                        return Err(invalid("dnssec.trust_anchor", format!("{file}: no DS or DNSKEY record")));
                    }
                    anchors
                }
            };
            let mut negative = Vec::new();
            for (i, n) in raw.dnssec.negative_trust_anchors.iter().enumerate() {
                let name = hickory_proto::rr::Name::from_ascii(n)
                    .ok()
                    .map(|mut n| {
                        n.set_fqdn(true);
                        n
                    })
                    .ok_or_else(|| invalid(&format!("dnssec.negative_trust_anchors[{i}]"), format!("`{n}` is not a domain name")))?;
                negative.push(name);
            }
            if raw.dnssec.max_denial_rrsets == 0 {
                return Err(invalid("dnssec.max_denial_rrsets", "must be at least 1".into()));
            }
            Some(crate::resolve::recurse::DnssecConfig {
                anchors,
                negative,
                max_nsec3_iterations: raw.dnssec.max_nsec3_iterations,
                max_denial_rrsets: raw.dnssec.max_denial_rrsets,
            })
        } else {
            None
        };
        let recursion = crate::resolve::recurse::Limits {
            dnssec,
            server_timeout: Duration::from_millis(rc.server_timeout_ms),
            max_referrals: rc.max_referrals,
            max_cname_chain: rc.max_cname_chain,
            max_queries: rc.max_queries,
            max_depth: rc.max_depth,
            qname_minimisation: rc.qname_minimisation,
            ipv6: rc.ipv6,
            zone_cache_entries: rc.zone_cache_entries,
            server_cache_entries: rc.server_cache_entries,
            max_delegation_ttl: Duration::from_secs(u64::from(raw.cache.max_ttl)),
            socket_queries: raw.upstream.udp_socket_queries,
            socket_lifetime: Duration::from_millis(raw.upstream.udp_socket_lifetime_ms),
        };
        if raw.upstream.timeout_ms == 0 || raw.upstream.timeout_ms > 60_000 {
            return Err(invalid("upstream.timeout_ms", "must be between 1 and 60000".into()));
        }
        if raw.upstream.udp_sockets > 4096 {
            return Err(invalid("upstream.udp_sockets", "must be at most 4096".into()));
        }
        if raw.upstream.udp_socket_queries == 0 {
            return Err(invalid("upstream.udp_socket_queries", "must be at least 1".into()));
        }
        if raw.upstream.udp_socket_lifetime_ms < 100 {
            return Err(invalid("upstream.udp_socket_lifetime_ms", "must be at least 100".into()));
        }
        if raw.cache.max_reply_bytes < 512 {
            return Err(invalid("cache.max_reply_bytes", "must be at least 512".into()));
        }
        if raw.upstream.max_waiters == 0 {
            return Err(invalid("upstream.max_waiters", "must be at least 1".into()));
        }
        if raw.upstream.max_inflight == 0 {
            return Err(invalid("upstream.max_inflight", "must be at least 1".into()));
        }
        if raw.cache.min_ttl > raw.cache.max_ttl {
            return Err(invalid("cache.min_ttl", "greater than cache.max_ttl".into()));
        }
        let a: Ipv4Addr = raw
            .sinkhole
            .a
            .parse()
            .map_err(|_| invalid("sinkhole.a", format!("`{}` is not an IPv4 address", raw.sinkhole.a)))?;
        let aaaa: Ipv6Addr = raw
            .sinkhole
            .aaaa
            .parse()
            .map_err(|_| invalid("sinkhole.aaaa", format!("`{}` is not an IPv6 address", raw.sinkhole.aaaa)))?;
        let admin = match raw.admin {
            None => None,
            Some(a) => {
                let listen = parse_socket_addr(&a.listen, 8053)
                    .ok_or_else(|| invalid("admin.listen", format!("`{}` is not ip:port", a.listen)))?;
                let mut keys = Vec::new();
                for (i, k) in a.regulator_keys.iter().enumerate() {
                    use base64::Engine as _;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(k.trim())
                        .map_err(|e| invalid(&format!("admin.regulator_keys[{i}]"), format!("not base64: {e}")))?;
                    let key: [u8; 32] = bytes.try_into().map_err(|_| {
                        invalid(&format!("admin.regulator_keys[{i}]"), "an Ed25519 public key is 32 bytes".into())
                    })?;
                    keys.push(key);
                }
                let require_signature = a.require_signature.unwrap_or(!keys.is_empty());
                if a.signature_max_age_s == 0 || a.signature_max_age_s > 86_400 {
                    return Err(invalid("admin.signature_max_age_s", "must be between 1 and 86400".into()));
                }
                if require_signature && keys.is_empty() {
                    return Err(invalid("admin.require_signature", "true, but no regulator_keys are configured".into()));
                }
                Some(AdminConfig {
                    listen,
                    token_file: PathBuf::from(a.token_file),
                    regulator_keys: keys,
                    require_signature,
                    max_body_bytes: a.max_body_bytes,
                    signature_max_age: Duration::from_secs(a.signature_max_age_s),
                })
            }
        };
        let l = &raw.limits;
        if !(l.per_client_qps >= 0.0 && l.per_client_qps.is_finite()) {
            return Err(invalid("limits.per_client_qps", "must be a number ≥ 0".into()));
        }
        if l.ipv4_prefix > 32 {
            return Err(invalid("limits.ipv4_prefix", "must be 0..=32".into()));
        }
        if l.ipv6_prefix > 128 {
            return Err(invalid("limits.ipv6_prefix", "must be 0..=128".into()));
        }
        if !raw.server.fast_path {
            return Err(invalid(
                "server.fast_path",
                "`false` is no longer supported: UDP is always served by the batched fast path (remove the key)".into(),
            ));
        }
        // "refused" | "drop": whether to drop
        let drops = |key: &str, value: &str| match value {
            "refused" => Ok(false),
            "drop" => Ok(true),
            other => Err(invalid(key, format!("`{other}`: use \"refused\" or \"drop\""))),
        };
        let outside_acl_drop = drops("server.outside_acl", &raw.server.outside_acl)?;
        let drop = drops("limits.action", &l.action)?;
        let rate_limit = (l.per_client_qps > 0.0).then(|| RateLimitConfig {
            qps: l.per_client_qps,
            burst: l.burst.unwrap_or(l.per_client_qps * 2.0).max(1.0),
            ipv4_prefix: l.ipv4_prefix,
            ipv6_prefix: l.ipv6_prefix,
            drop,
            max_tracked: l.max_tracked_clients.max(1024),
        });
        if raw.guard.as_ref().is_some_and(|g| g.protected.trim().is_empty()) {
            return Err(invalid("guard.protected", "empty; omit [guard] to turn the guard off".into()));
        }
        let guard = raw.guard.as_ref().map(|g| GuardConfig { protected: PathBuf::from(&g.protected), on_hit: g.on_hit });
        if raw.log.audit.as_deref() == Some("") {
            return Err(invalid("log.audit", "empty; omit the key to turn the audit log off".into()));
        }
        if raw.log.blocked.as_deref() == Some("") {
            return Err(invalid("log.blocked", "empty; omit the key to turn the log off".into()));
        }
        let metrics_listen = match &raw.metrics.listen {
            Some(a) => Some(
                parse_socket_addr(a, 9153).ok_or_else(|| invalid("metrics.listen", format!("`{a}` is not ip:port")))?,
            ),
            None => None,
        };
        if raw.lists.len() > ListId::MAX_LISTS {
            return Err(invalid("lists", format!("{} lists; at most {} are supported", raw.lists.len(), ListId::MAX_LISTS)));
        }
        let sde_mode = crate::policy::sde::SdeMode::parse(&raw.sde.mode)
            .ok_or_else(|| invalid("sde.mode", format!("`{}`: use \"signalled\", \"always\" or \"off\"", raw.sde.mode)))?;
        for (i, c) in raw.sde.contact.iter().enumerate() {
            // the draft's Contact URI Schemes registry: tel and mailto
            let ok = ["mailto:", "tel:"].iter().any(|p| c.len() > p.len() && c.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p)));
            if !ok {
                return Err(invalid(&format!("sde.contact[{i}]"), format!("`{c}`: use a mailto: or tel: URI")));
            }
        }
        if raw.sde.language.is_empty() || !raw.sde.language.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(invalid("sde.language", format!("`{}` is not a language tag (RFC 5646: `en`, `kk`, `ru-KZ`)", raw.sde.language)));
        }
        if let Some(j) = &raw.sde.justification {
            crate::policy::sde::ListSde::new(&[], None, "en", None, Some(j)).map_err(|e| invalid("sde.justification", e))?;
        }
        let mut lists: Vec<ListConfig> = Vec::new();
        for (i, l) in raw.lists.into_iter().enumerate() {
            let key = |k: &str| format!("lists[{i}].{k}");
            if l.name.is_empty() || !l.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(invalid(&key("name"), format!("`{}`: use letters, digits, `-` and `_`", l.name)));
            }
            if lists.iter().any(|o| o.name == l.name) {
                return Err(invalid(&key("name"), format!("`{}` is used by two lists", l.name)));
            }
            if l.source.is_empty() {
                return Err(invalid(&key("source"), "empty".into()));
            }
            if l.mode == ListMode::Shadow && l.kind == ListKind::Allow {
                return Err(invalid(&key("mode"), format!("list `{}`: only block lists can be shadow lists", l.name)));
            }
            let origin = parse_source(&l.source).map_err(|reason| invalid(&key("source"), reason))?;
            if matches!(origin, SourceKind::Axfr { .. }) && l.format != Format::Rpz {
                return Err(invalid(&key("format"), "axfr:// sources carry RPZ zones: use format = \"rpz\"".into()));
            }
            if l.tsig.is_some() && !matches!(origin, SourceKind::Axfr { .. }) {
                return Err(invalid(&key("tsig"), "only axfr:// sources use TSIG".into()));
            }
            if let Some(t) = &l.tsig {
                // checked here, not at first use: NOTIFY verification needs it too
                crate::keys::TsigKey::parse(t).map_err(|e| invalid(&key("tsig"), e.to_string()))?;
            }
            if !(0.0..=1.0).contains(&l.max_bad_share) {
                return Err(invalid(&key("max_bad_share"), "must be between 0 and 1".into()));
            }
            if !(0.0..=1.0).contains(&l.max_shrink) {
                return Err(invalid(&key("max_shrink"), "must be between 0 and 1".into()));
            }
            if l.refresh_s == 0 {
                return Err(invalid(&key("refresh_s"), "must be at least 1".into()));
            }
            if l.timeout_ms == 0 {
                return Err(invalid(&key("timeout_ms"), "must be at least 1".into()));
            }
            let is_http = matches!(origin, SourceKind::Http(_));
            if l.source.starts_with("http://") && !l.allow_insecure {
                return Err(invalid(
                    &key("source"),
                    format!("list `{}`: plain http:// can be read and changed on the way; use https://, or set allow_insecure = true", l.name),
                ));
            }
            if !is_http && (l.allow_insecure || l.signature != PullSignature::None || l.signature_url.is_some()) {
                return Err(invalid(&key("source"), format!("list `{}`: allow_insecure and signature are for http(s):// sources", l.name)));
            }
            let signature_url = match (l.signature, &l.signature_url) {
                (PullSignature::None, Some(_)) => {
                    return Err(invalid(&key("signature_url"), format!("list `{}`: set signature = \"required\" too", l.name)))
                }
                (PullSignature::None, None) => None,
                (PullSignature::Required, u) => {
                    if admin.as_ref().is_none_or(|a| a.regulator_keys.is_empty()) {
                        return Err(invalid(
                            &key("signature"),
                            format!("list `{}`: signature = \"required\" needs [admin] regulator_keys to verify with", l.name),
                        ));
                    }
                    let u = u.clone().unwrap_or_else(|| format!("{}.sig", l.source));
                    if !(u.starts_with("https://") || (l.allow_insecure && u.starts_with("http://"))) {
                        return Err(invalid(&key("signature_url"), format!("list `{}`: `{u}` must be https:// (or http:// with allow_insecure)", l.name)));
                    }
                    Some(u)
                }
            };
            if let Some(u) = &l.authority_url {
                check_link_url(u).map_err(|reason| invalid(&key("authority_url"), reason))?;
            }
            if l.sde_sub_error == Some(0) {
                return Err(invalid(&key("sde_sub_error"), "0 is reserved (use 1-6 of the draft's registry, e.g. 5 = network operator policy)".into()));
            }
            if l.sde_sub_error.is_some() && l.ede == 16 {
                return Err(invalid(&key("sde_sub_error"), format!("list `{}`: sub-errors do not apply to EDE 16 (Censored)", l.name)));
            }
            let template = l.sde_justification.as_deref().or(raw.sde.justification.as_deref());
            let sde = list_sde(&raw.sde, sde_mode, l.ede, l.sde_sub_error, template).map_err(|e| invalid(&key("sde_justification"), e))?;
            lists.push(ListConfig {
                regulator: l.regulator,
                sde,
                name: l.name,
                source: l.source,
                origin,
                format: l.format,
                kind: l.kind,
                action: l.action,
                mode: l.mode,
                ede: l.ede,
                max_bad_share: l.max_bad_share,
                max_shrink: l.max_shrink,
                refresh: Duration::from_secs(l.refresh_s),
                timeout: Duration::from_millis(l.timeout_ms),
                max_bytes: l.max_bytes,
                max_rules: l.max_rules,
                tsig: l.tsig,
                ip_rules: l.ip_rules,
                redirects: l.redirects,
                signature_url,
                authority_url: l.authority_url,
                catalog: None,
            });
        }
        let mut catalogs: Vec<CatalogConfig> = Vec::new();
        let mut slots = 0usize;
        for (i, c) in raw.catalogs.into_iter().enumerate() {
            let key = |k: &str| format!("catalogs[{i}].{k}");
            let SourceKind::Axfr { primary, zone } = parse_source(&c.source).map_err(|reason| invalid(&key("source"), reason))? else {
                return Err(invalid(&key("source"), "a catalog comes by zone transfer: axfr://HOST:PORT/CATALOG-ZONE".into()));
            };
            let zone = zone.to_ascii_lowercase();
            if catalogs.iter().any(|o| o.zone == zone) {
                return Err(invalid(&key("source"), format!("catalog `{zone}` is configured twice")));
            }
            if let Some(t) = &c.tsig {
                crate::keys::TsigKey::parse(t).map_err(|e| invalid(&key("tsig"), e.to_string()))?;
            }
            if c.refresh_s == 0 {
                return Err(invalid(&key("refresh_s"), "must be at least 1".into()));
            }
            if c.timeout_ms == 0 {
                return Err(invalid(&key("timeout_ms"), "must be at least 1".into()));
            }
            if c.max_members == 0 {
                return Err(invalid(&key("max_members"), "must be at least 1".into()));
            }
            let d = &c.defaults;
            if d.format != Format::Rpz {
                return Err(invalid(&key("defaults.format"), "member zones are RPZ zones: use format = \"rpz\"".into()));
            }
            if !(0.0..=1.0).contains(&d.max_shrink) {
                return Err(invalid(&key("defaults.max_shrink"), "must be between 0 and 1".into()));
            }
            for (g, over) in &c.groups {
                let kind = over.kind.unwrap_or(d.kind);
                if over.mode.unwrap_or(d.mode) == ListMode::Shadow && kind == ListKind::Allow {
                    return Err(invalid(&key(&format!("groups.{g}.mode")), "only block lists can be shadow lists".into()));
                }
            }
            if d.mode == ListMode::Shadow && d.kind == ListKind::Allow {
                return Err(invalid(&key("defaults.mode"), "only block lists can be shadow lists".into()));
            }
            slots = slots.saturating_add(c.max_members);
            // the [sde] text of a member's blocks: the defaults' EDE code and
            // the global justification (a member has no list keys of its own)
            let sde = list_sde(&raw.sde, sde_mode, d.ede, None, raw.sde.justification.as_deref()).map_err(|e| invalid("sde.justification", e))?;
            let template = ListConfig {
                // a catalog's members are named by the primary, not by this
                // config, so no view could name them: they apply in every view
                regulator: true,
                sde,
                name: String::new(),
                source: c.source.clone(),
                origin: SourceKind::Vacant,
                format: Format::Rpz,
                kind: d.kind,
                action: d.action,
                mode: d.mode,
                ede: d.ede,
                max_bad_share: default_catalog_bad_share(),
                max_shrink: d.max_shrink,
                refresh: Duration::from_secs(c.refresh_s),
                timeout: Duration::from_millis(c.timeout_ms),
                max_bytes: d.max_bytes,
                max_rules: d.max_rules,
                tsig: c.tsig.clone(),
                ip_rules: None,
                redirects: Redirects::None,
                signature_url: None,
                authority_url: None,
                catalog: Some(zone.clone()),
            };
            catalogs.push(CatalogConfig {
                zone,
                source: c.source,
                primary,
                tsig: c.tsig,
                refresh: Duration::from_secs(c.refresh_s),
                timeout: Duration::from_millis(c.timeout_ms),
                max_members: c.max_members,
                template,
                groups: c.groups,
            });
        }
        if lists.len().saturating_add(slots) > ListId::MAX_LISTS {
            return Err(invalid(
                "catalogs",
                format!("{} lists and {slots} catalog member slots (max_members); at most {} are supported", lists.len(), ListId::MAX_LISTS),
            ));
        }
        if raw.state.dir.is_none() && !catalogs.is_empty() {
            tracing::warn!("[[catalogs]] without [state] dir: the catalog and its members are transferred again at every start");
        }
        if raw.state.dir.is_none() {
            if let Some(l) = lists.iter().find(|l| l.origin == SourceKind::Push) {
                return Err(invalid(
                    "state.dir",
                    format!(
                        "list `{}` has source = \"push\": a state directory is required, so that replay protection \
                         (the last accepted version) and the last pushed list survive a restart",
                        l.name
                    ),
                ));
            }
            if admin.as_ref().is_some_and(|a| !a.regulator_keys.is_empty()) {
                return Err(invalid(
                    "state.dir",
                    "admin.regulator_keys is set: a state directory is required, so that the accepted versions \
                     survive a restart (replay protection)"
                        .into(),
                ));
            }
        }
        let listen_list = |key: &str, list: &[String], port: u16| -> Result<Vec<SocketAddr>, ConfigError> {
            list.iter()
                .enumerate()
                .map(|(i, a)| parse_socket_addr(a, port).ok_or_else(|| invalid(&format!("server.{key}[{i}]"), format!("`{a}` is not ip:port"))))
                .collect()
        };
        let dot_listen = listen_list("dot_listen", &raw.server.dot_listen, 853)?;
        let doh_listen = listen_list("doh_listen", &raw.server.doh_listen, 443)?;
        let doq_listen = listen_list("doq_listen", &raw.server.doq_listen, 853)?;
        let any_encrypted = !(dot_listen.is_empty() && doh_listen.is_empty() && doq_listen.is_empty());
        let tls = match raw.tls {
            None => None,
            Some(t) => {
                if t.cert.is_empty() {
                    return Err(invalid("tls.cert", "empty".into()));
                }
                check_key_file(Path::new(&t.key)).map_err(|reason| invalid("tls.key", reason))?;
                if let Some(n) = &t.name {
                    if crate::name::QName::parse(n.trim_end_matches('.')).is_err() {
                        return Err(invalid("tls.name", format!("`{n}` is not a host name")));
                    }
                }
                Some(TlsConfig { cert: PathBuf::from(t.cert), key: PathBuf::from(t.key), name: t.name.map(|n| n.trim_end_matches('.').to_ascii_lowercase()) })
            }
        };
        if any_encrypted && tls.is_none() {
            let key = if !dot_listen.is_empty() { "server.dot_listen" } else if !doh_listen.is_empty() { "server.doh_listen" } else { "server.doq_listen" };
            return Err(invalid(key, "encrypted listeners need a certificate: add [tls] cert and key".into()));
        }
        if raw.server.ddr && !any_encrypted {
            return Err(invalid("server.ddr", "true, but no dot_listen, doh_listen or doq_listen to announce".into()));
        }
        let canary_nxdomain = match raw.server.canary.as_str() {
            "nxdomain" => true,
            "off" => false,
            other => return Err(invalid("server.canary", format!("`{other}`: use \"nxdomain\" or \"off\""))),
        };
        if raw.server.tls_handshake_timeout_ms == 0 || raw.server.tls_idle_timeout_ms == 0 {
            let key = if raw.server.tls_handshake_timeout_ms == 0 { "server.tls_handshake_timeout_ms" } else { "server.tls_idle_timeout_ms" };
            return Err(invalid(key, "must be at least 1".into()));
        }
        if raw.server.doh_max_body_bytes < 12 || raw.server.doh_max_body_bytes > 65_535 {
            return Err(invalid("server.doh_max_body_bytes", "must be between 12 and 65535 (one DNS message)".into()));
        }
        let encrypted = EncryptedLimits {
            handshake_timeout: Duration::from_millis(raw.server.tls_handshake_timeout_ms),
            idle_timeout: Duration::from_millis(raw.server.tls_idle_timeout_ms),
            max_connections: raw.server.max_tls_connections.max(1),
            max_per_client: raw.server.max_tls_per_client.max(1),
            max_lifetime: Duration::from_millis(raw.server.tls_max_lifetime_ms.max(1)),
            max_streams: raw.server.tls_max_streams.max(1),
            doh_max_body: raw.server.doh_max_body_bytes,
        };
        let blockpage = match raw.blockpage {
            None => None,
            Some(b) => Some(blockpage_config(b, path).map_err(|(k, reason)| invalid(&format!("blockpage.{k}"), reason))?),
        };
        let dnstap = match raw.dnstap {
            None => None,
            Some(d) => Some(dnstap_config(d).map_err(|(k, reason)| invalid(&format!("dnstap.{k}"), reason))?),
        };
        let ddr = raw.server.ddr;
        let mut views: Vec<ViewConfig> = Vec::new();
        for (i, v) in raw.views.into_iter().enumerate() {
            let key = |k: &str| format!("views[{i}].{k}");
            if v.name.is_empty() || views.iter().any(|o| o.name == v.name) {
                return Err(invalid(&key("name"), format!("`{}`: empty, or used by two views", v.name)));
            }
            if v.clients.is_empty() {
                return Err(invalid(&key("clients"), "empty: a view needs at least one client prefix".into()));
            }
            let mut clients = Vec::new();
            for (j, c) in v.clients.iter().enumerate() {
                let net = crate::rules::parse_ip_net(c)
                    .ok_or_else(|| invalid(&format!("views[{i}].clients[{j}]"), format!("`{c}` is not an address or prefix")))?;
                clients.push(net.trunc());
            }
            let id_of = |k: &str, name: &str| -> Result<usize, ConfigError> {
                lists.iter().position(|l| l.name == name).ok_or_else(|| invalid(&key(k), format!("no list named `{name}`")))
            };
            let mut ids = Vec::new();
            for name in &v.lists {
                ids.push(id_of("lists", name)?);
            }
            let mut except = Vec::new();
            for name in &v.except {
                let at = id_of("except", name)?;
                if lists.get(at).is_some_and(|l| !l.regulator) {
                    return Err(invalid(&key("except"), format!("`{name}` is not a regulator list (only those apply without being named)")));
                }
                except.push(at);
            }
            ids.extend(lists.iter().enumerate().filter(|(at, l)| l.regulator && !except.contains(at)).map(|(at, _)| at));
            ids.sort_unstable();
            ids.dedup();
            let lists = ids.into_iter().filter_map(ListId::from_index).collect();
            views.push(ViewConfig { name: v.name, clients, lists });
        }
        Ok(Config {
            sde: SdeConfig { mode: sde_mode, option_code: raw.sde.option_code },
            views,
            blockpage,
            dnstap,
            tls,
            dot_listen,
            doh_listen,
            doq_listen,
            ddr,
            canary_nxdomain,
            encrypted,
            path: path.to_owned(),
            listen,
            allow_clients,
            outside_acl_drop,
            outside_acl_refused_qps: raw.server.outside_acl_refused_qps,
            tcp_idle_timeout: Duration::from_millis(raw.server.tcp_idle_timeout_ms),
            max_udp_payload: raw.server.max_udp_payload,
            max_inflight: raw.server.max_inflight,
            drain_timeout: Duration::from_millis(raw.server.drain_timeout_ms),
            threads: raw.server.threads,
            udp_recv_buffer_bytes: raw.server.udp_recv_buffer_bytes,
            reload_nice: raw.server.reload_nice,
            delta_merge_share: raw.server.delta_merge_share,
            delta_diff_max_lines: raw.server.delta_diff_max_lines,
            max_tcp_connections: raw.server.max_tcp_connections.max(1),
            max_tcp_per_client: raw.server.max_tcp_per_client.max(1),
            tcp_max_lifetime: Duration::from_millis(raw.server.tcp_max_lifetime_ms.max(1)),
            tcp_max_queries: raw.server.tcp_max_queries.max(1),
            upstreams,
            upstream_timeout: Duration::from_millis(raw.upstream.timeout_ms),
            recursion,
            upstream_max_inflight: raw.upstream.max_inflight,
            upstream_udp_sockets: raw.upstream.udp_sockets,
            upstream_udp_socket_queries: raw.upstream.udp_socket_queries,
            upstream_udp_socket_lifetime: Duration::from_millis(raw.upstream.udp_socket_lifetime_ms),
            upstream_max_waiters: raw.upstream.max_waiters,
            upstream_case_randomization: raw.upstream.case_randomization,
            upstream_mode,
            root_hints,
            cache_max_entries: raw.cache.max_entries,
            cache_max_bytes: raw.cache.max_bytes,
            cache_max_reply_bytes: raw.cache.max_reply_bytes,
            cache_stale_max: if raw.cache.serve_stale { raw.cache.stale_max_s.max(1) } else { 0 },
            cache_prefetch: raw.cache.prefetch,
            cache_min_ttl: raw.cache.min_ttl,
            cache_max_ttl: raw.cache.max_ttl,
            cache_max_negative_ttl: raw.cache.max_negative_ttl,
            sinkhole: Sinkhole { a, aaaa, ttl: raw.sinkhole.ttl },
            metrics_listen,
            blocked_log: raw.log.blocked.as_deref().map(|b| match b {
                "stderr" => crate::querylog::Target::Stderr,
                path => crate::querylog::Target::File(PathBuf::from(path)),
            }),
            log_anonymize: raw.log.anonymize,
            log_hash_key: raw.log.hash_key,
            log_queue: raw.log.queue,
            audit_log: raw.log.audit.map(PathBuf::from),
            state_dir: raw.state.dir.map(PathBuf::from),
            rate_limit,
            admin,
            guard,
            lists,
            catalogs,
        })
    }

    /// Path of a list source on disk (file lists) or of its persisted copy
    /// in `[state] dir` (remote lists). `None` for a remote list when no
    /// state directory is configured: a remote list is never read from the
    /// working directory.
    pub fn list_path(&self, list: &ListConfig) -> Option<PathBuf> {
        match &list.origin {
            SourceKind::File(p) => Some(p.clone()),
            SourceKind::Vacant => None,
            _ => self.state_dir.as_ref().map(|d| d.join(format!("{}.list", list.name))),
        }
    }
}

/// `[dnstap]` checked; `Err((key, reason))`.
fn dnstap_config(d: raw::RawDnstap) -> Result<crate::dnstap::Settings, (&'static str, String)> {
    use crate::dnstap::Endpoint;
    let endpoint = match (d.socket, d.tcp) {
        (Some(p), None) if !p.is_empty() => Endpoint::Unix(PathBuf::from(p)),
        (None, Some(a)) => Endpoint::Tcp(a.parse().map_err(|_| ("tcp", format!("`{a}` is not ip:port")))?),
        (Some(_), Some(_)) => return Err(("socket", "give `socket` or `tcp`, not both".into())),
        _ => return Err(("socket", "a unix socket path (`socket`) or `tcp = \"ip:port\"` is needed".into())),
    };
    if d.reconnect_min_ms == 0 || d.reconnect_max_ms < d.reconnect_min_ms {
        return Err(("reconnect_min_ms", "must be at least 1 and at most reconnect_max_ms".into()));
    }
    if d.timeout_ms == 0 {
        return Err(("timeout_ms", "must be at least 1".into()));
    }
    let identity = d.identity.unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default()
    });
    Ok(crate::dnstap::Settings {
        endpoint,
        identity,
        version: d.version.unwrap_or_else(|| format!("qalqan {}", env!("CARGO_PKG_VERSION"))),
        log_queries: d.log_queries,
        log_responses: d.log_responses,
        queue: d.queue.max(1),
        reconnect_min: Duration::from_millis(d.reconnect_min_ms),
        reconnect_max: Duration::from_millis(d.reconnect_max_ms),
        io_timeout: Duration::from_millis(d.timeout_ms),
    })
}

/// The structured EXTRA-TEXT of a list's blocks (`[sde]` with the list's
/// EDE `code`, sub-error and `j` template); `None` with `[sde] mode = "off"`
/// or a code the draft does not structure. `Err`: the template's reason.
fn list_sde(
    sde: &raw::RawSde,
    mode: crate::policy::sde::SdeMode,
    code: u16,
    sub_error: Option<u8>,
    template: Option<&str>,
) -> Result<Option<std::sync::Arc<crate::policy::sde::ListSde>>, String> {
    if mode == crate::policy::sde::SdeMode::Off || !crate::policy::sde::structured_code(code) {
        return Ok(None);
    }
    let prepared = crate::policy::sde::ListSde::new(&sde.contact, sde.organization.as_deref(), &sde.language, sub_error, template)?;
    Ok(Some(std::sync::Arc::new(prepared)))
}

/// `max_bad_share` of a catalog member: a zone transfer's records are
/// checked by the primary, so a bad record is rare; the same budget as a list's default.
fn default_catalog_bad_share() -> f64 {
    0.01
}

/// `[blockpage]` checked; `Err((key, reason))`.
fn blockpage_config(b: raw::RawBlockpage, path: &str) -> Result<BlockpageConfig, (String, String)> {
    if b.listen.is_empty() {
        return Err(("listen".into(), "at least one address is needed (the sinkhole address of [sinkhole], port 80)".into()));
    }
    let mut listen = Vec::new();
    for (i, a) in b.listen.iter().enumerate() {
        let addr = parse_socket_addr(a, 80).ok_or_else(|| (format!("listen[{i}]"), format!("`{a}` is not ip or ip:port")))?;
        if addr.port() == 443 {
            // a browser there expects TLS for a name the ISP does not own:
            // nothing must listen, so that it fails at once
            return Err((
                format!("listen[{i}]"),
                "the block page is plain HTTP; on 443 browsers expect a certificate for the blocked name, which must never be served: leave 443 closed".into(),
            ));
        }
        listen.push(addr);
    }
    if b.contact.chars().any(char::is_control) || b.contact.len() > 512 {
        return Err(("contact".into(), "at most 512 bytes, no control characters".into()));
    }
    if !(1024..=65_536).contains(&b.max_header_bytes) {
        return Err(("max_header_bytes".into(), "must be between 1024 and 65536".into()));
    }
    for (k, v) in [("request_timeout_ms", b.request_timeout_ms), ("idle_timeout_ms", b.idle_timeout_ms)] {
        if !(10..=300_000).contains(&v) {
            return Err((k.into(), "must be between 10 and 300000".into()));
        }
    }
    if b.max_connections == 0 || b.max_per_client == 0 {
        let k = if b.max_connections == 0 { "max_connections" } else { "max_per_client" };
        return Err((k.into(), "must be at least 1".into()));
    }
    let template = b.template.map(|t| PathBuf::from(t.into_inner()));
    Ok(BlockpageConfig {
        listen,
        template,
        template_key_at: format!("{path}: [blockpage] template"),
        contact: b.contact,
        max_header_bytes: b.max_header_bytes,
        request_timeout: Duration::from_millis(b.request_timeout_ms),
        idle_timeout: Duration::from_millis(b.idle_timeout_ms),
        max_connections: b.max_connections,
        max_per_client: b.max_per_client,
    })
}

/// An `authority_url`: `http(s)://`, visible ASCII without `<`, `>`, `"`
/// or spaces (it goes into a `Link:` header between `<` and `>`).
fn check_link_url(u: &str) -> Result<(), String> {
    if !(u.starts_with("https://") || u.starts_with("http://")) {
        return Err(format!("`{u}`: use an http:// or https:// URL"));
    }
    if u.len() > 2048 || !u.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"')) {
        return Err(format!("`{u}`: at most 2048 bytes of visible ASCII, no `<`, `>`, `\"` or spaces (percent-encode them)"));
    }
    Ok(())
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes().iter().take(offset).filter(|&&b| b == b'\n').count() + 1
}

/// Parses `source =`: a path, `http(s)://…`, `push`, or `axfr://HOST:PORT/ZONE`.
fn parse_source(s: &str) -> Result<SourceKind, String> {
    if s == "push" {
        return Ok(SourceKind::Push);
    }
    if s.starts_with("http://") || s.starts_with("https://") {
        return Ok(SourceKind::Http(s.to_owned()));
    }
    if let Some(rest) = s.strip_prefix("axfr://") {
        let (hostport, zone) = rest.split_once('/').ok_or("axfr:// needs HOST:PORT/ZONE")?;
        let primary = parse_socket_addr(hostport, 53).ok_or(format!("`{hostport}` is not ip or ip:port"))?;
        let zone = zone.trim_end_matches('.');
        if zone.is_empty() {
            return Err("axfr:// needs a zone name after the address".into());
        }
        crate::name::normalize(zone).map_err(|e| format!("zone `{zone}`: {e}"))?;
        return Ok(SourceKind::Axfr { primary, zone: zone.to_owned() });
    }
    if let Some(path) = s.strip_prefix("file://") {
        return Ok(SourceKind::File(PathBuf::from(path)));
    }
    if s.contains("://") {
        return Err(format!("`{s}`: unsupported scheme (use a path, http(s)://, axfr:// or push)"));
    }
    Ok(SourceKind::File(PathBuf::from(s)))
}

/// `toml`'s error with the 1-based line number up front (`line N: …`).
fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().to_owned();
    match e.span() {
        Some(span) => {
            let line = text.get(..span.start).map(|t| t.matches('\n').count() + 1).unwrap_or(0);
            format!("line {line}: {msg}")
        }
        None => msg,
    }
}

/// A private key file must exist and be readable by its owner only: a key
/// readable by group or others is a config error (as `[admin] token_file`).
fn check_key_file(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!("{} is open to group or others (mode {mode:o}): chmod 600 it", path.display()));
    }
    Ok(())
}

/// `1.2.3.4`, `1.2.3.4:53`, `::1`, `[::1]:53`.
/// How cache misses are answered (`[upstream] mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamMode {
    /// Forwarded to `[upstream] servers`.
    #[default]
    Forward,
    /// Resolved from the root servers.
    Recursive,
}

/// The addresses of the A and AAAA records of a root hints file (zone
/// format as IANA publishes it: `NAME [TTL] [IN] A|AAAA ADDRESS`, `;`
/// comments). NS lines and everything else are skipped. Cost: one pass.
/// Fails on an A/AAAA line whose address does not parse, and on a file
/// with no address at all.
pub fn parse_root_hints(text: &str) -> Result<Vec<IpAddr>, String> {
    let mut addrs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split(';').next().unwrap_or_default();
        let fields: Vec<&str> = line.split_whitespace().collect();
        let Some(at) = fields.iter().position(|f| f.eq_ignore_ascii_case("A") || f.eq_ignore_ascii_case("AAAA")) else {
            continue;
        };
        let v6 = fields.get(at).is_some_and(|f| f.eq_ignore_ascii_case("AAAA"));
        let ip = fields
            .get(at + 1)
            .and_then(|a| a.parse::<IpAddr>().ok())
            .filter(|ip| ip.is_ipv6() == v6)
            .ok_or_else(|| format!("line {}: not an address record", i + 1))?;
        addrs.push(ip);
    }
    if addrs.is_empty() {
        return Err("no A or AAAA records".into());
    }
    Ok(addrs)
}

pub fn parse_socket_addr(s: &str, default_port: u16) -> Option<SocketAddr> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, default_port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (case, file text, addresses or error)
    type HintsCase<'a> = (&'a str, &'a str, Result<Vec<&'a str>, &'a str>);

    #[test]
    fn root_hints_files() {
        let cases: &[HintsCase] = &[
            (
                "IANA shape",
                ".  3600000  NS  A.ROOT-SERVERS.NET.\nA.ROOT-SERVERS.NET.  3600000  A  198.41.0.4\nA.ROOT-SERVERS.NET. 3600000 AAAA 2001:503:ba3e::2:30\n",
                Ok(vec!["198.41.0.4", "2001:503:ba3e::2:30"]),
            ),
            ("class and comments", "; header\nns. 60 IN a 127.0.0.1 ; loopback root\n", Ok(vec!["127.0.0.1"])),
            ("no TTL", "ns. A 10.0.0.1\n", Ok(vec!["10.0.0.1"])),
            ("bad address", "ns. 60 A 300.1.1.1\n", Err("line 1: not an address record")),
            ("v6 in an A record", "ns. 60 A ::1\n", Err("line 1: not an address record")),
            ("no address", ". 60 NS ns.\n", Err("no A or AAAA records")),
            ("empty", "", Err("no A or AAAA records")),
        ];
        for (name, text, want) in cases {
            let got = parse_root_hints(text).map(|v| v.iter().map(ToString::to_string).collect::<Vec<_>>());
            let want = want.clone().map(|v| v.iter().map(ToString::to_string).collect::<Vec<_>>()).map_err(str::to_owned);
            assert_eq!(got, want, "case `{name}`");
        }
    }

    #[test]
    fn dnstap_keys() {
        use crate::dnstap::Endpoint;
        assert!(Config::from_toml_str("", "q.toml").unwrap().dnstap.is_none(), "off by default");
        let unix = Config::from_toml_str("[dnstap]\nsocket = \"/run/qalqan/dnstap.sock\"\n", "q.toml").unwrap().dnstap.unwrap();
        assert_eq!(unix.endpoint, Endpoint::Unix("/run/qalqan/dnstap.sock".into()));
        assert!(unix.log_queries && unix.log_responses);
        assert_eq!((unix.queue, unix.version.as_str()), (10_000, concat!("qalqan ", env!("CARGO_PKG_VERSION"))));
        let tcp = Config::from_toml_str("[dnstap]\ntcp = \"127.0.0.1:6000\"\nlog_queries = false\nidentity = \"r1\"\n", "q.toml").unwrap().dnstap.unwrap();
        assert_eq!(tcp.endpoint, Endpoint::Tcp("127.0.0.1:6000".parse().unwrap()));
        assert!(!tcp.log_queries && tcp.identity == "r1");
        let errors: &[(&str, &str)] = &[
            ("[dnstap]\n", "q.toml: `dnstap.socket`: a unix socket path (`socket`) or `tcp = \"ip:port\"` is needed"),
            ("[dnstap]\nsocket = \"/s\"\ntcp = \"127.0.0.1:6000\"\n", "q.toml: `dnstap.socket`: give `socket` or `tcp`, not both"),
            ("[dnstap]\ntcp = \"localhost\"\n", "q.toml: `dnstap.tcp`: `localhost` is not ip:port"),
            ("[dnstap]\nsocket = \"/s\"\nreconnect_min_ms = 0\n", "q.toml: `dnstap.reconnect_min_ms`: must be at least 1 and at most reconnect_max_ms"),
            ("[dnstap]\nsocket = \"/s\"\ntimeout_ms = 0\n", "q.toml: `dnstap.timeout_ms`: must be at least 1"),
        ];
        for (toml, want) in errors {
            assert_eq!(Config::from_toml_str(toml, "q.toml").unwrap_err().to_string(), *want, "{toml}");
        }
    }

    #[test]
    fn upstream_mode_keys() {
        let dir = tempfile::tempdir().unwrap();
        let hints = dir.path().join("root.hints");
        std::fs::write(&hints, "ns-root. 60 A 127.1.2.3\n").unwrap();
        let hints = hints.display().to_string();
        let ok = Config::from_toml_str(&format!("[upstream]\nmode = \"recursive\"\nroot_hints = \"{hints}\"\n"), "q.toml").unwrap();
        assert_eq!(ok.upstream_mode, UpstreamMode::Recursive);
        assert_eq!(ok.root_hints, vec!["127.1.2.3".parse::<IpAddr>().unwrap()]);
        let default = Config::from_toml_str("", "q.toml").unwrap();
        assert_eq!((default.upstream_mode, default.root_hints.len()), (UpstreamMode::Forward, 0));
        let errors: &[(&str, &str)] = &[
            ("[upstream]\nmode = \"stub\"\n", "q.toml: `upstream.mode`: `stub` is not \"forward\" or \"recursive\""),
            (
                "[upstream]\nmode = \"recursive\"\nservers = [\"127.0.0.1\"]\n",
                "q.toml: `upstream.servers`: not used with mode = \"recursive\"; remove it",
            ),
            ("[upstream]\nroot_hints = \"x\"\n", "q.toml: `upstream.root_hints`: only used with mode = \"recursive\""),
        ];
        for (toml, want) in errors {
            assert_eq!(Config::from_toml_str(toml, "q.toml").unwrap_err().to_string(), *want);
        }
        let missing = Config::from_toml_str("[upstream]\nmode = \"recursive\"\nroot_hints = \"/nonexistent/root.hints\"\n", "q.toml");
        let missing = missing.unwrap_err().to_string();
        assert!(missing.starts_with("q.toml: `upstream.root_hints`: reading /nonexistent/root.hints: "), "{missing}");
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = Config::from_toml_str("[server]\nlisten = [\"127.0.0.1:53\"]\nlisten_port = 5\n", "q.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("q.toml: line 3"), "{err}");
        assert!(err.contains("listen_port"), "{err}");
    }

    /// A key that does not parse fails the config, naming it, rather than
    /// the first transfer (NOTIFY checks need the key from the start).
    #[test]
    fn views_resolve_their_lists_and_regulator_lists() {
        let lists = "[[lists]]\nname = \"reg\"\nsource = \"r.txt\"\nregulator = true\n[[lists]]\nname = \"adult\"\nsource = \"a.txt\"\n[[lists]]\nname = \"mal\"\nsource = \"m.txt\"\n";
        let view = |body: &str| format!("{lists}[[views]]\nname = \"v\"\nclients = [\"10.0.0.1\", \"2001:db8::/32\"]\n{body}");
        let ids = |c: &Config| c.views[0].lists.iter().map(|l| l.index()).collect::<Vec<_>>();
        let c = Config::from_toml_str(&view("lists = [\"mal\"]\n"), "q.toml").unwrap();
        assert_eq!((ids(&c), c.views[0].clients[0].to_string()), (vec![0, 2], "10.0.0.1/32".to_owned()));
        let c = Config::from_toml_str(&view("except = [\"reg\"]\n"), "q.toml").unwrap();
        assert!(ids(&c).is_empty(), "an excepted regulator list is left out");
        let cases: &[(&str, &str)] = &[
            ("lists = [\"nope\"]\n", "views[0].lists"),
            ("except = [\"adult\"]\n", "not a regulator list"),
            ("except = [\"x\"]\n", "views[0].except"),
        ];
        for (body, want) in cases {
            let err = Config::from_toml_str(&view(body), "q.toml").unwrap_err().to_string();
            assert!(err.contains(want), "`{body}`: {err}");
        }
        let err = Config::from_toml_str(&format!("{lists}[[views]]\nname = \"v\"\nclients = [\"10.0.0.0/33\"]\n"), "q.toml").unwrap_err();
        assert!(err.to_string().contains("views[0].clients[0]"), "{err}");
    }

    #[test]
    fn sde_settings_are_checked() {
        let cases: &[(&str, &str)] = &[
            ("[sde]\nmode = \"sometimes\"\n", "sde.mode"),
            ("[sde]\ncontact = [\"https://isp.example/\"]\n", "sde.contact[0]"),
            ("[sde]\nlanguage = \"en us\"\n", "sde.language"),
            ("[sde]\njustification = \"{nope}\"\n", "sde.justification"),
            ("[[lists]]\nname = \"l\"\nsource = \"l.txt\"\nsde_sub_error = 0\n", "lists[0].sde_sub_error"),
            ("[[lists]]\nname = \"l\"\nsource = \"l.txt\"\nede = 16\nsde_sub_error = 5\n", "Censored"),
            ("[[lists]]\nname = \"l\"\nsource = \"l.txt\"\nsde_justification = \"{list\"\n", "lists[0].sde_justification"),
        ];
        for (toml, want) in cases {
            let err = Config::from_toml_str(toml, "q.toml").unwrap_err().to_string();
            assert!(err.contains(want), "`{toml}`: {err}");
        }
        let ok = "[sde]\nmode = \"always\"\ncontact = [\"MAILTO:a@b.example\", \"tel:+1\"]\n[[lists]]\nname = \"l\"\nsource = \"l.txt\"\n[[lists]]\nname = \"p\"\nsource = \"p.txt\"\nede = 18\n";
        let c = Config::from_toml_str(ok, "q.toml").unwrap();
        assert!(c.lists[0].sde.is_some() && c.lists[1].sde.is_none(), "EDE 18 is not structured");
    }

    #[test]
    fn bad_tsig_key_is_a_config_error() {
        let list = |tsig: &str| {
            format!("[[lists]]\nname = \"rpz\"\nsource = \"axfr://192.0.2.1:53/rpz.test\"\nformat = \"rpz\"\ntsig = \"{tsig}\"\n")
        };
        Config::from_toml_str(&list("hmac-sha256:k:c2VjcmV0"), "q.toml").unwrap();
        for bad in ["hmac-md5:k:c2VjcmV0", "hmac-sha256:k:not base64!", "c2VjcmV0"] {
            let err = Config::from_toml_str(&list(bad), "q.toml").unwrap_err().to_string();
            assert!(err.contains("lists[0].tsig"), "`{bad}`: {err}");
        }
    }

    /// `fast_path = false` (the hickory-server UDP loop) was removed: a
    /// config asking for it is refused with the reason, not silently changed.
    #[test]
    fn fast_path_false_is_refused_true_accepted() {
        let err = Config::from_toml_str("[server]\nfast_path = false\n", "q.toml").unwrap_err().to_string();
        assert!(err.contains("server.fast_path") && err.contains("no longer supported"), "{err}");
        Config::from_toml_str("[server]\nfast_path = true\n", "q.toml").unwrap();
    }

    #[test]
    fn mistyped_value_is_named() {
        let err = Config::from_toml_str("[upstream]\ntimeout_ms = \"fast\"\n", "q.toml").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn bad_address_names_the_key() {
        let err = Config::from_toml_str("[upstream]\nservers = [\"nope\"]\n", "q.toml").unwrap_err().to_string();
        assert_eq!(err, "q.toml: `upstream.servers[0]`: `nope` is not ip or ip:port");
    }

    #[test]
    fn reload_nice_defaults_to_19_and_must_be_a_nice_value() {
        assert_eq!(Config::from_toml_str("", "q.toml").unwrap().reload_nice, 19);
        assert_eq!(Config::from_toml_str("[server]\nreload_nice = 0\n", "q.toml").unwrap().reload_nice, 0);
        let err = Config::from_toml_str("[server]\nreload_nice = -5\n", "q.toml").unwrap_err().to_string();
        assert!(err.contains("server.reload_nice") && err.contains("-5"), "{err}");
    }

    /// Replay protection and the last pushed list must survive a restart,
    /// so push lists and regulator keys need `[state] dir`.
    #[test]
    fn push_lists_and_regulator_keys_need_a_state_dir() {
        let push = "[[lists]]\nname = \"regpush\"\nsource = \"push\"\n";
        let err = Config::from_toml_str(push, "q.toml").unwrap_err().to_string();
        assert!(err.contains("state.dir") && err.contains("regpush"), "{err}");
        assert!(Config::from_toml_str(&format!("[state]\ndir = \"/var/lib/q\"\n{push}"), "q.toml").is_ok());
        let keys = "[admin]\nlisten = \"127.0.0.1:8053\"\ntoken_file = \"t\"\n\
                    regulator_keys = [\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"]\n";
        let err = Config::from_toml_str(keys, "q.toml").unwrap_err().to_string();
        assert!(err.contains("state.dir") && err.contains("regulator_keys"), "{err}");
    }

    /// Plain http:// needs allow_insecure; a required pull signature needs keys.
    #[test]
    fn pulled_lists_are_https_unless_allowed_and_signatures_need_keys() {
        let http = "[[lists]]\nname = \"plainweb\"\nsource = \"http://example.test/l\"\n";
        let err = Config::from_toml_str(http, "q.toml").unwrap_err().to_string();
        assert!(err.contains("plainweb") && err.contains("allow_insecure"), "{err}");
        assert!(Config::from_toml_str(&format!("{http}allow_insecure = true\n"), "q.toml").is_ok());
        let signed = "[[lists]]\nname = \"sweb\"\nsource = \"https://example.test/l\"\nsignature = \"required\"\n";
        let err = Config::from_toml_str(signed, "q.toml").unwrap_err().to_string();
        assert!(err.contains("sweb") && err.contains("regulator_keys"), "{err}");
    }

    /// Without a state directory a remote list has no persisted copy at
    /// all: never `./NAME.list` in the working directory.
    #[test]
    fn remote_lists_have_no_path_without_a_state_dir() {
        let c = Config::from_toml_str("[[lists]]\nname = \"web\"\nsource = \"https://example.test/l\"\n", "q.toml").unwrap();
        assert_eq!(c.list_path(&c.lists[0]), None);
    }

    #[test]
    fn closed_by_default() {
        let c = Config::from_toml_str("", "q.toml").unwrap();
        let nets: Vec<String> = c.allow_clients.iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, vec!["127.0.0.0/8", "::1/128"]);
    }

    #[test]
    fn blockpage_keys() {
        let ok = Config::from_toml_str("[blockpage]\nlisten = [\"192.0.2.7\", \"[2001:db8::7]:8080\"]\ntemplate = \"x.html\"\ncontact = \"abuse@isp.example\"\n", "q.toml").unwrap();
        let bp = ok.blockpage.unwrap();
        assert_eq!(bp.listen, vec!["192.0.2.7:80".parse::<SocketAddr>().unwrap(), "[2001:db8::7]:8080".parse().unwrap()]);
        assert_eq!(bp.template_key_at, "q.toml:3", "a missing template is reported at the key's line");
        assert_eq!((bp.max_header_bytes, bp.request_timeout.as_millis(), bp.idle_timeout.as_millis()), (8192, 5000, 2000));
        assert!(Config::from_toml_str("", "q.toml").unwrap().blockpage.is_none(), "off unless present");
        let cases: &[(&str, &str)] = &[
            ("[blockpage]\nlisten = []\n", "blockpage.listen"),
            ("[blockpage]\nlisten = [\"192.0.2.7:443\"]\n", "blockpage.listen[0]"),
            ("[blockpage]\nlisten = [\"x\"]\n", "blockpage.listen[0]"),
            ("[blockpage]\nlisten = [\"192.0.2.7\"]\nmax_header_bytes = 10\n", "blockpage.max_header_bytes"),
            ("[blockpage]\nlisten = [\"192.0.2.7\"]\nidle_timeout_ms = 0\n", "blockpage.idle_timeout_ms"),
            ("[blockpage]\nlisten = [\"192.0.2.7\"]\nmax_per_client = 0\n", "blockpage.max_per_client"),
            ("[blockpage]\nlisten = [\"192.0.2.7\"]\ncontact = \"a\\nb\"\n", "blockpage.contact"),
            ("[[lists]]\nname = \"r\"\nsource = \"r.txt\"\nauthority_url = \"ftp://x\"\n", "lists[0].authority_url"),
            ("[[lists]]\nname = \"r\"\nsource = \"r.txt\"\nauthority_url = \"https://x/<a>\"\n", "lists[0].authority_url"),
        ];
        for (text, key) in cases {
            let e = Config::from_toml_str(text, "q.toml").unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{text}: {e}");
        }
        let l = Config::from_toml_str("[[lists]]\nname = \"r\"\nsource = \"r.txt\"\nauthority_url = \"https://regulator.example/a?b=1\"\n", "q.toml").unwrap();
        assert_eq!(l.lists[0].authority_url.as_deref(), Some("https://regulator.example/a?b=1"));
    }
}

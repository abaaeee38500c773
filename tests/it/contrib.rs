//! The operator files under contrib/: the Grafana dashboard parses and only
//! queries metrics qalqan exports; the Prometheus alert rules load and pass
//! their promtool unit tests.

use std::process::Command;

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/grafana/qalqan.json");
const ALERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/prometheus/alerts.yml");
const ALERTS_TEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/prometheus/alerts_test.yml");

/// Every `qalqan_*` metric family the server exports (histograms by base name).
const EXPORTED: &[&str] = &[
    "qalqan_queries_total",
    "qalqan_blocked_total",
    "qalqan_query_duration_seconds",
    "qalqan_cache_hits_total",
    "qalqan_cache_misses_total",
    "qalqan_cache_entries",
    "qalqan_upstream_requests_total",
    "qalqan_upstream_duration_seconds",
    "qalqan_list_rules",
    "qalqan_list_reloads_total",
    "qalqan_list_last_success_timestamp_seconds",
    "qalqan_list_version_info",
    "qalqan_list_serial",
    "qalqan_list_age_seconds",
    "qalqan_list_refresh_seconds",
    "qalqan_list_updates_total",
    "qalqan_update_enforce_seconds",
    "qalqan_policy_generation",
    "qalqan_policy_build_seconds",
    "qalqan_blocked_log_dropped_total",
    "qalqan_rate_limited_total",
    "qalqan_tcp_connections_refused_total",
];

/// Every maximal `qalqan_[a-z_]+` token in `text`.
fn qalqan_tokens(text: &str) -> Vec<String> {
    const PREFIX: &str = "qalqan_";
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = text[i..].find(PREFIX) {
        let start = i + off;
        // Only a token start: `xqalqan_` is not a qalqan metric.
        let at_boundary = start == 0 || {
            let b = bytes[start - 1];
            !(b.is_ascii_alphanumeric() || b == b'_')
        };
        let mut end = start + PREFIX.len();
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        if at_boundary && end > start + PREFIX.len() {
            out.push(text[start..end].to_owned());
        }
        i = end;
    }
    out
}

fn base_name(metric: &str) -> &str {
    ["_bucket", "_sum", "_count"].iter().find_map(|s| metric.strip_suffix(s)).unwrap_or(metric)
}

#[test]
fn grafana_dashboard_is_valid_json_and_uses_only_exported_metrics() {
    let out = Command::new("python3")
        .args(["-m", "json.tool", DASHBOARD])
        .output()
        .expect("run python3 -m json.tool (python3 is needed to validate the dashboard JSON)");
    assert!(
        out.status.success(),
        "{DASHBOARD} is not valid JSON:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let text = std::fs::read_to_string(DASHBOARD).expect("read dashboard");
    let tokens = qalqan_tokens(&text);
    assert!(!tokens.is_empty(), "the dashboard queries no qalqan_ metric at all");
    let unknown: Vec<&String> = tokens.iter().filter(|t| !EXPORTED.contains(&base_name(t))).collect();
    assert!(unknown.is_empty(), "dashboard uses metrics qalqan does not export: {unknown:?}");
}

#[test]
fn alert_rules_pass_promtool() {
    if Command::new("promtool").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool not installed, but CI is set: tests/run.sh should have installed it"
        );
        println!("skipping: promtool not installed (tests/run.sh installs it)");
        return;
    }
    for args in [["check", "rules", ALERTS], ["test", "rules", ALERTS_TEST]] {
        let out = Command::new("promtool").args(args).output().expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn qalqan_tokens_finds_metric_names() {
    assert_eq!(
        qalqan_tokens(r#"{"expr": "rate(qalqan_queries_total{x}[1m]) / xqalqan_no qalqan_ qalqan_a_b"}"#),
        ["qalqan_queries_total", "qalqan_a_b"]
    );
    assert_eq!(base_name("qalqan_query_duration_seconds_bucket"), "qalqan_query_duration_seconds");
    assert_eq!(base_name("qalqan_queries_total"), "qalqan_queries_total");
}

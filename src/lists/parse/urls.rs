//! `urls`: one URL per line (`http://host/path`, `https://host:8080/`,
//! scheme-less `host/path` as in UT1, or a bare `host`); `#` at the start of a
//! line is a comment (later `#` are URL fragments).
//!
//! Only the host matters to a resolver. It is lowercased and normalised
//! (IDN → punycode); userinfo and port are dropped. A URL with no path (or
//! just `/`) blocks the host and everything below it ([`Scope::Subtree`]); a
//! URL with a path or query blocks the host itself only ([`Scope::Exact`]),
//! the closest a DNS filter can get. An IP-literal host (`192.0.2.1`,
//! `[2001:db8::1]`) becomes a [`Rule::Ip`] for the answer-IP check.

use std::net::{IpAddr, Ipv6Addr};

use super::{column_of, push_rule, ParseErrorKind, ParseOutput, Rule, RuleAction, Scope};

/// Parses one line. Cost: O(len), one allocation per rule.
pub fn parse_line(file: &str, n: u32, line: &str, out: &mut ParseOutput) {
    let text = line.trim();
    if text.is_empty() || text.starts_with('#') {
        return;
    }
    let mut words = text.split_whitespace();
    let Some(url) = words.next() else { return };
    if let Some(extra) = words.next() {
        if !extra.starts_with('#') {
            out.error(file, n, column_of(line, extra), ParseErrorKind::BadUrl("white space inside the URL".into()));
            return;
        }
    }
    push_url(out, file, n, line, url, None);
}

/// What a URL's host is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlHost<'a> {
    /// A host name as written (not yet normalised).
    Name(&'a str),
    Ip(IpAddr),
}

/// A URL split into the parts a resolver cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlParts<'a> {
    pub host: UrlHost<'a>,
    /// Whether the URL has a path other than `/`, or a query.
    pub has_path: bool,
}

/// Splits `url` (with or without a scheme). Errors carry the offending part
/// (a slice of `url`, for its column) and a message.
///
/// Cost: O(len), no allocation.
pub fn split_url(url: &str) -> Result<UrlParts<'_>, (&str, String)> {
    let rest = match url.find("://") {
        Some(i) => {
            let scheme = url.get(..i).unwrap_or("");
            let valid = scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
            if !valid {
                return Err((url, "bad scheme".into()));
            }
            url.get(i + 3..).unwrap_or("")
        }
        None => url.strip_prefix("//").unwrap_or(url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = rest.get(..end).unwrap_or("");
    let tail = rest.get(end..).unwrap_or("");
    let tail = tail.split('#').next().unwrap_or("");
    let has_path = !(tail.is_empty() || tail == "/");

    let hostport = match authority.rfind('@') {
        Some(i) => authority.get(i + 1..).unwrap_or(""),
        None => authority,
    };
    // a bare IPv6 address (no brackets, so no port) in a scheme-less line
    if let Ok(ip) = hostport.parse::<Ipv6Addr>() {
        return Ok(UrlParts { host: UrlHost::Ip(IpAddr::V6(ip)), has_path });
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let Some(close) = v6.find(']') else { return Err((hostport, "unclosed `[`".into())) };
        let inner = v6.get(..close).unwrap_or("");
        let after = v6.get(close + 1..).unwrap_or("");
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(p) => Some(p),
                None => return Err((after, "junk after `]`".into())),
            },
        };
        match inner.parse::<Ipv6Addr>() {
            Ok(ip) => {
                check_port(port)?;
                return Ok(UrlParts { host: UrlHost::Ip(IpAddr::V6(ip)), has_path });
            }
            Err(_) => return Err((inner, "bad IPv6 literal".into())),
        }
    } else {
        match hostport.rfind(':') {
            Some(i) => (hostport.get(..i).unwrap_or(""), hostport.get(i + 1..)),
            None => (hostport, None),
        }
    };
    check_port(port)?;
    if host.is_empty() {
        return Err((authority, "empty host".into()));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(UrlParts { host: UrlHost::Ip(ip), has_path });
    }
    Ok(UrlParts { host: UrlHost::Name(host), has_path })
}

fn check_port(port: Option<&str>) -> Result<(), (&str, String)> {
    match port {
        // `host:` with an empty port is legal (RFC 3986 §3.2.3)
        Some(p) if !p.is_empty() && p.parse::<u16>().is_err() => Err((p, format!("bad port `{p}`"))),
        _ => Ok(()),
    }
}

/// Adds the rule for one URL (`decision` as for the registry), or records
/// a [`ParseErrorKind::BadUrl`] at the offending column of `line`.
pub fn push_url(out: &mut ParseOutput, file: &str, n: u32, line: &str, url: &str, decision: Option<String>) {
    match split_url(url) {
        Ok(UrlParts { host: UrlHost::Ip(ip), .. }) => {
            push_rule(out, n, Rule::Ip { net: ipnet::IpNet::from(ip), decision });
        }
        Ok(UrlParts { host: UrlHost::Name(host), has_path }) => match crate::name::normalize(host) {
            Ok(name) => {
                let scope = if has_path { Scope::Exact } else { Scope::Subtree };
                push_rule(out, n, Rule::Name { name, scope, action: RuleAction::List, important: false, decision });
            }
            Err(e) => {
                out.error(file, n, column_of(line, host), ParseErrorKind::BadUrl(format!("host `{host}`: {e}")));
            }
        },
        Err((part, msg)) => out.error(file, n, column_of(line, part), ParseErrorKind::BadUrl(msg)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Format, ParseErrorKind, Rule, Scope};

    #[derive(Debug, PartialEq)]
    enum Got {
        Name(String, Scope),
        Ip(String),
        Nothing,
        Err(u32, String),
    }

    fn run(line: &str) -> Got {
        let out = parse(Format::Urls, "u.txt", line.as_bytes());
        if let Some(e) = out.errors.first() {
            let msg = match &e.kind {
                ParseErrorKind::BadUrl(m) => m.clone(),
                other => format!("{other:?}"),
            };
            return Got::Err(e.column, msg);
        }
        match out.entries.first().map(|e| &e.rule) {
            None => Got::Nothing,
            Some(Rule::Name { name, scope, decision: None, .. }) => Got::Name(name.clone(), *scope),
            Some(Rule::Ip { net, decision: None }) => Got::Ip(net.to_string()),
            Some(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn url_lines() {
        use Scope::*;
        let name = |s: &str, sc| Got::Name(s.into(), sc);
        let cases: Vec<(&str, &str, Got)> = vec![
            ("origin", "https://phish.example", name("phish.example", Subtree)),
            ("origin slash", "http://phish.example/", name("phish.example", Subtree)),
            ("path", "http://phish.example/login.htm", name("phish.example", Exact)),
            ("query", "http://phish.example?x=1", name("phish.example", Exact)),
            ("slash query", "http://phish.example/?x=1", name("phish.example", Exact)),
            ("fragment only", "https://phish.example/#top", name("phish.example", Subtree)),
            ("path fragment", "1momentactivate.de/mrno/index.html#tel1%40x.ph", name("1momentactivate.de", Exact)),
            ("port", "https://phish.example:8080/", name("phish.example", Subtree)),
            ("port path", "http://dcnmail07.denron.com.sg:32000/mail/help.html", name("dcnmail07.denron.com.sg", Exact)),
            ("empty port", "http://phish.example:/", name("phish.example", Subtree)),
            ("userinfo", "http://user:pw@phish.example/x", name("phish.example", Exact)),
            ("at in query", "http://a.example/i.php?email=user@domain.com", name("a.example", Exact)),
            ("scheme-less", "0001-5cf.pages.dev/awards/", name("0001-5cf.pages.dev", Exact)),
            ("bare host", "phish.example", name("phish.example", Subtree)),
            ("case", "HTTP://Phish.EXAMPLE/Login", name("phish.example", Exact)),
            ("trailing dot", "http://phish.example./", name("phish.example", Subtree)),
            ("idn", "http://пример.рф/путь", name("xn--e1afmkfd.xn--p1ai", Exact)),
            ("other scheme", "newcamd525://iserver3.tv:4001", name("iserver3.tv", Subtree)),
            ("garbage path", "http://email302.com/l/[emailÃ¯Â¿Â½protected]x.com/-/", name("email302.com", Exact)),
            ("ipv4", "http://192.0.2.1/x", Got::Ip("192.0.2.1/32".into())),
            ("ipv4 scheme-less", "129.105.212.34/~abutz", Got::Ip("129.105.212.34/32".into())),
            ("ipv6", "http://[2001:db8::1]:8080/", Got::Ip("2001:db8::1/128".into())),
            ("ipv6 no port", "https://[2001:DB8::1]", Got::Ip("2001:db8::1/128".into())),
            ("bare ipv6", "2001:db8::2", Got::Ip("2001:db8::2/128".into())),
            ("comment", "# list header", Got::Nothing),
            ("blank", "  ", Got::Nothing),
            ("trailing comment", "http://phish.example/ # seen 2024", name("phish.example", Subtree)),
            ("bad port", "http://phish.example:80x/", Got::Err(22, "bad port `80x`".into())),
            ("bad scheme", "ht tp://x", Got::Err(4, "white space inside the URL".into())),
            ("bad scheme chars", "1http://x.example", Got::Err(1, "bad scheme".into())),
            ("empty host", "http:///path", Got::Err(8, "empty host".into())),
            ("bad host", "http://a..b/", Got::Err(8, "host `a..b`: empty label".into())),
            ("bad ipv6", "http://[zz::1]/", Got::Err(9, "bad IPv6 literal".into())),
            ("unclosed ipv6", "http://[2001:db8::1/", Got::Err(8, "unclosed `[`".into())),
        ];
        for (case, line, want) in cases {
            assert_eq!(run(line), want, "case `{case}`");
        }
    }

    #[test]
    fn error_positions_name_file_and_line() {
        let out = parse(Format::Urls, "lists/u.txt", b"http://ok.example/\n# c\nhttp://bad_host!/x\n");
        assert_eq!(out.entries.len(), 1);
        assert_eq!(out.bad_lines, 1);
        assert_eq!(out.errors[0].to_string(), "lists/u.txt:3:8: bad URL: host `bad_host!`: character '!' is not allowed in a host name");
    }
}

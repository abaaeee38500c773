//! `hosts`: `IP name [name…] [# comment]`, as in `/etc/hosts`-style blocklists
//! (StevenBlack, someonewhocares, AdAway). The address is checked but not
//! used (`0.0.0.0`, `127.0.0.1`, `::1`, even `fe80::1%lo0`); every name on the
//! line blocks itself and everything below it.
//!
//! Preamble names every hosts file carries (`localhost`, `broadcasthost`,
//! `ip6-…`, the odd `0.0.0.0 0.0.0.0`) are counted in
//! [`ParseOutput::ignored`], never blocked.

use std::net::IpAddr;

use super::{column_of, push_name, ParseErrorKind, ParseOutput, RuleAction, Scope};

/// Host names from hosts-file preambles that must never become rules.
const PREAMBLE_NAMES: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "local",
    "broadcasthost",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
    "0.0.0.0",
];

/// Parses one line. Cost: O(len), one allocation per name.
pub fn parse_line(file: &str, n: u32, line: &str, out: &mut ParseOutput) {
    let content = line.split('#').next().unwrap_or("");
    let mut words = content.split_whitespace();
    let Some(addr) = words.next() else { return };
    // An IPv6 zone id (`fe80::1%lo0`) is legal in hosts files.
    let bare = addr.split('%').next().unwrap_or(addr);
    if bare.parse::<IpAddr>().is_err() {
        out.error(file, n, column_of(line, addr), ParseErrorKind::BadAddress);
        return;
    }
    let mut names = 0u32;
    for raw in words {
        names += 1;
        let trimmed = raw.strip_suffix('.').unwrap_or(raw);
        if PREAMBLE_NAMES.iter().any(|p| p.eq_ignore_ascii_case(trimmed))
            || trimmed.parse::<IpAddr>().is_ok()
        {
            out.ignored += 1;
            continue;
        }
        push_name(out, file, n, line, raw, Scope::Subtree, RuleAction::List, false, None);
    }
    if names == 0 {
        let col = column_of(line, addr).saturating_add(u32::try_from(addr.len()).unwrap_or(0));
        out.error(file, n, col, ParseErrorKind::MissingName);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Format, ParseErrorKind, Rule, RuleAction, Scope};
    use crate::name::NameError;

    /// (names, ignored count) or the first error.
    fn run(line: &str) -> Result<(Vec<String>, u32), ParseErrorKind> {
        let out = parse(Format::Hosts, "h.hosts", line.as_bytes());
        if let Some(e) = out.errors.first() {
            return Err(e.kind.clone());
        }
        let names = out
            .entries
            .iter()
            .map(|e| match &e.rule {
                Rule::Name { name, scope: Scope::Subtree, action: RuleAction::List, important: false, decision: None } => {
                    name.clone()
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        Ok((names, out.ignored))
    }

    #[test]
    fn hosts_lines() {
        /// (case, line, Ok((names, ignored)) or the first error)
        type Case = (&'static str, &'static str, Result<(&'static [&'static str], u32), ParseErrorKind>);
        let cases: &[Case] = &[
            ("zero address", "0.0.0.0 ads.example", Ok((&["ads.example"], 0))),
            ("loopback", "127.0.0.1 ads.example", Ok((&["ads.example"], 0))),
            ("ipv6 any", ":: ads.example", Ok((&["ads.example"], 0))),
            ("ipv6 loopback", "::1 ads.example", Ok((&["ads.example"], 0))),
            ("other ip", "74.125.127.105 g.example", Ok((&["g.example"], 0))),
            ("tab separated", "127.0.0.1\tads.example", Ok((&["ads.example"], 0))),
            ("double space", "127.0.0.1  ads.example  ", Ok((&["ads.example"], 0))),
            ("trailing note", "0.0.0.0 ads.example # promo", Ok((&["ads.example"], 0))),
            ("note no space", "0.0.0.0 ac.ajur.info #[WebBug]", Ok((&["ac.ajur.info"], 0))),
            ("several names", "0.0.0.0 a.example b.example", Ok((&["a.example", "b.example"], 0))),
            ("case", "0.0.0.0 tour.SweetDiscreet.com", Ok((&["tour.sweetdiscreet.com"], 0))),
            ("trailing dot", "0.0.0.0 ads.example.", Ok((&["ads.example"], 0))),
            ("underscore", "0.0.0.0 zgarniij_vouchher.skroc.pl", Ok((&["zgarniij_vouchher.skroc.pl"], 0))),
            ("punycode", "0.0.0.0 xn--e1afmkfd.xn--p1ai", Ok((&["xn--e1afmkfd.xn--p1ai"], 0))),
            ("idn", "0.0.0.0 пример.рф", Ok((&["xn--e1afmkfd.xn--p1ai"], 0))),
            ("comment line", "# header", Ok((&[], 0))),
            ("commented entry", "# 0.0.0.0 rules.atgsvcs.com #[affects banking]", Ok((&[], 0))),
            ("commented entry no space", "#0.0.0.0 ads.example", Ok((&[], 0))),
            ("blank", " \t ", Ok((&[], 0))),
            ("localhost", "127.0.0.1 localhost", Ok((&[], 1))),
            ("localhost v6", "::1 localhost", Ok((&[], 1))),
            ("zone id", "fe80::1%lo0 localhost", Ok((&[], 1))),
            ("broadcast", "255.255.255.255 broadcasthost", Ok((&[], 1))),
            ("ip6 names", "::1\t\tip6-localhost ip6-loopback", Ok((&[], 2))),
            ("ip6 mcast", "ff02::1 ip6-allnodes", Ok((&[], 1))),
            ("zero zero", "0.0.0.0 0.0.0.0", Ok((&[], 1))),
            ("mixed", "127.0.0.1 localhost ads.example", Ok((&["ads.example"], 1))),
            ("no name", "0.0.0.0", Err(ParseErrorKind::MissingName)),
            ("no name with note", "0.0.0.0 # nothing", Err(ParseErrorKind::MissingName)),
            ("not an ip", "ads.example 0.0.0.0", Err(ParseErrorKind::BadAddress)),
            ("bare name", "ads.example", Err(ParseErrorKind::BadAddress)),
            ("bad name", "0.0.0.0 a..b", Err(ParseErrorKind::Name(NameError::EmptyLabel))),
            ("slash", "0.0.0.0 a/b", Err(ParseErrorKind::Name(NameError::BadChar('/')))),
        ];
        for (name, line, want) in cases {
            let got = run(line);
            let want = want.clone().map(|(v, i)| (v.iter().map(|s| s.to_string()).collect::<Vec<_>>(), i));
            assert_eq!(got, want, "case `{name}`");
        }
    }

    #[test]
    fn error_positions_name_file_and_line() {
        let out = parse(Format::Hosts, "lists/h.hosts", b"# hi\n0.0.0.0 ok.example\nbogus ok.example\n0.0.0.0\n0.0.0.0 a..b\n");
        assert_eq!(out.entries.len(), 1);
        assert_eq!(out.bad_lines, 3);
        let texts: Vec<String> = out.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            vec![
                "lists/h.hosts:3:1: not a valid IP address",
                "lists/h.hosts:4:8: address with no host name",
                "lists/h.hosts:5:9: bad name: empty label",
            ]
        );
    }
}

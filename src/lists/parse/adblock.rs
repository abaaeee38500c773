//! `adblock`: the DNS subset of Adblock Plus / AdGuard syntax that AdGuard
//! Home and Blocky enforce.
//!
//! | line                          | rule                                   |
//! |-------------------------------|----------------------------------------|
//! | `||name^`, `||name^|`, `||name` | name and everything below (`Subtree`) |
//! | `||*.name^`, `.name^`         | only names below it (`Below`)          |
//! | `|name^`, `|name^|`, `://name^` | the name only (`Exact`)              |
//! | `name`, `name^`               | `Subtree` (hosts-style plain entries)  |
//! | `@@` + any of the above       | an exception ([`RuleAction::Allow`])   |
//! | `/re/`                        | [`Rule::Regex`]                        |
//! | `1.2.3.4^`, `||1.2.3.4^`      | [`Rule::Ip`] (answer-IP check)         |
//! | `…$important`                 | `important: true`                      |
//!
//! Comments (`!`, `#`) and `[Adblock Plus 2.0]` headers are skipped. Constructs a
//! DNS filter cannot enforce exactly are counted with
//! [`ParseOutput::unsupported`] and produce no rule: other `$` modifiers
//! (`adblock $badfilter`…), cosmetic rules (`##`, `#@#`, `$$`…), URL paths
//! (`||example.com/ads`), `*` wildcards inside a name, and open-ended
//! patterns that match by substring (`||ads.`, `-ad123-`).

use super::{column_of, parse_ip_net, push_name, push_rule, ParseErrorKind, ParseOutput, Rule, RuleAction, Scope};

/// Largest compiled regex accepted (bytes of the `regex` crate's program).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Markers of cosmetic / HTML-filtering rules (element hiding, scriptlets…).
const COSMETIC_MARKERS: &[&str] = &["##", "#@#", "#?#", "#@?#", "#$#", "#@$#", "#%#", "#@%#", "$$", "$@$"];

/// Parses one line. Cost: O(len); a `/re/` line compiles the regex once.
pub fn parse_line(file: &str, n: u32, line: &str, out: &mut ParseOutput) {
    let text = line.trim();
    if text.is_empty() || text.starts_with('!') || (text.starts_with('[') && text.ends_with(']')) {
        return;
    }
    if COSMETIC_MARKERS.iter().any(|m| text.contains(m)) {
        out.unsupported("adblock cosmetic rule");
        return;
    }
    if text.starts_with('#') {
        return;
    }
    let (allow, body) = match text.strip_prefix("@@") {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let action = if allow { RuleAction::Allow } else { RuleAction::List };

    // `/regex/` with optional `$modifiers` after the closing slash.
    if body.len() >= 2 && body.starts_with('/') {
        if let Some(close) = body.rfind('/').filter(|&i| i > 0) {
            let after = body.get(close + 1..).unwrap_or("");
            if after.is_empty() || after.starts_with('$') {
                // `$important` is accepted but has no effect: a regex has no exception to beat.
                if modifiers(after.strip_prefix('$'), out).is_none() {
                    return;
                }
                let pattern = body.get(1..close).unwrap_or("");
                if allow {
                    out.unsupported("adblock @@/regex/ exception");
                    return;
                }
                match regex::RegexBuilder::new(pattern).size_limit(REGEX_SIZE_LIMIT).build() {
                    Ok(_) if !pattern.is_empty() => push_rule(out, n, Rule::Regex(pattern.to_owned())),
                    Ok(_) => out.error(file, n, column_of(line, body), ParseErrorKind::BadRegex("empty".into())),
                    Err(e) => out.error(file, n, column_of(line, body), ParseErrorKind::BadRegex(e.to_string())),
                }
                return;
            }
        }
    }

    // Split off `$modifiers` (the last `$`; names never contain one).
    let (pattern, mods) = match body.rfind('$') {
        Some(i) => (body.get(..i).unwrap_or(""), body.get(i + 1..)),
        None => (body, None),
    };
    let Some(important) = modifiers(mods, out) else { return };

    // Anchors: `||` (domain and below), `|` or `://` (start of the host).
    enum Anchor {
        Domain,
        Start,
        None,
    }
    let (anchor, rest) = if let Some(r) = pattern.strip_prefix("||") {
        (Anchor::Domain, r)
    } else if let Some(r) = pattern.strip_prefix('|') {
        (Anchor::Start, r)
    } else if let Some(r) = pattern.strip_prefix("://") {
        (Anchor::Start, r)
    } else {
        (Anchor::None, pattern)
    };
    // End: `^` (separator) optionally followed by `|` (end of address); a bare `|` end anchor too.
    let (name, sep) = if let Some(r) = rest.strip_suffix("^|").or_else(|| rest.strip_suffix('^')) {
        (r, true)
    } else if let Some(r) = rest.strip_suffix('|') {
        (r, true)
    } else {
        (rest, false)
    };
    if name.is_empty() {
        out.error(file, n, column_of(line, body), ParseErrorKind::UnsupportedSyntax);
        return;
    }
    if name.contains(['/', ':', '?', '=', '&']) && parse_ip_net(name).is_none() {
        out.unsupported("adblock URL path rule");
        return;
    }
    if name.contains('^') || name.contains('|') {
        out.unsupported("adblock URL path rule");
        return;
    }
    let (name, below) = match name.strip_prefix("*.") {
        Some(r) if matches!(anchor, Anchor::Domain) => (r, true),
        _ => match name.strip_prefix('.') {
            Some(r) if matches!(anchor, Anchor::None) && sep => (r, true),
            _ => (name, false),
        },
    };
    if name.contains('*') {
        out.unsupported("adblock wildcard");
        return;
    }
    // `||ads.`, `-ad123-`, `.x.90.`: open-ended patterns that match by substring.
    let open = name.starts_with(['.', '-']) || (name.ends_with(['.', '-']) && !sep);
    let bare_fragment = matches!(anchor, Anchor::None) && !sep && !name.contains('.');
    if open || bare_fragment {
        out.unsupported("adblock substring pattern");
        return;
    }
    if let Ok(ip) = name.parse::<std::net::IpAddr>() {
        if allow {
            out.unsupported("adblock @@ IP exception");
        } else {
            push_rule(out, n, Rule::Ip { net: ipnet::IpNet::from(ip), decision: None });
        }
        return;
    }
    let scope = if below {
        Scope::Below
    } else {
        match anchor {
            Anchor::Domain | Anchor::None => Scope::Subtree,
            Anchor::Start => Scope::Exact,
        }
    };
    push_name(out, file, n, line, name, scope, action, important, None);
}

/// Checks a `$a,b=c` modifier list: `Some(important)` when every modifier is
/// one we enforce, else counts the first other one as unsupported and
/// returns `None`.
fn modifiers(mods: Option<&str>, out: &mut ParseOutput) -> Option<bool> {
    let Some(mods) = mods else { return Some(false) };
    let mut important = false;
    for m in mods.split(',').map(str::trim) {
        if m.eq_ignore_ascii_case("important") {
            important = true;
            continue;
        }
        let key = m.split('=').next().unwrap_or(m).trim_start_matches('~');
        let key = if key.is_empty() { "(empty)" } else { key };
        out.unsupported(&format!("adblock ${}", key.to_ascii_lowercase()));
        return None;
    }
    Some(important)
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Format, ParseErrorKind, Rule, RuleAction, Scope};
    use crate::name::NameError;

    #[derive(Debug, PartialEq)]
    enum Got {
        Name(&'static str, Scope, bool, bool), // name, scope, allow, important
        Regex(&'static str),
        Ip(&'static str),
        Skipped,
        Unsupported(&'static str),
        Error(ParseErrorKind),
    }

    fn run(line: &str) -> (Option<Rule>, Vec<String>, Option<ParseErrorKind>) {
        let out = parse(Format::Adblock, "a.txt", line.as_bytes());
        (
            out.entries.first().map(|e| e.rule.clone()),
            out.unsupported.keys().cloned().collect(),
            out.errors.first().map(|e| e.kind.clone()),
        )
    }

    fn matches(got: &(Option<Rule>, Vec<String>, Option<ParseErrorKind>), want: &Got) -> bool {
        match (got, want) {
            ((None, u, None), Got::Skipped) => u.is_empty(),
            ((None, u, None), Got::Unsupported(c)) => u.len() == 1 && u[0] == *c,
            ((None, _, Some(e)), Got::Error(k)) => e == k,
            ((Some(Rule::Regex(r)), _, None), Got::Regex(w)) => r == w,
            ((Some(Rule::Ip { net, decision: None }), _, None), Got::Ip(w)) => net.to_string() == *w,
            ((Some(Rule::Name { name, scope, action, important, decision: None }), _, None), Got::Name(w, s, a, i)) => {
                name == w && scope == s && (*action == RuleAction::Allow) == *a && important == i
            }
            _ => false,
        }
    }

    #[test]
    fn adblock_lines() {
        use Got::*;
        use Scope::*;
        let cases: &[(&str, &str, Got)] = &[
            ("subtree", "||ads.example.com^", Name("ads.example.com", Subtree, false, false)),
            ("subtree end anchor", "||ads.example.com^|", Name("ads.example.com", Subtree, false, false)),
            ("no separator", "||ads.example.com", Name("ads.example.com", Subtree, false, false)),
            ("exact", "|ads.example.com^", Name("ads.example.com", Exact, false, false)),
            ("exact end anchor", "|ads.example.com^|", Name("ads.example.com", Exact, false, false)),
            ("scheme anchor", "://o0e.ru^", Name("o0e.ru", Exact, false, false)),
            ("wildcard subdomains", "||*.ads.example^", Name("ads.example", Below, false, false)),
            ("leading dot", ".doublepimp.com^", Name("doublepimp.com", Below, false, false)),
            ("exception subtree", "@@||ok.example^", Name("ok.example", Subtree, true, false)),
            ("exception end anchor", "@@||ok.example^|", Name("ok.example", Subtree, true, false)),
            ("exception exact", "@@|ok.example^|", Name("ok.example", Exact, true, false)),
            ("exception exact no end", "@@|ok.example^", Name("ok.example", Exact, true, false)),
            ("important", "||deloton.com$important", Name("deloton.com", Subtree, false, true)),
            ("important sep", "||bet.championat.com^$important", Name("bet.championat.com", Subtree, false, true)),
            ("case", "||Free-4paid.COM^", Name("free-4paid.com", Subtree, false, false)),
            ("trailing space", "@@|ok.example^  ", Name("ok.example", Exact, true, false)),
            ("punycode", "||xn--e1afmkfd.xn--p1ai^", Name("xn--e1afmkfd.xn--p1ai", Subtree, false, false)),
            ("idn", "||пример.рф^", Name("xn--e1afmkfd.xn--p1ai", Subtree, false, false)),
            ("bare name", "ads.example.com", Name("ads.example.com", Subtree, false, false)),
            ("bare name sep", "ads.example.com^", Name("ads.example.com", Subtree, false, false)),
            ("bare ip", "188.72.219.36^", Ip("188.72.219.36/32")),
            ("anchored ip", "|167.206.10.148^", Ip("167.206.10.148/32")),
            ("regex", r"/^(a|c)\.[0-9a-f]{56}\.com$/", Regex(r"^(a|c)\.[0-9a-f]{56}\.com$")),
            ("regex important", "/ads[0-9]+/$important", Regex("ads[0-9]+")),
            ("bad regex", "/a(b/", Error(ParseErrorKind::BadRegex(String::new()))),
            ("huge regex", r"/\w{1000}\w{1000}/", Error(ParseErrorKind::BadRegex(String::new()))),
            ("bang comment", "! Title: x", Skipped),
            ("hash comment", "# https://example.org", Skipped),
            ("non-ascii comment", "# آمیتیس?", Skipped),
            ("header", "[Adblock Plus 2.0]", Skipped),
            ("blank", "   ", Skipped),
            ("badfilter", "||tn.porngo.xxx^$badfilter", Unsupported("adblock $badfilter")),
            ("bare badfilter", "wykop.pl$badfilter", Unsupported("adblock $badfilter")),
            ("denyallow", "||example.org^$denyallow=a.example", Unsupported("adblock $denyallow")),
            ("client", "||example.org^$client=127.0.0.1", Unsupported("adblock $client")),
            ("dnstype", "||example.org^$dnstype=AAAA", Unsupported("adblock $dnstype")),
            ("ctag", "||example.org^$ctag=device_pc", Unsupported("adblock $ctag")),
            ("dnsrewrite", "||example.org^$dnsrewrite=1.2.3.4", Unsupported("adblock $dnsrewrite")),
            ("important plus other", "||example.org^$important,third-party", Unsupported("adblock $third-party")),
            ("negated", "||example.org^$~third-party", Unsupported("adblock $third-party")),
            ("cosmetic", "example.com##.banner", Unsupported("adblock cosmetic rule")),
            ("generic cosmetic", "##.ad-box", Unsupported("adblock cosmetic rule")),
            ("cosmetic exception", "example.com#@#.banner", Unsupported("adblock cosmetic rule")),
            ("html filter", "example.com$$script[data-src]", Unsupported("adblock cosmetic rule")),
            ("path", "||example.com/ads/banner.js", Unsupported("adblock URL path rule")),
            ("url", "|https://example.com/x^", Unsupported("adblock URL path rule")),
            ("inner wildcard", "||ads*.example^", Unsupported("adblock wildcard")),
            ("label wildcard", "||w.*.w.w^", Unsupported("adblock wildcard")),
            ("url wildcard", "||iphone-caviar.ru*entranceId", Unsupported("adblock wildcard")),
            ("exception wildcard", "@@|w*.w.w^", Unsupported("adblock wildcard")),
            ("open end", "||admulti.", Unsupported("adblock substring pattern")),
            ("open ip", "||158.247.208.", Unsupported("adblock substring pattern")),
            ("fragment", "-ad123-", Unsupported("adblock substring pattern")),
            ("fragment dot", "-ads1.", Unsupported("adblock substring pattern")),
            ("fragment file", "-tototix.gif", Unsupported("adblock substring pattern")),
            ("empty rule", "||^", Error(ParseErrorKind::UnsupportedSyntax)),
            ("bad char", "||a_b!.example^", Error(ParseErrorKind::Name(NameError::BadChar('!')))),
            ("empty label", "||a..b^", Error(ParseErrorKind::Name(NameError::EmptyLabel))),
        ];
        for (name, line, want) in cases {
            let got = run(line);
            let ok = match (&got, want) {
                // regex error texts come from the regex crate; compare the kind only
                ((None, _, Some(ParseErrorKind::BadRegex(_))), Got::Error(ParseErrorKind::BadRegex(_))) => true,
                _ => matches(&got, want),
            };
            assert!(ok, "case `{name}`: got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn error_positions_name_file_and_line() {
        let out = parse(Format::Adblock, "lists/a.txt", b"! c\n||ok.example^\n||bad..name^\n/(/\n||x.example^$dnstype=A\n");
        assert_eq!(out.entries.len(), 1);
        assert_eq!(out.bad_lines, 2);
        assert_eq!(out.errors[0].to_string(), "lists/a.txt:3:3: bad name: empty label");
        assert_eq!((out.errors[1].line, out.errors[1].column), (4, 1));
        assert_eq!(out.unsupported.get("adblock $dnstype"), Some(&1));
        assert_eq!(out.lines, 5);
    }
}

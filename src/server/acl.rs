//! Client address → allowed or refused. Built once from `server.allow_clients`.

use std::net::IpAddr;

/// The set of client networks we serve.
#[derive(Debug, Clone)]
pub struct Acl {
    nets: Vec<ipnet::IpNet>,
}

impl Acl {
    pub fn new(nets: Vec<ipnet::IpNet>) -> Self {
        Self { nets }
    }

    /// Whether `ip` may use the resolver. IPv4-mapped IPv6 clients are
    /// matched as IPv4. Cost: O(prefixes), a linear scan (ISP ACLs are short).
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_table() {
        let acl = Acl::new(vec!["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()]);
        let cases: &[(&str, bool)] = &[
            ("10.1.2.3", true),
            ("11.0.0.1", false),
            ("::ffff:10.0.0.1", true),
            ("2001:db8::1", true),
            ("2001:db9::1", false),
        ];
        for (ip, want) in cases {
            assert_eq!(acl.allows(ip.parse().unwrap()), *want, "{ip}");
        }
    }
}

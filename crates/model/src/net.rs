//! Addresses: ranges of them (`10.0.0.0/8`), and who a request comes from
//! when it passed through proxies the master trusts.

use std::net::IpAddr;

/// An address, or a CIDR range of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    base: IpAddr,
    prefix: u8,
}

impl AddressRange {
    /// `127.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`.
    pub fn parse(s: &str) -> Result<AddressRange, String> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let base: IpAddr = addr.parse().map_err(|_| format!("{addr:?} is not an IP address"))?;
        let bits = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= bits).ok_or_else(|| format!("bad prefix length {p:?}"))?,
        };
        Ok(AddressRange { base, prefix })
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        // A v4 range written mapped into v6 counts its prefix over 128 bits.
        let v4_prefix = if self.base.is_ipv6() { self.prefix.saturating_sub(96) } else { self.prefix };
        match (canonical(self.base), canonical(ip)) {
            (IpAddr::V4(base), IpAddr::V4(ip)) => {
                masked(u128::from(u32::from(base)) << 96, v4_prefix)
                    == masked(u128::from(u32::from(ip)) << 96, v4_prefix)
            }
            (IpAddr::V6(base), IpAddr::V6(ip)) => {
                masked(u128::from(base), self.prefix) == masked(u128::from(ip), self.prefix)
            }
            _ => false,
        }
    }
}

/// An IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn masked(bits: u128, prefix: u8) -> u128 {
    if prefix == 0 { 0 } else { bits & (u128::MAX << (128 - u32::from(prefix.min(128)))) }
}

/// The address as one client holds it, for counting per client: an IPv4
/// address itself, an IPv6 address's /64 (what one subscriber is given, so
/// rotating through it gains nothing).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(masked(u128::from(v6), 64))),
        v4 => v4,
    }
}

/// Who a request comes from. The connection's peer, unless it is a trusted
/// proxy: then `X-Forwarded-For`, read from the right (what the nearest
/// proxy saw), skipping trusted proxies, gives the first address that is
/// not one. A header that cannot be read changes nothing.
pub fn client_address(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[AddressRange]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|r| r.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let Some(header) = forwarded_for else { return peer };
    let mut client = peer;
    for hop in header.rsplit(',') {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else { return client };
        client = ip;
        if !is_trusted(ip) {
            return ip;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn ranges_hold_their_addresses() {
        let private = AddressRange::parse("10.0.0.0/8").expect("range");
        assert!(private.contains(ip("10.1.2.3")) && !private.contains(ip("11.0.0.1")));
        assert!(private.contains(ip("::ffff:10.9.9.9")), "IPv4 mapped into IPv6");
        let one = AddressRange::parse("127.0.0.1").expect("one");
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6 = AddressRange::parse("fd00::/8").expect("v6");
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")) && !v6.contains(ip("10.0.0.1")));
        assert!(AddressRange::parse("0.0.0.0/0").expect("all").contains(ip("8.8.8.8")));
        for bad in ["nope", "10.0.0.0/33", "::/129", "10.0.0.0/x", ""] {
            assert!(AddressRange::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_client_is_an_ipv4_address_or_an_ipv6_slash_64() {
        assert_eq!(client_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(client_key(ip("2001:db8:1:2:ffff::9")), client_key(ip("2001:db8:1:2::1")));
        assert_ne!(client_key(ip("2001:db8:1:3::1")), client_key(ip("2001:db8:1:2::1")));
    }

    #[test]
    fn forwarded_for_is_believed_from_trusted_proxies_only() {
        let trusted = [AddressRange::parse("127.0.0.1").expect("r"), AddressRange::parse("10.0.0.0/8").expect("r")];
        let header = Some("203.0.113.9, 198.51.100.7, 10.0.0.5");
        assert_eq!(client_address(ip("127.0.0.1"), header, &trusted), ip("198.51.100.7"), "the nearest untrusted hop");
        assert_eq!(
            client_address(ip("192.0.2.1"), header, &trusted),
            ip("192.0.2.1"),
            "an untrusted peer says nothing"
        );
        assert_eq!(client_address(ip("127.0.0.1"), None, &trusted), ip("127.0.0.1"));
        assert_eq!(client_address(ip("127.0.0.1"), Some("garbage"), &trusted), ip("127.0.0.1"));
        assert_eq!(client_address(ip("127.0.0.1"), Some("10.0.0.2, 10.0.0.3"), &trusted), ip("10.0.0.2"));
        assert_eq!(client_address(ip("127.0.0.1"), Some("x, 198.51.100.7"), &trusted), ip("198.51.100.7"));
    }
}

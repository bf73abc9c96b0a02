//! Which IP addresses an outbound webhook may reach: the SSRF guard's ranges.
//!
//! A dispatcher that posts to URLs its users register is a way into the network it runs in
//! (a cloud metadata service, an admin console on loopback, a database on a private subnet).
//! Unless an endpoint says `allow_private_network: true`, every address its host resolves to
//! is checked here, after DNS and on every connect (the transport connects to the address it
//! checked, so a name that resolves differently the second time cannot slip through).
//!
//! Refused: the IPv4 ranges of RFC 6890's special-purpose registry that are not globally
//! reachable (this network, private, shared/CGNAT, loopback, link-local, IETF protocol
//! assignments, documentation, benchmarking, multicast, reserved, broadcast), and for IPv6
//! everything outside global unicast (2000::/3: unique-local, link-local, site-local,
//! multicast, local-use NAT64, SIIT, ...) and inside it the IETF/Teredo (2001::/23) and
//! documentation ranges; IPv4 addresses carried in IPv6 (mapped, compatible, well-known NAT64,
//! 6to4) are judged as the IPv4 address they carry. A network's own NAT64 prefix (other than
//! 64:ff9b::/96) cannot be recognised: such a network should not let the gateway reach it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The range `ip` belongs to when it is not a public unicast address, by name; `None` for a
/// public one.
pub fn internal_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_range(v4),
        IpAddr::V6(v6) => v6_range(v6),
    }
}

fn v4_range(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "this network (0.0.0.0/8)",
        (10, _, _) => "private (10.0.0.0/8)",
        (100, 64..=127, _) => "shared address space (100.64.0.0/10)",
        (127, _, _) => "loopback (127.0.0.0/8)",
        (169, 254, _) => "link-local and cloud metadata (169.254.0.0/16)",
        (172, 16..=31, _) => "private (172.16.0.0/12)",
        (192, 0, 0) => "IETF protocol assignments (192.0.0.0/24)",
        (192, 0, 2) => "documentation (192.0.2.0/24)",
        (192, 88, 99) => "6to4 relay anycast (192.88.99.0/24)",
        (192, 168, _) => "private (192.168.0.0/16)",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (198, 51, 100) => "documentation (198.51.100.0/24)",
        (203, 0, 113) => "documentation (203.0.113.0/24)",
        (224..=239, _, _) => "multicast (224.0.0.0/4)",
        (240..=255, _, _) => "reserved (240.0.0.0/4)",
        _ => return None,
    })
}

fn v6_range(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified (::)");
    }
    if ip.is_loopback() {
        return Some("loopback (::1)");
    }
    // IPv4 carried in IPv6: judged as that IPv4 address.
    let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_range(v4);
    }
    if s[..6] == [0; 6] {
        // IPv4-compatible (deprecated) ::a.b.c.d.
        return v4_range(embedded(s[6], s[7])).or(Some("IPv4-compatible (::/96)"));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4_range(embedded(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return v4_range(embedded(s[1], s[2]));
    }
    // An allowlist: global unicast (2000::/3) passes but for its special ranges; anything
    // else is refused.
    Some(match s[0] {
        0x2001 if s[1] < 0x0200 => "IETF protocol assignments and Teredo (2001::/23)",
        0x2001 if s[1] == 0x0db8 => "documentation (2001:db8::/32)",
        0x3fff if s[1] < 0x1000 => "documentation (3fff::/20)",
        0x2000..=0x3fff => return None,
        0xfc00..=0xfdff => "unique local (fc00::/7)",
        0xfe80..=0xfebf => "link-local (fe80::/10)",
        0xfec0..=0xfeff => "site-local (fec0::/10)",
        0xff00..=0xffff => "multicast (ff00::/8)",
        _ => "outside global unicast (2000::/3)",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_and_public_addresses() {
        for internal in [
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::10.0.0.1",
            "2002:a00:1::",
            "fd00:ec2::254",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001:0:4136:e378::1",
            "3fff::1",
            "5f00::1",
            "64:ff9b:1::a00:1",
            "::ffff:0:a00:1",
            "100::1",
        ] {
            let ip: IpAddr = internal.parse().unwrap();
            assert!(internal_range(ip).is_some(), "{internal} should be refused");
        }
        for public in [
            "1.1.1.1",
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "192.169.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::",
        ] {
            let ip: IpAddr = public.parse().unwrap();
            assert_eq!(internal_range(ip), None, "{public} is public");
        }
        assert_eq!(
            internal_range("169.254.169.254".parse().unwrap()),
            Some("link-local and cloud metadata (169.254.0.0/16)")
        );
    }
}

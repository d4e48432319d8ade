//! SSRF protection, pure: classify IP addresses (including IPv4 embedded in
//! IPv6) and parse the odd numeric host spellings resolvers accept, so that
//! `2130706433`, `0177.0.0.1`, `0x7f.1` and `[::ffff:127.0.0.1]` are all seen
//! as the loopback address they mean. The proxy resolves a host itself, checks
//! every address with [`SsrfGuard::check`] and connects to exactly the checked
//! address, so there is no DNS-rebinding window between check and connect.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// What kind of destination an address is; everything but `Public` is
/// blocked when SSRF protection is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Globally routable.
    Public,
    /// 127/8, ::1.
    Loopback,
    /// RFC 1918, fc00::/7, fec0::/10.
    Private,
    /// 169.254/16, fe80::/10.
    LinkLocal,
    /// 100.64/10 carrier-grade NAT.
    SharedCgnat,
    /// 224/4, ff00::/8.
    Multicast,
    /// 0/8, ::.
    Unspecified,
    /// 255.255.255.255.
    Broadcast,
    /// Cloud instance metadata endpoints.
    Metadata,
    /// IETF reserved, benchmarking and documentation ranges.
    Reserved,
}

impl AddressClass {
    /// Short lower-case name used in denials and the audit log.
    pub fn name(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link-local",
            Self::SharedCgnat => "shared-cgnat",
            Self::Multicast => "multicast",
            Self::Unspecified => "unspecified",
            Self::Broadcast => "broadcast",
            Self::Metadata => "cloud-metadata",
            Self::Reserved => "reserved",
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Classifies an address; IPv6 forms that embed an IPv4 address (mapped,
/// compatible, NAT64, 6to4, Teredo) are classified as the embedded address.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, d] = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254)
        || ip == Ipv4Addr::new(100, 100, 100, 200)
        || ip == Ipv4Addr::new(168, 63, 129, 16)
    {
        return AddressClass::Metadata;
    }
    match (a, b, c, d) {
        (0, ..) => AddressClass::Unspecified,
        (127, ..) => AddressClass::Loopback,
        (10, ..) => AddressClass::Private,
        (172, 16..=31, ..) => AddressClass::Private,
        (192, 168, ..) => AddressClass::Private,
        (169, 254, ..) => AddressClass::LinkLocal,
        (100, 64..=127, ..) => AddressClass::SharedCgnat,
        (255, 255, 255, 255) => AddressClass::Broadcast,
        (224..=239, ..) => AddressClass::Multicast,
        (240..=255, ..) => AddressClass::Reserved,
        (192, 0, 0, _) | (192, 0, 2, _) | (198, 51, 100, _) | (203, 0, 113, _) => {
            AddressClass::Reserved
        }
        (198, 18..=19, ..) => AddressClass::Reserved,
        _ => AddressClass::Public,
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let seg = ip.segments();
    if ip == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x254) {
        return AddressClass::Metadata;
    }
    if ip.is_unspecified() {
        return AddressClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddressClass::Loopback;
    }
    match seg[0] {
        s if s & 0xfe00 == 0xfc00 => AddressClass::Private,
        s if s & 0xffc0 == 0xfe80 => AddressClass::LinkLocal,
        s if s & 0xffc0 == 0xfec0 => AddressClass::Private,
        s if s & 0xff00 == 0xff00 => AddressClass::Multicast,
        0x2001 if seg[1] == 0x0db8 => AddressClass::Reserved,
        0x0100 if seg[1..4] == [0, 0, 0] => AddressClass::Reserved,
        // Everything outside 2000::/3 is unassigned or special.
        s if s & 0xe000 != 0x2000 => AddressClass::Reserved,
        _ => AddressClass::Public,
    }
}

/// The IPv4 address an IPv6 address carries, for the embeddings that route
/// to it: mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64
/// `64:ff9b::/96`, 6to4 `2002::/16` and Teredo `2001::/32`.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let seg = ip.segments();
    let low32 = Ipv4Addr::new(
        (seg[6] >> 8) as u8,
        seg[6] as u8,
        (seg[7] >> 8) as u8,
        seg[7] as u8,
    );
    if seg[..5] == [0, 0, 0, 0, 0] && seg[5] == 0xffff {
        return Some(low32);
    }
    if seg[..6] == [0, 0, 0, 0, 0, 0] && !(seg[6] == 0 && seg[7] <= 1) {
        return Some(low32);
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low32);
    }
    if seg[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (seg[1] >> 8) as u8,
            seg[1] as u8,
            (seg[2] >> 8) as u8,
            seg[2] as u8,
        ));
    }
    if seg[0] == 0x2001 && seg[1] == 0 {
        let bits = u32::from(low32) ^ 0xffff_ffff;
        return Some(Ipv4Addr::from(bits));
    }
    None
}

/// Parses a host as an IP address the way `inet_aton` and URL parsers do:
/// dotted forms with 1 to 4 parts, each decimal, octal (leading `0`) or hex
/// (`0x`), plus bracketed or zoned IPv6. `None` means "a name, resolve it".
pub fn parse_numeric_host(host: &str) -> Option<IpAddr> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let unbracketed = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if unbracketed.contains(':') {
        let without_zone = unbracketed.split('%').next().unwrap_or(unbracketed);
        return without_zone.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    parse_inet_aton(unbracketed).map(IpAddr::V4)
}

fn parse_inet_aton(host: &str) -> Option<Ipv4Addr> {
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b'x' || b == b'X')
    {
        return None;
    }
    let parts: Vec<&str> = host.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let mut values = Vec::with_capacity(parts.len());
    for part in &parts {
        values.push(parse_inet_part(part)?);
    }
    let (last, leading) = values.split_last()?;
    if leading.iter().any(|&v| v > 255) {
        return None;
    }
    let last_bits = 8 * (5 - values.len() as u32);
    if last_bits < 32 && *last >= 1u64 << last_bits {
        return None;
    }
    if *last > u64::from(u32::MAX) {
        return None;
    }
    let mut addr: u32 = 0;
    for (i, &v) in leading.iter().enumerate() {
        addr |= (v as u32) << (24 - 8 * i);
    }
    addr |= *last as u32;
    Some(Ipv4Addr::from(addr))
}

fn parse_inet_part(part: &str) -> Option<u64> {
    if part.is_empty() {
        return None;
    }
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() {
        return if radix == 16 { None } else { Some(0) };
    }
    if digits.len() > 12 {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// An address range such as `10.0.0.0/8` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// Whether `ip` falls inside the range (an IPv4 range also matches the
    /// IPv4-mapped/embedded form of its addresses).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = prefix_mask_u32(self.prefix_len);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = prefix_mask_u128(self.prefix_len);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            (IpAddr::V4(_), IpAddr::V6(v6)) => {
                embedded_v4(v6).is_some_and(|v4| self.contains(IpAddr::V4(v4)))
            }
            (IpAddr::V6(_), IpAddr::V4(_)) => false,
        }
    }
}

fn prefix_mask_u32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn prefix_mask_u128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not a CIDR (address/prefix)"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len {
            Some(len) => len
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| format!("{s:?} has an invalid prefix length"))?,
            None => max,
        };
        Ok(Self {
            network,
            prefix_len,
        })
    }
}

/// Why an address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SsrfBlock {
    /// The refused address.
    pub address: IpAddr,
    /// Its class.
    pub class: AddressClass,
}

/// The SSRF decision: on/off plus the exempt ranges.
#[derive(Debug, Clone, Default)]
pub struct SsrfGuard {
    enabled: bool,
    exempt: Vec<Cidr>,
}

impl SsrfGuard {
    /// Builds a guard; fails on a malformed CIDR.
    pub fn new(enabled: bool, exempt_cidrs: &[String]) -> Result<Self, String> {
        let exempt = exempt_cidrs
            .iter()
            .map(|c| c.parse())
            .collect::<Result<Vec<Cidr>, String>>()?;
        Ok(Self { enabled, exempt })
    }

    /// `Ok` if the proxy may connect to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), SsrfBlock> {
        if !self.enabled {
            return Ok(());
        }
        let class = classify(ip);
        if class == AddressClass::Public || self.exempt.iter().any(|c| c.contains(ip)) {
            return Ok(());
        }
        Err(SsrfBlock { address: ip, class })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> AddressClass {
        classify(s.parse().unwrap())
    }

    #[test]
    fn ipv4_classes() {
        assert_eq!(class("127.0.0.1"), AddressClass::Loopback);
        assert_eq!(class("127.255.0.9"), AddressClass::Loopback);
        assert_eq!(class("10.1.2.3"), AddressClass::Private);
        assert_eq!(class("172.16.0.1"), AddressClass::Private);
        assert_eq!(class("172.31.255.255"), AddressClass::Private);
        assert_eq!(class("172.32.0.1"), AddressClass::Public);
        assert_eq!(class("192.168.1.1"), AddressClass::Private);
        assert_eq!(class("169.254.1.1"), AddressClass::LinkLocal);
        assert_eq!(class("169.254.169.254"), AddressClass::Metadata);
        assert_eq!(class("100.64.0.1"), AddressClass::SharedCgnat);
        assert_eq!(class("100.127.255.255"), AddressClass::SharedCgnat);
        assert_eq!(class("100.128.0.1"), AddressClass::Public);
        assert_eq!(class("224.0.0.1"), AddressClass::Multicast);
        assert_eq!(class("0.0.0.0"), AddressClass::Unspecified);
        assert_eq!(class("0.1.2.3"), AddressClass::Unspecified);
        assert_eq!(class("255.255.255.255"), AddressClass::Broadcast);
        assert_eq!(class("240.0.0.1"), AddressClass::Reserved);
        assert_eq!(class("192.0.2.1"), AddressClass::Reserved);
        assert_eq!(class("198.18.0.1"), AddressClass::Reserved);
        assert_eq!(class("8.8.8.8"), AddressClass::Public);
        assert_eq!(class("93.184.216.34"), AddressClass::Public);
    }

    #[test]
    fn ipv6_classes() {
        assert_eq!(class("::1"), AddressClass::Loopback);
        assert_eq!(class("::"), AddressClass::Unspecified);
        assert_eq!(class("fc00::1"), AddressClass::Private);
        assert_eq!(class("fd12:3456::1"), AddressClass::Private);
        assert_eq!(class("fe80::1"), AddressClass::LinkLocal);
        assert_eq!(class("ff02::1"), AddressClass::Multicast);
        assert_eq!(class("fd00:ec2::254"), AddressClass::Metadata);
        assert_eq!(class("2001:db8::1"), AddressClass::Reserved);
        assert_eq!(class("2606:4700::1111"), AddressClass::Public);
    }

    #[test]
    fn ipv6_embedding_classifies_the_ipv4_inside() {
        assert_eq!(class("::ffff:127.0.0.1"), AddressClass::Loopback);
        assert_eq!(class("::ffff:7f00:1"), AddressClass::Loopback);
        assert_eq!(class("::ffff:169.254.169.254"), AddressClass::Metadata);
        assert_eq!(class("::10.0.0.1"), AddressClass::Private);
        assert_eq!(class("64:ff9b::10.0.0.1"), AddressClass::Private);
        assert_eq!(class("64:ff9b::8.8.8.8"), AddressClass::Public);
        assert_eq!(class("2002:7f00:1::"), AddressClass::Loopback);
        assert_eq!(class("2002:c0a8:101::1"), AddressClass::Private);
        // Teredo: client address is the bitwise inverse of the last 32 bits.
        assert_eq!(class("2001:0:1:2:3:4:80ff:fffe"), AddressClass::Loopback);
        assert_eq!(class("::ffff:8.8.8.8"), AddressClass::Public);
    }

    fn numeric(s: &str) -> Option<String> {
        parse_numeric_host(s).map(|ip| ip.to_string())
    }

    #[test]
    fn odd_numeric_forms_parse_to_the_address_they_mean() {
        let loopback = Some("127.0.0.1".to_owned());
        assert_eq!(numeric("127.0.0.1"), loopback);
        assert_eq!(numeric("2130706433"), loopback);
        assert_eq!(numeric("0177.0.0.1"), loopback);
        assert_eq!(numeric("0x7f.0.0.1"), loopback);
        assert_eq!(numeric("0X7F.0.0.1"), loopback);
        assert_eq!(numeric("0x7f000001"), loopback);
        assert_eq!(numeric("017700000001"), loopback);
        assert_eq!(numeric("127.1"), loopback);
        assert_eq!(numeric("0x7f.1"), loopback);
        assert_eq!(numeric("127.0.1"), loopback);
        assert_eq!(numeric("127.0.0.1."), loopback);
        assert_eq!(
            numeric("[::ffff:127.0.0.1]"),
            Some("::ffff:127.0.0.1".to_owned())
        );
        assert_eq!(numeric("::1"), Some("::1".to_owned()));
        assert_eq!(numeric("fe80::1%eth0"), Some("fe80::1".to_owned()));
        assert_eq!(numeric("169.254.43518"), Some("169.254.169.254".to_owned()));
        assert_eq!(numeric("0"), Some("0.0.0.0".to_owned()));
    }

    #[test]
    fn names_and_out_of_range_numbers_are_not_addresses() {
        for host in [
            "example.com",
            "deadbeef",
            "upstream.test",
            "1.2.3.4.5",
            "256.0.0.1",
            "1.2.3.256",
            "4294967296",
            "0x",
            "1..2",
            "",
            "08.0.0.1",
            "1e10",
        ] {
            assert_eq!(parse_numeric_host(host), None, "{host}");
        }
    }

    #[test]
    fn guard_blocks_internal_and_honours_exemptions() {
        let guard =
            SsrfGuard::new(true, &["127.0.0.1/32".to_owned(), "fd00::/8".to_owned()]).unwrap();
        assert!(guard.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(guard.check("::ffff:127.0.0.1".parse().unwrap()).is_ok());
        assert!(guard.check("fd00::5".parse().unwrap()).is_ok());
        assert!(guard.check("8.8.8.8".parse().unwrap()).is_ok());
        let block = guard.check("127.0.0.2".parse().unwrap()).unwrap_err();
        assert_eq!(block.class, AddressClass::Loopback);
        assert_eq!(
            guard
                .check("169.254.169.254".parse().unwrap())
                .unwrap_err()
                .class,
            AddressClass::Metadata
        );
        assert_eq!(
            guard.check("10.0.0.1".parse().unwrap()).unwrap_err().class,
            AddressClass::Private
        );
        let off = SsrfGuard::new(false, &[]).unwrap();
        assert!(off.check("127.0.0.1".parse().unwrap()).is_ok());
    }

    #[test]
    fn malformed_cidrs_are_rejected() {
        assert!(SsrfGuard::new(true, &["10.0.0.0/33".to_owned()]).is_err());
        assert!(SsrfGuard::new(true, &["not-an-ip".to_owned()]).is_err());
        assert!(
            "10.0.0.0/8"
                .parse::<Cidr>()
                .unwrap()
                .contains("10.200.1.1".parse().unwrap())
        );
        assert!(
            !"10.0.0.0/8"
                .parse::<Cidr>()
                .unwrap()
                .contains("11.0.0.1".parse().unwrap())
        );
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains("1.2.3.4".parse().unwrap())
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn numeric_parsing_never_panics(host in "[0-9a-fA-FxX.:\\[\\]%]{0,40}") {
                let _ = parse_numeric_host(&host);
            }

            #[test]
            fn dotted_decimal_means_what_std_says(a in any::<u8>(), b in any::<u8>(), c in any::<u8>(), d in any::<u8>()) {
                let text = format!("{a}.{b}.{c}.{d}");
                prop_assert_eq!(parse_numeric_host(&text), Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d))));
                let as_number = u32::from(Ipv4Addr::new(a, b, c, d)).to_string();
                prop_assert_eq!(parse_numeric_host(&as_number), Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d))));
            }

            #[test]
            fn mapped_addresses_classify_like_their_ipv4(bits in any::<u32>()) {
                let v4 = Ipv4Addr::from(bits);
                prop_assert_eq!(classify(IpAddr::V6(v4.to_ipv6_mapped())), classify(IpAddr::V4(v4)));
            }
        }
    }
}

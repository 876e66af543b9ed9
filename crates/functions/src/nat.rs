//! Source NAT (NAPT): an opaque SF that rewrites source address and port (ICMP echo identifier)
//! of outgoing packets and the destination of returning ones. It needs the proxy's metadata
//! mode, since no header field survives it unchanged.
use std::collections::HashMap;
use std::net::IpAddr;
use zsfc_dataplane::{DropReason, Instant, PacketBuf, ServiceFunction, SfContext, SfVerdict};
use zsfc_wire::{checksum, icmp, ip, ipv4, tcp, udp};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatConfig {
    /// Outside address for IPv4 packets, and for IPv6 packets.
    pub v4: Option<std::net::Ipv4Addr>,
    pub v6: Option<std::net::Ipv6Addr>,
    /// Outside ports (and ICMP identifiers) to allocate, inclusive.
    pub ports: (u16, u16),
    /// A mapping unused this long may be reused.
    pub idle_timeout: core::time::Duration,
}

impl Default for NatConfig {
    fn default() -> Self {
        Self { v4: None, v6: None, ports: (20000, 29999), idle_timeout: core::time::Duration::from_secs(300) }
    }
}

#[derive(Debug, Clone, Copy)]
struct Inside {
    addr: IpAddr,
    port: u16,
    last_used: Instant,
}

/// The NAT SF.
#[derive(Debug)]
pub struct SourceNat {
    cfg: NatConfig,
    /// (protocol, inside address, inside port) → outside port.
    out: HashMap<(u8, IpAddr, u16), u16>,
    /// (protocol, is IPv6, outside port) → inside.
    back: HashMap<(u8, bool, u16), Inside>,
    cursor: u16,
    translated_out: u64,
    translated_back: u64,
    no_mapping: u64,
    exhausted: u64,
    untouched: u64,
}

impl SourceNat {
    pub fn new(cfg: NatConfig) -> Self {
        let cursor = cfg.ports.0;
        Self {
            cfg,
            out: HashMap::new(),
            back: HashMap::new(),
            cursor,
            translated_out: 0,
            translated_back: 0,
            no_mapping: 0,
            exhausted: 0,
            untouched: 0,
        }
    }

    pub fn mappings(&self) -> usize {
        self.back.len()
    }

    fn outside_addr(&self, v4: bool) -> Option<IpAddr> {
        if v4 { self.cfg.v4.map(IpAddr::V4) } else { self.cfg.v6.map(IpAddr::V6) }
    }

    fn allocate(&mut self, key: (u8, IpAddr, u16), now: Instant) -> Option<u16> {
        let (lo, hi) = self.cfg.ports;
        let v6 = key.1.is_ipv6();
        for _ in 0..=u32::from(hi.saturating_sub(lo)) {
            let p = self.cursor;
            self.cursor = if p >= hi { lo } else { p + 1 };
            let reusable = match self.back.get(&(key.0, v6, p)) {
                None => true,
                Some(i) => now.saturating_since(i.last_used) >= self.cfg.idle_timeout,
            };
            if reusable {
                if let Some(old) = self.back.insert((key.0, v6, p), Inside { addr: key.1, port: key.2, last_used: now })
                {
                    self.out.remove(&(key.0, old.addr, old.port));
                }
                self.out.insert(key, p);
                return Some(p);
            }
        }
        None
    }
}

/// Where the port-like field of a transport header sits, and its checksum.
struct L4 {
    /// Offset of the source port (or ICMP identifier) from the L4 start.
    src: usize,
    dst: usize,
    csum: usize,
    /// The checksum covers the pseudo header (so addresses).
    pseudo: bool,
}

fn l4_layout(proto: u8, l4: &[u8], v4: bool) -> Option<L4> {
    match proto {
        ip::protocol::TCP => Some(L4 { src: 0, dst: 2, csum: tcp::CHECKSUM_OFFSET, pseudo: true }),
        ip::protocol::UDP => Some(L4 { src: 0, dst: 2, csum: udp::CHECKSUM_OFFSET, pseudo: true }),
        ip::protocol::ICMP if v4 && matches!(l4.first(), Some(&(icmp::ECHO_REQUEST_V4 | icmp::ECHO_REPLY_V4))) => {
            Some(L4 { src: 4, dst: 4, csum: 2, pseudo: false })
        }
        ip::protocol::ICMPV6 if !v4 && matches!(l4.first(), Some(&(icmp::ECHO_REQUEST_V6 | icmp::ECHO_REPLY_V6))) => {
            Some(L4 { src: 4, dst: 4, csum: 2, pseudo: true })
        }
        _ => None,
    }
}

fn addr_bytes(a: IpAddr) -> ([u8; 16], usize) {
    match a {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (b, 4)
        }
        IpAddr::V6(a) => (a.octets(), 16),
    }
}

/// Rewrites the source (`src = true`) or destination address and port of `pkt`, updating the
/// IPv4 header checksum and the transport checksum incrementally (RFC 1624).
fn rewrite(pkt: &mut [u8], s: &ip::Summary, lay: &L4, src: bool, addr: IpAddr, port: u16) -> Option<()> {
    let v4 = s.is_v4();
    let (new, n) = addr_bytes(addr);
    let (addr_at, port_at) = match (v4, src) {
        (true, true) => (12, lay.src),
        (true, false) => (16, lay.dst),
        (false, true) => (8, lay.src),
        (false, false) => (24, lay.dst),
    };
    let old: [u8; 16] = {
        let mut o = [0u8; 16];
        o[..n].copy_from_slice(pkt.get(addr_at..addr_at + n)?);
        o
    };
    pkt.get_mut(addr_at..addr_at + n)?.copy_from_slice(&new[..n]);
    if v4 {
        let mut p = ipv4::Packet::new_checked(&mut *pkt).ok()?;
        p.fill_checksum();
    }
    let l4 = pkt.get_mut(s.l4_offset..s.total_len)?;
    let old_port = u16::from_be_bytes([*l4.get(port_at)?, *l4.get(port_at + 1)?]);
    l4.get_mut(port_at..port_at + 2)?.copy_from_slice(&port.to_be_bytes());
    let c = u16::from_be_bytes([*l4.get(lay.csum)?, *l4.get(lay.csum + 1)?]);
    let udp_v4_none = s.tuple.protocol == ip::protocol::UDP && v4 && c == 0;
    if !udp_v4_none {
        let mut c = checksum::update16(c, old_port, port);
        if lay.pseudo {
            c = checksum::update_bytes(c, &old[..n], &new[..n]);
        }
        if s.tuple.protocol == ip::protocol::UDP && c == 0 {
            c = 0xffff;
        }
        l4.get_mut(lay.csum..lay.csum + 2)?.copy_from_slice(&c.to_be_bytes());
    }
    Some(())
}

impl ServiceFunction for SourceNat {
    fn kind(&self) -> &'static str {
        "nat"
    }
    fn process(&mut self, ctx: &SfContext<'_>, mut pkt: PacketBuf) -> SfVerdict {
        let Ok(s) = ip::parse(pkt.as_slice()) else {
            return SfVerdict::Drop(pkt, DropReason::SfBadPacket);
        };
        let v4 = s.is_v4();
        let Some(outside) = self.outside_addr(v4) else {
            self.untouched += 1;
            return SfVerdict::Pass(pkt);
        };
        let l4 = pkt.as_slice().get(s.l4_offset..s.total_len).unwrap_or(&[]);
        let lay = match l4_layout(s.tuple.protocol, l4, v4) {
            Some(l) if !s.later_fragment && l4.len() >= l.csum + 2 && l4.len() >= 8 => l,
            _ => {
                self.untouched += 1;
                return SfVerdict::Pass(pkt);
            }
        };
        let sport = u16::from_be_bytes([l4[lay.src], l4[lay.src + 1]]);
        let dport = u16::from_be_bytes([l4[lay.dst], l4[lay.dst + 1]]);
        let proto = if s.tuple.protocol == ip::protocol::ICMPV6 { ip::protocol::ICMP } else { s.tuple.protocol };
        let done = if s.tuple.dst == outside {
            // Returning traffic: translate the destination back.
            let Some(inside) = self.back.get_mut(&(proto, !v4, dport)) else {
                self.no_mapping += 1;
                return SfVerdict::Drop(pkt, DropReason::SfNatNoMapping);
            };
            inside.last_used = ctx.now;
            let (a, p) = (inside.addr, inside.port);
            self.translated_back += 1;
            rewrite(pkt.as_mut_slice(), &s, &lay, false, a, p)
        } else {
            let key = (proto, s.tuple.src, sport);
            let port = match self.out.get(&key) {
                Some(&p) => {
                    if let Some(i) = self.back.get_mut(&(proto, !v4, p)) {
                        i.last_used = ctx.now;
                    }
                    p
                }
                None => match self.allocate(key, ctx.now) {
                    Some(p) => p,
                    None => {
                        self.exhausted += 1;
                        return SfVerdict::Drop(pkt, DropReason::SfNatExhausted);
                    }
                },
            };
            self.translated_out += 1;
            rewrite(pkt.as_mut_slice(), &s, &lay, true, outside, port)
        };
        match done {
            Some(()) => SfVerdict::Pass(pkt),
            None => SfVerdict::Drop(pkt, DropReason::SfBadPacket),
        }
    }
    fn counters(&self, out: &mut dyn FnMut(&'static str, u64)) {
        out("translated_out", self.translated_out);
        out("translated_back", self.translated_back);
        out("no_mapping", self.no_mapping);
        out("exhausted", self.exhausted);
        out("untouched", self.untouched);
        out("mappings", self.back.len() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simple::testutil::*;

    fn nat() -> SourceNat {
        SourceNat::new(NatConfig {
            v4: Some([192, 0, 2, 1].into()),
            v6: Some("2001:db8::1".parse().unwrap()),
            ports: (20000, 20001),
            ..Default::default()
        })
    }

    fn run(n: &mut SourceNat, p: &[u8], t: u64) -> Result<Vec<u8>, DropReason> {
        match n.process(&ctx(Instant::from_secs(t)), PacketBuf::from_slice(p)) {
            SfVerdict::Pass(b) => Ok(b.as_slice().to_vec()),
            SfVerdict::Drop(_, r) => Err(r),
            SfVerdict::Held => unreachable!(),
        }
    }

    fn checksums_ok(p: &[u8]) -> bool {
        let s = ip::parse(p).unwrap();
        let l4 = &p[s.l4_offset..s.total_len];
        let pseudo = match (s.tuple.src, s.tuple.dst) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                if !ipv4::Packet::new_checked(p).unwrap().verify_checksum() {
                    return false;
                }
                checksum::pseudo_v4(a.octets(), b.octets(), s.tuple.protocol, l4.len() as u16)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                checksum::pseudo_v6(a.octets(), b.octets(), s.tuple.protocol, l4.len() as u32)
            }
            _ => unreachable!(),
        };
        checksum::finish(pseudo + checksum::sum(l4)) == 0
    }

    #[test]
    fn translates_out_and_back_with_valid_checksums() {
        let mut n = nat();
        for proto in [6, 17] {
            let out = run(&mut n, &v4(proto, [10, 1, 0, 5], 40000, [10, 9, 0, 1], 80, b"hello"), 0).unwrap();
            let s = ip::parse(&out).unwrap();
            assert_eq!(s.tuple.src, IpAddr::from([192, 0, 2, 1]));
            assert!(checksums_ok(&out), "proto {proto}");
            let reply = v4(proto, [10, 9, 0, 1], 80, [192, 0, 2, 1], s.tuple.src_port, b"world");
            let back = run(&mut n, &reply, 1).unwrap();
            let b = ip::parse(&back).unwrap();
            assert_eq!((b.tuple.dst, b.tuple.dst_port), (IpAddr::from([10, 1, 0, 5]), 40000));
            assert!(checksums_ok(&back));
        }
        let src6: [u8; 16] = "fd01::5".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let out6 = run(&mut n, &v6_udp(src6, 5000, [9; 16], 53, b"q"), 0);
        // Both ports of the pool are used by the v4 flows above, but IPv6 has its own space.
        let out6 = out6.unwrap();
        assert!(checksums_ok(&out6));
    }

    #[test]
    fn drops_unknown_returns_and_exhausted_pool_then_reuses_idle_ports() {
        let mut n = nat();
        assert_eq!(
            run(&mut n, &v4(17, [10, 9, 0, 1], 53, [192, 0, 2, 1], 20000, b""), 0),
            Err(DropReason::SfNatNoMapping)
        );
        run(&mut n, &v4(17, [10, 1, 0, 1], 1, [8; 4], 53, b""), 0).unwrap();
        run(&mut n, &v4(17, [10, 1, 0, 2], 1, [8; 4], 53, b""), 0).unwrap();
        assert_eq!(run(&mut n, &v4(17, [10, 1, 0, 3], 1, [8; 4], 53, b""), 1), Err(DropReason::SfNatExhausted));
        assert!(run(&mut n, &v4(17, [10, 1, 0, 3], 1, [8; 4], 53, b""), 400).is_ok());
        assert_eq!(n.mappings(), 2);
    }
}

//! Builders for real IPv4/IPv6 TCP/UDP packets with valid checksums, and their inverse.
use std::net::IpAddr;
use zsfc_wire::{checksum, ip, ipv4, ipv6, tcp, udp};

/// A transport flow between two addresses of the same family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

impl Flow {
    pub fn tcp(src: &str, sp: u16, dst: &str, dp: u16) -> Self {
        Self { src: parse(src), dst: parse(dst), protocol: ip::protocol::TCP, src_port: sp, dst_port: dp }
    }
    pub fn udp(src: &str, sp: u16, dst: &str, dp: u16) -> Self {
        Self { src: parse(src), dst: parse(dst), protocol: ip::protocol::UDP, src_port: sp, dst_port: dp }
    }
    pub fn reversed(&self) -> Self {
        Self { src: self.dst, dst: self.src, protocol: self.protocol, src_port: self.dst_port, dst_port: self.src_port }
    }
}

fn parse(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::from([0u8; 4]))
}

/// Builds one packet of `flow` carrying `payload`; `seq` is the TCP sequence number and the
/// IPv4 identification (so every packet of a flow has a distinct proxy key).
pub fn build(flow: &Flow, seq: u32, payload: &[u8]) -> Vec<u8> {
    let l4h = if flow.protocol == ip::protocol::TCP { tcp::MIN_HEADER_LEN } else { udp::HEADER_LEN };
    let l4len = l4h + payload.len();
    let iph = if flow.src.is_ipv4() { ipv4::MIN_HEADER_LEN } else { ipv6::HEADER_LEN };
    let mut b = vec![0u8; iph + l4len];
    b[iph + l4h..].copy_from_slice(payload);
    let pseudo = match (flow.src, flow.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => checksum::pseudo_v4(s.octets(), d.octets(), flow.protocol, l4len as u16),
        (IpAddr::V6(s), IpAddr::V6(d)) => checksum::pseudo_v6(s.octets(), d.octets(), flow.protocol, l4len as u32),
        _ => 0,
    };
    let l4 = &mut b[iph..];
    if flow.protocol == ip::protocol::TCP {
        let r = tcp::Repr {
            src_port: flow.src_port,
            dst_port: flow.dst_port,
            seq,
            ack: 1,
            flags: tcp::flags::ACK | tcp::flags::PSH,
            window: 65535,
        };
        let _ = r.emit(l4, Some(pseudo));
    } else {
        let _ = udp::Repr { src_port: flow.src_port, dst_port: flow.dst_port }.emit(l4, payload.len(), Some(pseudo));
    }
    match (flow.src, flow.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let r = ipv4::Repr {
                src: s.octets(),
                dst: d.octets(),
                protocol: flow.protocol,
                ttl: 64,
                ident: seq as u16,
                tos: 0,
                dont_frag: true,
                payload_len: l4len as u16,
            };
            let _ = r.emit(&mut b);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let r = ipv6::Repr {
                src: s.octets(),
                dst: d.octets(),
                next_header: flow.protocol,
                hop_limit: 64,
                traffic_class: 0,
                flow_label: seq & 0xf_ffff,
                payload_len: l4len as u16,
            };
            let _ = r.emit(&mut b);
        }
        _ => {}
    }
    b
}

/// A packet taken apart again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub flow: Flow,
    pub seq: u32,
    pub payload: Vec<u8>,
    /// IPv4 header checksum (when IPv4) and transport checksum verify.
    pub checksums_ok: bool,
}

/// Parses a plain IP packet carrying TCP or UDP; `None` for anything else (ESP, labels, NSH).
pub fn dissect(pkt: &[u8]) -> Option<Parsed> {
    let s = ip::parse(pkt).ok()?;
    let l4 = pkt.get(s.l4_offset..s.total_len)?;
    let (pseudo, ip_ok) = match (s.tuple.src, s.tuple.dst) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (
            checksum::pseudo_v4(a.octets(), b.octets(), s.tuple.protocol, l4.len() as u16),
            ipv4::Packet::new_checked(pkt).ok()?.verify_checksum(),
        ),
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            (checksum::pseudo_v6(a.octets(), b.octets(), s.tuple.protocol, l4.len() as u32), true)
        }
        _ => return None,
    };
    let (seq, payload, l4_ok) = match s.tuple.protocol {
        ip::protocol::TCP => {
            let t = tcp::Segment::new_checked(l4).ok()?;
            (t.seq(), t.payload().to_vec(), t.verify_checksum(pseudo))
        }
        ip::protocol::UDP => {
            let u = udp::Datagram::new_checked(l4).ok()?;
            (0, u.payload().to_vec(), u.verify_checksum(pseudo))
        }
        _ => return None,
    };
    let t = s.tuple;
    Some(Parsed {
        flow: Flow { src: t.src, dst: t.dst, protocol: t.protocol, src_port: t.src_port, dst_port: t.dst_port },
        seq,
        payload,
        checksums_ok: ip_ok && l4_ok,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_dissects_all_four_kinds() {
        for f in [
            Flow::tcp("10.0.0.1", 1, "10.0.0.2", 2),
            Flow::udp("10.0.0.1", 1, "10.0.0.2", 2),
            Flow::tcp("fd00::1", 1, "fd00::2", 2),
            Flow::udp("fd00::1", 1, "fd00::2", 2),
        ] {
            let p = dissect(&build(&f, 7, b"data")).unwrap();
            assert_eq!(p.flow, f);
            assert_eq!(p.payload, b"data");
            assert!(p.checksums_ok);
        }
    }
}

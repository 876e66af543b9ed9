//! A one-pass summary of an IPv4 or IPv6 packet: addresses, upper-layer protocol and ports,
//! and where ESP goes. The classifier, the proxy cache and ESP all start from it.
use crate::{Error, Result, be16, ipv4, ipv6};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol numbers zsfc looks at.
pub mod protocol {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ESP: u8 = 50;
    /// IPv4 in IP: the next header of a tunnel-mode ESP packet around IPv4.
    pub const IPV4: u8 = 4;
    /// IPv6 in IP: the next header of a tunnel-mode ESP packet around IPv6.
    pub const IPV6: u8 = 41;
    pub const ICMPV6: u8 = 58;
}

/// The classic 5-tuple. Ports are 0 for protocols without ports and for later fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

impl FiveTuple {
    /// The tuple of the answer to this packet.
    pub fn reversed(&self) -> Self {
        Self { src: self.dst, dst: self.src, protocol: self.protocol, src_port: self.dst_port, dst_port: self.src_port }
    }
}

/// What one pass over the IP header(s) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub tuple: FiveTuple,
    /// Offset of the upper-layer header.
    pub l4_offset: usize,
    /// Bytes of the IP packet (may be fewer than the buffer holds: link padding).
    pub total_len: usize,
    /// Where an ESP header is inserted in transport mode, and the offset of the byte that must
    /// then say 50 (IPv4: the protocol field; IPv6: the last preceding Next Header).
    pub esp_offset: usize,
    pub esp_nh_field: usize,
    /// Offset of the byte that names the upper-layer protocol (where ESP is, when it is).
    pub l4_nh_field: usize,
    /// Not the first fragment: no upper-layer header here.
    pub later_fragment: bool,
}

impl Summary {
    pub fn is_v4(&self) -> bool {
        self.tuple.src.is_ipv4()
    }
}

/// Parses the IP packet at the start of `b`.
pub fn parse(b: &[u8]) -> Result<Summary> {
    let (src, dst, proto, l4, total, esp_offset, esp_nh_field, l4_nh_field, later_fragment) =
        match b.first().map(|v| v >> 4) {
            Some(4) => {
                let p = ipv4::Packet::new_checked(b)?;
                let hl = p.header_len();
                (
                    IpAddr::V4(Ipv4Addr::from(p.src())),
                    IpAddr::V4(Ipv4Addr::from(p.dst())),
                    p.protocol(),
                    hl,
                    usize::from(p.total_len()),
                    hl,
                    9,
                    9,
                    p.frag_offset() != 0,
                )
            }
            Some(6) => {
                let p = ipv6::Packet::new_checked(b)?;
                let w = p.walk()?;
                let total = ipv6::HEADER_LEN + usize::from(p.payload_len());
                (
                    IpAddr::V6(Ipv6Addr::from(p.src())),
                    IpAddr::V6(Ipv6Addr::from(p.dst())),
                    w.upper,
                    w.upper_offset,
                    total,
                    w.esp_offset,
                    w.esp_nh_field,
                    w.upper_nh_field,
                    w.later_fragment,
                )
            }
            Some(_) => return Err(Error::Malformed),
            None => return Err(Error::Truncated),
        };
    let (src_port, dst_port) = match proto {
        protocol::TCP | protocol::UDP if !later_fragment => {
            let h = b.get(l4..l4 + 4).filter(|_| l4 + 4 <= total).ok_or(Error::Truncated)?;
            (be16(h, 0), be16(h, 2))
        }
        _ => (0, 0),
    };
    Ok(Summary {
        tuple: FiveTuple { src, dst, protocol: proto, src_port, dst_port },
        l4_offset: l4,
        total_len: total,
        esp_offset,
        esp_nh_field,
        l4_nh_field,
        later_fragment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ipv4, ipv6};

    #[test]
    fn summarises_ipv4_udp() {
        let mut b = [0u8; 28];
        ipv4::Repr {
            src: [10, 0, 0, 1],
            dst: [10, 0, 0, 2],
            protocol: 17,
            ttl: 64,
            ident: 1,
            tos: 0,
            dont_frag: false,
            payload_len: 8,
        }
        .emit(&mut b)
        .unwrap();
        b[20..24].copy_from_slice(&[0x13, 0x88, 0x00, 0x35]);
        let s = parse(&b).unwrap();
        assert_eq!(s.tuple.src_port, 5000);
        assert_eq!(s.tuple.dst_port, 53);
        assert_eq!((s.l4_offset, s.total_len, s.esp_offset, s.esp_nh_field), (20, 28, 20, 9));
        assert_eq!(s.tuple.reversed().reversed(), s.tuple);
    }

    #[test]
    fn summarises_ipv6_tcp_and_rejects_truncated_ports() {
        let mut b = [0u8; 60];
        ipv6::Repr {
            src: [1; 16],
            dst: [2; 16],
            next_header: 6,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
            payload_len: 20,
        }
        .emit(&mut b)
        .unwrap();
        b[40..44].copy_from_slice(&[0, 80, 1, 0]);
        let s = parse(&b).unwrap();
        assert_eq!((s.tuple.protocol, s.tuple.src_port, s.tuple.dst_port), (6, 80, 256));
        let mut short = [0u8; 42];
        ipv6::Repr {
            src: [1; 16],
            dst: [2; 16],
            next_header: 6,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
            payload_len: 2,
        }
        .emit(&mut short)
        .unwrap();
        assert_eq!(parse(&short), Err(Error::Truncated));
        assert_eq!(parse(&[]), Err(Error::Truncated));
        assert_eq!(parse(&[0x50]), Err(Error::Malformed));
    }
}

//! Path MTU at the domain's edge (issue 19 point 6). The domain is a link to the hosts it
//! carries, with a smaller MTU than their own: a classifier that gets an inner packet too large
//! to leave once encapsulated does what a router does with a packet larger than its next hop's
//! MTU — drops it (`too_big`) and tells the sender the MTU that fits, with ICMP "fragmentation
//! needed and DF set" (RFC 792, RFC 1191 §4) or ICMPv6 "packet too big" (RFC 4443 §3.2,
//! RFC 8201), so that TCP lowers its segment size instead of stalling. Every node, the
//! classifier included, also refuses to hand its driver a datagram larger than its link
//! carries (never sent as IP fragments).
//!
//! The errors are rate-limited like a router's (RFC 1812 §4.3.2.8, RFC 4443 §2.4(f)), never
//! sent about an ICMP error, a later fragment or a source that is not a unicast host (RFC 1122
//! §3.2.2, RFC 4443 §2.4(e)), and an IPv4 packet without DF is dropped without one (its sender
//! let the path fragment it; the domain does not: RFC 4459 §3 lists the choices). The error
//! comes from the packet's destination address, as from the end of the link the domain is.
use core::time::Duration;
use std::net::IpAddr;
use zsfc_esp::Instant;
use zsfc_wire::{checksum, icmp, ip, ipv4, ipv6};

/// ICMP errors a node sends per second at most, and its burst.
pub const ICMP_PER_SECOND: u32 = 50;
/// IPv4: an ICMP error carries as much of the packet as fits in 576 bytes (RFC 1812 §4.3.2.3).
const ICMP_V4_MAX: usize = 576;
/// IPv6: as much as fits in the minimum MTU (RFC 4443 §2.4(c)).
const ICMP_V6_MAX: usize = 1280;
use ip::protocol::{ICMP as ICMP_V4, ICMPV6 as ICMP_V6};
const DEST_UNREACHABLE_V4: u8 = 3;
const FRAG_NEEDED: u8 = 4;
const PACKET_TOO_BIG_V6: u8 = 2;

/// The largest inner packet that still fits `max_datagram` once it carries `encap` bytes of
/// labels and NSH, payload ESP in tunnel mode (its outer header of the inner family, at most 3
/// bytes of padding) and, with link protection, link ESP.
pub fn inner_room(max_datagram: u16, encap: usize, v4: bool, link_auth: bool) -> usize {
    let esp = zsfc_esp::OVERHEAD_MAX + if v4 { ipv4::MIN_HEADER_LEN } else { ipv6::HEADER_LEN };
    let link = if link_auth { zsfc_esp::OVERHEAD_MAX } else { 0 };
    usize::from(max_datagram).saturating_sub(encap + esp + link)
}

/// A token bucket for the ICMP errors of one node.
#[derive(Debug, Clone)]
pub struct IcmpLimiter {
    tokens: u32,
    refilled: Option<Instant>,
}

impl Default for IcmpLimiter {
    fn default() -> Self {
        Self { tokens: ICMP_PER_SECOND, refilled: None }
    }
}

impl IcmpLimiter {
    /// Whether one more error may leave at `now`.
    pub fn allow(&mut self, now: Instant) -> bool {
        let since = self.refilled.map_or(Duration::from_secs(1), |t| now.saturating_since(t));
        let earned = (since.as_millis() * u128::from(ICMP_PER_SECOND) / 1000).min(u128::from(ICMP_PER_SECOND)) as u32;
        if earned > 0 || self.refilled.is_none() {
            self.tokens = (self.tokens + earned).min(ICMP_PER_SECOND);
            self.refilled = Some(now);
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// The ICMP error telling the sender of `packet` (an IP packet from the local side) that the
/// path takes at most `mtu` bytes, addressed back to it; `None` where none may be sent (see
/// the module's text).
pub fn too_big(packet: &[u8], mtu: u16) -> Option<Vec<u8>> {
    let s = ip::parse(packet).ok()?;
    if s.later_fragment || !unicast(s.tuple.src) || is_icmp_error(packet, &s) {
        return None;
    }
    let quoted = packet.get(..s.total_len.min(packet.len()))?;
    match (s.tuple.src, s.tuple.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            if !ipv4::Packet::new_checked(packet).ok()?.dont_frag() {
                return None;
            }
            let quoted = &quoted[..quoted.len().min(ICMP_V4_MAX - ipv4::MIN_HEADER_LEN - icmp::HEADER_LEN)];
            let len = icmp::HEADER_LEN + quoted.len();
            let mut out = vec![0u8; ipv4::MIN_HEADER_LEN + len];
            let mut h = ipv4::Repr::new(dst.octets(), src.octets(), ICMP_V4, len as u16);
            h.dont_frag = false;
            h.emit(&mut out).ok()?;
            let m = out.get_mut(ipv4::MIN_HEADER_LEN..)?;
            m.get_mut(icmp::HEADER_LEN..)?.copy_from_slice(quoted);
            // RFC 1191 §4: the next-hop MTU in the low half of the "unused" word.
            icmp::Repr { msg_type: DEST_UNREACHABLE_V4, code: FRAG_NEEDED, ident: 0, seq: mtu }.emit(m, 0).ok()?;
            Some(out)
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let quoted = &quoted[..quoted.len().min(ICMP_V6_MAX - ipv6::HEADER_LEN - icmp::HEADER_LEN)];
            let len = icmp::HEADER_LEN + quoted.len();
            let mut out = vec![0u8; ipv6::HEADER_LEN + len];
            let (from, to) = (dst.octets(), src.octets());
            let h = ipv6::Repr {
                src: from,
                dst: to,
                next_header: ICMP_V6,
                hop_limit: 64,
                traffic_class: 0,
                flow_label: 0,
                payload_len: len as u16,
            };
            h.emit(&mut out).ok()?;
            let m = out.get_mut(ipv6::HEADER_LEN..)?;
            m.get_mut(icmp::HEADER_LEN..)?.copy_from_slice(quoted);
            // RFC 4443 §3.2: the MTU as a 32-bit word.
            let pseudo = checksum::pseudo_v6(from, to, ICMP_V6, len as u32);
            icmp::Repr { msg_type: PACKET_TOO_BIG_V6, code: 0, ident: 0, seq: mtu }.emit(m, pseudo).ok()?;
            Some(out)
        }
        _ => None,
    }
}

/// A host that can be told: not multicast, broadcast, unspecified or loopback.
fn unicast(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => !(v.is_multicast() || v.is_broadcast() || v.is_unspecified() || v.is_loopback()),
        IpAddr::V6(v) => !(v.is_multicast() || v.is_unspecified() || v.is_loopback()),
    }
}

/// ICMP errors are never answered with one (ICMPv4: every type but echo, timestamp and
/// information messages; ICMPv6: types below 128).
fn is_icmp_error(packet: &[u8], s: &ip::Summary) -> bool {
    let Some(&t) = packet.get(s.l4_offset) else { return false };
    match s.tuple.protocol {
        ICMP_V4 => !matches!(t, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18),
        ICMP_V6 => t < 128,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zsfc_wire::checksum;

    fn v4(len: usize, df: bool, proto: u8) -> Vec<u8> {
        let mut p = vec![0u8; len];
        let mut h = ipv4::Repr::new([10, 1, 0, 5], [10, 9, 0, 1], proto, (len - 20) as u16);
        h.dont_frag = df;
        h.emit(&mut p).unwrap();
        p
    }

    #[test]
    fn an_ipv4_packet_with_df_gets_fragmentation_needed_with_the_mtu() {
        let p = v4(1400, true, 6);
        let e = too_big(&p, 1300).unwrap();
        let h = ipv4::Packet::new_checked(&e[..]).unwrap();
        assert_eq!((h.src(), h.dst(), h.protocol()), ([10, 9, 0, 1], [10, 1, 0, 5], ICMP_V4));
        assert_eq!(checksum::finish(checksum::sum(&e[..20])), 0, "IP header checksum");
        let m = icmp::Message::new_checked(&e[20..]).unwrap();
        assert_eq!((m.msg_type(), m.code(), m.echo_ident(), m.echo_seq()), (3, 4, 0, 1300));
        assert!(m.verify_checksum(0));
        assert_eq!(e.len(), 576, "as much of the packet as fits in 576 bytes");
        assert_eq!(&m.payload()[..20], &p[..20], "the original header");
    }

    #[test]
    fn no_error_without_df_about_an_icmp_error_or_to_a_broadcast_source() {
        assert!(too_big(&v4(1400, false, 6), 1300).is_none(), "no DF: the sender allowed fragments");
        let mut e = v4(600, true, ICMP_V4);
        e[20] = 3;
        assert!(too_big(&e, 500).is_none(), "an ICMP error");
        e[20] = 8;
        assert!(too_big(&e, 500).is_some(), "an echo request is told");
        let mut b = v4(1400, true, 6);
        b[12..16].copy_from_slice(&[255, 255, 255, 255]);
        assert!(too_big(&b, 1300).is_none());
        assert!(too_big(b"\x45garbage", 1300).is_none());
    }

    #[test]
    fn an_ipv6_packet_gets_packet_too_big_within_1280_bytes() {
        let mut p = vec![0u8; 1500];
        let (src, dst) =
            ([0xfd, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5], [0xfd, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        let r =
            ipv6::Repr { src, dst, next_header: 17, hop_limit: 64, traffic_class: 0, flow_label: 7, payload_len: 1460 };
        r.emit(&mut p).unwrap();
        let e = too_big(&p, 1320).unwrap();
        assert_eq!(e.len(), 1280);
        let h = ipv6::Packet::new_checked(&e[..]).unwrap();
        assert_eq!((h.src(), h.dst(), h.next_header()), (dst, src, ICMP_V6));
        let m = icmp::Message::new_checked(&e[40..]).unwrap();
        assert_eq!((m.msg_type(), m.code(), m.echo_seq()), (2, 0, 1320));
        assert!(m.verify_checksum(checksum::pseudo_v6(dst, src, ICMP_V6, 1240)));
    }

    #[test]
    fn the_limiter_lets_a_burst_through_then_its_rate() {
        let mut l = IcmpLimiter::default();
        let t0 = Instant::from_secs(10);
        let burst = (0..200).filter(|_| l.allow(t0)).count();
        assert_eq!(burst, ICMP_PER_SECOND as usize);
        assert!(!l.allow(Instant::from_millis(10_010)));
        let later = (0..200).filter(|_| l.allow(Instant::from_millis(10_500))).count();
        assert_eq!(later, ICMP_PER_SECOND as usize / 2, "half a second earns half the rate");
    }

    #[test]
    fn the_inner_room_leaves_space_for_every_header() {
        // 1472 bytes of UDP payload (1500 - 28), 2 labels: 8 + ESP (20 + 37) + link ESP 37.
        assert_eq!(inner_room(1472, 8, true, true), 1472 - 8 - 57 - 37);
        assert_eq!(inner_room(1472, 8, false, false), 1472 - 8 - 77);
        assert_eq!(inner_room(10, 8, true, true), 0);
    }
}

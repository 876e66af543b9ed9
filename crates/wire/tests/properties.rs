//! Property tests: every parser accepts any bytes without panicking, and parse(emit(x)) == x.
use proptest::prelude::*;
use zsfc_wire::{esp, ethernet, icmp, ip, ipv4, ipv6, mpls, nsh, tcp, udp};

proptest! {
    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = ethernet::Frame::new_checked(&bytes[..]);
        let _ = mpls::stack_depth(&bytes, mpls::DEFAULT_MAX_DEPTH);
        let _ = mpls::in_udp::check(&bytes, mpls::DEFAULT_MAX_DEPTH);
        let _ = ip::parse(&bytes);
        let _ = ipv6::walk(&bytes);
        if let Ok(p) = ipv4::Packet::new_checked(&bytes[..]) { let _ = (p.payload(), p.options(), p.verify_checksum()); }
        if let Ok(p) = tcp::Segment::new_checked(&bytes[..]) { let _ = (p.payload(), p.options()); }
        if let Ok(p) = udp::Datagram::new_checked(&bytes[..]) { let _ = p.payload(); }
        if let Ok(p) = icmp::Message::new_checked(&bytes[..]) { let _ = p.payload(); }
        if let Ok(p) = esp::Packet::new_checked(&bytes[..]) { let _ = (p.ciphertext(), p.icv()); }
        let _ = esp::parse_trailer(&bytes);
        if let Ok(h) = nsh::Header::new_checked(&bytes[..]) { let _ = h.tlvs().count(); }
    }

    #[test]
    fn label_stack_round_trips(labels in proptest::collection::vec(16u32..=mpls::LABEL_MAX, 1..=16), ttl: u8) {
        let mut b = vec![0u8; labels.len() * 4];
        mpls::emit_stack(&labels, ttl, &mut b).unwrap();
        prop_assert_eq!(mpls::stack_depth(&b, 16), Ok(labels.len()));
        let back: Vec<u32> = mpls::entries(&b).map(mpls::Lse::label).collect();
        prop_assert_eq!(back, labels);
    }

    #[test]
    fn ipv4_round_trips(src: [u8; 4], dst: [u8; 4], protocol: u8, ttl: u8, ident: u16, tos: u8, dont_frag: bool, payload_len in 0u16..100) {
        let r = ipv4::Repr { src, dst, protocol, ttl, ident, tos, dont_frag, payload_len };
        let mut b = vec![0u8; 20 + usize::from(payload_len)];
        r.emit(&mut b).unwrap();
        let p = ipv4::Packet::new_checked(&b[..]).unwrap();
        prop_assert!(p.verify_checksum());
        prop_assert_eq!(ipv4::Repr::parse(&p), r);
    }

    #[test]
    fn ipv6_round_trips(src: [u8; 16], dst: [u8; 16], next_header: u8, hop_limit: u8, traffic_class: u8, flow_label in 0u32..0x10_0000, payload_len in 0u16..100) {
        let r = ipv6::Repr { src, dst, next_header, hop_limit, traffic_class, flow_label, payload_len };
        let mut b = vec![0u8; 40 + usize::from(payload_len)];
        r.emit(&mut b).unwrap();
        prop_assert_eq!(ipv6::Repr::parse(&ipv6::Packet::new_checked(&b[..]).unwrap()), r);
    }

    #[test]
    fn l4_round_trips(src_port: u16, dst_port: u16, seq: u32, ack: u32, flags: u8, window: u16, payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut b = vec![0u8; 20 + payload.len()];
        b[20..].copy_from_slice(&payload);
        let t = tcp::Repr { src_port, dst_port, seq, ack, flags, window };
        t.emit(&mut b, Some(0)).unwrap();
        let s = tcp::Segment::new_checked(&b[..]).unwrap();
        prop_assert!(s.verify_checksum(0));
        prop_assert_eq!(tcp::Repr::parse(&s), t);
        let u = udp::Repr { src_port, dst_port };
        u.emit(&mut b, payload.len() + 12, Some(0)).unwrap();
        let d = udp::Datagram::new_checked(&b[..]).unwrap();
        prop_assert!(d.verify_checksum(0));
        prop_assert_eq!(udp::Repr::parse(&d), u);
        let i = icmp::Repr { msg_type: 8, code: 0, ident: src_port, seq: dst_port };
        i.emit(&mut b, 0).unwrap();
        prop_assert_eq!(icmp::Repr::parse(&icmp::Message::new_checked(&b[..]).unwrap()), i);
    }

    #[test]
    fn nsh_round_trips(ttl in 0u8..64, spi in 0u32..0x100_0000, si: u8, next_proto: u8, words in 0usize..20) {
        let ctx = vec![0u8; words * 4];
        let mut tl = Vec::new();
        for _ in 0..words { tl.extend_from_slice(&[0, 1, 2, 0]); }
        let r = nsh::Repr { ttl, md_type: nsh::MD_TYPE_2, next_proto, spi, si, context: if words > 0 { &tl } else { &ctx } };
        let mut b = vec![0u8; r.wire_len()];
        r.emit(&mut b).unwrap();
        let h = nsh::Header::new_checked(&b[..]).unwrap();
        prop_assert_eq!(nsh::Repr::parse(&h), r);
        prop_assert_eq!(h.tlvs().count(), words);
    }
}

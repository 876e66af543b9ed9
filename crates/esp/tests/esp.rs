//! ESP seal/open behaviour on real IPv4 and IPv6 packets.
#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests and benchmarks: a failure should stop them loudly, with its place"
)]
use zsfc_esp::*;
use zsfc_wire::{PacketBuf, checksum, ip, ipv4, ipv6, tcp, udp};

const SPI: u32 = 0x0100_0001;

fn v4_tcp(payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; 40 + payload.len()];
    b[40..].copy_from_slice(payload);
    let pseudo = checksum::pseudo_v4([10, 0, 0, 1], [10, 0, 0, 2], 6, (20 + payload.len()) as u16);
    tcp::Repr { src_port: 40000, dst_port: 80, seq: 7, ack: 9, flags: tcp::flags::ACK, window: 100 }
        .emit(&mut b[20..], Some(pseudo))
        .unwrap();
    ipv4::Repr::new([10, 0, 0, 1], [10, 0, 0, 2], 6, (20 + payload.len()) as u16).emit(&mut b).unwrap();
    b
}

/// IPv6 + hop-by-hop (8) + destination options (8) + UDP.
fn v6_udp_ext(payload: &[u8]) -> Vec<u8> {
    let l4 = 8 + payload.len();
    let mut b = vec![0u8; 40 + 16 + l4];
    b[64..].copy_from_slice(payload);
    udp::Repr { src_port: 5000, dst_port: 53 }
        .emit(&mut b[56..], payload.len(), Some(checksum::pseudo_v6([1; 16], [2; 16], 17, l4 as u32)))
        .unwrap();
    b[40] = ipv6::ext::DEST_OPTS;
    b[48] = 17;
    ipv6::Repr {
        src: [1; 16],
        dst: [2; 16],
        next_header: ipv6::ext::HOP_BY_HOP,
        hop_limit: 9,
        traffic_class: 0,
        flow_label: 1,
        payload_len: (16 + l4) as u16,
    }
    .emit(&mut b)
    .unwrap();
    b
}

fn pair(alg: Algorithm, esn: bool, lifetimes: Lifetimes) -> (OutboundSa, InboundSa) {
    let key = SaKey::generate(alg).unwrap();
    let cfg = SaConfig { esn, lifetimes, ..SaConfig::new(SPI, key) };
    (OutboundSa::new(&cfg, Instant::ZERO).unwrap(), InboundSa::new(&cfg, Instant::ZERO).unwrap())
}

#[test]
fn seals_and_opens_ipv4_and_ipv6_for_both_key_sizes_and_all_paddings() {
    for alg in [Algorithm::Aes128Gcm, Algorithm::Aes256Gcm] {
        for esn in [false, true] {
            let (mut tx, mut rx) = pair(alg, esn, Lifetimes::default());
            for n in 0..9 {
                for orig in [v4_tcp(&vec![0x61; n]), v6_udp_ext(&vec![0x62; n])] {
                    let mut b = PacketBuf::from_slice(&orig);
                    let head_before = b.headroom();
                    let sealed = tx.seal(Instant::ZERO, &mut b).unwrap();
                    let inner = ip::parse(&orig).unwrap();
                    let outer_len = if inner.is_v4() { 20 } else { 40 };
                    assert_eq!(b.headroom(), head_before - outer_len - 16, "outer header, ESP header and IV in front");
                    let s = ip::parse(b.as_slice()).unwrap();
                    assert_eq!((s.tuple.protocol, s.l4_offset), (50, outer_len), "no options, no extension headers");
                    assert_eq!((s.tuple.src, s.tuple.dst), (inner.tuple.src, inner.tuple.dst), "addresses copied");
                    assert_eq!(s.total_len, b.len());
                    assert_eq!((b.len() - s.l4_offset - 16 - 16) % 4, 0);
                    assert_eq!(spi_of(b.as_slice()).unwrap(), SPI);
                    let iv = &b.as_slice()[s.l4_offset + 8..s.l4_offset + 16];
                    assert_eq!(iv, &sealed.seq.to_be_bytes(), "IV is the 64-bit sequence number");
                    assert!(!b.as_slice().windows(4).any(|w| w == [0x61; 4] || w == [0x62; 4]), "payload is encrypted");
                    let opened = rx.open(Instant::ZERO, &mut b).unwrap();
                    assert_eq!(opened.seq, sealed.seq);
                    assert_eq!(b.as_slice(), &orig[..]);
                    if orig[0] >> 4 == 4 {
                        assert!(ipv4::Packet::new_checked(b.as_slice()).unwrap().verify_checksum());
                    }
                }
            }
        }
    }
}

#[test]
fn independent_aes_gcm_decrypts_our_packets() {
    use aes_gcm::aead::{AeadInPlace, KeyInit};
    let keymat = [7u8; 36];
    for esn in [false, true] {
        let cfg = SaConfig { esn, ..SaConfig::new(SPI, SaKey::new(Algorithm::Aes256Gcm, &keymat).unwrap()) };
        let mut tx = OutboundSa::new(&cfg, Instant::ZERO).unwrap();
        let orig = v4_tcp(b"interop check");
        let mut b = PacketBuf::from_slice(&orig);
        let sealed = tx.seal(Instant::ZERO, &mut b).unwrap();
        let pkt = b.as_slice();
        let esp = &pkt[20..];
        // RFC 4106 §4: nonce = salt ‖ IV; §5: AAD = SPI ‖ seq (or SPI ‖ ESN).
        let mut nonce = [0u8; 12];
        nonce[..4].copy_from_slice(&keymat[32..]);
        nonce[4..].copy_from_slice(&esp[8..16]);
        let mut aad = SPI.to_be_bytes().to_vec();
        if esn {
            aad.extend_from_slice(&sealed.seq.to_be_bytes());
        } else {
            aad.extend_from_slice(&(sealed.seq as u32).to_be_bytes());
        }
        let mut body = esp[16..esp.len() - 16].to_vec();
        let tag = aes_gcm::Tag::clone_from_slice(&esp[esp.len() - 16..]);
        aes_gcm::Aes256Gcm::new_from_slice(&keymat[..32])
            .unwrap()
            .decrypt_in_place_detached(&nonce.into(), &aad, &mut body, &tag)
            .unwrap();
        let (len, nh) = zsfc_wire::esp::parse_trailer(&body).unwrap();
        assert_eq!(nh, 4, "tunnel mode: IPv4 inside");
        assert_eq!(&body[..len], &orig[..], "the whole inner packet");
    }
}

/// The other direction: tunnel-mode packets sealed by an independent AES-GCM (RFC 4106) open,
/// with and without ESN; an authentic transport-mode packet (next header 6) is refused.
#[test]
fn packets_of_an_independent_sender_open_and_transport_mode_is_refused() {
    use aes_gcm::aead::{AeadInPlace, KeyInit};
    let keymat = [3u8; 36];
    let aes = aes_gcm::Aes256Gcm::new_from_slice(&keymat[..32]).unwrap();
    for esn in [false, true] {
        let cfg = SaConfig { esn, ..SaConfig::new(SPI, SaKey::new(Algorithm::Aes256Gcm, &keymat).unwrap()) };
        let mut rx = InboundSa::new(&cfg, Instant::ZERO).unwrap();
        for (seq, next_header) in [(1u64, 4u8), (2, 6)] {
            let orig = v4_tcp(b"from elsewhere");
            let (payload, outer) =
                if next_header == 4 { (&orig[..], orig[..20].to_vec()) } else { (&orig[20..], orig[..20].to_vec()) };
            let mut body = payload.to_vec();
            let pad = (4 - (body.len() + 2) % 4) % 4;
            body.extend((1..=pad as u8).chain([pad as u8, next_header]));
            let iv = (seq ^ 0x1234_5678_9abc_def0).to_be_bytes(); // any IV the sender likes
            let mut nonce = [0u8; 12];
            nonce[..4].copy_from_slice(&keymat[32..]);
            nonce[4..].copy_from_slice(&iv);
            let mut aad = SPI.to_be_bytes().to_vec();
            if esn {
                aad.extend_from_slice(&seq.to_be_bytes());
            } else {
                aad.extend_from_slice(&(seq as u32).to_be_bytes());
            }
            let tag = aes.encrypt_in_place_detached(&nonce.into(), &aad, &mut body).unwrap();
            let mut pkt = outer;
            pkt.extend_from_slice(&SPI.to_be_bytes());
            pkt.extend_from_slice(&(seq as u32).to_be_bytes());
            pkt.extend_from_slice(&iv);
            pkt.extend_from_slice(&body);
            pkt.extend_from_slice(&tag);
            let total = pkt.len() as u16;
            pkt[2..4].copy_from_slice(&total.to_be_bytes());
            pkt[9] = 50;
            ipv4::Packet::new_checked(&mut pkt[..]).unwrap().fill_checksum();
            let mut b = PacketBuf::from_slice(&pkt);
            match next_header {
                4 => {
                    rx.open(Instant::ZERO, &mut b).unwrap();
                    assert_eq!(b.as_slice(), &orig[..]);
                }
                _ => assert_eq!(rx.open(Instant::ZERO, &mut b), Err(OpenError::NotTunnel(6))),
            }
        }
    }
}

/// Issue 18: the inner header is authenticated end to end. An on-path rewrite of the outer
/// addresses — even one that keeps the IPv4 checksum (source and destination changed by
/// opposite amounts) — or of the IPv6 flow label is refused after authentication; mutable
/// fields (TTL, DSCP) may change, and the packet delivered is the inner one the sender sealed.
#[test]
fn a_rewritten_outer_header_is_refused_and_mutable_fields_are_not_delivered() {
    let (mut tx, mut rx) = pair(Algorithm::Aes256Gcm, true, Lifetimes::default());
    let seal = |tx: &mut OutboundSa, orig: &[u8]| {
        let mut b = PacketBuf::from_slice(orig);
        tx.seal(Instant::ZERO, &mut b).unwrap();
        b.as_slice().to_vec()
    };
    let orig = v4_tcp(b"to 10.0.0.2");
    // Checksum-neutral: destination +1, source -1 in the same 16-bit word position.
    let mut t = seal(&mut tx, &orig);
    t[19] += 1;
    t[15] -= 1;
    assert!(ipv4::Packet::new_checked(&t[..]).unwrap().verify_checksum(), "the rewrite keeps the checksum");
    assert_eq!(rx.open(Instant::ZERO, &mut PacketBuf::from_slice(&t)), Err(OpenError::HeaderMismatch));
    // TTL and DSCP are mutable on the way: accepted, and the inner header is what arrives.
    let mut t = seal(&mut tx, &orig);
    t[8] = 3;
    t[1] = 0xb8;
    ipv4::Packet::new_checked(&mut t[..]).unwrap().fill_checksum();
    let mut b = PacketBuf::from_slice(&t);
    rx.open(Instant::ZERO, &mut b).unwrap();
    assert_eq!(b.as_slice(), &orig[..]);
    // IPv6: destination and flow label.
    let orig6 = v6_udp_ext(b"six");
    for at in [39usize, 3] {
        let mut t = seal(&mut tx, &orig6);
        t[at] ^= 1;
        assert_eq!(rx.open(Instant::ZERO, &mut PacketBuf::from_slice(&t)), Err(OpenError::HeaderMismatch), "byte {at}");
    }
    let mut b = PacketBuf::from_slice(&seal(&mut tx, &orig6));
    rx.open(Instant::ZERO, &mut b).unwrap();
    assert_eq!(b.as_slice(), &orig6[..]);
}

#[test]
fn any_changed_byte_of_esp_is_rejected() {
    let cfg = SaConfig::new(SPI, SaKey::generate(Algorithm::Aes256Gcm).unwrap());
    let mut tx = OutboundSa::new(&cfg, Instant::ZERO).unwrap();
    let mut b = PacketBuf::from_slice(&v4_tcp(b"tamper me"));
    tx.seal(Instant::ZERO, &mut b).unwrap();
    let sealed = b.as_slice().to_vec();
    InboundSa::new(&cfg, Instant::ZERO).unwrap().open(Instant::ZERO, &mut PacketBuf::from_slice(&sealed)).unwrap();
    for i in 20..sealed.len() {
        for bit in [0x01, 0x80] {
            let mut t = sealed.clone();
            t[i] ^= bit;
            let mut rx = InboundSa::new(&cfg, Instant::ZERO).unwrap();
            assert!(
                rx.open(Instant::ZERO, &mut PacketBuf::from_slice(&t)).is_err(),
                "byte {i} ^ {bit:#x} was accepted"
            );
            assert_eq!(rx.highest_seq(), 0, "a rejected packet moved the window");
        }
    }
}

#[test]
fn replayed_packet_is_rejected_and_only_after_authentication_moves_the_window() {
    let (mut tx, mut rx) = pair(Algorithm::Aes128Gcm, true, Lifetimes::default());
    let mut b = PacketBuf::from_slice(&v4_tcp(b"once"));
    tx.seal(Instant::ZERO, &mut b).unwrap();
    let copy = b.as_slice().to_vec();
    rx.open(Instant::ZERO, &mut b).unwrap();
    let mut again = PacketBuf::from_slice(&copy);
    assert!(matches!(rx.open(Instant::ZERO, &mut again), Err(OpenError::Replay(ReplayError::Replayed))));
    // A forged packet with a high sequence number fails authentication and leaves the window.
    let mut forged = copy.clone();
    forged[24..28].copy_from_slice(&1000u32.to_be_bytes());
    assert_eq!(rx.open(Instant::ZERO, &mut PacketBuf::from_slice(&forged)), Err(OpenError::Auth));
    assert_eq!(rx.highest_seq(), 1);
}

#[test]
fn sender_reports_soft_and_refuses_at_hard_limit() {
    let lt = Lifetimes {
        soft: Limits { packets: 2, ..Limits::UNLIMITED },
        hard: Limits { packets: 3, time_ns: 10_000_000_000, ..Limits::UNLIMITED },
    };
    let (mut tx, mut rx) = pair(Algorithm::Aes256Gcm, true, lt);
    let mut out = Vec::new();
    for _ in 0..3 {
        let mut b = PacketBuf::from_slice(&v4_tcp(b"x"));
        out.push(tx.seal(Instant::ZERO, &mut b).unwrap().rekey_wanted);
        rx.open(Instant::ZERO, &mut b).unwrap();
    }
    assert_eq!(out, vec![false, true, true]);
    let mut b = PacketBuf::from_slice(&v4_tcp(b"x"));
    assert_eq!(tx.seal(Instant::ZERO, &mut b), Err(SealError::HardLimit(Limit::Packets)));
    let (mut tx, mut rx) = pair(Algorithm::Aes256Gcm, true, lt);
    let mut b = PacketBuf::from_slice(&v4_tcp(b"x"));
    tx.seal(Instant::ZERO, &mut b).unwrap();
    assert_eq!(
        tx.seal(Instant::from_secs(10), &mut PacketBuf::from_slice(&v4_tcp(b"x"))),
        Err(SealError::HardLimit(Limit::Time))
    );
    assert_eq!(rx.open(Instant::from_secs(11), &mut b), Err(OpenError::Expired(Limit::Time)));
}

#[test]
fn refuses_non_ip_and_later_fragments() {
    let (mut tx, _) = pair(Algorithm::Aes256Gcm, true, Lifetimes::default());
    assert!(matches!(tx.seal(Instant::ZERO, &mut PacketBuf::from_slice(b"\x00garbage")), Err(SealError::Packet(_))));
    let mut frag = v4_tcp(b"frag");
    frag[7] = 5; // fragment offset 5
    let mut p = ipv4::Packet::new_checked(&mut frag[..]).unwrap();
    p.fill_checksum();
    assert!(matches!(tx.seal(Instant::ZERO, &mut PacketBuf::from_slice(&frag)), Err(SealError::Packet(_))));
}

#[test]
fn debug_output_redacts_keys() {
    let (tx, rx) = pair(Algorithm::Aes256Gcm, true, Lifetimes::default());
    for s in [format!("{tx:?}"), format!("{rx:?}")] {
        assert!(s.contains("<redacted>"), "{s}");
    }
}

#[test]
fn opens_thousands_of_packets_across_window_boundaries_with_and_without_esn() {
    for esn in [true, false] {
        let (mut tx, mut rx) = pair(Algorithm::Aes128Gcm, esn, Lifetimes::default());
        let mut held = Vec::new();
        for i in 0..3000u32 {
            let mut b = PacketBuf::from_slice(&v4_tcp(b"n"));
            tx.seal(Instant::ZERO, &mut b).unwrap();
            // Every 7th packet arrives 5 packets late (inside the window).
            if i % 7 == 0 {
                held.push(b);
            } else {
                rx.open(Instant::ZERO, &mut b).unwrap();
            }
            if held.len() > 5 || i == 2999 {
                for mut h in held.drain(..) {
                    rx.open(Instant::ZERO, &mut h).unwrap();
                }
            }
        }
        assert_eq!(rx.highest_seq(), 3000);
    }
}

/// A labelled packet as the link transport carries it (two label stack entries and some bytes).
fn labelled(len: usize) -> Vec<u8> {
    let mut b: Vec<u8> = (0..len).map(|i| i as u8).collect();
    b[..8].copy_from_slice(&[0, 1, 0x40, 64, 0, 2, 0x01, 64]);
    b
}

#[test]
fn link_seal_and_open_round_trip_for_gmac_and_gcm() {
    for alg in [Algorithm::Aes128Gmac, Algorithm::Aes256Gmac, Algorithm::Aes256Gcm] {
        let (mut tx, mut rx) = pair(alg, true, Lifetimes::default());
        for len in [8, 9, 10, 11, 1400] {
            let orig = labelled(len);
            let mut b = PacketBuf::from_slice(&orig);
            tx.seal_link(Instant::ZERO, &mut b, 137).unwrap();
            assert_eq!(&b.as_slice()[..4], &SPI.to_be_bytes());
            // GMAC leaves the payload readable on the wire; GCM does not.
            assert_eq!(b.as_slice()[16..16 + len] == orig[..], alg.authenticates_only(), "{alg:?}");
            let o = rx.open_link(Instant::ZERO, &mut b).unwrap();
            assert_eq!(o.next_header, 137);
            assert_eq!(b.as_slice(), &orig[..]);
        }
    }
}

#[test]
fn link_packets_refuse_every_changed_byte_and_every_replay() {
    let (mut tx, rx) = pair(Algorithm::Aes128Gmac, true, Lifetimes::default());
    let mut rx = rx;
    let mut b = PacketBuf::from_slice(&labelled(60));
    tx.seal_link(Instant::ZERO, &mut b, 137).unwrap();
    let sealed = b.as_slice().to_vec();
    for i in 0..sealed.len() {
        let mut t = sealed.clone();
        t[i] ^= 0x04;
        assert!(rx.open_link(Instant::ZERO, &mut PacketBuf::from_slice(&t)).is_err(), "byte {i} was accepted");
    }
    assert_eq!(rx.highest_seq(), 0, "a rejected packet moved the window");
    rx.open_link(Instant::ZERO, &mut PacketBuf::from_slice(&sealed)).unwrap();
    assert_eq!(
        rx.open_link(Instant::ZERO, &mut PacketBuf::from_slice(&sealed)),
        Err(OpenError::Replay(ReplayError::Replayed))
    );
}

/// RFC 4543 §3.3 with an independent AES-GCM: the AAD is SPI ‖ (seq-high ‖) seq-low ‖ IV ‖
/// payload ‖ trailer — seq-high only with ESN, and not on the wire.
fn rfc4543_aad(p: &[u8], esn_high: Option<u32>) -> Vec<u8> {
    let body = &p[..p.len() - 16];
    let mut aad = body[..4].to_vec();
    if let Some(hi) = esn_high {
        aad.extend_from_slice(&hi.to_be_bytes());
    }
    aad.extend_from_slice(&body[4..]);
    aad
}

#[test]
fn gmac_link_packets_follow_rfc4543_across_the_2_32_boundary_and_accept_any_iv() {
    use aes_gcm::aead::{AeadInPlace, KeyInit};
    let keymat = [7u8; 20];
    let aes = aes_gcm::Aes128Gcm::new_from_slice(&keymat[..16]).unwrap();
    let nonce_of = |iv: &[u8]| {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&keymat[16..]);
        n[4..].copy_from_slice(iv);
        n
    };
    for esn in [true, false] {
        let first_seq = if esn { (1u64 << 32) - 3 } else { 1000 };
        let cfg =
            SaConfig { esn, first_seq, ..SaConfig::new(SPI, SaKey::new(Algorithm::Aes128Gmac, &keymat).unwrap()) };
        let mut tx = OutboundSa::new(&cfg, Instant::ZERO).unwrap();
        let mut rx = InboundSa::new(&cfg, Instant::ZERO).unwrap();
        for i in 1..=6u64 {
            let seq = first_seq + i;
            // Ours, verified independently.
            let mut b = PacketBuf::from_slice(&labelled(40));
            tx.seal_link(Instant::ZERO, &mut b, 137).unwrap();
            let p = b.as_slice().to_vec();
            assert_eq!(&p[4..8], &(seq as u32).to_be_bytes());
            let hi = esn.then_some((seq >> 32) as u32);
            let tag = aes_gcm::Tag::clone_from_slice(&p[p.len() - 16..]);
            aes.decrypt_in_place_detached(&nonce_of(&p[8..16]).into(), &rfc4543_aad(&p, hi), &mut [], &tag)
                .unwrap_or_else(|_| panic!("esn {esn}, seq {seq:#x}: not RFC 4543"));
            // An independent sender's, with an IV that is not the sequence number (as Linux
            // sends seq XOR salt): accepted once, by the AAD alone.
            let mut q = p[..p.len() - 16].to_vec();
            q[..4].copy_from_slice(&SPI.to_be_bytes());
            q[8..16].copy_from_slice(&(seq ^ 0x5a5a_5a5a_0000_ffff).to_be_bytes());
            let tag = aes
                .encrypt_in_place_detached(
                    &nonce_of(&q[8..16]).into(),
                    &rfc4543_aad(&[&q[..], &[0; 16]].concat(), hi),
                    &mut [],
                )
                .unwrap();
            q.extend_from_slice(&tag);
            let o = rx.open_link(Instant::ZERO, &mut PacketBuf::from_slice(&q)).unwrap();
            assert_eq!((o.seq, o.next_header), (seq, 137));
            // The same packet with the ICV over the wire bytes only (no seq-high) is refused
            // under ESN.
            if esn {
                let mut r = q[..q.len() - 16].to_vec();
                r[4..8].copy_from_slice(&((seq + 100) as u32).to_be_bytes());
                let tag = aes.encrypt_in_place_detached(&nonce_of(&r[8..16]).into(), &r, &mut []).unwrap();
                r.extend_from_slice(&tag);
                assert_eq!(rx.open_link(Instant::ZERO, &mut PacketBuf::from_slice(&r)), Err(OpenError::Auth));
            }
        }
        assert_eq!(rx.highest_seq(), first_seq + 6);
    }
}

#[test]
fn payload_transforms_refuse_gmac_sas() {
    let (mut tx, mut rx) = pair(Algorithm::Aes128Gmac, true, Lifetimes::default());
    let mut b = PacketBuf::from_slice(&v4_tcp(b"x"));
    assert_eq!(tx.seal(Instant::ZERO, &mut b), Err(SealError::AuthOnly));
    let (mut gcm, _) = pair(Algorithm::Aes128Gcm, true, Lifetimes::default());
    gcm.seal(Instant::ZERO, &mut b).unwrap();
    assert_eq!(rx.open(Instant::ZERO, &mut b), Err(OpenError::AuthOnly));
}

/// RFC 4303 §2.6: a dummy packet (next header 59) is authenticated like any other — its
/// sequence number taken, a replay of it refused — and then discarded, never delivered; on a
/// payload SA and on a link SA alike.
#[test]
fn dummy_packets_are_authenticated_then_discarded() {
    let (mut tx, mut rx) = pair(Algorithm::Aes256Gcm, true, Lifetimes::default());
    // A payload ESP packet whose trailer says 59 (the same RFC 4106 transform, sealed around
    // padding bytes), behind an outer IPv4 header.
    let mut b = PacketBuf::from_slice(b"padding of a dummy");
    tx.seal_link(Instant::ZERO, &mut b, NEXT_HEADER_DUMMY).unwrap();
    let esp_len = b.len() as u16;
    ipv4::Repr::new([10, 0, 0, 1], [10, 0, 0, 2], 50, esp_len).emit(b.push_front(20).unwrap()).unwrap();
    let sealed = b.as_slice().to_vec();
    assert_eq!(rx.open(Instant::ZERO, &mut b), Err(OpenError::Dummy));
    let replayed = rx.open(Instant::ZERO, &mut PacketBuf::from_slice(&sealed));
    assert!(matches!(replayed, Err(OpenError::Replay(_))), "{replayed:?}");
    // A real packet after it still opens.
    let mut b = PacketBuf::from_slice(&v4_tcp(b"data"));
    tx.seal(Instant::ZERO, &mut b).unwrap();
    assert!(rx.open(Instant::ZERO, &mut b).is_ok());
    for alg in [Algorithm::Aes128Gmac, Algorithm::Aes256Gcm] {
        let (mut tx, mut rx) = pair(alg, true, Lifetimes::default());
        let mut b = PacketBuf::from_slice(&labelled(40));
        tx.seal_link(Instant::ZERO, &mut b, NEXT_HEADER_DUMMY).unwrap();
        assert_eq!(rx.open_link(Instant::ZERO, &mut b), Err(OpenError::Dummy), "{alg:?}");
    }
    // A forged dummy is an authentication failure, not a dummy.
    let mut forged = sealed.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let (_, mut fresh) = pair(Algorithm::Aes256Gcm, true, Lifetimes::default());
    assert!(!matches!(fresh.open(Instant::ZERO, &mut PacketBuf::from_slice(&forged)), Err(OpenError::Dummy)));
}

//! Unit tests of the engine: configuration refusals, link protection, key erasure, retired SAs.
use super::*;
use zsfc_esp::{Algorithm, SaKey};

fn node_with_sa() -> Node {
    let mut n = Node::new(NodeSettings { max_label_depth: 4, ..NodeSettings::default() });
    let sa = SaConfig::new(0x77, SaKey::generate(Algorithm::Aes128Gcm).unwrap());
    n.install_outbound(SaIdx(0), &sa, Instant::ZERO).unwrap();
    n
}

fn chain(labels: Vec<u32>, sa: u32) -> ChainSpec {
    ChainSpec { id: ChainId(7), labels, sa: SaIdx(sa), sa_via: Vec::new(), nsh: None, ttl: 64, integrity: None }
}

#[test]
fn refuses_bad_chains_naming_the_field() {
    let mut n = node_with_sa();
    let e = n.add_chain(chain(vec![20, 21, 22, 23, 24], 0)).unwrap_err();
    assert_eq!(e.to_string(), "chain 7: labels: 5 labels exceed the depth limit 4");
    let e = n.add_chain(chain(vec![3], 0)).unwrap_err();
    assert!(e.to_string().starts_with("chain 7: labels: label 3: must be in 16..="), "{e}");
    assert_eq!(n.add_chain(chain(vec![20], 5)).unwrap_err().to_string(), "chain 7: sa: outbound SA 5 is not installed");
    assert!(n.add_chain(chain(vec![], 0)).unwrap_err().to_string().contains("at least one label"));
    let bad_nsh = ChainSpec { nsh: Some(NshSpec { si: 1, context: vec![0, 0, 1, 9] }), ..chain(vec![20], 0) };
    assert!(n.add_chain(bad_nsh).unwrap_err().to_string().starts_with("chain 7: nsh:"));
    n.add_chain(chain(vec![20, 21], 0)).unwrap();
}

#[test]
fn refuses_bad_sfs_labels_and_duplicate_spis() {
    let mut n = node_with_sa();
    let ext = SfSpec { key_mode: KeyMode::Metadata, ..SfSpec::external(100, "dpi", true) };
    assert!(n.add_sf(ext).unwrap_err().to_string().starts_with("sf dpi: key_mode:"));
    n.add_sf(SfSpec::external(100, "dpi", true)).unwrap();
    assert!(
        n.add_sf(SfSpec::external(100, "dpi2", true)).unwrap_err().to_string().contains("label 100 is already bound")
    );
    assert!(n.set_label(101, LabelAction::Sf(SfId(9))).is_err());
    let sa = SaConfig::new(0x88, SaKey::generate(Algorithm::Aes128Gcm).unwrap());
    n.install_inbound(&sa, SaUse::Terminate, Instant::ZERO).unwrap();
    assert!(
        n.install_inbound(&sa, SaUse::Terminate, Instant::ZERO).unwrap_err().to_string().starts_with("sa spi 0x88:")
    );
}

/// Node 0 classifies onto label 500 of node 1, which delivers; the link 0 → 1 is protected.
fn linked_pair() -> (Node, Node) {
    let settings = NodeSettings { link_auth: true, ..NodeSettings::default() };
    let payload = SaConfig::new(0x1000, SaKey::generate(Algorithm::Aes128Gcm).unwrap());
    let link = SaConfig::new(0x2000, SaKey::generate(Algorithm::Aes128Gmac).unwrap());
    let mut a = Node::new(settings);
    a.install_outbound(SaIdx(0), &payload, Instant::ZERO).unwrap();
    a.install_outbound(SaIdx(1), &link, Instant::ZERO).unwrap();
    a.set_label(500, LabelAction::Remote(NodeId(1))).unwrap();
    a.add_chain(chain(vec![500], 0)).unwrap();
    a.classifier_mut().push_rule(crate::Rule::between(
        crate::Prefix::any_v4(),
        crate::Prefix::any_v4(),
        crate::Action::Chain(ChainId(7)),
    ));
    a.set_link_sa(NodeId(1), Some(SaIdx(1))).unwrap();
    let mut b = Node::new(settings);
    b.install_inbound(&payload, SaUse::Terminate, Instant::ZERO).unwrap();
    b.install_inbound(&link, SaUse::Link, Instant::ZERO).unwrap();
    b.set_label(500, LabelAction::Deliver).unwrap();
    (a, b)
}

fn udp_packet() -> PacketBuf {
    let mut p = vec![0u8; 28 + 10];
    zsfc_wire::ipv4::Repr::new([10, 0, 0, 1], [10, 0, 0, 2], 17, 18).emit(&mut p).unwrap();
    PacketBuf::from_slice(&p)
}

fn forwarded(v: Verdict) -> PacketBuf {
    match v {
        Verdict::Forward(NodeId(1), b) => b,
        other => panic!("not forwarded to node 1: {other:?}"),
    }
}

#[test]
fn link_protection_refuses_replayed_forged_and_plain_packets() {
    let (mut a, mut b) = linked_pair();
    let sent = forwarded(a.handle_local(Instant::ZERO, udp_packet()));
    assert_eq!(&sent.as_slice()[..4], &0x2000u32.to_be_bytes(), "leaves in link ESP");
    let copy = sent.as_slice().to_vec();
    assert!(matches!(b.handle_from_domain(Instant::ZERO, sent), Verdict::Deliver(_)));
    let again = b.handle_from_domain(Instant::ZERO, PacketBuf::from_slice(&copy));
    assert!(matches!(again, Verdict::Drop(DropReason::LinkReplay, _)), "{again:?}");

    let mut forged = forwarded(a.handle_local(Instant::ZERO, udp_packet())).as_slice().to_vec();
    forged[20] ^= 1;
    let v = b.handle_from_domain(Instant::ZERO, PacketBuf::from_slice(&forged));
    assert!(matches!(v, Verdict::Drop(DropReason::LinkAuthFailed, _)), "{v:?}");

    // The inner labelled packet without its link ESP, as an injector would send it.
    let plain = copy[16..copy.len() - 16 - 2].to_vec();
    let v = b.handle_from_domain(Instant::ZERO, PacketBuf::from_slice(&plain));
    assert!(matches!(v, Verdict::Drop(DropReason::LinkUnauthenticated, _)), "{v:?}");
    assert_eq!(b.drops().total(), 3);
    assert_eq!(b.stats().delivered, 1);
}

#[test]
fn without_a_link_sa_nothing_leaves_under_link_protection() {
    let (mut a, _) = linked_pair();
    a.set_link_sa(NodeId(1), None).unwrap();
    let v = a.handle_local(Instant::ZERO, udp_packet());
    assert!(matches!(v, Verdict::Drop(DropReason::LinkNoSa, _)), "{v:?}");
    assert!(a.set_link_sa(NodeId(1), Some(SaIdx(9))).unwrap_err().to_string().starts_with("peer 1: link sa:"));
}

#[test]
fn key_material_is_erased_at_the_hard_lifetime_and_the_sa_then_refuses_packets() {
    let (mut a, mut b) = linked_pair();
    let five_s = zsfc_esp::Limits { packets: u64::MAX, bytes: u64::MAX, time_ns: 5_000_000_000 };
    let lifetimes = zsfc_esp::Lifetimes { soft: zsfc_esp::Limits::UNLIMITED, hard: five_s };
    let sa = SaConfig { lifetimes, ..SaConfig::new(0x3000, SaKey::generate(Algorithm::Aes128Gcm).unwrap()) };
    a.install_outbound(SaIdx(2), &sa, Instant::ZERO).unwrap();
    a.set_chain_sa(ChainId(7), SaIdx(2)).unwrap();
    b.install_inbound(&sa, SaUse::Terminate, Instant::ZERO).unwrap();
    let sent = forwarded(a.handle_local(Instant::from_secs(1), udp_packet()));
    assert!(matches!(b.handle_from_domain(Instant::from_secs(1), sent), Verdict::Deliver(_)));
    assert!(a.keyed_spis().contains(&0x3000) && b.keyed_spis().contains(&0x3000));

    let later = Instant::from_secs(6);
    a.housekeeping(later);
    b.housekeeping(later);
    assert!(!a.keyed_spis().contains(&0x3000), "the sender still holds the key");
    assert!(!b.keyed_spis().contains(&0x3000), "the receiver still holds the key");
    assert_eq!((a.stats().sas_erased, b.stats().sas_erased), (1, 1));
    // The SAs without limits (the link's, the other payload SA) keep theirs.
    assert!(a.keyed_spis().contains(&0x2000) && b.keyed_spis().contains(&0x1000));
    let v = a.handle_local(later, udp_packet());
    assert!(matches!(v, Verdict::Drop(DropReason::SaExpired, _)), "{v:?}");
}

#[test]
fn a_retired_inbound_sa_accepts_late_packets_until_it_goes_quiet() {
    let (mut a, mut b) = linked_pair();
    let t = |ms| Instant::from_millis(ms);
    // Packets sealed before the switch, still queued somewhere when the SA is retired.
    let late: Vec<PacketBuf> = (0..3).map(|_| forwarded(a.handle_local(t(0), udp_packet()))).collect();
    assert!(b.retire_inbound(0x1000, t(10)));
    assert!(!b.retire_inbound(0x1000, t(10)), "retired once");
    assert!(!b.retire_inbound(0x9999, t(10)), "no such SA");
    assert_eq!(b.retiring_spis().collect::<Vec<_>>(), vec![0x1000]);
    let mut late = late.into_iter();
    assert!(matches!(b.handle_from_domain(t(500), late.next().unwrap()), Verdict::Deliver(_)));
    // Busy since the retirement: stays, however short the gap.
    b.housekeeping(t(1500));
    assert!(b.inbound_spis().any(|s| s == 0x1000));
    assert!(matches!(b.handle_from_domain(t(2000), late.next().unwrap()), Verdict::Deliver(_)));
    b.housekeeping(t(2500));
    assert!(b.inbound_spis().any(|s| s == 0x1000), "a packet arrived since the last look");
    // Quiet for a whole housekeeping interval: gone, and what still arrives is refused.
    b.housekeeping(t(3500));
    assert!(!b.inbound_spis().any(|s| s == 0x1000));
    assert_eq!(b.stats().sas_retired, 1);
    let v = b.handle_from_domain(t(3600), late.next().unwrap());
    assert!(matches!(v, Verdict::Drop(DropReason::EspBadSpi, _)), "{v:?}");
    // The link SA was never retired; a quiet retired SA still waits RETIRE_MIN, a busy one
    // no longer than RETIRE_MAX.
    assert!(b.inbound_spis().any(|s| s == 0x2000));
    assert!(b.retire_inbound(0x2000, t(4000)));
    b.housekeeping(t(4500));
    assert!(b.inbound_spis().any(|s| s == 0x2000), "younger than RETIRE_MIN");
    b.housekeeping(t(4000) + RETIRE_MIN);
    assert!(!b.inbound_spis().any(|s| s == 0x2000));
    let payload = SaConfig::new(0x1000, SaKey::generate(Algorithm::Aes128Gcm).unwrap());
    b.install_inbound(&payload, SaUse::Terminate, t(5000)).unwrap();
    assert!(b.retire_inbound(0x1000, t(5000)));
    // A retired SPI may be installed again (a restarted controller's first generation).
    b.install_inbound(&payload, SaUse::Terminate, t(5000)).unwrap();
    assert_eq!(b.retiring_spis().count(), 0);
}

/// A fake SF (unit test only) that records the subscriber id it is given.
struct FakeSubscriberReader(std::sync::Arc<std::sync::Mutex<Vec<Option<u64>>>>);

impl ServiceFunction for FakeSubscriberReader {
    fn kind(&self) -> &'static str {
        "fake-subscriber-reader"
    }
    fn process(&mut self, ctx: &SfContext<'_>, pkt: PacketBuf) -> SfVerdict {
        self.0.lock().unwrap().push(ctx.subscriber);
        SfVerdict::Pass(pkt)
    }
    fn counters(&self, _: &mut dyn FnMut(&'static str, u64)) {}
    fn wants_subscriber(&self) -> bool {
        true
    }
}

#[test]
fn an_sf_that_asks_reads_the_encrypted_subscriber_id_only_with_the_chain_key() {
    use crate::integrity::ChainKeyConfig;
    let payload = SaConfig::new(0x1000, SaKey::generate(Algorithm::Aes128Gcm).unwrap());
    let key = |enc: bool| ChainKeyConfig {
        key_id: 9,
        chain: 7,
        mac_key: &[1; 32],
        enc_key: enc.then_some(&[2u8; 16][..]),
        origin_key: None,
        pot: None,
    };
    let mut a = Node::new(NodeSettings::default());
    a.install_outbound(SaIdx(0), &payload, Instant::ZERO).unwrap();
    a.install_chain_key(&key(true)).unwrap();
    a.set_label(600, LabelAction::Remote(NodeId(1))).unwrap();
    a.add_chain(ChainSpec { integrity: Some(ChainIntegrity { key_id: 9, pot: false }), ..chain(vec![600, 500], 0) })
        .unwrap();
    let tuple = ip::parse(udp_packet().as_slice()).unwrap().tuple;
    a.classifier_mut().insert_flow_for(tuple, ChainId(7), 0xfeed).unwrap();
    for enc in [true, false] {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut b = Node::new(NodeSettings { sfc_integrity: true, ..NodeSettings::default() });
        b.install_chain_key(&key(enc)).unwrap();
        let sf = SfSpec::in_process(600, "reader", false, Box::new(FakeSubscriberReader(seen.clone())));
        b.add_sf(sf).unwrap();
        b.set_label(500, LabelAction::Remote(NodeId(2))).unwrap();
        let v = b.handle_from_domain(Instant::ZERO, forwarded(a.handle_local(Instant::ZERO, udp_packet())));
        assert!(matches!(v, Verdict::Forward(NodeId(2), _)), "{v:?}");
        let expected = if enc { Some(0xfeed) } else { None };
        assert_eq!(*seen.lock().unwrap(), vec![expected], "with the encryption key: {enc}");
    }
}

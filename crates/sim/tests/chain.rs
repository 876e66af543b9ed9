//! The in-memory chain: real packets from a client through ingress, six SFs and egress to a
//! service and back, with a fake clock.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers of tests and benchmarks: a failure should stop them loudly, with its place"
)]
use std::collections::BTreeSet;
use zsfc_dataplane::{DropReason, PacketBuf, Verdict};
use zsfc_sim::packets::{self, Flow};
use zsfc_sim::scenario::{self, EGRESS, INGRESS};
use zsfc_sim::{ClientSide, FakeEchoService, LinkModel, Sim};
use zsfc_wire::{ip, mpls};

fn domain(with_nsh: bool) -> Sim {
    scenario::six_sf_chain(Box::new(std::io::sink()), with_nsh).expect("scenario builds")
}

fn flows() -> Vec<Flow> {
    vec![
        Flow::tcp("10.1.0.5", 40000, scenario::SERVICE_V4, 80),
        Flow::udp("10.1.0.6", 5353, scenario::SERVICE_V4, 53),
        Flow::tcp("fd01::5", 40001, scenario::SERVICE_V6, 80),
        Flow::udp("fd01::6", 5354, scenario::SERVICE_V6, 53),
    ]
}

/// Sends `n` packets on every flow, every `spacing` µs; packet i of a flow carries
/// "f<flow>-p<i>", and "test" when `i % 5 == 3`. Returns the payloads sent.
fn send_traffic(sim: &mut Sim, n: u32, spacing_us: u64) -> Vec<(Flow, Vec<u8>)> {
    let mut sent = Vec::new();
    let t0 = sim.now;
    for i in 0..n {
        for (f, flow) in flows().iter().enumerate() {
            let mut payload = format!("f{f}-p{i}-").into_bytes();
            if i % 5 == 3 {
                payload.extend_from_slice(b"a test payload");
            }
            payload.resize(payload.len() + (i as usize * 37) % 900, b'.');
            let at = t0 + core::time::Duration::from_micros(u64::from(i) * spacing_us + f as u64);
            sim.send_local(INGRESS, at, &packets::build(flow, 1000 + i, &payload));
            sent.push((*flow, payload));
        }
    }
    sent
}

/// An ingress and an egress with one chain that takes every IPv4 packet through no SF.
fn two_nodes(configure: impl FnOnce(&mut zsfc_sim::domain::DomainBuilder)) -> Sim {
    use zsfc_dataplane::{Action, ChainId, Prefix, Rule};
    let mut b = zsfc_sim::domain::DomainBuilder::default();
    configure(&mut b);
    let c = b.node("ingress", Box::new(ClientSide::default()));
    let s = b.node("egress", Box::new(FakeEchoService::default()));
    b.deliver_label(s, 999);
    let rule = Rule::between(Prefix::any_v4(), Prefix::any_v4(), Action::Chain(ChainId(1)));
    b.chain(zsfc_sim::domain::ChainDef {
        id: 1,
        classifier: c,
        rules: vec![rule],
        hops: vec![],
        deliver: 999,
        nsh: None,
    });
    b.build().expect("two-node domain builds")
}

fn service(sim: &Sim) -> &FakeEchoService {
    sim.local::<FakeEchoService>(EGRESS).expect("service")
}

fn client(sim: &Sim) -> &ClientSide {
    sim.local::<ClientSide>(INGRESS).expect("client")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn payloads_arrive_intact_both_ways_and_dpi_drops_exactly_the_test_packets() {
    for with_nsh in [false, true] {
        let mut sim = domain(with_nsh);
        let sent = send_traffic(&mut sim, 50, 200);
        sim.run(1_000_000);

        let expected: Vec<&Vec<u8>> = sent.iter().filter(|(_, p)| !contains(p, b"test")).map(|(_, p)| p).collect();
        let blocked = sent.len() - expected.len();
        let svc = service(&sim);
        assert!(svc.malformed.is_empty(), "service got {} non-plain packets", svc.malformed.len());
        let got: BTreeSet<&Vec<u8>> = svc.received.iter().map(|p| &p.payload).collect();
        assert_eq!(got, expected.iter().copied().collect(), "service payloads");
        // The service saw the NAT address, never the client's.
        for p in &svc.received {
            let nat = if p.flow.src.is_ipv4() { scenario::NAT_V4 } else { scenario::NAT_V6 };
            assert_eq!(p.flow.src, nat.parse::<std::net::IpAddr>().unwrap());
        }
        // Every answer came back, un-NATed, to the client that asked.
        let cl = client(&sim);
        assert!(cl.malformed.is_empty());
        assert_eq!(cl.received.len(), expected.len());
        let client_flows: BTreeSet<Flow> = flows().iter().map(Flow::reversed).collect();
        for r in &cl.received {
            assert!(client_flows.contains(&r.flow), "reply on unexpected flow {:?}", r.flow);
            assert!(r.payload.starts_with(b"re:") && expected.contains(&&r.payload[3..].to_vec()));
        }
        assert_eq!(sim.dropped(DropReason::SfDpiMatch) + sim.external_dropped, blocked as u64);
        assert_eq!(sim.external_dropped, blocked as u64, "the external DPI dropped the test packets");
        let total_drops: u64 = sim.nodes.iter().map(|n| n.node.drops().total()).sum();
        assert_eq!(total_drops, 0, "no other drop: {:?}", sim.drops);
    }
}

#[test]
fn non_intrusive_sfs_never_see_plaintext() {
    let mut sim = domain(false);
    sim.capture = true;
    let sent = send_traffic(&mut sim, 20, 100);
    sim.run(1_000_000);
    // The external counter (non-intrusive) classifies what it saw by protocol.
    let counter = &sim.nodes[2].external;
    assert_eq!(counter.len(), 1);
    let mut seen = std::collections::HashMap::new();
    counter.values().next().unwrap().counters(&mut |n, v| {
        seen.insert(n, v);
    });
    assert!(seen["packets"] > 0);
    assert_eq!(seen["esp"], seen["packets"], "non-intrusive counter saw non-ESP: {seen:?}");
    // No payload is readable on any inter-node link.
    for c in &sim.captured {
        for (_, p) in &sent {
            assert!(!contains(&c.bytes, &p[..p.len().min(8)]), "plaintext on link {}->{}", c.from, c.to);
        }
    }
}

#[test]
fn nothing_of_the_encapsulation_reaches_the_service_and_caches_drain() {
    let mut sim = domain(true);
    send_traffic(&mut sim, 30, 150);
    sim.run(1_000_000);
    let svc = service(&sim);
    assert!(!svc.received.is_empty());
    assert!(svc.malformed.is_empty());
    // The only entries left are those of packets the external DPI dropped silently.
    assert_eq!(sim.cached_packets() as u64, sim.external_dropped);
    sim.advance(core::time::Duration::from_secs(3));
    assert_eq!(sim.cached_packets(), 0);
    let dpi = sim.nodes[1].node.sf_report(zsfc_dataplane::SfId(1)).unwrap();
    assert_eq!(dpi.proxy.expired, sim.external_dropped);
    assert_eq!(dpi.proxy.rx_success, dpi.proxy.tx_success + dpi.proxy.expired);
}

#[test]
fn survives_loss_and_reordering() {
    let mut sim = domain(false);
    sim.link = LinkModel {
        latency: core::time::Duration::from_micros(50),
        jitter: core::time::Duration::from_micros(400),
        loss_ppm: 20_000,
    };
    let sent = send_traffic(&mut sim, 100, 20);
    sim.run(1_000_000);
    assert!(sim.link_lost > 0, "the loss model lost something");
    let svc = service(&sim);
    assert!(svc.malformed.is_empty());
    let sent_set: BTreeSet<&Vec<u8>> = sent.iter().map(|(_, p)| p).collect();
    for p in &svc.received {
        assert!(sent_set.contains(&p.payload));
    }
    // Reordering inside the 1024-packet window costs no replay drop.
    assert_eq!(sim.dropped(DropReason::EspReplay), 0);
    assert!(svc.received.len() > sent.len() / 2);
}

#[test]
fn a_looping_packet_dies_by_ttl() {
    let mut sim = domain(false);
    // Misconfigure node-a and node-b to send label 4242 to each other.
    sim.nodes[1].node.set_label(4242, zsfc_dataplane::LabelAction::Remote(zsfc_dataplane::NodeId(2))).unwrap();
    sim.nodes[2].node.set_label(4242, zsfc_dataplane::LabelAction::Remote(zsfc_dataplane::NodeId(1))).unwrap();
    let mut pkt = vec![0u8; 4];
    mpls::emit_stack(&[4242], 64, &mut pkt).unwrap();
    pkt.extend(packets::build(&flows()[0], 1, b"loop"));
    sim.inject_domain(1, sim.now, &pkt);
    let events = sim.run(10_000);
    assert!(events < 100, "loop ran {events} events");
    assert_eq!(sim.dropped(DropReason::TtlExpired), 1);
}

/// Captures the first packet from node `from` to node `to` in a run of one TCP packet.
fn first_packet_on_link(from: usize, to: usize) -> (Sim, Vec<u8>) {
    let mut sim = domain(false);
    sim.capture = true;
    sim.send_local(INGRESS, sim.now, &packets::build(&flows()[0], 1, b"hello"));
    sim.run(10_000);
    let c = sim.captured.iter().find(|c| c.from == from && c.to == to).expect("packet on link").bytes.clone();
    (sim, c)
}

#[test]
fn changing_any_byte_of_esp_header_ciphertext_or_icv_is_a_counted_drop() {
    // The link ingress -> node-a carries [label 1001..999][IPv4][ESP ...].
    let (_, pkt) = first_packet_on_link(INGRESS, 1);
    let labels = mpls::stack_depth(&pkt, 16).unwrap() * 4;
    let esp_at = labels + ip::parse(&pkt[labels..]).unwrap().l4_offset;
    for i in esp_at..pkt.len() {
        let mut sim = domain(false);
        let mut t = pkt.clone();
        t[i] ^= 0x20;
        sim.inject_domain(1, sim.now, &t);
        sim.run(10_000);
        let drops: u64 = sim.nodes.iter().map(|n| n.node.drops().total()).sum();
        assert_eq!(drops, 1, "byte {i}: {:?}", sim.drops);
        let reason = sim.drops[0].1;
        assert!(
            matches!(reason, DropReason::EspAuthFailed | DropReason::EspBadSpi | DropReason::EspReplay),
            "byte {i}: {reason:?}"
        );
        assert!(service(&sim).received.is_empty());
    }
}

#[test]
fn a_replayed_packet_is_a_counted_drop() {
    let (mut sim, pkt) = first_packet_on_link(2, 3);
    assert_eq!(service(&sim).received.len(), 1);
    sim.inject_domain(3, sim.now, &pkt);
    sim.run(10_000);
    assert_eq!(sim.dropped(DropReason::EspReplay), 1);
    assert_eq!(service(&sim).received.len(), 1);
}

#[test]
fn deep_label_stacks_and_truncated_packets_are_counted_drops_never_panics() {
    let (_, pkt) = first_packet_on_link(INGRESS, 1);
    // Deeper than the limit of 16.
    let mut deep = vec![0u8; 17 * 4];
    mpls::emit_stack(&[1001; 17], 64, &mut deep).unwrap();
    deep.extend_from_slice(&pkt[24..]);
    let mut sim = domain(false);
    sim.inject_domain(1, sim.now, &deep);
    sim.run(100);
    assert_eq!(sim.dropped(DropReason::LabelStackTooDeep), 1);
    // Every truncation of a real packet, at every layer.
    let mut sim = domain(false);
    for n in 0..pkt.len() {
        sim.inject_domain(1, sim.now, &pkt[..n]);
    }
    sim.run(100_000);
    let drops: u64 = sim.nodes.iter().map(|n| n.node.drops().total()).sum();
    assert_eq!(drops, pkt.len() as u64, "{:?}", sim.drops);
    assert!(service(&sim).received.is_empty());
}

#[test]
fn unclassified_traffic_is_denied_by_default() {
    let mut sim = domain(false);
    sim.send_local(INGRESS, sim.now, &packets::build(&Flow::udp("10.7.0.1", 1, scenario::SERVICE_V4, 53), 1, b"who"));
    sim.send_local(INGRESS, sim.now, &packets::build(&Flow::tcp("10.1.0.5", 1, "10.9.0.2", 80), 1, b"other dst"));
    sim.run(1000);
    assert_eq!(sim.dropped(DropReason::NoMatchingRule), 2);
}

#[test]
fn firewall_denies_ssh_inside_the_chain() {
    let mut sim = domain(false);
    sim.send_local(INGRESS, sim.now, &packets::build(&Flow::tcp("10.1.0.5", 1, scenario::SERVICE_V4, 22), 1, b"ssh"));
    sim.run(1000);
    assert_eq!(sim.dropped(DropReason::SfFirewallDeny), 1);
    assert_eq!(sim.cached_packets(), 0, "a drop by an in-process SF frees its cache entry");
    let fw = sim.nodes[1].node.sf_report(zsfc_dataplane::SfId(0)).unwrap();
    assert_eq!((fw.proxy.rx_success, fw.proxy.sf_dropped, fw.proxy.tx_success), (1, 1, 0));
}

#[test]
fn node_refuses_a_labelled_packet_at_its_local_door() {
    // MPLS from outside the domain: the local side only accepts plain IP.
    let (mut sim, pkt) = first_packet_on_link(INGRESS, 1);
    let v = sim.nodes[INGRESS].node.handle_local(sim.now, PacketBuf::from_slice(&pkt));
    assert!(matches!(v, Verdict::Drop(DropReason::EncapFromOutside, _)), "{v:?}");
    // Neither IP nor a label stack (no bottom-of-stack bit) nor an NSH: malformed.
    let mut junk = [0u8; 40];
    junk[0] = 0x50;
    let v = sim.nodes[INGRESS].node.handle_local(sim.now, PacketBuf::from_slice(&junk));
    assert!(matches!(v, Verdict::Drop(DropReason::Malformed, _)), "{v:?}");
    assert_eq!(sim.nodes[INGRESS].node.drops().get(DropReason::EncapFromOutside), 1);
}

#[test]
fn soft_lifetime_asks_for_a_rekey_once_and_hard_lifetime_fails_closed() {
    use zsfc_dataplane::Event;
    use zsfc_esp::{Lifetimes, Limits};
    let mut sim = two_nodes(|b| {
        b.lifetimes = Lifetimes {
            soft: Limits { packets: 3, ..Limits::UNLIMITED },
            hard: Limits { packets: 5, ..Limits::UNLIMITED },
        };
    });
    let flow = Flow::udp("10.0.0.1", 1, "10.0.0.2", 2);
    for i in 0..8 {
        sim.send_local(0, sim.now, &packets::build(&flow, i, b"x"));
    }
    sim.run(1000);
    assert_eq!(sim.local::<FakeEchoService>(1).unwrap().received.len(), 5);
    assert_eq!(sim.dropped(DropReason::SaExpired), 3);
    assert!(matches!(sim.nodes[0].node.poll_event(), Some(Event::RekeyWanted { spi: 0x1000, .. })));
    assert_eq!(sim.nodes[0].node.poll_event(), None);
}

#[test]
fn nsh_and_its_metadata_survive_every_proxy_with_the_service_index_counting_the_sfs() {
    let mut sim = domain(true);
    sim.capture = true;
    sim.send_local(INGRESS, sim.now, &packets::build(&flows()[0], 1, b"meta"));
    sim.run(10_000);
    assert_eq!(service(&sim).received.len(), 1);
    // On the last forward link (node-c -> egress) after six SFs: [999][NSH][IPv4 ESP].
    let last = sim.captured.iter().find(|c| c.from == 3 && c.to == EGRESS).expect("packet to egress");
    let depth = mpls::stack_depth(&last.bytes, 16).unwrap();
    assert_eq!(depth, 1);
    let h = zsfc_wire::nsh::Header::new_checked(&last.bytes[4..]).unwrap();
    assert_eq!((h.spi(), h.si(), h.next_proto()), (1, 255 - 6, zsfc_wire::nsh::next_proto::IPV4));
    let tlvs: Vec<_> = h.tlvs().collect();
    assert_eq!(tlvs.len(), 1);
    assert_eq!(tlvs[0].value, b"subscriber-0001");
    assert_eq!(ip::parse(&last.bytes[4 + h.len()..]).unwrap().tuple.protocol, ip::protocol::ESP);
}

/// A test SF that records the metadata the node shows it.
struct MetadataSpy(std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

impl zsfc_dataplane::ServiceFunction for MetadataSpy {
    fn kind(&self) -> &'static str {
        "metadata_spy"
    }
    fn process(&mut self, ctx: &zsfc_dataplane::SfContext<'_>, pkt: PacketBuf) -> zsfc_dataplane::SfVerdict {
        self.0.lock().unwrap().push(ctx.metadata.to_vec());
        zsfc_dataplane::SfVerdict::Pass(pkt)
    }
    fn counters(&self, _: &mut dyn FnMut(&'static str, u64)) {}
}

#[test]
fn in_process_sfs_read_the_nsh_context_headers() {
    use zsfc_sim::domain::{ChainDef, DomainBuilder, SfKind};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut b = DomainBuilder::default();
    let c = b.node("ingress", Box::new(ClientSide::default()));
    let n = b.node("sf", Box::new(ClientSide::default()));
    let s = b.node("egress", Box::new(FakeEchoService::default()));
    b.sf(n, 500, "spy", false, SfKind::InProcess(Box::new(MetadataSpy(seen.clone()))));
    b.deliver_label(s, 999);
    let t = zsfc_wire::nsh::Tlv { class: 0x0000, tlv_type: 0x05, value: b"tenant-42" };
    let mut ctx = vec![0u8; t.wire_len()];
    t.emit(&mut ctx).unwrap();
    let rule = zsfc_dataplane::Rule::between(
        zsfc_dataplane::Prefix::any_v4(),
        zsfc_dataplane::Prefix::any_v4(),
        zsfc_dataplane::Action::Chain(zsfc_dataplane::ChainId(3)),
    );
    let nsh = Some(zsfc_dataplane::NshSpec { si: 9, context: ctx.clone() });
    b.chain(ChainDef { id: 3, classifier: c, rules: vec![rule], hops: vec![500], deliver: 999, nsh });
    let mut sim = b.build().unwrap();
    sim.send_local(0, sim.now, &packets::build(&Flow::udp("10.0.0.1", 1, "10.0.0.2", 2), 1, b"x"));
    sim.run(1000);
    assert_eq!(*seen.lock().unwrap(), vec![ctx]);
    assert_eq!(sim.local::<FakeEchoService>(2).unwrap().received.len(), 1);
}

#[test]
fn a_duplicate_inside_an_external_sf_is_a_counted_collision() {
    // node-b's first SF is the external, non-intrusive counter: it keys packets by ESP SPI and
    // sequence number and cannot check replay, so a duplicate arriving while the original is
    // inside the SF collides.
    let mut sim = domain(false);
    let grabbed = std::rc::Rc::new(std::cell::RefCell::new(None));
    let g = grabbed.clone();
    sim.intercept = Some(Box::new(move |from, to, buf| {
        if (from, to) == (1, 2) && g.borrow().is_none() {
            *g.borrow_mut() = Some(buf.as_slice().to_vec());
            return false;
        }
        true
    }));
    sim.send_local(INGRESS, sim.now, &packets::build(&flows()[0], 1, b"twice"));
    sim.run(10_000);
    let pkt = grabbed.borrow().clone().expect("packet on node-a -> node-b");
    sim.inject_domain(2, sim.now, &pkt);
    sim.inject_domain(2, sim.now, &pkt);
    sim.run(10_000);
    assert_eq!(sim.dropped(DropReason::ProxyCollision), 1, "{:?}", sim.drops);
    assert_eq!(service(&sim).received.len(), 1);
    let counter = sim.nodes[2].node.sf_report(zsfc_dataplane::SfId(0)).unwrap();
    assert_eq!((counter.proxy.rx_success, counter.proxy.rx_collision, counter.proxy.tx_success), (1, 1, 1));
}

#[test]
fn a_packet_an_external_sf_made_up_is_not_cached_and_dropped() {
    let mut sim = domain(false);
    let stray = packets::build(&flows()[0], 99, b"from nowhere");
    let v = sim.nodes[1].node.handle_from_sf(sim.now, zsfc_dataplane::SfId(1), PacketBuf::from_slice(&stray));
    assert!(matches!(v, Verdict::Drop(DropReason::ProxyNotCached, _)), "{v:?}");
    let v = sim.nodes[1].node.handle_from_sf(sim.now, zsfc_dataplane::SfId(1), PacketBuf::from_slice(b"\x00junk"));
    assert!(matches!(v, Verdict::Drop(DropReason::ProxyTxIgnored, _)), "{v:?}");
    let dpi = sim.nodes[1].node.sf_report(zsfc_dataplane::SfId(1)).unwrap();
    assert_eq!((dpi.proxy.tx_not_cached, dpi.proxy.tx_ignored), (1, 1));
}

#[test]
fn the_classifier_clamps_the_mss_of_syns_entering_the_domain() {
    use zsfc_wire::{checksum, ipv4, tcp};
    let mut sim = two_nodes(|b| b.settings.tcp_mss_clamp = Some(1200));
    // A SYN announcing MSS 1460.
    let mut syn = vec![0u8; 44];
    tcp::Repr { src_port: 40000, dst_port: 80, seq: 1, ack: 0, flags: tcp::flags::SYN, window: 1000 }
        .emit(&mut syn[20..], None)
        .unwrap();
    syn[32] = 6 << 4;
    syn[40..44].copy_from_slice(&[2, 4, 0x05, 0xb4]);
    let pseudo = checksum::pseudo_v4([10, 0, 0, 1], [10, 0, 0, 2], 6, 24);
    tcp::Segment::new_checked(&mut syn[20..]).unwrap().fill_checksum(pseudo);
    ipv4::Repr::new([10, 0, 0, 1], [10, 0, 0, 2], 6, 24).emit(&mut syn).unwrap();
    sim.send_local(0, sim.now, &syn);
    sim.run(100);
    let svc = sim.local::<FakeEchoService>(1).unwrap();
    assert_eq!(svc.received.len(), 1, "malformed: {:?}", svc.malformed.len());
    assert!(svc.received[0].checksums_ok);
    assert_eq!(&svc.raw[0][40..44], &[2, 4, 0x04, 0xb0], "MSS 1200 at the service");
    assert_eq!(sim.nodes[0].node.stats().mss_clamped, 1);
}

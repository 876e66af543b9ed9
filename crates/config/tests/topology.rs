//! A domain topology compiled into node configurations: SA placement, labels, errors.
#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests and benchmarks: a failure should stop them loudly, with its place"
)]
mod common;
use common::sim_of;
use std::collections::HashSet;
use zsfc_config::{NodeConfig, Topology};
use zsfc_dataplane::{DropReason, Instant};
use zsfc_sim::packets::{self, Flow};
use zsfc_sim::{ClientSide, FakeEchoService};

/// The example in `examples/`, so that it cannot drift from what is tested.
const TOPOLOGY: &str = include_str!("../../../examples/inmemory-topology.toml");

/// The in-memory topology with both protections off (each test turns on what it tests).
fn plain_topology() -> Topology {
    let mut t = Topology::from_toml(TOPOLOGY).unwrap();
    (t.link_protection, t.sfc_integrity) = (false, false);
    t
}

#[test]
fn protections_are_on_unless_a_file_turns_them_off() {
    let t = Topology::from_toml(TOPOLOGY).unwrap();
    assert!(t.link_protection && t.sfc_integrity, "secure by default");
    let off = TOPOLOGY.replacen("version = 1", "version = 1\nlink_protection = false\nsfc_integrity = false", 1);
    let t = Topology::from_toml(&off).unwrap();
    assert!(!t.link_protection && !t.sfc_integrity);
    // Written back, an off protection stays off (and an on one needs no line).
    let again = Topology::from_toml(&toml::to_string(&t).unwrap()).unwrap();
    assert!(!again.link_protection && !again.sfc_integrity);
    for c in Topology::from_toml(TOPOLOGY).unwrap().compile().unwrap() {
        assert!(c.settings.link_auth && c.settings.sfc_integrity, "{}", c.name);
    }
}

#[test]
fn compiled_domain_carries_traffic_both_ways_through_nat() {
    let cfgs = plain_topology().compile().unwrap();
    let mut sim = sim_of(&cfgs);
    let flow = Flow::udp("10.1.0.9", 5000, "10.9.0.1", 53);
    for i in 0..20u32 {
        let p = if i % 5 == 0 { format!("q{i} test") } else { format!("q{i}") };
        sim.send_local(0, sim.now, &packets::build(&flow, i, p.as_bytes()));
    }
    sim.send_local(0, sim.now, &packets::build(&Flow::tcp("10.1.0.9", 5000, "10.9.0.1", 22), 1, b"ssh"));
    sim.run(100_000);
    let svc = sim.local::<FakeEchoService>(4).unwrap();
    assert_eq!(svc.received.len(), 16);
    assert!(svc.received.iter().all(|p| p.flow.src == "192.0.2.1".parse::<std::net::IpAddr>().unwrap()));
    let cl = sim.local::<ClientSide>(0).unwrap();
    assert_eq!(cl.received.len(), 16);
    assert!(cl.received.iter().all(|p| p.flow == flow.reversed()));
    assert_eq!(sim.dropped(DropReason::SfDpiMatch), 4);
    assert_eq!(sim.dropped(DropReason::SfFirewallDeny), 1);
}

#[test]
fn one_sa_per_encrypting_hop_and_no_key_at_a_non_intrusive_node() {
    let cfgs = plain_topology().compile().unwrap();
    let by = |n: &str| cfgs.iter().find(|c| c.name == n).unwrap();
    // to-web: ingress -> firewall -> dpi (both node-a) -> counter (obs) -> nat (node-b) -> egress
    // SAs: ingress->a, a(fw)->a(dpi), a(dpi)->b, b->egress; from-web: egress->b, b->ingress.
    let outbound: usize = cfgs.iter().map(|c| c.outbound_sas.len()).sum();
    let inbound: usize = cfgs.iter().map(|c| c.inbound_sas.len()).sum();
    assert_eq!((outbound, inbound), (6, 6));
    let obs = by("obs");
    assert!(obs.outbound_sas.is_empty() && obs.inbound_sas.is_empty(), "the non-intrusive counter's node holds no key");
    assert_eq!(by("node-a").inbound_sas.iter().filter(|s| s.reseal.is_some()).count(), 2);
    assert_eq!(by("ingress").inbound_sas.iter().filter(|s| s.reseal.is_none()).count(), 1);
    let spis: HashSet<u32> = cfgs.iter().flat_map(|c| c.outbound_sas.iter().map(|s| s.sa.spi)).collect();
    assert_eq!(spis.len(), 6, "SPIs are unique");
    let keys: HashSet<Vec<u8>> =
        cfgs.iter().flat_map(|c| c.outbound_sas.iter().map(|s| s.sa.keymat.0.to_vec())).collect();
    assert_eq!(keys.len(), 6, "every SA has its own key");
    // Chains live at their classifier, with the labels in path order.
    assert_eq!(by("ingress").chains[0].labels, vec![1000, 1001, 1002, 1003, 100]);
    assert_eq!(by("egress").chains[0].labels, vec![1003, 1002, 101]);
}

#[test]
fn compiles_again_with_fresh_keys() {
    let t = plain_topology();
    let (a, b) = (t.compile().unwrap(), t.compile().unwrap());
    assert_ne!(a[0].outbound_sas[0].sa.keymat, b[0].outbound_sas[0].sa.keymat);
    assert_eq!(a[0].outbound_sas[0].sa.spi, b[0].outbound_sas[0].sa.spi);
}

#[test]
fn topology_mistakes_name_the_field() {
    let cases = [
        (
            TOPOLOGY.replace("sfs = [\"firewall\", \"dpi\"", "sfs = [\"firewall\", \"dpii\""),
            "chains[0].sfs[1]: no SF named \"dpii\"",
        ),
        (TOPOLOGY.replace("node = \"obs\"", "node = \"observer\""), "sfs[2].node: no node named \"observer\""),
        (TOPOLOGY.replace("to = \"web\"", "to = \"www\""), "chains[0].to: no endpoint named \"www\""),
        (TOPOLOGY.replace("patterns = [\"test\"]", "patterns = []"), "sfs[1].function.patterns:"),
        (TOPOLOGY.replace("{ name = \"obs\" }", "{ name = \"node-a\" }"), "nodes[2].name: \"node-a\" is used twice"),
        (
            TOPOLOGY.replace("name = \"counter\"\nnode = \"obs\"", "name = \"counter\"\nnode = \"obs\"\nlabel = 1000"),
            "sfs[2]: label 1000 is already used by sfs[0]",
        ),
        (
            TOPOLOGY.replace("src = \"10.1.0.0/24\"", "src = \"10.1.0.0/99\""),
            "node \"ingress\": rules[0].src: prefix length 99",
        ),
        (
            TOPOLOGY.replace("rules = [{ src = \"10.9.0.1\", dst = \"0.0.0.0/0\" }]", "rules = []"),
            "chains[1].rules: at least one rule",
        ),
        (TOPOLOGY.replace("version = 1", "version = 0"), "version: 0 is not supported"),
        (
            TOPOLOGY.replace("dst = \"10.9.0.1\" }", "dst = \"10.9.0.1\", chain = 2 }"),
            "chains[0].rules[0]: `chain` and `deny` are implied",
        ),
        (TOPOLOGY.replace("intrusive = false", "intrusive = false\nweight = 3"), "unknown field `weight`"),
    ];
    for (text, want) in cases {
        let err = Topology::from_toml(&text)
            .and_then(|t| t.compile())
            .err()
            .unwrap_or_else(|| panic!("accepted; wanted {want:?}"));
        assert!(err.to_string().contains(want), "wanted {want:?}, got: {err}");
    }
}

/// The TOML blocks of docs/DEPLOYMENT.md (the topology, then the gateway), so that the guide
/// cannot drift from the code.
fn deployment_blocks() -> Vec<String> {
    let doc = include_str!("../../../docs/DEPLOYMENT.md");
    let blocks: Vec<String> = doc
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .map(|b| b.lines().map(str::trim_start).collect::<Vec<_>>().join("\n"))
        .collect();
    assert_eq!(blocks.len(), 3, "the guide has three TOML blocks: the topology, the gateway, the controller");
    blocks
}

fn deployment_topology() -> String {
    deployment_blocks().remove(0)
}

#[test]
fn the_deployment_guide_compiles_into_ready_to_run_node_files() {
    let cfgs = Topology::from_toml(&deployment_topology()).unwrap().compile().unwrap();
    assert_eq!(cfgs.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), vec!["ingress", "sf-1", "egress"]);
    // Payload SAs (those no link uses): one per encrypting hop; link SAs: one per ordered pair.
    let payload = |c: &NodeConfig| c.outbound_sas.iter().filter(|o| c.links.iter().all(|l| l.sa != o.index)).count();
    assert_eq!(cfgs.iter().map(payload).sum::<usize>(), 3, "ingress->sf-1, sf-1->egress, egress->ingress");
    assert!(cfgs.iter().all(|c| c.settings.link_auth && c.settings.sfc_integrity && c.links.len() == 2));
    for c in &cfgs {
        let again = NodeConfig::from_toml(&c.to_toml().unwrap()).unwrap();
        again.check().unwrap();
        let io = again.io_settings().unwrap();
        assert_eq!(io.peers.len(), 2);
        assert_eq!(io.tun.is_some(), c.name != "sf-1");
    }
    assert_eq!(cfgs[0].io_settings().unwrap().listen, Some("198.51.100.10:4500".parse().unwrap()));
    assert_eq!(cfgs[0].settings.tcp_mss_clamp, Some(1160));
    // The routes into the domain the node installs on its device, as the guide writes them.
    let tun = cfgs[2].io_settings().unwrap().tun.unwrap();
    assert_eq!(tun.routes, vec![("10.1.0.0".parse().unwrap(), 24)]);
    // The guide's gateway block, added to the compiled ingress file, is a valid gateway.
    let ingress = format!("{}\n{}", cfgs[0].to_toml().unwrap(), deployment_blocks()[1]);
    let gw = NodeConfig::from_toml(&ingress).unwrap().io_settings().unwrap().gateway.unwrap();
    assert_eq!(gw.grants, vec![("alice".to_owned(), "web.example.org".to_owned(), 1, None)]);
    // It spells out the defaults it says it shows.
    assert_eq!((gw.rate_limits, gw.blocking), (Default::default(), Default::default()));
    // The controller block is what `for_controller` writes.
    let with_ctl =
        NodeConfig::from_toml(&format!("{}\n{}", cfgs[0].to_toml().unwrap(), deployment_blocks()[2])).unwrap();
    let c = with_ctl.controller.clone().unwrap();
    assert_eq!((c.address.as_str(), c.server_name.as_str()), ("198.51.100.5:8443", "controller"));
    let file = cfgs[0].for_controller(c);
    assert!(file.outbound_sas.is_empty() && file.inbound_sas.is_empty() && file.chains.is_empty());
    file.check().unwrap();
}

fn protected() -> Vec<NodeConfig> {
    let mut t = plain_topology();
    t.link_protection = true;
    t.compile().unwrap()
}

#[test]
fn link_protection_gives_every_ordered_pair_its_own_gmac_sa() {
    let cfgs = protected();
    let n = cfgs.len();
    for c in &cfgs {
        assert!(c.settings.link_auth);
        assert_eq!(c.links.len(), n - 1, "{}: one link per peer", c.name);
        assert_eq!(c.inbound_sas.iter().filter(|s| s.link).count(), n - 1);
        for l in &c.links {
            let out = c.outbound_sas.iter().find(|o| o.index == l.sa).unwrap();
            assert_eq!(out.sa.algorithm, zsfc_config::Algorithm::Aes256Gmac);
        }
    }
    let link_keys: HashSet<Vec<u8>> =
        cfgs.iter().flat_map(|c| c.inbound_sas.iter().filter(|s| s.link).map(|s| s.sa.keymat.0.to_vec())).collect();
    assert_eq!(link_keys.len(), n * (n - 1), "no two links share a key");
    // The document the controller pushes says the same and checks.
    for c in &cfgs {
        let doc = zsfc_config::ikeless::NodeState::from_config(1, c, Vec::new(), |_| true);
        doc.check().unwrap();
        assert_eq!(doc.sfc.links.len(), n - 1);
        let back: zsfc_config::ikeless::NodeState =
            serde_json::from_str(&serde_json::to_string(&doc).unwrap()).unwrap();
        let links: Vec<_> = back.ikeless.sad.entries.iter().filter(|e| e.link).collect();
        assert_eq!(links.len(), 2 * (n - 1));
        assert!(links.iter().all(|e| e.config.mode == "tunnel" && e.config.esp_sa.encryption.algorithm == 21));
        assert!(links.iter().all(|e| e.params().unwrap().algorithm == zsfc_config::Algorithm::Aes256Gmac));
    }
}

#[test]
fn a_protected_domain_carries_traffic_and_refuses_unprotected_packets() {
    let cfgs = protected();
    let mut sim = sim_of(&cfgs);
    let flow = Flow::udp("10.1.0.9", 5000, "10.9.0.1", 53);
    for i in 0..10u32 {
        sim.send_local(0, sim.now, &packets::build(&flow, i, format!("q{i}").as_bytes()));
    }
    sim.run(100_000);
    assert_eq!(sim.local::<FakeEchoService>(4).unwrap().received.len(), 10);
    assert_eq!(sim.local::<ClientSide>(0).unwrap().received.len(), 10);
    // The same packet as the unprotected domain would carry it: labels, then ESP.
    let plain = plain_topology().compile().unwrap();
    let mut ingress = plain[0].build(Instant::from_secs(1)).unwrap();
    let pkt = zsfc_wire::PacketBuf::from_slice(&packets::build(&flow, 1, b"forged"));
    let zsfc_dataplane::Verdict::Forward(_, b) = ingress.handle_local(Instant::from_secs(1), pkt) else {
        panic!("the unprotected ingress forwards")
    };
    sim.inject_domain(1, sim.now, b.as_slice());
    sim.run(1_000);
    assert_eq!(sim.dropped(DropReason::LinkUnauthenticated), 1);
}

/// The packet a verdict forwards to node `to`; anything else fails the test.
fn forwarded(v: zsfc_dataplane::Verdict, to: u32) -> zsfc_wire::PacketBuf {
    match v {
        zsfc_dataplane::Verdict::Forward(zsfc_dataplane::NodeId(p), b) if p == to => b,
        other => panic!("expected a packet for node {to}, got {other:?}"),
    }
}

/// The reason of a verdict that drops; anything else fails the test.
fn dropped(v: zsfc_dataplane::Verdict) -> DropReason {
    match v {
        zsfc_dataplane::Verdict::Drop(r, _) => r,
        other => panic!("expected a drop, got {other:?}"),
    }
}

fn integrity() -> Vec<NodeConfig> {
    let mut t = plain_topology();
    t.sfc_integrity = true;
    t.compile().unwrap()
}

#[test]
fn an_integrity_protected_domain_carries_traffic_both_ways() {
    let cfgs = integrity();
    // The chain key goes where it is needed: MAC keys on the path, the encryption key only to
    // the classifier and nodes of intrusive SFs, the POT secret only to the chain's end.
    let by = |n: &str| cfgs.iter().find(|c| c.name == n).unwrap();
    let to_web = |c: &NodeConfig| c.chain_keys.iter().find(|k| k.chain == 1).cloned();
    assert!(to_web(by("ingress")).unwrap().enc_key.is_some());
    assert!(to_web(by("node-a")).unwrap().enc_key.is_some(), "firewall and DPI are intrusive");
    assert!(to_web(by("obs")).unwrap().enc_key.is_none(), "the counter is not");
    assert_eq!(to_web(by("node-a")).unwrap().pot.unwrap().shares.len(), 2);
    assert!(to_web(by("egress")).unwrap().pot.unwrap().secret.is_some());
    assert!(to_web(by("node-b")).unwrap().pot.unwrap().secret.is_none());
    // The origin key only at the chain's two ends.
    for (node, holds) in [("ingress", true), ("node-a", false), ("obs", false), ("node-b", false), ("egress", true)] {
        assert_eq!(to_web(by(node)).unwrap().origin_key.is_some(), holds, "{node}");
    }
    let mut sim = sim_of(&cfgs);
    let flow = Flow::udp("10.1.0.9", 5000, "10.9.0.1", 53);
    for i in 0..20u32 {
        let p = if i % 5 == 0 { format!("q{i} test") } else { format!("q{i}") };
        sim.send_local(0, sim.now, &packets::build(&flow, i, p.as_bytes()));
    }
    sim.run(100_000);
    assert_eq!(sim.local::<FakeEchoService>(4).unwrap().received.len(), 16);
    assert_eq!(sim.local::<ClientSide>(0).unwrap().received.len(), 16);
    assert_eq!(sim.dropped(DropReason::SfDpiMatch), 4);
    for r in [
        DropReason::SfcMacFailed,
        DropReason::SfcOriginFailed,
        DropReason::PotFailed,
        DropReason::SfcStale,
        DropReason::SfcKeyUnknown,
    ] {
        assert_eq!(sim.dropped(r), 0, "{r:?}");
    }
}

#[test]
fn a_hop_that_skips_an_sf_or_changes_the_nsh_is_caught_by_the_mac_the_origin_or_the_proof_of_transit() {
    use zsfc_dataplane::{NodeId, Verdict};
    use zsfc_wire::PacketBuf;
    let cfgs = integrity();
    let now = Instant::from_secs(1);
    let mut n: Vec<zsfc_dataplane::Node> = cfgs.iter().map(|c| c.build(now).unwrap()).collect();
    let flow = Flow::udp("10.1.0.9", 5000, "10.9.0.1", 53);
    // A fresh packet as node-a (firewall, DPI) sends it to obs (the counter's node); each test
    // below uses its own, so that the payload's anti-replay does not decide it.
    let mut seq = 0;
    let mut to_obs = |n: &mut Vec<zsfc_dataplane::Node>| {
        seq += 1;
        let pkt = PacketBuf::from_slice(&packets::build(&flow, seq, b"hello"));
        let b = forwarded(n[0].handle_local(now, pkt), 1);
        forwarded(n[1].handle_from_domain(now, b), 2)
    };
    let copy = |b: &PacketBuf| PacketBuf::from_slice(b.as_slice());

    // The honest path delivers.
    let b = to_obs(&mut n);
    let b = forwarded(n[2].handle_from_domain(now, b), 3);
    let b = forwarded(n[3].handle_from_domain(now, b), 4);
    assert!(matches!(n[4].handle_from_domain(now, b), Verdict::Deliver(_)));

    // node-a skips the counter: the top label popped and sent to node-b (the NAT's node).
    let skipped = |b: PacketBuf| PacketBuf::from_slice(&b.as_slice()[4..]);
    let b = skipped(to_obs(&mut n));
    assert_eq!(dropped(n[3].handle_from_domain(now, b)), DropReason::SfcMacFailed, "without the chain key");
    // A compromised node-a holds the chain key and computes the MAC again: the MAC passes,
    // the proof of transit lacks the counter's share.
    let mut b = skipped(to_obs(&mut n));
    n[1].refresh_nsh_mac(b.as_mut_slice()).unwrap();
    let b = forwarded(n[3].handle_from_domain(now, b), 4);
    assert_eq!(dropped(n[4].handle_from_domain(now, b)), DropReason::PotFailed, "with the chain key");
    // A compromised node-a changes what the classifier set (here the chain's static context
    // header, "subscriber-7" becomes "subscriber-6") and computes the MAC again: the SFs after
    // it accept the packet, the end finds that the PktID was not derived from these fields.
    let mut b = to_obs(&mut n);
    let digit = 4 * 3 + zsfc_wire::nsh::BASE_LEN + 4 + 11;
    assert_eq!(b.as_slice()[digit], b'7');
    b.as_mut_slice()[digit] ^= 0x01;
    n[1].refresh_nsh_mac(b.as_mut_slice()).unwrap();
    let b = forwarded(n[2].handle_from_domain(now, b), 3);
    let b = forwarded(n[3].handle_from_domain(now, b), 4);
    assert_eq!(dropped(n[4].handle_from_domain(now, b)), DropReason::SfcOriginFailed, "metadata with the chain key");
    let at_obs = to_obs(&mut n);

    // Any changed byte of labels (label value) or NSH is caught at the next SF (a changed
    // top label may first be forwarded as transit to the node it now names).
    let nsh_at = 4 * 3; // counter, nat, web
    for at in [1, 2, 6, nsh_at + 4, nsh_at + 7, nsh_at + 12, nsh_at + 30, nsh_at + 80] {
        let mut b = copy(&at_obs);
        b.as_mut_slice()[at] ^= 0x10;
        let mut v = n[2].handle_from_domain(now, b);
        if let Verdict::Forward(NodeId(p), b) = v {
            v = n[p as usize].handle_from_domain(now, b);
        }
        let r = dropped(v);
        let expected = [DropReason::SfcMacFailed, DropReason::UnknownLabel, DropReason::SfcKeyUnknown];
        assert!(expected.contains(&r), "byte {at}: {r:?}");
    }
    // Replayed later than the window: stale.
    let late = now + core::time::Duration::from_secs(3);
    assert_eq!(dropped(n[2].handle_from_domain(late, copy(&at_obs))), DropReason::SfcStale);
    // A node that requires integrity refuses a packet without an NSH MAC.
    let plain = plain_topology().compile().unwrap();
    let mut ingress = plain[0].build(now).unwrap();
    let b = forwarded(ingress.handle_local(now, PacketBuf::from_slice(&packets::build(&flow, 2, b"x"))), 1);
    assert_eq!(dropped(n[1].handle_from_domain(now, b)), DropReason::SfcIntegrityMissing);
}

#[test]
fn a_node_configuration_can_forget_every_key_it_held() {
    let mut t = plain_topology();
    (t.sfc_integrity, t.link_protection) = (true, true);
    for mut cfg in t.compile().unwrap() {
        assert!(cfg.outbound_sas.iter().all(|o| !o.sa.keymat.0.is_empty()), "{}: keys before", cfg.name);
        cfg.forget_keys();
        let sas = cfg.outbound_sas.iter().map(|o| &o.sa).chain(cfg.inbound_sas.iter().map(|i| &i.sa));
        assert!(sas.clone().count() > 0, "{}: the SAs stay listed", cfg.name);
        for sa in sas {
            assert!(sa.keymat.0.is_empty(), "{}: SA {:#x} forgot its key", cfg.name, sa.spi);
        }
        for k in &cfg.chain_keys {
            assert!(k.mac_key.is_none() && k.enc_key.is_none() && k.origin_key.is_none() && k.pot.is_none());
        }
    }
}

/// RFC 4303 §2.6: a dummy packet (ESP next header 59) under the classifier's payload SA is
/// discarded by the first hop that opens it (node-a, whose firewall is intrusive) and counted
/// (`esp_dummy`), never handed to an SF or delivered.
#[test]
fn a_dummy_packet_is_discarded_where_it_is_opened() {
    use zsfc_wire::{PacketBuf, ipv4};
    let cfgs = plain_topology().compile().unwrap();
    let now = Instant::from_secs(1);
    let mut n: Vec<zsfc_dataplane::Node> = cfgs.iter().map(|c| c.build(now).unwrap()).collect();
    let flow = Flow::udp("10.1.0.9", 5000, "10.9.0.1", 53);
    let real = forwarded(n[0].handle_local(now, PacketBuf::from_slice(&packets::build(&flow, 1, b"x"))), 1);
    // The classifier's labels and NSH, then a dummy sealed under its SA (sequence numbers after the
    // real packet's) behind an outer IPv4 header.
    let p = real.as_slice();
    let mut labels = (0..).step_by(4).find(|&i| p[i + 2] & 1 == 1).unwrap() + 4;
    if zsfc_wire::nsh::looks_like_nsh(p[labels]) {
        labels += zsfc_wire::nsh::Header::new_checked(&p[labels..]).unwrap().len();
    }
    let spi = u32::from_be_bytes(p[labels + 20..labels + 24].try_into().unwrap());
    let params = &cfgs[0].outbound_sas.iter().find(|o| o.sa.spi == spi).unwrap().sa;
    let sa = zsfc_esp::SaConfig { first_seq: 10, ..zsfc_config::sa_config(params, 0).unwrap() };
    let mut tx = zsfc_esp::OutboundSa::new(&sa, now).unwrap();
    for _ in 0..5 {
        let mut d = PacketBuf::from_slice(b"padding of a dummy");
        tx.seal_link(now, &mut d, zsfc_esp::NEXT_HEADER_DUMMY).unwrap();
        let len = d.len() as u16;
        ipv4::Repr::new([10, 1, 0, 9], [10, 9, 0, 1], 50, len).emit(d.push_front(20).unwrap()).unwrap();
        d.push_front(labels).unwrap().copy_from_slice(&real.as_slice()[..labels]);
        assert_eq!(dropped(n[1].handle_from_domain(now, d)), DropReason::EspDummy);
    }
    assert_eq!(n[1].drops().get(DropReason::EspDummy), 5);
}

/// RFC 8300 §2.2: every SFF that forwards the packet after its SF decrements the NSH TTL (the
/// MAC, which leaves the TTL out, still verifies); at 0 the packet is dropped
/// (`nsh_ttl_expired`), not forwarded.
#[test]
fn the_nsh_ttl_falls_by_one_per_sff_and_a_packet_at_zero_is_dropped() {
    use zsfc_dataplane::Verdict;
    use zsfc_wire::PacketBuf;
    let cfgs = integrity();
    let now = Instant::from_secs(1);
    let mut n: Vec<zsfc_dataplane::Node> = cfgs.iter().map(|c| c.build(now).unwrap()).collect();
    // The NSH follows the label stack (S bit set in the last entry).
    let nsh_at = |p: &[u8]| (0..).step_by(4).find(|&i| p[i + 2] & 1 == 1).unwrap() + 4;
    let ttl = |b: &PacketBuf| {
        let (p, at) = (b.as_slice(), nsh_at(b.as_slice()));
        ((p[at] & 0x0f) << 2) | (p[at + 1] >> 6)
    };
    let flow = Flow::udp("10.1.0.9", 5000, "10.9.0.1", 53);
    let b = forwarded(n[0].handle_local(now, PacketBuf::from_slice(&packets::build(&flow, 1, b"x"))), 1);
    assert_eq!(ttl(&b), 63, "as the classifier sends it");
    // node-a forwards after two SFs (firewall, DPI), obs after one, node-b after the NAT.
    let b = forwarded(n[1].handle_from_domain(now, b), 2);
    assert_eq!(ttl(&b), 61);
    let b = forwarded(n[2].handle_from_domain(now, b), 3);
    assert_eq!(ttl(&b), 60);
    let b = forwarded(n[3].handle_from_domain(now, b), 4);
    assert_eq!(ttl(&b), 59);
    assert!(matches!(n[4].handle_from_domain(now, b), Verdict::Deliver(_)), "the MAC verifies throughout");
    // A packet that arrives with TTL 1 is not forwarded by the next SFF.
    let mut b = forwarded(n[0].handle_local(now, PacketBuf::from_slice(&packets::build(&flow, 2, b"y"))), 1);
    let at = nsh_at(b.as_slice());
    let p = b.as_mut_slice();
    (p[at], p[at + 1]) = (p[at] & 0xf0, (p[at + 1] & 0x3f) | (1 << 6));
    assert_eq!(dropped(n[1].handle_from_domain(now, b)), DropReason::NshTtlExpired);
}

#[test]
fn the_classifier_gives_each_flow_its_entropy_and_both_directions_the_same() {
    // RFC 7510 §3: the outer source port carries the flow's entropy, from 49152-65535.
    let cfgs = protected();
    let mut ingress = cfgs[0].build(Instant::from_secs(1)).unwrap();
    let mut entropy = |flow: &Flow| {
        let pkt = zsfc_wire::PacketBuf::from_slice(&packets::build(flow, 1, b"q"));
        forwarded(ingress.handle_local(Instant::from_secs(1), pkt), 1).meta.entropy
    };
    let flows: Vec<Flow> = (0..32).map(|i| Flow::udp("10.1.0.9", 5000 + i, "10.9.0.1", 53)).collect();
    let first: Vec<u16> = flows.iter().map(&mut entropy).collect();
    assert!(first.iter().all(|&e| e >= 49152), "{first:?}");
    assert_eq!(first, flows.iter().map(&mut entropy).collect::<Vec<_>>(), "a flow keeps its entropy");
    assert!(first.iter().collect::<HashSet<_>>().len() >= 30, "32 flows, entropies {first:?}");
    // The answer's flow hashes alike (the same 5-tuple either way round).
    let egress = cfgs.iter().position(|c| c.name == "egress").unwrap();
    let mut back = cfgs[egress].build(Instant::from_secs(1)).unwrap();
    let answer = zsfc_wire::PacketBuf::from_slice(&packets::build(&flows[0].reversed(), 1, b"a"));
    match back.handle_local(Instant::from_secs(1), answer) {
        zsfc_dataplane::Verdict::Forward(_, b) => assert_eq!(b.meta.entropy, first[0]),
        other => panic!("the egress sends the answer back, got {other:?}"),
    }
}

/// Issue 19 point 6 at the engine: links of MTU 1300 (`transport.mtu`) at the classifier. An
/// inner packet that fits is sent; one that would not fit once encapsulated is dropped
/// (`too_big`) and answered with ICMP fragmentation needed carrying the inner MTU that fits,
/// rate-limited; without DF it is dropped unanswered; a node never sends a datagram larger
/// than its link.
#[test]
fn a_packet_too_big_for_the_link_is_answered_with_icmp_and_never_sent() {
    use zsfc_dataplane::Verdict;
    let mut cfgs = protected();
    let unlimited = cfgs[0].clone();
    cfgs[0].transport = Some(zsfc_config::TransportConfig {
        listen: Some("192.0.2.1:4500".into()),
        ethernet: None,
        ring: None,
        mtu: Some(1300),
    });
    let now = Instant::from_secs(1);
    let mut ingress = cfgs[0].build(now).unwrap();
    let flow = Flow::udp("10.1.0.9", 5000, "10.9.0.1", 53);
    let sized = |n: usize| zsfc_wire::PacketBuf::from_slice(&packets::build(&flow, 1, &vec![b'x'; n]));
    // The room: 1300 - 28 (outer IPv4 + UDP), then the chain's labels and NSH, payload ESP
    // (20 + 37) and link ESP (37). Find it from below: the largest packet still sent.
    let mut fits = 0;
    for payload in (1000..1300).step_by(1) {
        match ingress.handle_local(now, sized(payload)) {
            Verdict::Forward(_, b) => {
                assert!(b.len() <= 1272, "a datagram of {} bytes left for a 1300-byte link", b.len());
                fits = payload + 28;
            }
            Verdict::Deliver(icmp) => {
                let e = icmp.as_slice();
                assert_eq!((e[9], e[20], e[21]), (1, 3, 4), "ICMP fragmentation needed");
                let mtu = u16::from_be_bytes([e[26], e[27]]) as usize;
                assert_eq!(mtu, fits, "the MTU it names is the largest inner packet that was sent");
                assert_eq!(&e[12..16], &[10, 9, 0, 1], "from the packet's destination");
                assert_eq!(&e[16..20], &[10, 1, 0, 9], "to its sender");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(fits > 1000, "nothing fitted");
    assert_eq!(ingress.drops().get(DropReason::TooBig), 1);
    // A flood of oversized packets: every one dropped, at most a burst of errors.
    let answered = (0..200).filter(|_| matches!(ingress.handle_local(now, sized(1400)), Verdict::Deliver(_))).count();
    assert_eq!(ingress.drops().get(DropReason::TooBig), 201);
    assert_eq!(answered + 1, zsfc_dataplane::pmtu::ICMP_PER_SECOND as usize);
    assert_eq!(ingress.stats().icmp_too_big, answered as u64 + 1);
    // Without DF: dropped, no answer (the sender allowed fragments; the domain makes none).
    let mut no_df = packets::build(&flow, 1, &[b'x'; 1400]);
    no_df[6] = 0;
    no_df[10..12].fill(0);
    let c = zsfc_wire::checksum::finish(zsfc_wire::checksum::sum(&no_df[..20]));
    no_df[10..12].copy_from_slice(&c.to_be_bytes());
    let later = Instant::from_secs(5);
    assert!(matches!(
        ingress.handle_local(later, zsfc_wire::PacketBuf::from_slice(&no_df)),
        Verdict::Drop(DropReason::TooBig, _)
    ));
    // An SF node whose own links are smaller than what reaches it forwards nothing larger.
    let mut wide = unlimited.build(now).unwrap();
    let Verdict::Forward(_, big) = wide.handle_local(now, sized(1200)) else { panic!("sent") };
    let a = cfgs.iter().position(|c| c.name == "node-a").unwrap();
    cfgs[a].transport = Some(zsfc_config::TransportConfig { mtu: Some(1000), ..cfgs[0].transport.clone().unwrap() });
    let mut node_a = cfgs[a].build(now).unwrap();
    assert!(matches!(node_a.handle_from_domain(now, big), Verdict::Drop(DropReason::TooBig, _)));
}

//! Data-plane micro benchmarks:
//! - `proxy_round_trip/N`: the caching proxy's own work on an IPv4/TCP packet with N labels
//!   below the popped one: pop, measure and stage the encapsulation, strip it, key the packet by
//!   its immutable headers (seed 003 mode), commit, then key again, take and restore.
//! - `intrusive_hop/SIZE`: one whole SF hop in a `Node`: pop, ESP open, forward SF, ESP seal with
//!   the node's own SA, restore the labels, route to the next node.
//! - `secure_hop/PROTECTION/SIZE`: the same hop with the protections of mode `secure`: `link`
//!   (link ESP opened and sealed), `integrity` (RFC 9145 MAC checked and computed again, proof
//!   of transit updated) or `all`. The packets come from a real classifier node.
#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests and benchmarks: a failure should stop them loudly, with its place"
)]
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use zsfc_dataplane::integrity::{ChainKeyConfig, PotRole, PotShare};
use zsfc_dataplane::proxy::{self, CacheKey, ProxyCache};
use zsfc_dataplane::{
    Action, ChainId, ChainIntegrity, ChainSpec, Instant, LabelAction, Node, NodeId, NodeSettings, PacketBuf, Prefix,
    Rule, SaIdx, SaUse, SfSpec, Verdict,
};
use zsfc_esp::{Algorithm, OutboundSa, SaConfig, SaKey};
use zsfc_functions::Forward;
use zsfc_sim::packets::{self, Flow};
use zsfc_wire::mpls;

fn labelled(below: usize, payload: usize) -> Vec<u8> {
    let labels: Vec<u32> = (0..=below as u32).map(|i| 1000 + i).collect();
    let mut b = vec![0u8; labels.len() * 4];
    mpls::emit_stack(&labels, 64, &mut b).unwrap();
    b.extend(packets::build(&Flow::tcp("10.1.0.5", 40000, "10.9.0.1", 80), 7, &vec![0u8; payload]));
    b
}

fn proxy_round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("proxy_round_trip");
    for below in [0usize, 3, 10] {
        let pkt = labelled(below, 1360);
        let mut cache = ProxyCache::new(4096);
        let mut buf = PacketBuf::from_slice(&pkt);
        let now = Instant::ZERO;
        g.bench_function(BenchmarkId::from_parameter(below), |b| {
            b.iter(|| {
                // Pop the own label (the bottom one when nothing is below: then only IP remains).
                let top = mpls::Lse::read(buf.as_slice()).unwrap();
                buf.pull_front(4).unwrap();
                let (len, _) = if top.bos() { (0, false) } else { proxy::encap_len(buf.as_slice(), 16).unwrap() };
                let t = cache.stage(&buf.as_slice()[..len]).unwrap();
                buf.pull_front(len).unwrap();
                let key = CacheKey::Header(proxy::header_key(buf.as_slice()).unwrap());
                cache.commit(t, key, None, now).unwrap();
                // ... the SF runs here ...
                let key = CacheKey::Header(proxy::header_key(buf.as_slice()).unwrap());
                cache.take_with(&key, |hdr, _| buf.push_front(hdr.len()).unwrap().copy_from_slice(hdr)).unwrap();
                buf.push_front(4).unwrap().copy_from_slice(&top.to_bytes());
            })
        });
    }
    g.finish();
}

fn intrusive_hop(c: &mut Criterion) {
    let mut g = c.benchmark_group("intrusive_hop");
    for size in [1400usize, 9000] {
        let now = Instant::ZERO;
        let sa_in = SaConfig::new(0x100, SaKey::generate(Algorithm::Aes256Gcm).unwrap());
        let sa_out = SaConfig::new(0x200, SaKey::generate(Algorithm::Aes256Gcm).unwrap());
        let mut node = Node::new(NodeSettings::default());
        node.add_sf(SfSpec::in_process(1000, "forward", true, Box::new(Forward::default()))).unwrap();
        node.set_label(1001, LabelAction::Remote(NodeId(1))).unwrap();
        node.install_outbound(SaIdx(0), &sa_out, now).unwrap();
        node.install_inbound(&sa_in, SaUse::Reseal(SaIdx(0)), now).unwrap();
        let mut upstream = OutboundSa::new(&sa_in, now).unwrap();
        let ip = packets::build(&Flow::tcp("10.1.0.5", 40000, "10.9.0.1", 80), 7, &vec![0u8; size - 40]);
        let mut stack = [0u8; 8];
        mpls::emit_stack(&[1000, 1001], 64, &mut stack).unwrap();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter_batched(
                || {
                    let mut buf = PacketBuf::from_slice(&ip);
                    upstream.seal(now, &mut buf).unwrap();
                    buf.push_front(8).unwrap().copy_from_slice(&stack);
                    buf
                },
                |buf| match node.handle_from_domain(now, buf) {
                    Verdict::Forward(_, b) => b,
                    v => panic!("unexpected {v:?}"),
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// A classifier (node 0) and an SF node (node 1) with the SF on label 1000, then the delivery
/// label 1001 on node 2; `link` and `integrity` choose the protections.
fn secure_pair(link: bool, integrity: bool) -> (Node, Node) {
    let now = Instant::ZERO;
    let settings = NodeSettings { link_auth: link, sfc_integrity: integrity, ..NodeSettings::default() };
    let sa = |spi: u32, alg: Algorithm| SaConfig::new(spi, SaKey::generate(alg).unwrap());
    let (payload_in, payload_out) = (sa(0x100, Algorithm::Aes256Gcm), sa(0x200, Algorithm::Aes256Gcm));
    let (link_in, link_out) = (sa(0x300, Algorithm::Aes128Gmac), sa(0x400, Algorithm::Aes128Gmac));
    let key = |pot: PotRole| ChainKeyConfig {
        key_id: 5,
        chain: 1,
        mac_key: &[1; 32],
        enc_key: Some(&[2; 16]),
        origin_key: Some(&[3; 32]),
        pot: Some(pot),
    };
    let mut classifier = Node::new(settings);
    classifier.install_outbound(SaIdx(0), &payload_in, now).unwrap();
    classifier.set_label(1000, LabelAction::Remote(NodeId(1))).unwrap();
    let mut sf = Node::new(settings);
    sf.add_sf(SfSpec::in_process(1000, "forward", true, Box::new(Forward::default()))).unwrap();
    sf.set_label(1001, LabelAction::Remote(NodeId(2))).unwrap();
    sf.install_outbound(SaIdx(0), &payload_out, now).unwrap();
    sf.install_inbound(&payload_in, SaUse::Reseal(SaIdx(0)), now).unwrap();
    if link {
        classifier.install_outbound(SaIdx(1), &link_in, now).unwrap();
        classifier.set_link_sa(NodeId(1), Some(SaIdx(1))).unwrap();
        sf.install_inbound(&link_in, SaUse::Link, now).unwrap();
        sf.install_outbound(SaIdx(1), &link_out, now).unwrap();
        sf.set_link_sa(NodeId(2), Some(SaIdx(1))).unwrap();
    }
    if integrity {
        classifier.install_chain_key(&key(PotRole { poly2: vec![7], ..PotRole::default() })).unwrap();
        let share = PotShare { label: 1000, x: 11, y: 13, lpc: 17 };
        sf.install_chain_key(&key(PotRole { poly2: vec![7], shares: vec![share], secret: None })).unwrap();
    }
    let spec = ChainSpec {
        id: ChainId(1),
        labels: vec![1000, 1001],
        sa: SaIdx(0),
        sa_via: Vec::new(),
        nsh: None,
        ttl: 64,
        integrity: integrity.then_some(ChainIntegrity { key_id: 5, pot: true }),
    };
    classifier.add_chain(spec).unwrap();
    classifier.classifier_mut().push_rule(Rule::between(Prefix::any_v4(), Prefix::any_v4(), Action::Chain(ChainId(1))));
    (classifier, sf)
}

fn secure_hop(c: &mut Criterion) {
    let mut g = c.benchmark_group("secure_hop");
    for (name, link, integrity) in [("link", true, false), ("integrity", false, true), ("all", true, true)] {
        for size in [1400usize, 9000] {
            let now = Instant::ZERO;
            let (mut classifier, mut sf) = secure_pair(link, integrity);
            let ip = packets::build(&Flow::tcp("10.1.0.5", 40000, "10.9.0.1", 80), 7, &vec![0u8; size - 40]);
            g.throughput(Throughput::Bytes(size as u64));
            g.bench_function(BenchmarkId::new(name, size), |b| {
                b.iter_batched(
                    || match classifier.handle_local(now, PacketBuf::from_slice(&ip)) {
                        Verdict::Forward(_, b) => b,
                        v => panic!("not classified: {v:?}"),
                    },
                    |buf| match sf.handle_from_domain(now, buf) {
                        Verdict::Forward(_, b) => b,
                        v => panic!("unexpected {v:?}"),
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_millis(500)).measurement_time(std::time::Duration::from_secs(2));
    targets = proxy_round_trip, intrusive_hop, secure_hop
}
criterion_main!(benches);

//! SF pools compiled from a topology and run in memory: flows spread over the instances by
//! weight, each flow and its answers cross one instance of every SF, the proof of transit
//! verifies through any of them, and one SA per pair of adjacent encrypting instances.
#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests and benchmarks: a failure should stop them loudly, with its place"
)]
mod common;
use common::sim_of;
use std::collections::{HashMap, HashSet};
use zsfc_config::Topology;
use zsfc_dataplane::SfId;
use zsfc_sim::packets::{self, Flow};
use zsfc_sim::{ClientSide, FakeEchoService, Sim};

/// Three pools on the way to the web and back: an intrusive firewall on two nodes, a
/// non-intrusive counter on two, an intrusive DPI on two with weights 1 and 3. Both
/// protections (link ESP, SFC integrity with proof of transit) on, as by default.
const POOLED: &str = r#"
version = 1
nodes = [{ name = "ingress" }, { name = "fw1" }, { name = "fw2" }, { name = "obs1" }, { name = "obs2" },
         { name = "dpi1" }, { name = "dpi2" }, { name = "egress" }]
endpoints = [{ name = "web", node = "egress" }, { name = "clients", node = "ingress" }]

[[sfs]]
name = "fw"
instances = [{ node = "fw1" }, { node = "fw2" }]
intrusive = true
function = { kind = "firewall", rules = [{ protocol = "tcp", dst_ports = [22, 22], action = "deny" }] }

[[sfs]]
name = "obs"
instances = [{ node = "obs1" }, { node = "obs2" }]
intrusive = false
function = { kind = "counter" }

[[sfs]]
name = "dpi"
instances = [{ node = "dpi1", weight = 1 }, { node = "dpi2", weight = 3 }]
intrusive = true
function = { kind = "dpi", patterns = ["test"] }

[[chains]]
name = "to-web"
classifier = "ingress"
sfs = ["fw", "obs", "dpi"]
to = "web"
rules = [{ src = "10.1.0.0/24", dst = "10.9.0.1" }]

[[chains]]
name = "from-web"
classifier = "egress"
sfs = ["dpi", "obs", "fw"]
to = "clients"
rules = [{ src = "10.9.0.1", dst = "10.1.0.0/24" }]
"#;

/// Packets each SF instance passed on (proxy TX), by node name.
fn passed(sim: &Sim) -> HashMap<String, u64> {
    sim.nodes.iter().filter_map(|n| n.node.sf_report(SfId(0)).map(|r| (n.name.clone(), r.proxy.tx_success))).collect()
}

#[test]
fn each_flow_and_its_answers_cross_one_instance_of_every_sf_spread_by_weight() {
    let cfgs = Topology::from_toml(POOLED).unwrap().compile().unwrap();
    let mut sim = sim_of(&cfgs);
    let mut on: HashMap<String, u32> = HashMap::new();
    for i in 0..64u16 {
        let flow = Flow::udp("10.1.0.9", 20000 + i, "10.9.0.1", 53);
        let before = passed(&sim);
        for seq in 0..3 {
            sim.send_local(0, sim.now, &packets::build(&flow, seq, b"query"));
        }
        sim.run(100_000);
        let after = passed(&sim);
        let crossed: Vec<&String> = after.keys().filter(|n| after[*n] != before[*n]).collect();
        // 3 packets there and 3 answers back through the same instance of each pool.
        assert_eq!(crossed.len(), 3, "flow {i}: crossed {crossed:?}");
        for n in &crossed {
            assert_eq!(after[*n] - before[*n], 6, "flow {i} at {n}: both directions, every packet");
            *on.entry((*n).clone()).or_default() += 1;
        }
        for pool in ["fw", "obs", "dpi"] {
            assert_eq!(crossed.iter().filter(|n| n.starts_with(pool)).count(), 1, "flow {i}: one {pool}");
        }
    }
    assert_eq!(sim.local::<FakeEchoService>(7).unwrap().received.len(), 192);
    assert_eq!(sim.local::<ClientSide>(0).unwrap().received.len(), 192);
    assert!(sim.drops.is_empty(), "no drop at all: {:?}", sim.drops);
    for n in ["fw1", "fw2", "obs1", "obs2", "dpi1"] {
        assert!(on.get(n).copied().unwrap_or(0) >= 8, "{n} carried few flows: {on:?}");
    }
    assert!(on["dpi2"] > 2 * on["dpi1"], "weight 3 against 1: {on:?}");
}

#[test]
fn one_sa_per_pair_of_adjacent_encrypting_instances_and_shares_per_sf() {
    let cfgs = Topology::from_toml(POOLED).unwrap().compile().unwrap();
    let by = |n: &str| cfgs.iter().find(|c| c.name == n).unwrap();
    // to-web: ingress -> fw{1,2}: 2, fw -> dpi: 4, dpi -> egress: 2; from-web the same back.
    let outbound: usize =
        cfgs.iter().map(|c| c.outbound_sas.iter().filter(|o| !o.sa.algorithm.esp().authenticates_only()).count()).sum();
    assert_eq!(outbound, 16);
    for n in ["obs1", "obs2"] {
        let payload = by(n).inbound_sas.iter().filter(|s| !s.link).count();
        assert_eq!(payload, 0, "the non-intrusive counter's node {n} holds no payload key");
    }
    let ingress = &by("ingress").chains[0];
    assert_eq!(ingress.sa_via.len(), 2, "the classifier seals per firewall instance");
    // fw1 opens from the ingress (to-web) and from each DPI instance (from-web); before the
    // DPI pool it re-seals per DPI instance.
    let fw1 = by("fw1");
    assert_eq!(fw1.inbound_sas.iter().filter(|s| !s.link).count(), 3);
    assert!(fw1.inbound_sas.iter().filter(|s| !s.link).any(|s| s.reseal_via.len() == 2));
    // Every node knows every pool, and both instances of an SF hold the same share.
    assert!(cfgs.iter().all(|c| c.pools.len() == 3));
    let share = |n: &str| by(n).chain_keys.iter().find(|k| k.chain == 1).unwrap().pot.clone().unwrap().shares[0];
    let (a, b) = (share("dpi1"), share("dpi2"));
    assert_eq!((a.x, a.y), (b.x, b.y));
    assert_ne!(a.label, b.label, "instances have labels of their own");
    let labels: HashSet<u32> = cfgs.iter().flat_map(|c| c.sfs.iter().map(|s| s.label)).collect();
    assert_eq!(labels.len(), 6);
}

/// A chain classified at two nodes (a second ingress gateway, RFC 7665 §4.4): both get the
/// chain with the same id, labels, rules and chain key, each with SAs of its own to every
/// instance of the first encrypting pool; a node classifies onto a chain once.
#[test]
fn a_chain_classified_at_two_nodes_gives_each_its_own_sas_and_the_same_chain_key() {
    let text = POOLED
        .replace(r#"nodes = [{ name = "ingress" },"#, r#"nodes = [{ name = "ingress" }, { name = "ingress2" },"#)
        .replacen(r#"classifier = "ingress""#, "classifier = \"ingress\"\nalso_classified_at = [\"ingress2\"]", 1);
    let cfgs = Topology::from_toml(&text).unwrap().compile().unwrap();
    let by = |n: &str| cfgs.iter().find(|c| c.name == n).unwrap();
    let (a, b) = (&by("ingress").chains[0], &by("ingress2").chains[0]);
    assert_eq!((a.id, &a.labels), (b.id, &b.labels));
    assert_eq!((a.sa_via.len(), b.sa_via.len()), (2, 2), "each classifier seals per firewall instance");
    let spi = |n: &str, idx: u32| by(n).outbound_sas.iter().find(|o| o.index == idx).unwrap().sa.spi;
    let (sa, sb): (HashSet<u32>, HashSet<u32>) = (
        a.sa_via.iter().map(|v| spi("ingress", v.sa)).collect(),
        b.sa_via.iter().map(|v| spi("ingress2", v.sa)).collect(),
    );
    assert!(sa.is_disjoint(&sb), "the classifiers share no SA: {sa:?} {sb:?}");
    assert_eq!(by("ingress2").rules.len(), by("ingress").rules.len());
    // fw1 opens from both classifiers (to-web) and from each DPI instance (from-web).
    assert_eq!(by("fw1").inbound_sas.iter().filter(|s| !s.link).count(), 4);
    let key = |n: &str| {
        let k = by(n).chain_keys.iter().find(|k| k.chain == 1).unwrap();
        (k.key_id, k.mac_key.as_ref().map(|m| m.0.to_vec()), k.origin_key.as_ref().map(|m| m.0.to_vec()))
    };
    assert_eq!(key("ingress"), key("ingress2"));
    assert!(key("ingress").2.is_some(), "the classifiers hold the origin key");
    let twice = text.replace(r#"also_classified_at = ["ingress2"]"#, r#"also_classified_at = ["ingress"]"#);
    let e = Topology::from_toml(&twice).unwrap().compile().unwrap_err().to_string();
    assert!(e.contains("chains[0].also_classified_at[0]"), "{e}");
}

#[test]
fn pool_mistakes_name_the_field() {
    let cases = [
        (
            POOLED.replace("{ node = \"fw2\" }", "{ node = \"fw1\" }"),
            "sfs[0].instances[1].node: \"fw1\" has another instance",
        ),
        (POOLED.replace("weight = 1 }", "weight = 0 }"), "sfs[2].instances[0].weight: must be at least 1"),
        (POOLED.replace("name = \"obs\"\n", "name = \"obs\"\nnode = \"obs1\"\n"), "sfs[1].node: give exactly one of"),
        (POOLED.replace("{ node = \"obs2\" }", "{ node = \"obs3\" }"), "sfs[1].instances[1].node: no node named"),
    ];
    for (text, want) in cases {
        let err = Topology::from_toml(&text)
            .and_then(|t| t.compile())
            .err()
            .unwrap_or_else(|| panic!("accepted; wanted {want:?}"));
        assert!(err.to_string().contains(want), "{err} does not say {want:?}");
    }
}

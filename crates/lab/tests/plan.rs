//! Lab files (`zsfc up`): every example plans; the plan holds what `up` builds; mistakes are
//! reported with the field at fault before anything exists.
use std::path::Path;
use zsfc_lab::{Lab, encapsulation_overhead};

const EXAMPLES: [(&str, &str); 8] = [
    ("quickstart", include_str!("../../../examples/quickstart.toml")),
    ("seed-testbed", include_str!("../../../examples/seed-testbed.toml")),
    ("nat", include_str!("../../../examples/nat.toml")),
    ("udp", include_str!("../../../examples/udp.toml")),
    ("paths", include_str!("../../../examples/paths.toml")),
    ("pools", include_str!("../../../examples/pools.toml")),
    ("failover", include_str!("../../../examples/failover.toml")),
    ("gateways", include_str!("../../../examples/gateways.toml")),
];

/// Two gateways: each its own client network, address, certificate and local side; the chain
/// classified at both with one id; a return chain per gateway; the service's node routes
/// answers to both.
#[test]
fn a_second_gateway_gets_its_own_networks_certificate_and_return_chain() {
    let plan = Lab::from_toml(EXAMPLES[7].1).unwrap().plan(Path::new("/state")).unwrap();
    assert_eq!(plan.more_gateways.len(), 1);
    let g2 = &plan.more_gateways[0];
    assert_eq!((g2.node, g2.address.to_string(), g2.client_net.as_str()), (1, "172.16.1.1".into(), "172.16.1.0/24"));
    assert_eq!(plan.clients[0].more_addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(), ["172.16.1.10"]);
    let (a, b) = (&plan.nodes[0].config, &plan.nodes[1].config);
    let (ga, gb) = (a.gateway.as_ref().unwrap(), b.gateway.as_ref().unwrap());
    assert_eq!((ga.listen.as_str(), gb.listen.as_str()), ("172.16.0.1:443", "172.16.1.1:443"));
    assert_eq!((ga.inner_source.as_str(), gb.inner_source.as_str()), ("10.1.0.1", "10.1.1.1"));
    assert!(ga.cert.ends_with("/gateway.pem") && gb.cert.ends_with("/gateway-ingress2.pem"), "{} {}", ga.cert, gb.cert);
    assert_eq!(ga.grants, gb.grants, "one policy for both");
    let t = &plan.topology;
    let names: Vec<&str> = t.chains.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["web-via-dpi", "web-return", "web-return-2"]);
    assert_eq!(t.chains[0].also_classified_at, ["ingress2"]);
    assert_eq!(t.chains[2].to, "clients-2");
    let egress = plan.nodes[3].config.local.as_ref().unwrap();
    for r in ["10.1.0.1/32", "172.16.0.0/24", "10.1.1.1/32", "172.16.1.0/24"] {
        assert!(egress.routes.iter().any(|x| x == r), "egress routes {r}: {:?}", egress.routes);
    }
}

#[test]
fn a_pooled_external_sf_gets_a_namespace_and_circuits_per_instance() {
    let plan = Lab::from_toml(EXAMPLES[5].1).unwrap().plan(Path::new("/state")).unwrap();
    let fw: Vec<(&str, usize)> = plan.external_sfs.iter().map(|s| (s.ns.as_str(), s.node)).collect();
    assert_eq!(fw, [("zsfc-pools-sf-fw", 1), ("zsfc-pools-sf-fw-1", 2)]);
    for n in &plan.nodes[1..3] {
        let names: Vec<&str> = n.config.sfs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["fw", "dpi"], "node {}", n.name);
        assert!(n.config.sfs[0].attachment.is_some(), "node {}: the firewall instance's circuit", n.name);
    }
    let text =
        EXAMPLES[5].1.replace("instances = [{ node = \"sf1\" }, { node = \"sf2\" }]", "node = \"sf1\"\ninstances = []");
    assert!(Lab::from_toml(&text).unwrap().plan(Path::new("/state")).is_ok(), "an empty list is no pool");
    let text = EXAMPLES[5].1.replace("instances = [{ node = \"sf1\" }, { node = \"sf2\" }]", "");
    let err = Lab::from_toml(&text).unwrap().plan(Path::new("/state")).unwrap_err().to_string();
    assert!(err.contains("sfs[0].node: give exactly one of `node` and `instances`"), "{err}");
}

#[test]
fn every_example_plans() {
    for (name, text) in EXAMPLES {
        let lab = Lab::from_toml(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let plan = lab.plan(Path::new("/run/zsfc/x")).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!plan.nodes.is_empty(), "{name}");
        for n in &plan.nodes {
            n.config.check().unwrap_or_else(|e| panic!("{name}: node {}: {e}", n.name));
            n.config.io_settings().unwrap_or_else(|e| panic!("{name}: node {}: {e}", n.name));
        }
    }
}

#[test]
fn the_seed_testbed_plan_has_its_chains_policy_and_external_sf() {
    let plan = Lab::from_toml(EXAMPLES[1].1).unwrap().plan(Path::new("/state")).unwrap();
    assert_eq!(
        plan.nodes.iter().map(|n| n.ns.as_str()).collect::<Vec<_>>(),
        ["zsfc-seed-ingress", "zsfc-seed-sf1", "zsfc-seed-sf2", "zsfc-seed-egress"]
    );
    let ingress = &plan.nodes[0].config;
    // Ethernet + MPLS on the segment, as in the seed: peers by MAC, no UDP socket.
    assert_eq!(ingress.transport.as_ref().and_then(|t| t.ethernet.as_deref()), Some("eth0"));
    assert!(ingress.transport.as_ref().is_some_and(|t| t.listen.is_none()));
    assert_eq!(ingress.peers[0].mac.as_deref(), plan.nodes[1].mac.as_deref());
    assert!(ingress.peers.iter().all(|p| p.address.is_none() && p.mac.is_some()));
    let gw = ingress.gateway.as_ref().unwrap();
    assert_eq!(gw.ca, "/state/pki/ca.pem");
    assert_eq!(gw.listen, "172.16.0.1:443");
    let grants: Vec<(&str, &str, u32)> =
        gw.grants.iter().map(|g| (g.identity.as_str(), g.service.as_str(), g.chain)).collect();
    assert_eq!(grants, [("client1", "web.seed", 1), ("client2", "web.seed", 2)]);
    // client1's chain crosses one SF, client2's two; both end at the egress's endpoint label.
    let chains: Vec<usize> = ingress.chains.iter().map(|c| c.labels.len()).collect();
    assert_eq!(chains, [2, 3]);
    assert_eq!(
        plan.chains,
        [
            "client1-path (id 1): client1 → forward → web",
            "client2-path (id 2): client2 → forward → dpi → web",
            "web-return (id 3): web → clients"
        ]
    );
    // The external DPI: attachment devices on sf2, its own namespace and rule.
    let sf2 = &plan.nodes[2].config;
    let a = sf2.sfs[0].attachment.as_ref().unwrap();
    assert!(sf2.sfs[0].external && sf2.sfs[0].intrusive);
    assert_eq!(plan.external_sfs[0].ns, "zsfc-seed-sf-dpi");
    let circuit = &plan.external_sfs[0].circuits[0];
    assert_eq!((circuit.to_sf.as_str(), circuit.from_sf.as_str()), (a.to_sf.as_str(), a.from_sf.as_str()));
    assert_eq!(plan.external_sfs[0].circuits.len(), 1, "one lane, one circuit");
    assert!(sf2.sfs[0].lane_attachments.is_empty());
    assert_eq!(plan.external_sfs[0].iptables[0][..2], ["-A", "FORWARD"]);
    // A veth pair in, a veth pair out (the default): the node addresses the SF's `in` side.
    let v = circuit.veth.as_ref().unwrap();
    assert_eq!(a.kind, zsfc_config::AttachmentKindConfig::Veth);
    assert_eq!(a.to_sf_mac.as_deref(), Some(v.sf_in_mac.as_str()));
    // One SA per encrypting hop: ingress→egress (chain 1: sf1 is not intrusive), ingress→sf2
    // and sf2→egress (chain 2), egress→ingress (the way back). sf1 holds no payload key.
    let payload = |c: &zsfc_config::NodeConfig| {
        let out = c.outbound_sas.iter().filter(|o| c.links.iter().all(|l| l.sa != o.index)).count();
        out + c.inbound_sas.iter().filter(|i| !i.link).count()
    };
    let sas: Vec<usize> = plan.nodes.iter().map(|n| payload(&n.config)).collect();
    assert_eq!(sas, [2 + 1, 0, 1 + 1, 2 + 1]);
    // Inner MTU and MSS follow the deepest stack (3 labels, link ESP, NSH with its MAC) on a
    // 1500-byte link.
    assert_eq!(plan.inner_mtu, 1500 - encapsulation_overhead(3, true, true));
    assert_eq!(ingress.settings.tcp_mss_clamp, Some(plan.inner_mtu - 40));
    assert_eq!(ingress.local.as_ref().unwrap().mtu, plan.inner_mtu);
}

/// With worker lanes an external SF gets one attachment circuit per lane, each with its own
/// devices and addresses; a node file short of circuits is refused with the field named.
#[test]
fn an_external_sf_gets_a_circuit_per_lane() {
    let text =
        EXAMPLES.iter().find(|e| e.0 == "seed-testbed").unwrap().1.replace("version = 1", "version = 1\nlanes = 3");
    let lab = Lab::from_toml(&text).unwrap();
    let plan = lab.plan(Path::new("/state")).unwrap();
    let sf = &plan.external_sfs[0];
    assert_eq!(sf.circuits.len(), 3);
    let sf2 = &plan.nodes[2].config;
    let a = &sf2.sfs[0];
    assert_eq!(a.lane_attachments.len(), 2);
    let mut devices = std::collections::HashSet::new();
    let mut macs = std::collections::HashSet::new();
    for (lane, c) in sf.circuits.iter().enumerate() {
        let cfg = if lane == 0 { a.attachment.as_ref().unwrap() } else { &a.lane_attachments[lane - 1] };
        assert_eq!((cfg.to_sf.as_str(), cfg.from_sf.as_str()), (c.to_sf.as_str(), c.from_sf.as_str()));
        let v = c.veth.as_ref().unwrap();
        assert_eq!(cfg.to_sf_mac.as_deref(), Some(v.sf_in_mac.as_str()));
        for d in [&c.to_sf, &c.from_sf, &v.sf_in, &v.sf_out] {
            assert!(d.len() <= 15 && devices.insert(d.clone()), "{d} is unique and a valid name");
        }
        assert!(macs.insert(v.sf_in_mac.clone()) && macs.insert(v.node_from_sf_mac.clone()));
    }
    // Each lane's I/O settings name its own circuit.
    let io = sf2.io_settings().unwrap();
    let lanes: Vec<u32> = io.attachments.iter().map(|a| a.lane).collect();
    assert_eq!(lanes, [0, 1, 2]);

    let mut short = sf2.clone();
    short.sfs[0].lane_attachments.pop();
    let e = short.io_settings().unwrap_err().to_string();
    assert!(e.contains("sfs[0].lane_attachments: 1 given; with settings.lanes = 3 an external SF needs 2"), "{e}");
    let mut twice = sf2.clone();
    twice.sfs[0].lane_attachments[1].to_sf = twice.sfs[0].lane_attachments[0].to_sf.clone();
    let e = twice.io_settings().unwrap_err().to_string();
    assert!(e.contains("belongs to two attachment circuits"), "{e}");
}

#[test]
fn lab_mistakes_name_the_field() {
    let q = EXAMPLES[0].1;
    let cases: Vec<(String, &str)> = vec![
        (q.replace("name = \"quickstart\"", "name = \"Quick Start\""), "name: 1 to 16 characters"),
        (q.replace("version = 1", "version = 3"), "version: 3 is not supported"),
        (
            q.replace("gateway = { node = \"ingress\" }", "gateway = { node = \"gw\" }"),
            "gateway.node: no node named \"gw\"",
        ),
        (
            q.replace("clients = [\"alice\"]", "clients = [\"carol\"]"),
            "chains[0].clients[0]: no client named \"carol\"",
        ),
        (q.replace("sfs = [\"dpi\"]", "sfs = [\"ips\"]"), "chains[0].sfs[0]: no SF named \"ips\""),
        (
            q.replace("service = \"web\"\nclients", "service = \"mail\"\nclients"),
            "chains[0].service: no service named \"mail\"",
        ),
        (
            q.replace("node = \"egress\"\nkind", "node = \"ingress\"\nkind"),
            "services[0].node: a service lives on a node that runs no gateway",
        ),
        (
            q.replace("gateway = { node = \"ingress\" }", "gateway = { node = \"ingress\", also_on = [\"gw2\"] }"),
            "gateway.also_on[0]: no node named \"gw2\"",
        ),
        (
            q.replace("gateway = { node = \"ingress\" }", "gateway = { node = \"ingress\", also_on = [\"ingress\"] }"),
            "gateway.also_on[0]: \"ingress\" runs a gateway already",
        ),
        (
            q.replace("gateway = { node = \"ingress\" }", "gateway = { node = \"ingress\", also_on = [\"egress\"] }"),
            "services[0].node: a service lives on a node that runs no gateway",
        ),
        (
            q.replace("function = { kind = \"dpi\", patterns = [\"test\"] }", ""),
            "sfs[0]: give exactly one of `function`",
        ),
        (q.replace("patterns = [\"test\"]", "patterns = []"), "sfs[0].function.patterns"),
        (q.replace("kind = \"http\"", "kind = \"gopher\""), "unknown variant `gopher`"),
        (q.replace("version = 1", "version = 1\nmtu = 100"), "mtu: 100 is outside"),
        (q.replace("version = 1", "version = 1\nring = \"blocks\""), "ring: a receive ring is for Ethernet links"),
        (
            q.replace("version = 1", "version = 1\nlanes = 9\ntransport = \"ethernet\""),
            "lanes: node \"ingress\": settings.lanes: an Ethernet link carries at most 8 lanes",
        ),
        (
            q.replace("outcome = \"served\"           # the whole page", "outcome = \"served\"\nreason = \"x\""),
            "expect[0].reason: only a refusal",
        ),
        (q.replace("client = \"bob\"", "client = \"eve\""), "expect[4].client: no client named \"eve\""),
        (q.replace("nodes = [{ name = \"ingress\" }", "nodes = [{ name = \"in/gress\" }"), "nodes[0].name"),
        (
            format!("{q}\n[[chains]]\nname = \"again\"\nservice = \"web\"\nclients = [\"alice\"]\n"),
            "chains[1].clients[0]: \"alice\" already reaches \"web\" through chain 1",
        ),
    ];
    for (text, want) in cases {
        let err = Lab::from_toml(&text)
            .and_then(|l| l.plan(Path::new("/s")))
            .err()
            .unwrap_or_else(|| panic!("accepted; wanted an error containing {want:?}"));
        assert!(err.to_string().contains(want), "wanted {want:?}, got: {err}");
    }
}

//! The summary `zsfc up` prints of a lab that is up.
use crate::plan::{LabPlan, ServiceKind};
use crate::state::State;

/// What a lab that is up consists of, for the operator: links and protections, nodes and their
/// roles, external SFs, services, clients, chains, the controller, a command to try, and the
/// commands that look at and steer it.
pub fn summary(plan: &LabPlan, state: &State) -> String {
    let mut out = String::new();
    macro_rules! line {
        ($($t:tt)*) => {{
            out.push_str(&format!($($t)*));
            out.push('\n');
        }};
    }
    let gw = &plan.nodes[plan.gateway.node];
    line!("lab {} is up (state in {})", plan.name, state.dir.display());
    let ring = plan.nodes.iter().find_map(|n| n.config.transport.as_ref().filter(|t| t.ethernet.is_some()));
    let transport = match ring.map(|t| t.ring.unwrap_or_default()) {
        Some(zsfc_config::EthernetRing::Frames) => "Ethernet + MPLS (receive ring of frames, TPACKET_V2)",
        Some(zsfc_config::EthernetRing::Blocks) => "Ethernet + MPLS (receive ring of blocks, TPACKET_V3)",
        None => "MPLS-in-UDP",
    };
    let mut protections = Vec::new();
    if plan.topology.link_protection {
        protections.push("link ESP (AES-GMAC) on every hop");
    }
    if plan.topology.sfc_integrity {
        protections.push("SFC integrity (RFC 9145 MAC, encrypted subscriber id) and proof of transit");
    }
    line!(
        "  links: {transport} on one segment (bridge in {}), MTU {}, inner MTU {}{}",
        plan.bridge_ns,
        plan.link_mtu,
        plan.inner_mtu,
        if protections.is_empty() { String::new() } else { format!("; {}", protections.join("; ")) }
    );
    for n in &plan.nodes {
        let roles: Vec<&str> = [
            (n.config.gateway.is_some(), "gateway+classifier"),
            (!n.config.sfs.is_empty(), "SFF+proxy"),
            (n.config.labels.iter().any(|l| l.deliver) && n.config.gateway.is_none(), "egress"),
        ]
        .into_iter()
        .filter_map(|(on, r)| on.then_some(r))
        .collect();
        let sfs: Vec<&str> = n.config.sfs.iter().map(|s| s.name.as_str()).collect();
        line!("  node {:<10} ns {:<24} {} {} SFs [{}]", n.name, n.ns, n.address, roles.join(","), sfs.join(","));
    }
    for sf in &plan.external_sfs {
        let circuits: Vec<String> = sf.circuits.iter().map(|c| format!("{} -> {}", c.to_sf, c.from_sf)).collect();
        line!(
            "  external SF {} in ns {} ({}, iptables rules: {})",
            sf.name,
            sf.ns,
            circuits.join(", "),
            sf.iptables.len()
        );
    }
    for s in &plan.services {
        line!(
            "  service {} ({}) at {}:{} on node {}",
            s.name,
            s.server_name,
            s.address,
            s.port,
            plan.nodes[s.node].name
        );
    }
    for c in &plan.clients {
        line!("  client {} in ns {} at {}", c.name, c.ns, c.address);
    }
    for c in &plan.chains {
        line!("  chain {c}");
    }
    line!(
        "  controller https://{} in ns {}-ctl, on the control segment (every node's ctl0) only (domain CA, \
         every node's SAs, chains and policy; log {})",
        crate::CONTROLLER_ADDRESS,
        plan.prefix,
        state.log("controller").display()
    );
    if let (Some(c), Some(s)) = (plan.clients.first(), plan.services.iter().find(|s| s.kind == ServiceKind::Http)) {
        let pki = state.pki();
        line!("try, as {}:", c.name);
        line!(
            "  ip netns exec {} curl --cacert {} --cert {} --key {} --resolve {}:{}:{} https://{}:{}/index.html",
            c.ns,
            pki.join("ca.pem").display(),
            pki.join("clients").join(format!("{}.pem", c.name)).display(),
            pki.join("clients").join(format!("{}.key", c.name)).display(),
            s.server_name,
            plan.gateway.port,
            plan.gateway.address,
            s.server_name,
            plan.gateway.port
        );
    }
    for g in &plan.more_gateways {
        // A client given every gateway's address is served by whichever answers.
        let all: Vec<String> =
            std::iter::once(&plan.gateway).chain(&plan.more_gateways).map(|g| g.address.to_string()).collect();
        line!(
            "  another gateway on {} at {}:{} (client network {}); both: --resolve NAME:{}:{}",
            plan.nodes[g.node].name,
            g.address,
            g.port,
            g.client_net,
            g.port,
            all.join(",")
        );
    }
    line!("  the gateway's log: {}", state.log(&gw.name).display());
    line!("  a node's counters: ip netns exec {} curl -s http://{}/metrics", gw.ns, crate::METRICS_LISTEN);
    line!("live counters: zsfc status {}; expected outcomes: zsfc check {}", plan.name, plan.name);
    line!(
        "keys and paths: zsfc rekey {n}; zsfc chain {n} CHAIN SF...; zsfc policy {n} --grant ID=SERVICE:CHAIN; \
         zsfc audit verify {}",
        state.controller_db().display(),
        n = plan.name
    );
    line!("stop with: zsfc down {}", plan.name);
    out
}

/// One warning per protection a lab file turned off (`zsfc up` and `zsfc run` print them):
/// both are on by default (seed 004 REQ20, secure by default).
pub fn warnings(lab: &crate::plan::Lab) -> Vec<&'static str> {
    let mut w = Vec::new();
    if !lab.link_protection {
        w.push(
            "warning: link protection is off (link_protection = false): packets between nodes are not \
             authenticated hop by hop, so an on-link attacker can forge or rewrite labels and NSH",
        );
    }
    if !lab.sfc_integrity {
        w.push(
            "warning: SFC integrity is off (sfc_integrity = false): no RFC 9145 MAC and no proof of transit, \
             so a packet that skipped an SF is not detected at the egress",
        );
    }
    w
}

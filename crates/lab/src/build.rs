//! Building a planned lab: the controller's database and PKI, the domain and control segments,
//! the client network, attachment circuits, node processes, external SFs and services, in that
//! order, each waited for before the next needs it.
use crate::guard::Namespaces;
use crate::plan::{Lab, LabPlan, PlannedNode, ServiceKind};
use crate::shell::{READY_TIMEOUT, in_ns, ip, listening, spawn, sysctl, veth, wait_until};
use crate::state::State;
use anyhow::Context;
use std::net::IpAddr;
use std::path::Path;
use zsfc_controller::pki::{Ca, Validity, write_private};
use zsfc_identity::{Identity, Kind};

pub(crate) fn build(lab: &Lab, plan: &LabPlan, state: &State, ns: &mut Namespaces, bin: &Path) -> anyhow::Result<()> {
    for d in [state.dir.clone(), state.pki().join("clients"), state.pki().join("outsider"), state.dir.join("logs")] {
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    std::fs::write(state.lab_file(), toml::to_string(lab)?)?;
    // The controller's database: the domain, its CA, one bootstrap token per node.
    let spec = zsfc_controller::DomainSpec {
        name: plan.name.clone(),
        topology: plan.topology.clone(),
        gateway_nodes: std::iter::once(&plan.gateway)
            .chain(&plan.more_gateways)
            .map(|g| plan.nodes[g.node].name.clone())
            .collect(),
        grants: plan.grants.clone(),
        rekey: zsfc_controller::RekeySettings {
            period_s: plan.controller.rekey_period_s,
            grace_ms: plan.controller.grace_ms,
            ..Default::default()
        },
        api: Default::default(),
        revoked: Vec::new(),
    };
    let (init, ca) = zsfc_controller::Controller::init(&state.controller_db(), &spec)?;
    make_pki(plan, state, &ca)?;
    drop(ca);
    for (node, token) in &init.tokens {
        write_private(&state.dir.join(format!("{node}.token")), token.as_bytes())?;
    }

    // The domain segment: one bridge, one veth per node.
    ns.add(&plan.bridge_ns)?;
    ip(&["-n", &plan.bridge_ns, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", &plan.bridge_ns, "link", "set", "br0", "up"])?;
    // The host's br_netfilter (Docker loads it) would pass every frame crossing the segment
    // through iptables hooks that hold no rule here; it is turned off in this namespace only
    // (`-e`: the keys exist only while the module is loaded).
    sysctl(
        &plan.bridge_ns,
        &[
            "-e",
            "net.bridge.bridge-nf-call-iptables=0",
            "net.bridge.bridge-nf-call-ip6tables=0",
            "net.bridge.bridge-nf-call-arptables=0",
        ],
    )?;
    let mtu = plan.link_mtu.to_string();
    for (i, n) in plan.nodes.iter().enumerate() {
        ns.add(&n.ns)?;
        let port = format!("n{i}");
        veth(&n.ns, "eth0", &plan.bridge_ns, &port, &mtu)?;
        ip(&["-n", &n.ns, "addr", "add", &n.address, "dev", "eth0"])?;
        if let Some(mac) = &n.mac {
            ip(&["-n", &n.ns, "link", "set", "eth0", "address", mac])?;
        }
        ip(&["-n", &n.ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &plan.bridge_ns, "link", "set", &port, "master", "br0", "up"])?;
    }
    // The control segment (seed 004 REQ1): a bridge of its own, every node's `ctl0` and the
    // controller, in a namespace of its own, on it; the controller has no domain-segment side.
    ip(&["-n", &plan.bridge_ns, "link", "add", "br1", "type", "bridge"])?;
    ip(&["-n", &plan.bridge_ns, "link", "set", "br1", "up"])?;
    for (i, n) in plan.nodes.iter().enumerate() {
        let port = format!("k{i}");
        veth(&n.ns, "ctl0", &plan.bridge_ns, &port, "1500")?;
        ip(&["-n", &n.ns, "addr", "add", &n.control_address, "dev", "ctl0"])?;
        ip(&["-n", &n.ns, "link", "set", "ctl0", "up"])?;
        ip(&["-n", &plan.bridge_ns, "link", "set", &port, "master", "br1", "up"])?;
    }
    let ctl_ns = format!("{}-ctl", plan.prefix);
    ns.add(&ctl_ns)?;
    veth(&ctl_ns, "eth0", &plan.bridge_ns, "ctl", "1500")?;
    ip(&["-n", &ctl_ns, "addr", "add", crate::CONTROLLER_PREFIX, "dev", "eth0"])?;
    ip(&["-n", &ctl_ns, "link", "set", "eth0", "up"])?;
    ip(&["-n", &ctl_ns, "link", "set", "lo", "up"])?;
    ip(&["-n", &plan.bridge_ns, "link", "set", "ctl", "master", "br1", "up"])?;
    let bin = bin.to_str().context("the zsfc binary's path is not UTF-8")?;
    let db = state.controller_db();
    let (nodes, management) = (crate::CONTROLLER_ADDRESS, crate::MANAGEMENT_ADDRESS);
    let db = db.to_str().unwrap_or_default();
    let args = [bin, "controller", "--db", db, "--listen", nodes, "--management-listen", management];
    let pid = spawn(&ctl_ns, &args, &state.log("controller"))?;
    std::fs::write(state.dir.join("controller.pid"), pid.to_string())?;
    let port = |a: &str| a.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()).unwrap_or(8443);
    wait_until("the controller", Some(&state.log("controller")), || {
        listening(&ctl_ns, false, port(nodes)) && listening(&ctl_ns, false, port(management))
    })?;

    // The client network on each gateway node; every client has a leg on each (`eth0` on
    // the first gateway's, its default route, `eth1` on the second's ...).
    for c in &plan.clients {
        ns.add(&c.ns)?;
    }
    for (g, gateway) in std::iter::once(&plan.gateway).chain(&plan.more_gateways).enumerate() {
        let gw = &plan.nodes[gateway.node];
        ip(&["-n", &gw.ns, "link", "add", "clients", "mtu", &mtu, "type", "bridge"])?;
        ip(&["-n", &gw.ns, "addr", "add", &format!("{}/24", gateway.address), "dev", "clients"])?;
        ip(&["-n", &gw.ns, "link", "set", "clients", "up"])?;
        sysctl(&gw.ns, &["net.ipv4.ip_forward=1"])?;
        for (k, c) in plan.clients.iter().enumerate() {
            let (port, dev) = (format!("c{k}"), format!("eth{g}"));
            let address = if g == 0 { c.address } else { c.more_addresses[g - 1] };
            veth(&c.ns, &dev, &gw.ns, &port, &mtu)?;
            ip(&["-n", &c.ns, "addr", "add", &format!("{address}/24"), "dev", &dev])?;
            ip(&["-n", &c.ns, "link", "set", &dev, "up"])?;
            if g == 0 {
                ip(&["-n", &c.ns, "route", "add", "default", "via", &gateway.address.to_string()])?;
            }
            ip(&["-n", &gw.ns, "link", "set", &port, "master", "clients", "up"])?;
        }
        close_border(&gw.ns, gateway.port, &gateway.client_net)?;
    }

    // Veth attachment circuits (one per lane) exist before their node opens them.
    for sf in &plan.external_sfs {
        let node_ns = &plan.nodes[sf.node].ns;
        if sf.circuits.iter().any(|c| c.veth.is_some()) {
            ns.add(&sf.ns)?;
        }
        for c in &sf.circuits {
            let Some(v) = &c.veth else { continue };
            for (node_end, sf_end) in [(&c.to_sf, &v.sf_in), (&c.from_sf, &v.sf_out)] {
                ip(&[
                    "link", "add", node_end, "mtu", &mtu, "netns", node_ns, "type", "veth", "peer", "name", sf_end,
                    "mtu", &mtu, "netns", &sf.ns,
                ])?;
                // The node's kernel must not route what the SF sends back: only zsfc reads it.
                sysctl(
                    node_ns,
                    &[
                        &format!("net.ipv6.conf.{node_end}.disable_ipv6=1"),
                        &format!("net.ipv4.conf.{node_end}.forwarding=0"),
                    ],
                )?;
            }
            ip(&["-n", &sf.ns, "link", "set", &v.sf_in, "address", &v.sf_in_mac])?;
            ip(&["-n", node_ns, "link", "set", &c.from_sf, "address", &v.node_from_sf_mac])?;
            for dev in [&c.to_sf, &c.from_sf] {
                ip(&["-n", node_ns, "link", "set", dev, "up"])?;
            }
        }
    }

    // The nodes: their files hold no key, label, chain or rule; the controller pushes those.
    for n in &plan.nodes {
        let cfg = state.dir.join(format!("{}.toml", n.name));
        let file = n.config.for_controller(zsfc_config::ControllerConfig {
            address: crate::CONTROLLER_ADDRESS.into(),
            server_name: "controller".into(),
            ca: state.pki().join("ca.pem").display().to_string(),
            identity_dir: state.dir.join(format!("{}.id", n.name)).display().to_string(),
            bootstrap: state.dir.join(format!("{}.token", n.name)).display().to_string(),
        });
        write_private(&cfg, file.to_toml()?.as_bytes())?;
        start_node(state, n, bin)?;
    }
    for n in &plan.nodes {
        wait_node_ready(state, n)?;
        if n.config.local.is_some() {
            // Labs are IPv4 inside: no IPv6 neighbour discovery or router solicitations from
            // the device (the classifier would count them as `no_matching_rule`). Below an MTU
            // of 1280 the kernel has taken IPv6 off the device already (`-e`: no such key).
            // (The node brought the device up and routed `[local] routes` through it.)
            sysctl(&n.ns, &["-e", &format!("net.ipv6.conf.{}.disable_ipv6=1", crate::LOCAL_DEV)])?;
        }
    }

    // External SFs: their own namespace, routing each circuit's in side to its own out side
    // (lane j's through routing table 100 + j), so that every lane gets back what it sent.
    for sf in &plan.external_sfs {
        let node_ns = &plan.nodes[sf.node].ns;
        if sf.circuits.iter().all(|c| c.veth.is_none()) {
            ns.add(&sf.ns)?;
        }
        sysctl(
            &sf.ns,
            &["net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"],
        )?;
        for (lane, c) in sf.circuits.iter().enumerate() {
            let (sf_in, sf_out) = match &c.veth {
                Some(v) => (v.sf_in.clone(), v.sf_out.clone()),
                None => {
                    // TUN circuits: the node created both devices; they move into the SF's namespace.
                    for dev in [&c.to_sf, &c.from_sf] {
                        ip(&["-n", node_ns, "link", "set", dev, "netns", &sf.ns])?;
                    }
                    (c.to_sf.clone(), c.from_sf.clone())
                }
            };
            for dev in [&sf_in, &sf_out] {
                sysctl(&sf.ns, &[&format!("net.ipv6.conf.{dev}.disable_ipv6=1")])?;
                ip(&["-n", &sf.ns, "link", "set", dev, "up"])?;
            }
            sysctl(&sf.ns, &[&format!("net.ipv4.conf.{sf_in}.rp_filter=0")])?;
            let table = (100 + lane).to_string();
            // Lane 0 uses the main table (as with one lane); the others a table each.
            let route = |args: &[&str]| {
                let mut a = vec!["-n", sf.ns.as_str(), "route", "add"];
                a.extend_from_slice(args);
                if lane > 0 {
                    a.extend_from_slice(&["table", &table]);
                }
                ip(&a)
            };
            match &c.veth {
                Some(v) => {
                    // The way out: a next hop whose MAC is the node's end (no ARP needed).
                    let (here, next) =
                        (format!("169.254.0.{}/30", 4 * lane + 1), format!("169.254.0.{}", 4 * lane + 2));
                    ip(&["-n", &sf.ns, "addr", "add", &here, "dev", &sf_out])?;
                    let lladdr = &v.node_from_sf_mac;
                    ip(&["-n", &sf.ns, "neigh", "add", &next, "lladdr", lladdr, "dev", &sf_out, "nud", "permanent"])?;
                    route(&["default", "via", &next, "dev", &sf_out])?;
                }
                None => route(&["default", "dev", &sf_out])?,
            }
            if lane > 0 {
                ip(&["-n", &sf.ns, "rule", "add", "iif", &sf_in, "lookup", &table])?;
            }
        }
        if !sf.iptables.is_empty() {
            // The node's circuit probes (BFD echo style, `zsfc_dataplane::circuit`) pass any
            // filter first, as an operator lets a health check through.
            in_ns(
                &sf.ns,
                &["iptables", "-A", "FORWARD", "-p", "udp", "-d", "192.0.0.8", "--dport", "3785", "-j", "ACCEPT"],
            )
            .with_context(|| format!("SF {}: the rule for circuit probes", sf.name))?;
        }
        for rule in &sf.iptables {
            let mut args = vec!["iptables"];
            args.extend(rule.iter().map(String::as_str));
            in_ns(&sf.ns, &args).with_context(|| format!("SF {}: an iptables rule", sf.name))?;
        }
    }

    // Every node runs the controller's latest state (keys, chains, policy).
    crate::access::wait_converged(&state.dir, &plan.name, READY_TIMEOUT)?;

    // Services.
    for s in &plan.services {
        let ns = &plan.nodes[s.node].ns;
        let log = state.log(&format!("service-{}", s.name));
        let port = s.port.to_string();
        let addr = s.address.to_string();
        let pid = match s.kind {
            ServiceKind::Http => {
                let www = state.dir.join(format!("www-{}", s.name));
                write_site(&www, s.files, s.bytes)?;
                let dir = www.to_str().unwrap_or_default();
                // HTTP/1.1 with keep-alive, as real services speak: the gateway's per-request
                // checks are what keeps a connection on its chain, not the service closing it.
                let protocol = ["--protocol", "HTTP/1.1"];
                let server = ["python3", "-m", "http.server", &port, "--bind", &addr, "--directory", dir];
                spawn(ns, &[&server[..], &protocol[..]].concat(), &log)?
            }
            ServiceKind::UdpEcho => spawn(ns, &["python3", "-c", UDP_ECHO, &addr, &port], &log)?,
            ServiceKind::Iperf3 => spawn(ns, &["iperf3", "-s", "-B", &addr, "-p", &port], &log)?,
        };
        std::fs::write(state.dir.join(format!("service-{}.pid", s.name)), pid.to_string())?;
        wait_until(&format!("service {}", s.name), Some(&log), || {
            listening(ns, s.kind == ServiceKind::UdpEcho, s.port)
        })?;
    }
    Ok(())
}

/// The border between the client network and the domain (seed 004 REQ22; DEPLOYMENT.md has the
/// same rules for hosts), in the ingress node's namespace: from the clients only the gateway's
/// port and the traffic the classifier takes (routed into the local side, `zsfc0`) enter;
/// nothing is forwarded to the domain or control segments, nothing else reaches the node's own
/// sockets (its MPLS-in-UDP port, its metrics), and a source address that does not belong on
/// the client network is dropped (strict reverse-path filter). Every drop is counted by
/// iptables (`zsfc status` shows it).
fn close_border(gw_ns: &str, gateway_port: u16, client_net: &str) -> anyhow::Result<()> {
    sysctl(gw_ns, &["net.ipv4.conf.clients.rp_filter=1"])?;
    let port = gateway_port.to_string();
    let dev = crate::LOCAL_DEV;
    let rules: [&[&str]; 8] = [
        // Before routing (and the kernel's reverse-path filter, which counts nothing): a source
        // that is not of the client network, counted.
        &["-t", "raw", "-A", "PREROUTING", "-i", "clients", "!", "-s", client_net, "-j", "DROP"],
        &["-A", "INPUT", "-i", "clients", "-p", "tcp", "--dport", &port, "-j", "ACCEPT"],
        &["-A", "INPUT", "-i", "clients", "-p", "icmp", "-j", "ACCEPT"],
        &["-A", "INPUT", "-i", "clients", "-j", "DROP"],
        &["-A", "FORWARD", "-i", "clients", "-o", dev, "-j", "ACCEPT"],
        &["-A", "FORWARD", "-i", dev, "-o", "clients", "-j", "ACCEPT"],
        &["-A", "FORWARD", "-i", "clients", "-j", "DROP"],
        &["-A", "FORWARD", "-o", "clients", "-j", "DROP"],
    ];
    for r in rules {
        let mut args = vec!["iptables"];
        args.extend_from_slice(r);
        in_ns(gw_ns, &args).context("the border's iptables rules")?;
    }
    Ok(())
}

const UDP_ECHO: &str = "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind((sys.argv[1],int(sys.argv[2])))\nwhile True:\n d,a=s.recvfrom(65535)\n s.sendto(b're:'+d,a)\n";

fn index_html(files: u32) -> String {
    let parts = files.saturating_sub(1);
    format!(
        "<html><body>{}</body></html>\n",
        (1..=parts).map(|i| format!("<img src=\"part{i}.bin\">")).collect::<String>()
    )
}

/// The files of a service's web page: `index.html` naming `files - 1` parts, `bytes` in all.
pub fn site_files(files: u32, bytes: u64) -> Vec<(String, u64)> {
    let parts = files.saturating_sub(1);
    let index = index_html(files);
    let rest = bytes.saturating_sub(index.len() as u64);
    let mut out = vec![("index.html".to_owned(), index.len() as u64)];
    for i in 1..=parts {
        let size = rest / u64::from(parts) + u64::from(u64::from(i) <= rest % u64::from(parts));
        out.push((format!("part{i}.bin"), size));
    }
    out
}

fn write_site(dir: &Path, files: u32, bytes: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    for (i, (name, size)) in site_files(files, bytes).into_iter().enumerate() {
        let body: Vec<u8> = if i == 0 {
            index_html(files).into_bytes()
        } else {
            (0..size).map(|k| alphabet[(k % alphabet.len() as u64) as usize]).collect()
        };
        std::fs::write(dir.join(name), body)?;
    }
    // Outside the page: a file whose name a DPI rule for "test" catches in the request.
    std::fs::write(dir.join("test.html"), b"<p>you passed</p>\n")?;
    Ok(())
}

fn make_pki(plan: &LabPlan, state: &State, ca: &Ca) -> anyhow::Result<()> {
    let pki = state.pki();
    std::fs::write(pki.join("ca.pem"), ca.pem())?;
    zsfc_controller::pki::issue_roles(ca, &plan.name, &pki)?;
    // Typed identities (zsfc_identity): the gateway's server certificate names the gateway
    // node, clients are `client/NAME` (a client may share a name with a node or a role).
    let id = |kind, name: &str| Identity::new(&plan.name, kind, name);
    let lifetimes = plan.topology.certificates;
    // Each gateway its own key: no secret shared between the ingress nodes.
    for g in std::iter::once(&plan.gateway).chain(&plan.more_gateways) {
        let gw_ip: IpAddr = g.address.into();
        let gateway = id(Kind::Gateway, &plan.nodes[g.node].name)?;
        let (cert, key) = ca.issue(&gateway, &g.server_names, &[gw_ip], Validity::from_now(lifetimes.node()))?;
        std::fs::write(pki.join(format!("{}.pem", g.cert)), cert)?;
        write_private(&pki.join(format!("{}.key", g.cert)), key.as_bytes())?;
    }
    // Same names from a CA nobody trusts: what a client from elsewhere would present.
    let outsider = Ca::new(&format!("zsfc {} outsider CA", plan.name))?;
    for c in &plan.clients {
        let client = id(Kind::Client, &c.name)?;
        let (cert, key) = ca.issue(&client, &[], &[], Validity::from_now(lifetimes.client()))?;
        std::fs::write(pki.join("clients").join(format!("{}.pem", c.name)), cert)?;
        write_private(&pki.join("clients").join(format!("{}.key", c.name)), key.as_bytes())?;
        let (cert, key) = outsider.issue(&client, &[], &[], Validity::from_now(lifetimes.client()))?;
        std::fs::write(pki.join("outsider").join(format!("{}.pem", c.name)), cert)?;
        write_private(&pki.join("outsider").join(format!("{}.key", c.name)), key.as_bytes())?;
    }
    Ok(())
}

/// Starts node `n`'s process from its file in the lab's state (written by the build), its output
/// appended to its log, and records its pid.
pub(crate) fn start_node(state: &State, n: &PlannedNode, bin: &str) -> anyhow::Result<()> {
    let cfg = state.dir.join(format!("{}.toml", n.name));
    let ready = state.dir.join(format!("{}.ready", n.name));
    match std::fs::remove_file(&ready) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e).context(ready.display().to_string()),
        _ => {}
    }
    let args =
        [bin, "node", "--config", cfg.to_str().unwrap_or_default(), "--ready-file", ready.to_str().unwrap_or_default()];
    let pid = spawn(&n.ns, &args, &state.log(&n.name))?;
    std::fs::write(state.dir.join(format!("{}.pid", n.name)), pid.to_string())?;
    Ok(())
}

/// Waits until node `n` wrote its ready file (its devices exist, its gateway listens).
pub(crate) fn wait_node_ready(state: &State, n: &PlannedNode) -> anyhow::Result<()> {
    let ready = state.dir.join(format!("{}.ready", n.name));
    wait_until(&format!("node {}", n.name), Some(&state.log(&n.name)), || ready.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_has_its_files_and_bytes() {
        let files = site_files(9, 1_200_000);
        assert_eq!(files.len(), 9);
        assert_eq!(files.iter().map(|f| f.1).sum::<u64>(), 1_200_000);
        assert_eq!(files[0].0, "index.html");
        assert_eq!(site_files(1, 10).len(), 1);
    }
}

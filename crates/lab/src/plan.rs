//! Planning a lab: a whole domain for `zsfc up` — nodes, the ingress gateway, services, SFs (built-in or
//! external iptables programs), chains with their clients, and the outcomes `zsfc run` checks.
//! [`Lab::plan`] turns it into everything `up` builds: namespaces, addresses, routes, one
//! [`NodeConfig`] per node (through [`Topology::compile`]), the external SFs' set-up, the
//! services to start. Planning touches nothing, so every mistake is reported before anything
//! exists.
//!
//! Addressing (all of it lives inside the lab's namespaces):
//! - the domain segment, one bridge: node `i` is `10.200.0.(i+1)/24`, its links on UDP port
//!   4500 (UDP-encapsulated link ESP, RFC 3948) with link protection, 6635 (MPLS-in-UDP) without;
//! - the control segment, a bridge of its own (seed 004 REQ1: the planes on dedicated networks
//!   and interfaces): node `i`'s `ctl0` is `10.201.0.(i+1)/24`, the controller `10.201.0.250`;
//!   enrolment, polls and acknowledgements never cross the domain segment, and the controller
//!   has no interface on it;
//! - the client network on the gateway node: `172.16.0.1/24`, client `k` is `172.16.0.(10+k)`;
//! - the gateway's local side (TUN `zsfc0`): `10.1.0.1/24`, where inner connections come from;
//! - service `j`: `10.9.0.(j+1)` on the TUN `zsfc0` of its node;
//! - every node's metrics: `http://127.0.0.1:9464/metrics` inside its namespace.
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use zsfc_config::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lab {
    pub version: u32,
    /// Names the lab's namespaces (`zsfc-NAME-...`) and its state directory.
    pub name: String,
    /// MTU of the links between nodes (1500, a jumbo MTU such as 9000, up to 65000 on veths). The inner MTU and
    /// the TCP MSS clamp follow from it and the encapsulation overhead.
    #[serde(default = "link_mtu")]
    pub mtu: u16,
    /// How nodes reach each other on the domain segment.
    #[serde(default)]
    pub transport: LabTransport,
    /// How the nodes' Ethernet links hand frames over (`transport = "ethernet"` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring: Option<EthernetRing>,
    /// What the attachment circuits of external SFs are made of.
    #[serde(default)]
    pub attachments: LabAttachments,
    /// Worker lanes of every node (threads with an engine each; see `settings.lanes`).
    #[serde(default = "one_lane")]
    pub lanes: u32,
    pub nodes: Vec<LabNode>,
    pub gateway: LabGateway,
    pub services: Vec<LabService>,
    #[serde(default)]
    pub sfs: Vec<LabSf>,
    pub chains: Vec<LabChain>,
    #[serde(default)]
    pub clients: Vec<LabClient>,
    #[serde(default)]
    pub expect: Vec<Expect>,
    #[serde(default)]
    pub sa: SaDefaults,
    /// The controller every node enrols with and gets its SAs from.
    #[serde(default)]
    pub controller: LabController,
    /// Hop-by-hop authentication between nodes (see `Topology::link_protection`; on by default).
    #[serde(default = "zsfc_config::on", skip_serializing_if = "zsfc_config::is_on")]
    pub link_protection: bool,
    /// SFC integrity, encrypted metadata and proof of transit (see `Topology::sfc_integrity`; on by default).
    #[serde(default = "zsfc_config::on", skip_serializing_if = "zsfc_config::is_on")]
    pub sfc_integrity: bool,
    /// Liveness probes between the nodes (see `Topology::liveness`; every 100 ms, down after 3).
    #[serde(default, skip_serializing_if = "zsfc_config::LivenessConfig::is_default")]
    pub liveness: zsfc_config::LivenessConfig,
    /// How long the certificates of the lab's nodes, gateway and clients live
    /// (`Topology::certificates`).
    #[serde(default, skip_serializing_if = "zsfc_config::CertificateLifetimes::is_default")]
    pub certificates: zsfc_config::CertificateLifetimes,
}

/// When the lab's controller rekeys. SAs without configured lifetimes get soft 50 min / hard
/// 60 min under a controller: keys always expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabController {
    /// Rekey the whole domain this often (0: at soft lifetime and on `zsfc rekey` only).
    pub rekey_period_s: u64,
    /// How long old SAs stay after the switch to new ones.
    pub grace_ms: u64,
}

impl Default for LabController {
    fn default() -> Self {
        Self { rekey_period_s: 0, grace_ms: 300 }
    }
}

/// Where a lab's controller listens for nodes (in its own namespace on the control segment).
pub const CONTROLLER_ADDRESS: &str = "10.201.0.250:8443";
/// Where a lab's controller listens for the operator's commands: the loopback of its own
/// namespace, which only the machine's administrator can enter (seed 004 REQ1).
pub const MANAGEMENT_ADDRESS: &str = "127.0.0.1:8444";
pub const CONTROLLER_PREFIX: &str = "10.201.0.250/24";

fn link_mtu() -> u16 {
    1500
}

fn one_lane() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabTransport {
    /// MPLS-in-UDP (RFC 7510, port 6635) over IP on the segment; with link protection the link
    /// ESP around it is UDP-encapsulated ESP (RFC 3948, port 4500).
    #[default]
    Udp,
    /// Ethernet + MPLS (ethertype 0x8847) frames on the segment, as in the seed testbed.
    Ethernet,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabNode {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    /// A static web site: `files` files of `bytes` bytes in all (an index page and its parts).
    Http,
    /// Answers each UDP datagram with `re:` and the datagram.
    UdpEcho,
    /// An iperf3 server (benchmarks).
    Iperf3,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabService {
    pub name: String,
    pub node: String,
    pub kind: ServiceKind,
    pub port: u16,
    #[serde(default = "page_files")]
    pub files: u32,
    #[serde(default = "page_bytes")]
    pub bytes: u64,
    /// The SFs the answers cross on their way back to the clients (a chain of its own).
    #[serde(default)]
    pub return_sfs: Vec<String>,
    /// Addresses the service sees clients as besides the gateway and the client network (a
    /// NAT SF's pool): answers to them take the return chain too.
    #[serde(default)]
    pub return_prefixes: Vec<String>,
}

fn page_files() -> u32 {
    9
}
fn page_bytes() -> u64 {
    1_200_000
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabSf {
    pub name: String,
    /// The node of the SF's one instance; or give `instances`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// A pool: the SF's instances, each on a node of its own; each flow crosses one of them,
    /// the same both ways (an external SF gets a namespace per instance).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<LabInstance>,
    pub intrusive: bool,
    /// A built-in SF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<Function>,
    /// An external SFC-unaware SF: its own namespace routing between two interfaces, with these
    /// iptables rules (each an iptables argument list, such as
    /// `"-A FORWARD -m string --string test --algo bm -j DROP"` or
    /// `"-t nat -A POSTROUTING -j SNAT --to-source 10.77.0.1"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iptables: Option<Vec<String>>,
    /// The external SF translates addresses or ports (an iptables NAT).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub translates_addresses: bool,
    /// Packets the SF's caching proxy can hold at once (default 4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_capacity: Option<usize>,
}

/// One instance of a pooled SF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabInstance {
    pub node: String,
    /// Relative share of the flows (default 1).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabChain {
    pub name: String,
    pub service: String,
    /// The clients whose connections to the service take this chain (the gateway's policy:
    /// whoever is in no chain of a service may not use it).
    #[serde(default)]
    pub clients: Vec<String>,
    #[serde(default)]
    pub sfs: Vec<String>,
    /// Only the clients' connections whose first HTTP request's target starts with this take
    /// this chain (classification by HTTP path; the longest matching prefix wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Traffic from the client network to the service that takes this chain without the
    /// gateway (UDP, ICMP, plain TCP), by 5-tuple rules.
    #[serde(default)]
    pub rules: Vec<LabRule>,
    /// The RFC 9263 tenant id the chain's packets carry in their NSH (4 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabRule {
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabClient {
    pub name: String,
}

/// An outcome `zsfc run` (and `zsfc check`) verifies against the running lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub client: String,
    pub service: String,
    /// The path fetched over HTTPS, or the datagram sent to a UDP service.
    #[serde(default = "root_path")]
    pub request: String,
    /// The certificate the client presents.
    #[serde(default)]
    pub certificate: CertChoice,
    pub outcome: Outcome,
    /// For `refused`: the reason the gateway must log (`no_certificate`, `not_allowed`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn root_path() -> String {
    "/".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertChoice {
    /// The client's own certificate from the domain CA.
    #[default]
    Own,
    /// No certificate at all.
    None,
    /// A certificate with the client's name from another CA.
    Outsider,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The whole answer arrived (every file of the page, or the echo).
    Served,
    /// The TLS session stood but the request never got an answer: an SF dropped it.
    Blocked,
    /// The gateway refused the client (and its log says why).
    Refused,
}

/// What attachment circuits are made of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabAttachments {
    /// A veth pair in and a veth pair out; the SF's namespace routes between them.
    #[default]
    Veth,
    /// Two TUN devices the node creates and `up` moves into the SF's namespace.
    Tun,
}

pub use crate::gateways::{CLIENT_NET, GATEWAY_ADDR, INNER_SOURCE, LabGateway, PlannedGateway};
use crate::gateways::{client_net, gateway_addr, inner_source};
pub use crate::planned::{LabPlan, PlannedCircuit, PlannedClient, PlannedNode, PlannedService, PlannedSf, PlannedVeth};
pub const SERVICE_NET: &str = "10.9.0.0/24";
/// Where every lab node serves its metrics, inside its own namespace.
pub const METRICS_LISTEN: &str = "127.0.0.1:9464";
/// The TUN device of a node's local side.
pub const LOCAL_DEV: &str = "zsfc0";

/// Bytes the domain adds to an inner packet on a link: outer IPv4 + UDP (28) and
/// [`zsfc_config::encapsulation_overhead`].
pub fn encapsulation_overhead(labels: usize, link_protection: bool, sfc_integrity: bool) -> u16 {
    28 + zsfc_config::encapsulation_overhead(labels, link_protection, sfc_integrity)
}

impl Lab {
    /// The attachment circuits of external SF `k` (one per lane: lane 0's names as ever,
    /// lane j's with j appended), as planned and as the node's file gives them.
    fn circuits(&self, k: usize) -> (Vec<PlannedCircuit>, Vec<AttachmentConfig>) {
        let mut circuits = Vec::new();
        let mut configs = Vec::new();
        for lane in 0..self.lanes.max(1) {
            let j = if lane == 0 { String::new() } else { lane.to_string() };
            let (to_sf, from_sf) = (format!("ac{k}in{j}"), format!("ac{k}out{j}"));
            let veth = (self.attachments == LabAttachments::Veth).then(|| PlannedVeth {
                sf_in: format!("in{lane}"),
                sf_in_mac: format!("02:{lane:02x}:5b:{:02x}:{:02x}:01", k >> 8, k & 0xff),
                sf_out: format!("out{lane}"),
                node_from_sf_mac: format!("02:{lane:02x}:5b:{:02x}:{:02x}:02", k >> 8, k & 0xff),
            });
            let (kind, to_sf_mac) = match &veth {
                Some(v) => (AttachmentKindConfig::Veth, Some(v.sf_in_mac.clone())),
                None => (AttachmentKindConfig::Tun, None),
            };
            let (to, from) = (to_sf.clone(), from_sf.clone());
            configs.push(AttachmentConfig { to_sf: to, from_sf: from, mtu: self.mtu, kind, to_sf_mac });
            circuits.push(PlannedCircuit { to_sf, from_sf, veth });
        }
        (circuits, configs)
    }

    pub fn from_toml(text: &str) -> Result<Self, FieldError> {
        toml::from_str(text).map_err(|e| FieldError::Syntax(e.to_string()))
    }

    /// Checks the lab and plans it; `state` is where `up` keeps its files (certificates).
    pub fn plan(&self, state: &Path) -> Result<LabPlan, FieldError> {
        if self.version != VERSION {
            return Err(bad(
                "version",
                format!("{} is not supported; this zsfc reads version {VERSION}", self.version),
            ));
        }
        if self.name.is_empty()
            || self.name.len() > 16
            || !self.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(bad("name", "1 to 16 characters of a-z, 0-9 and '-'"));
        }
        if self.ring.is_some() && self.transport != LabTransport::Ethernet {
            return Err(bad("ring", "a receive ring is for Ethernet links: set `transport = \"ethernet\"`"));
        }
        if !(1280..=65_000).contains(&self.mtu) {
            return Err(bad("mtu", format!("{} is outside 1280..=65000", self.mtu)));
        }
        let prefix = format!("zsfc-{}", self.name);
        let nodes = names(self.nodes.iter().map(|n| n.name.as_str()), "nodes")?;
        let services = names(self.services.iter().map(|s| s.name.as_str()), "services")?;
        let sfs = names(self.sfs.iter().map(|s| s.name.as_str()), "sfs")?;
        let clients = names(self.clients.iter().map(|c| c.name.as_str()), "clients")?;
        let _ = names(self.chains.iter().map(|c| c.name.as_str()), "chains")?;
        if self.nodes.len() > 200 || self.clients.len() > 200 || self.services.len() > 200 {
            return Err(bad("nodes", "at most 200 nodes, clients and services each"));
        }
        let node_of = |field: String, name: &str| {
            nodes.get(name).copied().ok_or_else(|| bad(field, format!("no node named {name:?}")))
        };
        let gw = node_of("gateway.node".into(), &self.gateway.node)?;
        let gws = self.gateway.nodes(gw, node_of)?;

        // Topology: endpoints are the clients (at the gateway) and one per node with services.
        let mut topo = Topology {
            version: VERSION,
            nodes: Vec::new(),
            endpoints: gws
                .iter()
                .enumerate()
                .map(|(k, &g)| TopoEndpoint {
                    name: crate::gateways::clients_endpoint(k),
                    node: self.nodes[g].name.clone(),
                    label: None,
                })
                .collect(),
            sfs: Vec::new(),
            chains: Vec::new(),
            sa: self.sa,
            link_protection: self.link_protection,
            sfc_integrity: self.sfc_integrity,
            liveness: self.liveness,
            certificates: self.certificates,
        };
        let lt = &mut topo.sa.lifetime;
        if *lt == LifetimeConfig::default() {
            lt.soft.seconds = Some(3000);
            lt.hard.seconds = Some(3600);
        }
        if let (Some(soft), Some(hard)) = (lt.soft.seconds, lt.hard.seconds)
            && soft >= hard
        {
            return Err(bad("sa.lifetime.soft.seconds", "must be below the hard lifetime (time to rekey)"));
        }
        if lt.hard.seconds == Some(0) {
            return Err(bad("sa.lifetime.hard.seconds", "must be at least 1"));
        }
        let mut planned_services = Vec::new();
        for (j, s) in self.services.iter().enumerate() {
            let at = format!("services[{j}]");
            let node = node_of(format!("{at}.node"), &s.node)?;
            if gws.contains(&node) {
                return Err(bad(format!("{at}.node"), "a service lives on a node that runs no gateway"));
            }
            if s.port == 0 {
                return Err(bad(format!("{at}.port"), "must not be 0"));
            }
            if s.kind == ServiceKind::Http && (s.files == 0 || s.files > 1000 || s.bytes < u64::from(s.files)) {
                return Err(bad(format!("{at}.files"), "1 to 1000 files of at least one byte each"));
            }
            let ep = format!("svc-{}", s.node);
            if !topo.endpoints.iter().any(|e| e.name == ep) {
                topo.endpoints.push(TopoEndpoint { name: ep, node: s.node.clone(), label: None });
            }
            planned_services.push(PlannedService {
                name: s.name.clone(),
                server_name: format!("{}.{}", s.name, self.name),
                node,
                address: Ipv4Addr::new(10, 9, 0, j as u8 + 1),
                port: s.port,
                kind: s.kind.clone(),
                files: s.files,
                bytes: s.bytes,
            });
        }
        let mut external_sfs = Vec::new();
        for (k, s) in self.sfs.iter().enumerate() {
            let at = format!("sfs[{k}]");
            let instances: Vec<(String, String, u32)> = match (&s.node, s.instances.is_empty()) {
                (Some(n), true) => vec![(format!("{at}.node"), n.clone(), 1)],
                (None, false) => s
                    .instances
                    .iter()
                    .enumerate()
                    .map(|(j, i)| (format!("{at}.instances[{j}].node"), i.node.clone(), i.weight))
                    .collect(),
                _ => return Err(bad(format!("{at}.node"), "give exactly one of `node` and `instances`")),
            };
            let iptables = match (&s.function, &s.iptables) {
                (Some(f), None) => {
                    check_function(f).map_err(|(sub, why)| bad(format!("{at}.function{sub}"), why))?;
                    None
                }
                (None, Some(rules)) => {
                    let mut parsed = Vec::new();
                    for (r, rule) in rules.iter().enumerate() {
                        let args: Vec<String> = rule.split_whitespace().map(str::to_owned).collect();
                        if args.is_empty() {
                            return Err(bad(format!("{at}.iptables[{r}]"), "an empty rule"));
                        }
                        parsed.push(args);
                    }
                    Some(parsed)
                }
                _ => return Err(bad(at, "give exactly one of `function` (built-in) and `iptables` (external)")),
            };
            let mut topo_instances = Vec::new();
            for (j, (field, name, weight)) in instances.iter().enumerate() {
                let node = node_of(field.clone(), name)?;
                let attachment = iptables.as_ref().map(|rules| {
                    let (circuits, configs) = self.circuits(k);
                    // The first instance's namespace is named as an unpooled SF's.
                    let ns =
                        if j == 0 { format!("{prefix}-sf-{}", s.name) } else { format!("{prefix}-sf-{}-{j}", s.name) };
                    external_sfs.push(PlannedSf { name: s.name.clone(), node, ns, circuits, iptables: rules.clone() });
                    configs
                });
                topo_instances.push(TopoInstance {
                    node: name.clone(),
                    weight: *weight,
                    label: None,
                    lane_attachments: attachment.as_ref().map(|a| a[1..].to_vec()).unwrap_or_default(),
                    attachment: attachment.and_then(|a| a.into_iter().next()),
                });
            }
            let mut sf = TopoSf {
                name: s.name.clone(),
                node: None,
                instances: Vec::new(),
                intrusive: s.intrusive,
                external: iptables.is_some(),
                translates_addresses: s.translates_addresses,
                cache_capacity: s.cache_capacity,
                function: s.function.clone(),
                label: None,
                lane_attachments: Vec::new(),
                attachment: None,
            };
            if s.instances.is_empty() {
                let one = topo_instances.remove(0);
                (sf.node, sf.attachment, sf.lane_attachments) = (Some(one.node), one.attachment, one.lane_attachments);
            } else {
                sf.instances = topo_instances;
            }
            topo.sfs.push(sf);
        }
        let sf_exists = |field: String, name: &str| {
            if sfs.contains_key(name) { Ok(()) } else { Err(bad(field, format!("no SF named {name:?}"))) }
        };

        // Chains: the ones the file names, then one return chain per service.
        let mut grants: Vec<GatewayGrant> = Vec::new();
        let mut longest = 1;
        let mut described = Vec::new();
        let path_of = |from: String, sfs: &[String], to: &str| {
            let mut p = vec![from];
            p.extend(sfs.iter().cloned());
            p.push(to.to_owned());
            p.join(" → ")
        };
        for (c, ch) in self.chains.iter().enumerate() {
            let at = format!("chains[{c}]");
            let j = *services
                .get(ch.service.as_str())
                .ok_or_else(|| bad(format!("{at}.service"), format!("no service named {:?}", ch.service)))?;
            for (k, sf) in ch.sfs.iter().enumerate() {
                sf_exists(format!("{at}.sfs[{k}]"), sf)?;
            }
            let svc = &planned_services[j];
            for (k, client) in ch.clients.iter().enumerate() {
                if !clients.contains_key(client.as_str()) {
                    return Err(bad(format!("{at}.clients[{k}]"), format!("no client named {client:?}")));
                }
                if let Some(g) =
                    grants.iter().find(|g| g.identity == *client && g.service == svc.server_name && g.path == ch.path)
                {
                    return Err(bad(
                        format!("{at}.clients[{k}]"),
                        format!("{client:?} already reaches {:?} through chain {}", ch.service, g.chain),
                    ));
                }
                grants.push(GatewayGrant {
                    identity: client.clone(),
                    service: svc.server_name.clone(),
                    chain: c as u32 + 1,
                    path: ch.path.clone(),
                });
            }
            let rules = ch
                .rules
                .iter()
                .map(|d| RuleConfig {
                    src: crate::gateways::clients_prefix(gws.len()),
                    dst: format!("{}/32", svc.address),
                    protocol: Some(d.protocol),
                    src_ports: (0, u16::MAX),
                    dst_ports: d.port.map_or((0, u16::MAX), |p| (p, p)),
                    chain: None,
                    deny: false,
                })
                .collect();
            longest = longest.max(ch.sfs.len() + 1);
            let mut who = if ch.clients.is_empty() { String::new() } else { ch.clients.join(",") };
            if !ch.rules.is_empty() {
                who = format!("{}{}client network", who, if who.is_empty() { "" } else { " + " });
            }
            described.push(format!(
                "{} (id {}): {}{}",
                ch.name,
                c + 1,
                path_of(who, &ch.sfs, &svc.name),
                ch.path.as_ref().map(|p| format!(" for paths {p}*")).unwrap_or_default()
            ));
            topo.chains.push(TopoChain {
                name: ch.name.clone(),
                classifier: self.gateway.node.clone(),
                also_classified_at: self.gateway.also_on.clone(),
                sfs: ch.sfs.clone(),
                to: format!("svc-{}", self.services[j].node),
                rules,
                gateway: true,
                nsh: ch.tenant.map(|t| NshConfig {
                    si: 255,
                    context: vec![TlvConfig {
                        class: 0,
                        tlv_type: zsfc_dataplane::integrity::TENANT_TYPE,
                        value: hex::encode(t.to_be_bytes()),
                        hex: true,
                    }],
                }),
            });
        }
        for (j, s) in self.services.iter().enumerate() {
            for (k, sf) in s.return_sfs.iter().enumerate() {
                sf_exists(format!("services[{j}].return_sfs[{k}]"), sf)?;
            }
            longest = longest.max(s.return_sfs.len() + 1);
        }
        // One return chain per service and gateway (the first gateway's come first: their ids
        // do not depend on how many gateways there are).
        for k in 0..gws.len() {
            for (j, s) in self.services.iter().enumerate() {
                let name = crate::gateways::return_chain(&s.name, k);
                let to = crate::gateways::clients_endpoint(k);
                described.push(format!(
                    "{name} (id {}): {}",
                    topo.chains.len() + 1,
                    path_of(s.name.clone(), &s.return_sfs, &to)
                ));
                let src = format!("{}/32", planned_services[j].address);
                topo.chains.push(TopoChain {
                    name,
                    classifier: s.node.clone(),
                    also_classified_at: Vec::new(),
                    sfs: s.return_sfs.clone(),
                    to,
                    rules: [format!("{}/32", inner_source(k)), client_net(k)]
                        .into_iter()
                        .chain(s.return_prefixes.iter().cloned())
                        .map(|dst| RuleConfig {
                            src: src.clone(),
                            dst,
                            protocol: None,
                            src_ports: (0, u16::MAX),
                            dst_ports: (0, u16::MAX),
                            chain: None,
                            deny: false,
                        })
                        .collect(),
                    gateway: false,
                    nsh: None,
                });
            }
        }
        for (i, e) in self.expect.iter().enumerate() {
            if !clients.contains_key(e.client.as_str()) {
                return Err(bad(format!("expect[{i}].client"), format!("no client named {:?}", e.client)));
            }
            if !services.contains_key(e.service.as_str()) {
                return Err(bad(format!("expect[{i}].service"), format!("no service named {:?}", e.service)));
            }
            if e.reason.is_some() && e.outcome != Outcome::Refused {
                return Err(bad(format!("expect[{i}].reason"), "only a refusal has a reason"));
            }
        }

        // MTU: what is left of the link after the deepest stack, and the MSS that fits in it.
        let inner_mtu = self.mtu - encapsulation_overhead(longest, self.link_protection, self.sfc_integrity);
        let mss = inner_mtu - 40;
        topo.nodes = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let mut addresses = Vec::new();
                if let Some(k) = gws.iter().position(|&g| g == i) {
                    addresses.push(format!("{}/24", inner_source(k)));
                }
                addresses.extend(planned_services.iter().filter(|s| s.node == i).map(|s| format!("{}/32", s.address)));
                // Into the domain: from the ingress to the services, from a service's node back
                // to the clients (and the prefixes a NAT SF returns from).
                let routes = if gws.contains(&i) {
                    vec![SERVICE_NET.into()]
                } else if planned_services.iter().any(|s| s.node == i) {
                    let mut routes = Vec::new();
                    for k in 0..gws.len() {
                        routes.extend([format!("{}/32", inner_source(k)), client_net(k)]);
                    }
                    for s in self.services.iter().filter(|s| s.node == n.name) {
                        routes.extend(s.return_prefixes.iter().cloned());
                    }
                    routes
                } else {
                    Vec::new()
                };
                let eth = self.transport == LabTransport::Ethernet;
                TopoNode {
                    name: n.name.clone(),
                    address: (!eth).then(|| format!("10.200.0.{}", i + 1)),
                    ethernet: eth.then(|| "eth0".to_owned()),
                    mac: eth.then(|| lab_mac(i)),
                    mtu: Some(self.mtu),
                    local: (!addresses.is_empty()).then(|| LocalConfig {
                        tun: LOCAL_DEV.into(),
                        addresses,
                        mtu: inner_mtu,
                        routes,
                    }),
                    tcp_mss_clamp: Some(mss),
                }
            })
            .collect();
        let mut configs = topo.compile().map_err(|e| match e {
            FieldError::Field { field, why } => bad(format!("(compiled topology) {field}"), why),
            other => other,
        })?;
        let pki = state.join("pki");
        let server_names: Vec<String> = planned_services.iter().map(|s| s.server_name.clone()).collect();
        for (k, &g) in gws.iter().enumerate() {
            let cert = crate::gateways::cert_name(k, &self.nodes[g].name);
            configs[g].gateway = Some(GatewayConfig {
                listen: format!("{}:{}", gateway_addr(k), self.gateway.port),
                ca: pki.join("ca.pem").display().to_string(),
                cert: pki.join(format!("{cert}.pem")).display().to_string(),
                key: pki.join(format!("{cert}.key")).display().to_string(),
                inner_source: inner_source(k).to_string(),
                services: planned_services
                    .iter()
                    .map(|s| GatewayService {
                        name: s.server_name.clone(),
                        address: format!("{}:{}", s.address, s.port),
                    })
                    .collect(),
                grants: grants.clone(),
                rate_limits: self.gateway.rate_limits,
                blocking: self.gateway.blocking,
            });
        }
        let port = self.gateway.port;
        let planned_gateway = |k: usize, node: usize| PlannedGateway {
            node,
            address: gateway_addr(k),
            port,
            server_names: server_names.clone(),
            client_net: client_net(k),
            cert: crate::gateways::cert_name(k, &self.nodes[node].name),
        };
        for c in &mut configs {
            c.metrics = Some(MetricsConfig { listen: METRICS_LISTEN.into() });
            c.settings.lanes = self.lanes;
            if let Some(t) = c.transport.as_mut().filter(|t| t.ethernet.is_some()) {
                t.ring = self.ring;
            }
            c.check().map_err(|e| bad("lanes", format!("node {:?}: {e}", c.name)))?;
            // Devices, routes, ports: what the node process will open, checked here.
            c.io_settings().map_err(|e| bad("nodes", format!("the file planned for node {:?}: {e}", c.name)))?;
        }
        let nodes = configs
            .into_iter()
            .enumerate()
            .map(|(i, config)| PlannedNode {
                name: config.name.clone(),
                ns: format!("{prefix}-{}", config.name),
                address: format!("10.200.0.{}/24", i + 1),
                control_address: format!("10.201.0.{}/24", i + 1),
                mac: (self.transport == LabTransport::Ethernet).then(|| lab_mac(i)),
                config,
            })
            .collect();
        Ok(LabPlan {
            topology: topo,
            grants,
            controller: self.controller,
            name: self.name.clone(),
            bridge_ns: format!("{prefix}-net"),
            gateway: planned_gateway(0, gw),
            more_gateways: gws.iter().enumerate().skip(1).map(|(k, &g)| planned_gateway(k, g)).collect(),
            clients: self
                .clients
                .iter()
                .enumerate()
                .map(|(k, c)| PlannedClient {
                    name: c.name.clone(),
                    ns: format!("{prefix}-c-{}", c.name),
                    address: Ipv4Addr::new(172, 16, 0, 10 + k as u8),
                    more_addresses: (1..gws.len()).map(|g| Ipv4Addr::new(172, 16, g as u8, 10 + k as u8)).collect(),
                })
                .collect(),
            prefix,
            nodes,
            external_sfs,
            services: planned_services,
            link_mtu: self.mtu,
            inner_mtu,
            chains: described,
        })
    }
}

/// The MAC address of node `i`'s domain interface (locally administered).
fn lab_mac(i: usize) -> String {
    format!("02:00:5a:00:{:02x}:{:02x}", (i + 1) >> 8, (i + 1) & 0xff)
}

/// Names to positions; empty, duplicate or unsafe names (they become namespace and file names)
/// are errors at `list[i].name`.
fn names<'a>(names: impl Iterator<Item = &'a str>, list: &str) -> Result<HashMap<&'a str, usize>, FieldError> {
    let mut m = HashMap::new();
    for (i, n) in names.enumerate() {
        if n.is_empty() || n.len() > 24 || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(bad(format!("{list}[{i}].name"), format!("{n:?}: 1 to 24 characters of a-z, 0-9, '-', '_'")));
        }
        if m.insert(n, i).is_some() {
            return Err(bad(format!("{list}[{i}].name"), format!("{n:?} is used twice")));
        }
    }
    Ok(m)
}

pub(crate) fn bad(field: impl Into<String>, why: impl ToString) -> FieldError {
    FieldError::field(field, why)
}

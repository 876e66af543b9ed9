//! What a lab plan holds: everything `zsfc up` builds, by part (see [`crate::plan`]).
use crate::PlannedGateway;
use crate::plan::{LabController, ServiceKind};
use std::net::Ipv4Addr;
use zsfc_config::{GatewayGrant, NodeConfig, Topology};

/// Everything `zsfc up` builds.
#[derive(Debug, Clone)]
pub struct LabPlan {
    /// What the controller runs: the compiled domain (its SAs come from the controller).
    pub topology: Topology,
    pub grants: Vec<GatewayGrant>,
    pub controller: LabController,
    pub name: String,
    /// Prefix of every namespace of the lab.
    pub prefix: String,
    /// The namespace holding the domain segment's bridge.
    pub bridge_ns: String,
    pub nodes: Vec<PlannedNode>,
    pub gateway: PlannedGateway,
    /// Further ingress gateways (`gateway.also_on`), each with a client network of its own.
    pub more_gateways: Vec<PlannedGateway>,
    pub clients: Vec<PlannedClient>,
    pub external_sfs: Vec<PlannedSf>,
    pub services: Vec<PlannedService>,
    pub link_mtu: u16,
    pub inner_mtu: u16,
    /// One line per chain: `name (id N): who → SF → ... → where`.
    pub chains: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct PlannedNode {
    pub name: String,
    pub ns: String,
    /// Address on the domain segment, with prefix length.
    pub address: String,
    /// Address of its `ctl0` on the control segment, with prefix length.
    pub control_address: String,
    /// MAC address of the node's `eth0` (Ethernet transport).
    pub mac: Option<String>,
    pub config: NodeConfig,
}

#[derive(Debug, Clone)]
pub struct PlannedClient {
    pub name: String,
    pub ns: String,
    pub address: Ipv4Addr,
    /// Its addresses on the client networks of the further gateways (`eth1`, ...).
    pub more_addresses: Vec<Ipv4Addr>,
}

#[derive(Debug, Clone)]
pub struct PlannedSf {
    pub name: String,
    pub node: usize,
    pub ns: String,
    /// One attachment circuit per worker lane, in lane order.
    pub circuits: Vec<PlannedCircuit>,
    pub iptables: Vec<Vec<String>>,
}

#[derive(Debug, Clone)]
pub struct PlannedCircuit {
    /// The node's ends of the attachment circuit.
    pub to_sf: String,
    pub from_sf: String,
    /// For veth circuits: the SF's interface names and MAC addresses (`in`, `out`) and the MAC
    /// of the node's `from_sf` end (the SF's next hop).
    pub veth: Option<PlannedVeth>,
}

#[derive(Debug, Clone)]
pub struct PlannedVeth {
    pub sf_in: String,
    pub sf_in_mac: String,
    pub sf_out: String,
    pub node_from_sf_mac: String,
}

#[derive(Debug, Clone)]
pub struct PlannedService {
    pub name: String,
    pub server_name: String,
    pub node: usize,
    pub address: Ipv4Addr,
    pub port: u16,
    pub kind: ServiceKind,
    pub files: u32,
    pub bytes: u64,
}

//! The ingress gateways of a lab (issue 20 point 7): the first on `gateway.node`, further ones
//! on `gateway.also_on`. Each runs the mutual-TLS gateway with a certificate of its own and
//! classifies onto the same chains (same ids, so the controller's grants fit every gateway:
//! `TopoChain::also_classified_at`), and each has a network of its own on each side:
//!
//! - gateway `k`'s client network `172.16.k.0/24`, the gateway at `172.16.k.1`, client `j` at
//!   `172.16.k.(10+j)` (its `eth0` for the first gateway, `ethk` for the others);
//! - its local side (where its inner connections come from) `10.1.k.1/24`; each service has a
//!   return chain per gateway (`web-return`, `web-return-2`, ...) that steers answers to
//!   `10.1.k.1` and `172.16.k.0/24` back to that gateway's endpoint (`clients`, `clients-2`, ...).
//!
//! A client given both gateways' addresses is served by either; losing one leaves new
//! connections to the other.
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use zsfc_config::FieldError;
use zsfc_config::{GatewayBlocking, GatewayRateLimits};

/// The first gateway's client network, address and local side.
pub const CLIENT_NET: &str = "172.16.0.0/24";
pub const GATEWAY_ADDR: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);
pub const INNER_SOURCE: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
/// Most gateways a lab runs.
const MAX_GATEWAYS: usize = 4;

/// The nodes that run the mutual-TLS gateway and classify the clients' traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabGateway {
    pub node: String,
    /// Further nodes that run a gateway too (a second ingress), each serving every client.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_on: Vec<String>,
    #[serde(default = "https_port")]
    pub port: u16,
    /// New connections admitted per source address and per client identity (each gateway).
    #[serde(default)]
    pub rate_limits: GatewayRateLimits,
    /// Sources and identities refused too often are blocked for a while.
    #[serde(default)]
    pub blocking: GatewayBlocking,
}

fn https_port() -> u16 {
    443
}

impl LabGateway {
    /// The gateways' nodes by position, `first` (the index of `node`) first; each a node of
    /// the lab, named once.
    pub(crate) fn nodes(
        &self,
        first: usize,
        node_of: impl Fn(String, &str) -> Result<usize, FieldError>,
    ) -> Result<Vec<usize>, FieldError> {
        let mut out = vec![first];
        for (k, n) in self.also_on.iter().enumerate() {
            let at = format!("gateway.also_on[{k}]");
            let i = node_of(at.clone(), n)?;
            if out.contains(&i) {
                return Err(crate::plan::bad(at, format!("{n:?} runs a gateway already")));
            }
            out.push(i);
        }
        if out.len() > MAX_GATEWAYS {
            return Err(crate::plan::bad("gateway.also_on", format!("at most {MAX_GATEWAYS} gateways in all")));
        }
        Ok(out)
    }
}

/// A gateway as `zsfc up` builds it.
#[derive(Debug, Clone)]
pub struct PlannedGateway {
    pub node: usize,
    pub address: Ipv4Addr,
    pub port: u16,
    /// Service name → server name (SNI) the gateway's certificate carries.
    pub server_names: Vec<String>,
    /// Its client network.
    pub client_net: String,
    /// Its certificate's file name in the lab's PKI, without `.pem`/`.key`.
    pub cert: String,
}

/// Gateway `k`'s client network.
pub(crate) fn client_net(k: usize) -> String {
    format!("172.16.{k}.0/24")
}

/// Gateway `k`'s address on its client network.
pub(crate) fn gateway_addr(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 16, k as u8, 1)
}

/// Gateway `k`'s local side: where the inner connections it makes for clients come from.
pub(crate) fn inner_source(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, k as u8, 1)
}

/// The topology endpoint at gateway `k` (where return chains end).
pub(crate) fn clients_endpoint(k: usize) -> String {
    if k == 0 { "clients".into() } else { format!("clients-{}", k + 1) }
}

/// The return chain of `service` to gateway `k`.
pub(crate) fn return_chain(service: &str, k: usize) -> String {
    if k == 0 { format!("{service}-return") } else { format!("{service}-return-{}", k + 1) }
}

/// Gateway `k`'s certificate file (`gateway` for the first: what a one-gateway lab has).
pub(crate) fn cert_name(k: usize, node: &str) -> String {
    if k == 0 { "gateway".into() } else { format!("gateway-{node}") }
}

/// What the chains' own rules take from: the client network, or every gateway's.
pub(crate) fn clients_prefix(gateways: usize) -> String {
    if gateways > 1 { "172.16.0.0/16".into() } else { CLIENT_NET.into() }
}

//! The process-side settings of a node, parsed and checked with field names.
use crate::build::bad;
use crate::{FieldError, NodeConfig};
use std::net::{IpAddr, SocketAddr};

/// Parsed transport and local-side settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoSettings {
    pub listen: SocketAddr,
    /// Peer id → where its MPLS-in-UDP packets go.
    pub peers: Vec<(u32, SocketAddr)>,
    pub tun: Option<TunSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunSettings {
    pub name: String,
    pub addresses: Vec<(IpAddr, u8)>,
    pub mtu: u16,
}

impl NodeConfig {
    /// The settings a node process needs beyond its data plane.
    pub fn io_settings(&self) -> Result<IoSettings, FieldError> {
        let t = self
            .transport
            .as_ref()
            .ok_or_else(|| bad("transport", "missing: a node process needs `transport.listen`"))?;
        let listen =
            t.listen.parse().map_err(|_| bad("transport.listen", format!("{:?} is not ADDRESS:PORT", t.listen)))?;
        let mut peers = Vec::new();
        for (i, p) in self.peers.iter().enumerate() {
            if let Some(a) = &p.address {
                peers.push((
                    p.id,
                    a.parse().map_err(|_| bad(format!("peers[{i}].address"), format!("{a:?} is not ADDRESS:PORT")))?,
                ));
            }
        }
        let tun = match &self.local {
            None => None,
            Some(l) => {
                if l.tun.is_empty() || l.tun.len() > 15 {
                    return Err(bad("local.tun", "a device name has 1 to 15 characters"));
                }
                if l.mtu < 576 {
                    return Err(bad("local.mtu", format!("{} is below 576", l.mtu)));
                }
                let mut addresses = Vec::new();
                for (i, a) in l.addresses.iter().enumerate() {
                    let (addr, len) = a
                        .split_once('/')
                        .ok_or_else(|| bad(format!("local.addresses[{i}]"), format!("{a:?} is not ADDRESS/LENGTH")))?;
                    let addr: IpAddr = addr
                        .parse()
                        .map_err(|_| bad(format!("local.addresses[{i}]"), format!("{addr:?} is not an address")))?;
                    let len: u8 =
                        len.parse().ok().filter(|l| *l <= if addr.is_ipv4() { 32 } else { 128 }).ok_or_else(|| {
                            bad(format!("local.addresses[{i}]"), format!("bad prefix length in {a:?}"))
                        })?;
                    addresses.push((addr, len));
                }
                Some(TunSettings { name: l.tun.clone(), addresses, mtu: l.mtu })
            }
        };
        Ok(IoSettings { listen, peers, tun })
    }
}

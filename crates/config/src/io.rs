//! The process-side settings of a node, parsed and checked with field names.
use crate::build::bad;
use crate::{AttachmentKindConfig, FieldError, GatewayConfig, NodeConfig};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// Parsed transport and local-side settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoSettings {
    pub listen: Option<SocketAddr>,
    pub ethernet: Option<String>,
    pub ring: crate::model::EthernetRing,
    /// Peer id → where its packets go.
    pub peers: Vec<(u32, PeerLink)>,
    pub tun: Option<TunSettings>,
    pub attachments: Vec<AttachmentSettings>,
    pub gateway: Option<GatewaySettings>,
    pub metrics: Option<SocketAddr>,
}

/// The gateway's settings, parsed: services are (name, address), grants (identity, service,
/// chain id, path prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySettings {
    pub listen: SocketAddr,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub inner_source: IpAddr,
    pub services: Vec<(String, SocketAddr)>,
    pub grants: Vec<(String, String, u32, Option<String>)>,
    pub rate_limits: crate::model::GatewayRateLimits,
    pub blocking: crate::model::GatewayBlocking,
}

/// Where a peer's packets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerLink {
    Udp(SocketAddr),
    Ethernet([u8; 6]),
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for o in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The attachment circuit of the external SF `sf` (its name in `sfs`) for worker lane `lane`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentSettings {
    pub sf: String,
    pub lane: u32,
    pub to_sf: String,
    pub from_sf: String,
    pub mtu: u16,
    /// `Some(SF's MAC)` for a veth attachment, `None` for TUN devices.
    pub veth_peer: Option<[u8; 6]>,
}

/// One attachment circuit, checked; `field` names it in errors.
fn attachment_settings(
    field: &str,
    sf: &str,
    lane: u32,
    a: &crate::AttachmentConfig,
) -> Result<AttachmentSettings, FieldError> {
    device_name(format!("{field}.to_sf"), &a.to_sf)?;
    device_name(format!("{field}.from_sf"), &a.from_sf)?;
    if a.to_sf == a.from_sf {
        return Err(bad(format!("{field}.from_sf"), "must differ from to_sf"));
    }
    if a.mtu < 576 {
        return Err(bad(format!("{field}.mtu"), format!("{} is below 576", a.mtu)));
    }
    let veth_peer = match (a.kind, &a.to_sf_mac) {
        (AttachmentKindConfig::Tun, None) => None,
        (AttachmentKindConfig::Veth, Some(m)) => Some(
            parse_mac(m).ok_or_else(|| bad(format!("{field}.to_sf_mac"), format!("{m:?} is not aa:bb:cc:dd:ee:ff")))?,
        ),
        (AttachmentKindConfig::Veth, None) => {
            return Err(bad(format!("{field}.to_sf_mac"), "missing: a veth attachment needs the SF's MAC"));
        }
        (AttachmentKindConfig::Tun, Some(_)) => {
            return Err(bad(format!("{field}.to_sf_mac"), "only a veth attachment has one"));
        }
    };
    Ok(AttachmentSettings {
        sf: sf.to_owned(),
        lane,
        to_sf: a.to_sf.clone(),
        from_sf: a.from_sf.clone(),
        mtu: a.mtu,
        veth_peer,
    })
}

fn device_name(field: String, name: &str) -> Result<(), FieldError> {
    if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
        return Err(bad(field, format!("{name:?}: a device name has 1 to 15 characters, no '/' or space")));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunSettings {
    pub name: String,
    pub addresses: Vec<(IpAddr, u8)>,
    pub mtu: u16,
    /// Networks routed through the device (see [`crate::LocalConfig::routes`]).
    pub routes: Vec<(IpAddr, u8)>,
}

/// `ADDRESS/LENGTH`, the length within the family's.
fn prefix(field: &str, text: &str) -> Result<(IpAddr, u8), FieldError> {
    let (addr, len) = text.split_once('/').ok_or_else(|| bad(field, format!("{text:?} is not ADDRESS/LENGTH")))?;
    let addr: IpAddr = addr.parse().map_err(|_| bad(field, format!("{addr:?} is not an address")))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len: u8 =
        len.parse().ok().filter(|l| *l <= max).ok_or_else(|| bad(field, format!("bad prefix length in {text:?}")))?;
    Ok((addr, len))
}

/// Whether the bits of `a` past the first `len` are zero.
fn host_bits_clear(a: IpAddr, len: u8) -> bool {
    match a {
        IpAddr::V4(v4) => u32::from(v4).checked_shl(u32::from(len)).unwrap_or(0) == 0,
        IpAddr::V6(v6) => u128::from(v6).checked_shl(u32::from(len)).unwrap_or(0) == 0,
    }
}

/// The UDP port says what the datagrams are, so that any receiver or capture reads them right:
/// labelled packets in MPLS-in-UDP on 6635 (RFC 7510 §3), link ESP around them on 4500
/// (UDP-encapsulated ESP, RFC 3948). A protected link on the MPLS port, or plain MPLS on the ESP
/// port, is refused.
fn check_link_port(field: &str, a: SocketAddr, link_auth: bool) -> Result<(), FieldError> {
    use zsfc_wire::{esp::UDP_ENCAP_PORT, mpls::in_udp::PORT as MPLS_PORT};
    match (link_auth, a.port()) {
        (true, MPLS_PORT) => Err(bad(
            field,
            format!(
                "port {MPLS_PORT} is MPLS-in-UDP (RFC 7510), but link protection is on: link ESP travels as \
                 UDP-encapsulated ESP (RFC 3948) on port {UDP_ENCAP_PORT}"
            ),
        )),
        (false, UDP_ENCAP_PORT) => Err(bad(
            field,
            format!(
                "port {UDP_ENCAP_PORT} is UDP-encapsulated ESP (RFC 3948), but link protection is off: plain \
                 labelled packets travel as MPLS-in-UDP (RFC 7510) on port {MPLS_PORT}"
            ),
        )),
        _ => Ok(()),
    }
}

/// The domain's default UDP port for the links: 4500 with link protection, 6635 without.
pub fn link_port(link_protection: bool) -> u16 {
    if link_protection { zsfc_wire::esp::UDP_ENCAP_PORT } else { zsfc_wire::mpls::in_udp::PORT }
}

impl NodeConfig {
    /// The links' UDP ports against link protection (see [`check_link_port`]); addresses that
    /// do not parse are left to [`io_settings`](Self::io_settings).
    pub(crate) fn check_link_ports(&self) -> Result<(), FieldError> {
        let link_auth = self.settings.link_auth;
        if let Some(a) = self.transport.as_ref().and_then(|t| t.listen.as_deref()).and_then(|l| l.parse().ok()) {
            check_link_port("transport.listen", a, link_auth)?;
        }
        for (i, p) in self.peers.iter().enumerate() {
            if let Some(a) = p.address.as_deref().and_then(|a| a.parse().ok()) {
                check_link_port(&format!("peers[{i}].address"), a, link_auth)?;
            }
        }
        Ok(())
    }

    /// Issue 19 point 6: an inner packet of `local.mtu` bytes, encapsulated for this node's
    /// deepest chain (two labels at least: an SF and the delivery label), must fit the links'
    /// MTU, or it would leave as IP fragments or not at all.
    fn check_inner_mtu(&self, t: &crate::TransportConfig, inner: u16) -> Result<(), FieldError> {
        let labels = self.chains.iter().map(|c| c.labels.len()).max().unwrap_or(0).max(2);
        let s = self.settings;
        let overhead = crate::encapsulation_overhead(labels, s.link_auth, s.sfc_integrity);
        let room = t.max_datagram();
        if u32::from(inner) + u32::from(overhead) > u32::from(room) {
            return Err(bad(
                "local.mtu",
                format!(
                    "{inner} plus the encapsulation ({overhead} bytes: {labels} labels, payload ESP{}{}) exceeds the \
                     {room} bytes a datagram may carry on links of MTU {} (transport.mtu): at most {}",
                    if s.link_auth { ", link ESP" } else { "" },
                    if s.sfc_integrity { ", the NSH of SFC integrity" } else { "" },
                    t.link_mtu(),
                    room.saturating_sub(overhead),
                ),
            ));
        }
        Ok(())
    }

    /// The settings a node process needs beyond its data plane.
    pub fn io_settings(&self) -> Result<IoSettings, FieldError> {
        let t = self
            .transport
            .as_ref()
            .ok_or_else(|| bad("transport", "missing: a node process needs `listen` and/or `ethernet`"))?;
        if t.listen.is_none() && t.ethernet.is_none() {
            return Err(bad("transport", "give `listen` (MPLS-in-UDP) and/or `ethernet` (an interface)"));
        }
        self.check_link_ports()?;
        let listen = match &t.listen {
            Some(l) => Some(l.parse().map_err(|_| bad("transport.listen", format!("{l:?} is not ADDRESS:PORT")))?),
            None => None,
        };
        if let Some(e) = &t.ethernet {
            device_name("transport.ethernet".into(), e)?;
        }
        if t.ring.is_some() && t.ethernet.is_none() {
            return Err(bad("transport.ring", "a receive ring is for an Ethernet link: set `transport.ethernet`"));
        }
        if t.mtu.is_some_and(|m| m < 576) {
            return Err(bad("transport.mtu", format!("{} is below 576, the smallest IPv4 datagram", t.link_mtu())));
        }
        let mut peers = Vec::new();
        for (i, p) in self.peers.iter().enumerate() {
            match (&p.address, &p.mac) {
                (Some(_), Some(_)) => {
                    return Err(bad(format!("peers[{i}]"), "give one of `address` (UDP) and `mac` (Ethernet)"));
                }
                (Some(a), None) => {
                    if listen.is_none() {
                        return Err(bad(format!("peers[{i}].address"), "MPLS-in-UDP needs `transport.listen`"));
                    }
                    let a = a
                        .parse()
                        .map_err(|_| bad(format!("peers[{i}].address"), format!("{a:?} is not ADDRESS:PORT")))?;
                    peers.push((p.id, PeerLink::Udp(a)));
                }
                (None, Some(m)) => {
                    if t.ethernet.is_none() {
                        return Err(bad(format!("peers[{i}].mac"), "Ethernet needs `transport.ethernet`"));
                    }
                    let m = parse_mac(m)
                        .ok_or_else(|| bad(format!("peers[{i}].mac"), format!("{m:?} is not aa:bb:cc:dd:ee:ff")))?;
                    peers.push((p.id, PeerLink::Ethernet(m)));
                }
                (None, None) => {}
            }
        }
        let tun = match &self.local {
            None => None,
            Some(l) => {
                device_name("local.tun".into(), &l.tun)?;
                if l.mtu < 576 {
                    return Err(bad("local.mtu", format!("{} is below 576", l.mtu)));
                }
                let mut addresses = Vec::new();
                for (i, a) in l.addresses.iter().enumerate() {
                    let (addr, len) = prefix(&format!("local.addresses[{i}]"), a)?;
                    // The kernel takes IPv6 off a device below 1280 bytes (RFC 8200 §5), silently.
                    if addr.is_ipv6() && l.mtu < 1280 {
                        return Err(bad(
                            format!("local.addresses[{i}]"),
                            format!(
                                "IPv6 needs an MTU of at least 1280 and local.mtu is {} (the encapsulation's \
                                 overhead on the links leaves no more: raise the links' MTU)",
                                l.mtu
                            ),
                        ));
                    }
                    addresses.push((addr, len));
                }
                let mut routes = Vec::new();
                for (i, r) in l.routes.iter().enumerate() {
                    let field = format!("local.routes[{i}]");
                    let (net, len) = prefix(&field, r)?;
                    if !host_bits_clear(net, len) {
                        return Err(bad(field, format!("{r:?} has host bits set (a route names a network)")));
                    }
                    if net.is_ipv6() && l.mtu < 1280 {
                        return Err(bad(field, format!("an IPv6 route needs an MTU of at least 1280, not {}", l.mtu)));
                    }
                    routes.push((net, len));
                }
                self.check_inner_mtu(t, l.mtu)?;
                Some(TunSettings { name: l.tun.clone(), addresses, mtu: l.mtu, routes })
            }
        };
        let mut attachments = Vec::new();
        for (i, sf) in self.sfs.iter().enumerate() {
            match (&sf.attachment, sf.external) {
                (None, false) => {}
                (Some(_), false) => {
                    return Err(bad(format!("sfs[{i}].attachment"), "only an external SF has an attachment circuit"));
                }
                (None, true) => {
                    return Err(bad(
                        format!("sfs[{i}].attachment"),
                        "missing: a node process reaches an external SF over an attachment circuit",
                    ));
                }
                (Some(a), true) => {
                    let further = self.settings.lanes.saturating_sub(1) as usize;
                    if sf.lane_attachments.len() != further {
                        return Err(bad(
                            format!("sfs[{i}].lane_attachments"),
                            format!(
                                "{} given; with settings.lanes = {} an external SF needs {further} (one attachment \
                                 circuit per lane after the first)",
                                sf.lane_attachments.len(),
                                self.settings.lanes
                            ),
                        ));
                    }
                    attachments.push(attachment_settings(&format!("sfs[{i}].attachment"), &sf.name, 0, a)?);
                    for (k, a) in sf.lane_attachments.iter().enumerate() {
                        let field = format!("sfs[{i}].lane_attachments[{k}]");
                        attachments.push(attachment_settings(&field, &sf.name, k as u32 + 1, a)?);
                    }
                }
            }
        }
        let mut names = HashSet::new();
        for a in &attachments {
            for dev in [&a.to_sf, &a.from_sf] {
                if !names.insert(dev.as_str()) {
                    let why = format!("SF {:?}: device {dev:?} belongs to two attachment circuits", a.sf);
                    return Err(bad("sfs", why));
                }
            }
        }
        let gateway = self.gateway.as_ref().map(|g| self.gateway_settings(g)).transpose()?;
        let metrics = match &self.metrics {
            Some(m) => Some(
                m.listen.parse().map_err(|_| bad("metrics.listen", format!("{:?} is not ADDRESS:PORT", m.listen)))?,
            ),
            None => None,
        };
        Ok(IoSettings {
            listen,
            ethernet: t.ethernet.clone(),
            ring: t.ring.unwrap_or_default(),
            peers,
            tun,
            attachments,
            gateway,
            metrics,
        })
    }

    fn gateway_settings(&self, g: &GatewayConfig) -> Result<GatewaySettings, FieldError> {
        let listen =
            g.listen.parse().map_err(|_| bad("gateway.listen", format!("{:?} is not ADDRESS:PORT", g.listen)))?;
        let inner_source = g
            .inner_source
            .parse()
            .map_err(|_| bad("gateway.inner_source", format!("{:?} is not an address", g.inner_source)))?;
        for (field, v) in [("ca", &g.ca), ("cert", &g.cert), ("key", &g.key)] {
            if v.is_empty() {
                return Err(bad(format!("gateway.{field}"), "must name a PEM file"));
            }
        }
        let chains: HashSet<u32> = self.chains.iter().map(|c| c.id).collect();
        let mut services = Vec::new();
        let mut names = HashSet::new();
        for (i, s) in g.services.iter().enumerate() {
            let at = format!("gateway.services[{i}]");
            if s.name.is_empty() || !names.insert(s.name.to_ascii_lowercase()) {
                return Err(bad(format!("{at}.name"), format!("{:?} is empty or used twice", s.name)));
            }
            let addr: SocketAddr = s
                .address
                .parse()
                .map_err(|_| bad(format!("{at}.address"), format!("{:?} is not ADDRESS:PORT", s.address)))?;
            services.push((s.name.clone(), addr));
        }
        let mut grants = Vec::new();
        for (i, c) in g.grants.iter().enumerate() {
            let at = format!("gateway.grants[{i}]");
            if c.identity.trim().is_empty() {
                return Err(bad(format!("{at}.identity"), "must not be empty"));
            }
            if !names.contains(&c.service.to_ascii_lowercase()) {
                return Err(bad(format!("{at}.service"), format!("no service named {:?}", c.service)));
            }
            if !chains.contains(&c.chain) {
                return Err(bad(format!("{at}.chain"), format!("no chain {} on this node", c.chain)));
            }
            if c.path.as_ref().is_some_and(|p| !p.starts_with('/')) {
                return Err(bad(format!("{at}.path"), "a path prefix starts with '/'"));
            }
            grants.push((c.identity.clone(), c.service.clone(), c.chain, c.path.clone()));
        }
        let b = g.blocking;
        if b.after_refusals > 0 {
            for (field, v) in [("within_s", b.within_s), ("block_s", b.block_s)] {
                if v == 0 {
                    return Err(bad(
                        format!("gateway.blocking.{field}"),
                        "must be at least 1 (after_refusals = 0 turns blocking off)",
                    ));
                }
            }
        }
        Ok(GatewaySettings {
            listen,
            ca: g.ca.clone().into(),
            cert: g.cert.clone().into(),
            key: g.key.clone().into(),
            inner_source,
            services,
            grants,
            rate_limits: g.rate_limits,
            blocking: g.blocking,
        })
    }
}

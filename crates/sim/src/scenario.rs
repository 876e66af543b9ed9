//! The reference scenario: one ingress, three SF nodes with six SFs (intrusive and
//! non-intrusive, in-process and external, NAT and DPI among them), one egress with a
//! service, and an asymmetric return chain.
//!
//! ```text
//!  client ─ ingress ─▶ node-a ──────────▶ node-b ────────────────▶ node-c ───────────▶ egress ─ service
//!                      1001 firewall  (I)  1003 counter (N, ext)    1005 logger (N)
//!                      1002 dpi  (I, ext)  1004 nat (I)             1006 delay 1 ms (I)
//!  return:  egress ─▶ node-b 1004 nat ─▶ node-c 1005 logger ─▶ ingress
//! ```
//! I = intrusive (decrypts), N = non-intrusive (sees ESP only), ext = external SFC-unaware
//! SF (proxy keys by headers); the others run in-process (proxy keys by metadata).
use crate::domain::{BuildError, ChainDef, DomainBuilder, SfKind};
use crate::{ClientSide, FakeEchoService, Sim};
use std::io::Write;
use zsfc_dataplane::{Action, NshSpec, Prefix, Rule};
use zsfc_functions::{AclRule, AclVerdict, Counter, Delay, Dpi, Firewall, NatConfig, PacketLogger, SourceNat};
use zsfc_wire::nsh;

pub const INGRESS: usize = 0;
pub const EGRESS: usize = 4;
pub const CLIENT_V4: &str = "10.1.0.0/24";
pub const CLIENT_V6: &str = "fd01::/64";
pub const SERVICE_V4: &str = "10.9.0.1";
pub const SERVICE_V6: &str = "fd09::1";
pub const NAT_V4: &str = "192.0.2.1";
pub const NAT_V6: &str = "2001:db8::1";
pub const DELIVER_INGRESS: u32 = 900;
pub const DELIVER_EGRESS: u32 = 999;
pub const FORWARD_HOPS: [u32; 6] = [1001, 1002, 1003, 1004, 1005, 1006];
pub const RETURN_HOPS: [u32; 2] = [1004, 1005];

fn p(s: &str) -> Prefix {
    s.parse().unwrap_or(Prefix::any_v4())
}

/// The six-SF domain. `pcap` receives the logger's capture (ESP packets, since the logger is
/// non-intrusive); `with_nsh` adds an NSH with a subscriber-id context header.
pub fn six_sf_chain(pcap: Box<dyn Write + Send>, with_nsh: bool) -> Result<Sim, BuildError> {
    let mut b = DomainBuilder::default();
    let ingress = b.node("ingress", Box::new(ClientSide::default()));
    let a = b.node("node-a", Box::new(ClientSide::default()));
    let nb = b.node("node-b", Box::new(ClientSide::default()));
    let c = b.node("node-c", Box::new(ClientSide::default()));
    let egress = b.node("egress", Box::new(FakeEchoService::default()));
    debug_assert_eq!((ingress, egress), (INGRESS, EGRESS));

    let fw = Firewall::new(
        vec![AclRule { src: None, dst: None, protocol: Some(6), dst_ports: (22, 22), verdict: AclVerdict::Deny }],
        AclVerdict::Allow,
    );
    b.sf(a, 1001, "firewall", true, SfKind::InProcess(Box::new(fw)));
    let dpi = Dpi::new(&["test"]).map_err(|e| BuildError::Sf(e.to_string()))?;
    b.sf(a, 1002, "dpi", true, SfKind::External(Box::new(dpi)));
    b.sf(nb, 1003, "counter", false, SfKind::External(Box::new(Counter::default())));
    let nat = SourceNat::new(NatConfig { v4: NAT_V4.parse().ok(), v6: NAT_V6.parse().ok(), ..NatConfig::default() });
    b.sf(nb, 1004, "nat", true, SfKind::InProcess(Box::new(nat)));
    let logger = PacketLogger::new(pcap, 65535).map_err(|e| BuildError::Sf(format!("logger: {e}")))?;
    b.sf(c, 1005, "logger", false, SfKind::InProcess(Box::new(logger)));
    b.sf(c, 1006, "delay", true, SfKind::InProcess(Box::new(Delay::new(core::time::Duration::from_millis(1), 1024))));
    b.deliver_label(ingress, DELIVER_INGRESS);
    b.deliver_label(egress, DELIVER_EGRESS);

    let nsh = with_nsh.then(|| {
        let t = nsh::Tlv { class: 0, tlv_type: 0x04, value: b"subscriber-0001" };
        let mut ctx = vec![0u8; t.wire_len()];
        let _ = t.emit(&mut ctx);
        NshSpec { si: 255, context: ctx }
    });
    let fwd_rules = vec![
        Rule::between(p(CLIENT_V4), p(SERVICE_V4), Action::Chain(zsfc_dataplane::ChainId(1))),
        Rule::between(p(CLIENT_V6), p(SERVICE_V6), Action::Chain(zsfc_dataplane::ChainId(1))),
    ];
    b.chain(ChainDef {
        id: 1,
        classifier: ingress,
        rules: fwd_rules,
        hops: FORWARD_HOPS.to_vec(),
        deliver: DELIVER_EGRESS,
        nsh: nsh.clone(),
    });
    let ret_rules = vec![
        Rule::between(p(SERVICE_V4), Prefix::any_v4(), Action::Chain(zsfc_dataplane::ChainId(2))),
        Rule::between(p(SERVICE_V6), Prefix::any_v6(), Action::Chain(zsfc_dataplane::ChainId(2))),
    ];
    b.chain(ChainDef {
        id: 2,
        classifier: egress,
        rules: ret_rules,
        hops: RETURN_HOPS.to_vec(),
        deliver: DELIVER_INGRESS,
        nsh,
    });
    b.build()
}

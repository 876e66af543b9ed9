#![no_main]
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use zsfc_dataplane::integrity::{ChainKeyConfig, PotRole};
use zsfc_dataplane::{Instant, LabelAction, Node, NodeId, NodeSettings, PacketBuf, SaUse, SfId};
use zsfc_esp::{Algorithm, SaConfig, SaKey};

thread_local! {
    static SIM: RefCell<zsfc_sim::Sim> = RefCell::new(zsfc_sim::scenario::six_sf_chain(Box::new(std::io::sink()), true).unwrap());
    static PROTECTED: RefCell<[Node; 2]> = RefCell::new(protected());
}

/// Two engines with the protections on: one requires link ESP (label 500 delivers), one
/// requires SFC integrity with a chain key and a proof-of-transit verifier (label 500 delivers,
/// label 501 goes to a peer).
fn protected() -> [Node; 2] {
    let link = SaConfig::new(0x2000, SaKey::new(Algorithm::Aes128Gmac, &[7; 20]).unwrap());
    let mut a = Node::new(NodeSettings { link_auth: true, ..NodeSettings::default() });
    a.install_inbound(&link, SaUse::Link, Instant::ZERO).unwrap();
    a.set_label(500, LabelAction::Deliver).unwrap();
    let mut b = Node::new(NodeSettings { sfc_integrity: true, ..NodeSettings::default() });
    let pot = PotRole { poly2: vec![3, 5], shares: Vec::new(), secret: Some(11) };
    let key = ChainKeyConfig { key_id: 9, chain: 1, mac_key: &[1; 32], enc_key: Some(&[2; 16]), origin_key: Some(&[3; 32]), pot: Some(pot) };
    b.install_chain_key(&key).unwrap();
    b.set_label(500, LabelAction::Deliver).unwrap();
    b.set_label(501, LabelAction::Remote(NodeId(0))).unwrap();
    [a, b]
}

// The engine's packet entry points with arbitrary bytes: the first byte picks node and door.
fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    if sel >= 240 {
        PROTECTED.with(|p| {
            let _ = p.borrow_mut()[usize::from(sel & 1)].handle_from_domain(Instant::ZERO, PacketBuf::from_slice(rest));
        });
        return;
    }
    SIM.with(|s| {
        let mut sim = s.borrow_mut();
        let now = sim.now;
        let i = usize::from(sel % 5);
        let node = &mut sim.nodes[i].node;
        let buf = PacketBuf::from_slice(rest);
        let _ = match sel / 5 % 3 {
            0 => node.handle_from_domain(now, buf),
            1 => node.handle_local(now, buf),
            _ => node.handle_from_sf(now, SfId(u32::from(sel) % 2), buf),
        };
        while node.poll_output(now).is_some() {}
    });
});

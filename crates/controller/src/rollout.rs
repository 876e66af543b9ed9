//! Make-before-break (RFC 9061 Appendix D.2) over whole node documents. A change of keys or
//! paths is a new generation of SAs; it reaches the domain in three pushes, each acknowledged by
//! every node before the next:
//! 1. [`prepare`]: every node adds the new generation's SAs (inbound and outbound) next to the
//!    old ones; nothing uses them yet.
//! 2. [`switch`]: classifiers point their chains (and rules, gateway grants) at the new
//!    outbound SAs. An intrusive SF re-seals with the SA its inbound SA names, so the new
//!    generation flows end to end while packets of the old one still in flight finish on it.
//! 3. after a grace period, [`finish`]: the old SAs go (nodes retire the old inbound SAs, which
//!    accept what is still in flight until nothing has arrived on them for a second).
use zsfc_config::ikeless::{NodeState, SadEntry, strip_chain_key};
use zsfc_config::{ChainKeyConfig, LabelEntry};

/// The document without any key material (what the controller keeps after the node has it).
pub fn strip_keys(doc: &NodeState) -> NodeState {
    let mut d = doc.clone();
    for e in &mut d.ikeless.sad.entries {
        e.config.esp_sa.encryption.key = None;
    }
    for k in &mut d.sfc.chain_keys {
        *k = strip_chain_key(k);
    }
    d
}

fn union_keys(first: &[ChainKeyConfig], then: &[ChainKeyConfig]) -> Vec<ChainKeyConfig> {
    let mut out = first.to_vec();
    out.extend(then.iter().filter(|k| !first.iter().any(|f| f.key_id == k.key_id)).cloned());
    out
}

fn union_sad(first: &[SadEntry], then: &[SadEntry]) -> Vec<SadEntry> {
    let mut out = first.to_vec();
    out.extend(then.iter().filter(|e| !first.iter().any(|f| f.name == e.name && f.direction == e.direction)).cloned());
    out
}

fn union_labels(base: &[LabelEntry], over: &[LabelEntry]) -> Vec<LabelEntry> {
    let mut out: Vec<LabelEntry> = base.iter().filter(|l| !over.iter().any(|o| o.label == l.label)).cloned().collect();
    out.extend(over.iter().cloned());
    out
}

/// Step 1: the old state plus the new SAs (with their keys) and labels.
pub fn prepare(old: &NodeState, new: &NodeState, version: u64) -> NodeState {
    let mut d = old.clone();
    d.version = version;
    d.ikeless.sad.entries = union_sad(&old.ikeless.sad.entries, &new.ikeless.sad.entries);
    d.sfc.chain_keys = union_keys(&old.sfc.chain_keys, &new.sfc.chain_keys);
    d.sfc.labels = union_labels(&old.sfc.labels, &new.sfc.labels);
    // Revocations hold from the first push on, not after the switch.
    d.sfc.revoked = new.sfc.revoked.clone();
    d
}

/// Step 2: the new state (no keys) with the old SAs still installed.
pub fn switch(old: &NodeState, new: &NodeState, version: u64) -> NodeState {
    let mut d = strip_keys(new);
    d.version = version;
    d.ikeless.sad.entries = union_sad(&d.ikeless.sad.entries, &strip_keys(old).ikeless.sad.entries);
    d.sfc.chain_keys = union_keys(&d.sfc.chain_keys, &strip_keys(old).sfc.chain_keys);
    d.sfc.labels = union_labels(&old.sfc.labels, &new.sfc.labels);
    d
}

/// Step 3: the new state alone.
pub fn finish(new: &NodeState, version: u64) -> NodeState {
    let mut d = strip_keys(new);
    d.version = version;
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use zsfc_config::Topology;

    fn docs(first_spi: u32) -> Vec<NodeState> {
        let t = Topology::from_toml(include_str!("../../../examples/inmemory-topology.toml")).unwrap();
        let (cfgs, _) = t.compile_from(first_spi).unwrap();
        cfgs.iter().map(|c| NodeState::from_config(1, c, Vec::new(), |_| true)).collect()
    }

    #[test]
    fn the_three_steps_keep_a_usable_sa_at_every_moment() {
        let (old, new) = (docs(0x1000), docs(0x2000));
        for (o, n) in old.iter().zip(&new) {
            let o = strip_keys(o);
            let p = prepare(&o, n, 2);
            // Step 1: old chains unchanged, every old and new SA present, new keys carried.
            assert_eq!(p.sfc.chains, o.sfc.chains);
            assert_eq!(p.ikeless.sad.entries.len(), o.ikeless.sad.entries.len() + n.ikeless.sad.entries.len());
            assert!(p.ikeless.sad.entries.iter().all(|e| e.has_key() == (e.config.spi >= 0x2000)));
            p.check().unwrap();
            // Step 2: new chains, both generations installed, no key at all.
            let s = switch(&o, n, 3);
            assert_eq!(s.sfc.chains, n.sfc.chains);
            assert!(s.ikeless.sad.entries.iter().all(|e| !e.has_key()));
            assert_eq!(s.ikeless.sad.entries.len(), p.ikeless.sad.entries.len());
            s.check().unwrap();
            // Step 3: the old generation is gone.
            let f = finish(n, 4);
            assert!(f.ikeless.sad.entries.iter().all(|e| e.config.spi >= 0x2000 && !e.has_key()));
            assert_eq!(f.version, 4);
        }
    }
}

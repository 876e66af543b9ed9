//! Builds a simulated domain from nodes, SF *instances* and chains (so tests can plug in their
//! own SFs and the simulation can run "external" ones), placing the SAs with the same
//! [`zsfc_config::plan_sas`] the topology compiler uses: one SA per encrypting hop. A chain
//! `C -> a -> b(non-intrusive) -> c -> S` gets the SAs C->a, a->c and c->S; b holds no key.
use crate::{LocalSide, Sim, SimNode};
use std::collections::HashMap;
use zsfc_dataplane::{
    ChainId, ChainSpec, ConfigError, Instant, LabelAction, Node, NodeId, NodeSettings, NshSpec, Rule, SaIdx, SaUse,
    ServiceFunction, SfSpec,
};
use zsfc_esp::{Algorithm, Lifetimes, SaConfig, SaKey};

/// How an SF is attached.
pub enum SfKind {
    /// Runs inside the node; the proxy keys packets by metadata.
    InProcess(Box<dyn ServiceFunction>),
    /// Runs "outside" (the simulation calls it without metadata); the proxy keys by headers.
    External(Box<dyn ServiceFunction>),
}

impl core::fmt::Debug for SfKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::InProcess(sf) => write!(f, "InProcess({})", sf.kind()),
            Self::External(sf) => write!(f, "External({})", sf.kind()),
        }
    }
}

/// A chain to install: classified at `classifier`, through the SFs with `hops` labels, ending
/// at the node that owns `deliver`.
#[derive(Debug)]
pub struct ChainDef {
    pub id: u32,
    pub classifier: usize,
    pub rules: Vec<Rule>,
    pub hops: Vec<u32>,
    pub deliver: u32,
    pub nsh: Option<NshSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("node {node}: {source}")]
    Config { node: String, source: ConfigError },
    #[error("label {0} is used twice")]
    DuplicateLabel(u32),
    #[error("chain {chain}: label {label} belongs to no node")]
    UnknownLabel { chain: u32, label: u32 },
    #[error("key generation failed")]
    Key,
    #[error("sf {0}")]
    Sf(String),
}

struct PendingNode {
    name: String,
    local: Box<dyn LocalSide>,
    sfs: Vec<(u32, String, bool, SfKind)>,
    deliver: Vec<u32>,
}

/// Collects the domain, then [`build`](Self::build)s it.
pub struct DomainBuilder {
    nodes: Vec<PendingNode>,
    chains: Vec<ChainDef>,
    pub lifetimes: Lifetimes,
    pub algorithm: Algorithm,
    pub settings: NodeSettings,
}

impl core::fmt::Debug for DomainBuilder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DomainBuilder").field("nodes", &self.nodes.len()).field("chains", &self.chains).finish()
    }
}

impl Default for DomainBuilder {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            chains: Vec::new(),
            lifetimes: Lifetimes::default(),
            algorithm: Algorithm::Aes256Gcm,
            settings: NodeSettings::default(),
        }
    }
}

impl DomainBuilder {
    pub fn node(&mut self, name: &str, local: Box<dyn LocalSide>) -> usize {
        self.nodes.push(PendingNode { name: name.to_owned(), local, sfs: Vec::new(), deliver: Vec::new() });
        self.nodes.len() - 1
    }
    pub fn sf(&mut self, node: usize, label: u32, name: &str, intrusive: bool, kind: SfKind) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.sfs.push((label, name.to_owned(), intrusive, kind));
        }
    }
    pub fn deliver_label(&mut self, node: usize, label: u32) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.deliver.push(label);
        }
    }
    pub fn chain(&mut self, c: ChainDef) {
        self.chains.push(c);
    }

    pub fn build(self) -> Result<Sim, BuildError> {
        let now = Instant::from_secs(1);
        let cfg_err = |node: &str| {
            let node = node.to_owned();
            move |source| BuildError::Config { node: node.clone(), source }
        };
        // Which node owns each label, and which SF labels are intrusive.
        let mut owner: HashMap<u32, usize> = HashMap::new();
        let mut intrusive: HashMap<u32, bool> = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for l in n.sfs.iter().map(|s| s.0).chain(n.deliver.iter().copied()) {
                if owner.insert(l, i).is_some() {
                    return Err(BuildError::DuplicateLabel(l));
                }
            }
            for s in &n.sfs {
                intrusive.insert(s.0, s.2);
            }
        }
        let mut nodes = Vec::new();
        for (i, p) in self.nodes.into_iter().enumerate() {
            let mut node = Node::new(self.settings);
            let mut external = HashMap::new();
            for (label, name, intr, kind) in p.sfs {
                let (spec, ext) = match kind {
                    SfKind::InProcess(sf) => (SfSpec::in_process(label, &name, intr, sf), None),
                    SfKind::External(sf) => (SfSpec::external(label, &name, intr), Some(sf)),
                };
                let id = node.add_sf(spec).map_err(cfg_err(&p.name))?;
                if let Some(sf) = ext {
                    external.insert(id, sf);
                }
            }
            for &l in &p.deliver {
                node.set_label(l, LabelAction::Deliver).map_err(cfg_err(&p.name))?;
            }
            for (&l, &o) in &owner {
                if o != i {
                    node.set_label(l, LabelAction::Remote(NodeId(o as u32))).map_err(cfg_err(&p.name))?;
                }
            }
            nodes.push(SimNode { name: p.name, node, local: p.local, external });
        }

        let mut next_spi = 0x0000_1000u32;
        let mut next_sa: Vec<u32> = vec![0; nodes.len()];
        for c in self.chains {
            // Encrypting points: the classifier, every intrusive SF, the delivering node.
            let mut points = vec![c.classifier];
            for &l in &c.hops {
                let o = *owner.get(&l).ok_or(BuildError::UnknownLabel { chain: c.id, label: l })?;
                if intrusive.get(&l) == Some(&true) {
                    points.push(o);
                }
            }
            points.push(*owner.get(&c.deliver).ok_or(BuildError::UnknownLabel { chain: c.id, label: c.deliver })?);
            let hops = zsfc_config::plan_sas(&points, &mut next_sa);
            for h in &hops {
                let key = SaKey::generate(self.algorithm).map_err(|_| BuildError::Key)?;
                let sa = SaConfig { lifetimes: self.lifetimes, ..SaConfig::new(next_spi, key) };
                next_spi += 1;
                let f = &mut nodes[h.from];
                f.node.install_outbound(SaIdx(h.out), &sa, now).map_err(cfg_err(&f.name))?;
                let usage = h.reseal.map_or(SaUse::Terminate, |r| SaUse::Reseal(SaIdx(r)));
                let t = &mut nodes[h.to];
                t.node.install_inbound(&sa, usage, now).map_err(cfg_err(&t.name))?;
            }
            let mut labels = c.hops.clone();
            labels.push(c.deliver);
            let cl = &mut nodes[c.classifier];
            cl.node
                .add_chain(ChainSpec {
                    id: ChainId(c.id),
                    labels,
                    sa: SaIdx(hops.first().map_or(0, |h| h.out)),
                    sa_via: Vec::new(),
                    nsh: c.nsh,
                    ttl: 64,
                    integrity: None,
                })
                .map_err(cfg_err(&cl.name))?;
            for r in c.rules {
                cl.node.classifier_mut().push_rule(r);
            }
        }
        Ok(Sim::new(nodes))
    }
}

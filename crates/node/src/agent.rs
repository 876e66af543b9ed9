//! A node's agent for the controller: enrols once with the node's one-time bootstrap token,
//! then long-polls its desired state, makes every lane's engine match it (new SAs, labels,
//! chains and rules first, removals last), acknowledges the version, and reports the engine's
//! SA events (`sadb-expire` at soft lifetime, `sadb-bad-spi`).
use anyhow::Context;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;
use zsfc_config::ikeless::{Direction, NodeState, StateChain};
use zsfc_config::{ControllerConfig, LabelEntry, RuleConfig, SaParams};
use zsfc_controller::client::Client;
use zsfc_controller::sealed::PollKey;
use zsfc_dataplane::{ChainId, ChainSpec, Event, Instant, LabelAction, Node, NodeId, Rule, SaIdx, SaUse};
use zsfc_io::Control;

const POLL_TIMEOUT: Duration = Duration::from_secs(30);
const ENROL_PATIENCE: Duration = Duration::from_secs(60);

/// A client holding the node's certificate, enrolling first if the node has none yet.
pub fn enrolled_client(c: &ControllerConfig, node: &str) -> anyhow::Result<Client> {
    let ca = std::fs::read_to_string(&c.ca).with_context(|| format!("controller.ca: reading {}", c.ca))?;
    let dir = PathBuf::from(&c.identity_dir);
    let (cert_path, key_path) = (dir.join("node.pem"), dir.join("node.key"));
    if !cert_path.exists() {
        let token = zeroize::Zeroizing::new(
            std::fs::read_to_string(&c.bootstrap)
                .with_context(|| format!("controller.bootstrap: reading {} (not enrolled yet)", c.bootstrap))?
                .trim()
                .to_owned(),
        );
        let (csr, key) = zsfc_controller::pki::new_csr(node)?;
        let anonymous = Client::new(&c.address, &c.server_name, &ca, None)?;
        let body = serde_json::json!({"zsfc:input": {"node": node, "token": token.as_str(), "csr": csr}});
        let started = std::time::Instant::now();
        let reply = loop {
            match anonymous.blocking(
                "POST",
                "/restconf/operations/zsfc:enrol",
                Some(body.to_string().into_bytes()),
                Duration::from_secs(10),
            ) {
                Ok(r) => break r,
                Err(e) if started.elapsed() < ENROL_PATIENCE => {
                    tracing::warn!("zsfc node {node:?}: controller not reachable yet ({e:#}); retrying");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(anyhow::Error::new(e).context("enrolling with the controller")),
            }
        };
        if reply.status != 200 {
            anyhow::bail!("enrolment refused ({}): {}", reply.status, reply.message());
        }
        let v: serde_json::Value = serde_json::from_slice(&reply.body)?;
        let cert = v["zsfc:output"]["certificate"].as_str().context("enrolment answer without a certificate")?;
        std::fs::create_dir_all(&dir)?;
        std::os::unix::fs::PermissionsExt::set_mode(&mut std::fs::metadata(&dir)?.permissions(), 0o700);
        zsfc_controller::pki::write_private(&key_path, key.as_bytes())?;
        zsfc_controller::pki::write_private(&cert_path, cert.as_bytes())?;
        // The token is spent; nothing else should find it.
        let _ = std::fs::remove_file(&c.bootstrap);
        tracing::info!("zsfc node {node:?}: enrolled with the controller at {}", c.address);
    }
    crate::renew::finish_interrupted(&cert_path, &key_path)?;
    let cert = std::fs::read_to_string(&cert_path)?;
    let key = zeroize::Zeroizing::new(std::fs::read_to_string(&key_path)?);
    Ok(Client::new(&c.address, &c.server_name, &ca, Some((&cert, &key)))?)
}

/// One change to an engine, applied by every lane with its own keys.
enum Op {
    InstallOut(SaIdx, SaParams),
    /// An inbound SA, its use, and its re-seal SAs by instance label (before an SF pool).
    InstallIn(SaParams, SaUse, Vec<(u32, SaIdx)>),
    SetPools(Vec<zsfc_dataplane::Pool>),
    SetLabel(u32, LabelAction),
    AddChain(ChainSpec),
    SetRules(Vec<Rule>),
    SetLink(NodeId, Option<SaIdx>),
    InstallKey(Box<zsfc_config::ChainKeyConfig>),
    RemoveKey(u32),
    RemoveChain(ChainId),
    RemoveLabel(u32),
    RemoveIn(u32),
    RemoveOut(SaIdx),
}

/// What the engines run now, as the agent applied it.
#[derive(Debug, Default, Clone)]
pub struct Applied {
    out: HashMap<String, (u32, SaIdx)>,
    inb: HashMap<String, u32>,
    labels: HashMap<u32, LabelEntry>,
    chains: HashMap<u32, StateChain>,
    links: HashMap<u32, String>,
    keys: std::collections::HashSet<u32>,
    rules: Vec<RuleConfig>,
    pools: Vec<zsfc_config::PoolConfig>,
    free: Vec<u32>,
    next_slot: u32,
}

impl Applied {
    fn slot(&mut self) -> SaIdx {
        SaIdx(self.free.pop().unwrap_or_else(|| {
            self.next_slot += 1;
            self.next_slot - 1
        }))
    }

    /// The operations that turn the current state into `doc`, and the state after them.
    /// SAs listed without a key that this node does not have are skipped and reported.
    fn plan(&self, doc: &NodeState, peers: &[u32]) -> anyhow::Result<(Vec<Op>, Applied, Vec<String>)> {
        let rules = doc.check()?;
        let mut next = self.clone();
        let (mut ops, mut removals, mut missing) = (Vec::new(), Vec::new(), Vec::new());
        let entries = &doc.ikeless.sad.entries;
        next.out.clear();
        for e in entries.iter().filter(|e| e.direction == Direction::Outbound) {
            if let Some(&have) = self.out.get(&e.name) {
                next.out.insert(e.name.clone(), have);
            } else if e.has_key() {
                let p = e.params().map_err(|(f, why)| anyhow::anyhow!("{}: {f}: {why}", e.name))?;
                let slot = next.slot();
                next.out.insert(e.name.clone(), (p.spi, slot));
                ops.push(Op::InstallOut(slot, p));
            } else {
                missing.push(e.name.clone());
            }
        }
        next.inb.clear();
        for e in entries.iter().filter(|e| e.direction == Direction::Inbound) {
            if let Some(&spi) = self.inb.get(&e.name) {
                next.inb.insert(e.name.clone(), spi);
            } else if e.has_key() {
                let p = e.params().map_err(|(f, why)| anyhow::anyhow!("{}: {f}: {why}", e.name))?;
                let usage = match &e.reseal {
                    None if e.link => SaUse::Link,
                    None => SaUse::Terminate,
                    Some(r) => match next.out.get(r) {
                        Some(&(_, slot)) => SaUse::Reseal(slot),
                        None => {
                            missing.push(r.clone());
                            continue;
                        }
                    },
                };
                let Some(via) = slots_via(&next.out, &e.reseal_via, &mut missing) else {
                    continue;
                };
                next.inb.insert(e.name.clone(), p.spi);
                ops.push(Op::InstallIn(p, usage, via));
            } else {
                missing.push(e.name.clone());
            }
        }
        next.labels.clear();
        for (i, l) in doc.sfc.labels.iter().enumerate() {
            let action = match (l.peer, l.deliver) {
                (Some(p), false) if peers.contains(&p) => LabelAction::Remote(NodeId(p)),
                (None, true) => LabelAction::Deliver,
                _ => anyhow::bail!("zsfc:sfc.labels[{i}]: a known peer or deliver = true"),
            };
            if self.labels.get(&l.label) != Some(l) {
                ops.push(Op::SetLabel(l.label, action));
            }
            next.labels.insert(l.label, l.clone());
        }
        next.keys.clear();
        for k in &doc.sfc.chain_keys {
            if self.keys.contains(&k.key_id) {
                next.keys.insert(k.key_id);
            } else if k.mac_key.is_some() {
                ops.push(Op::InstallKey(Box::new(k.clone())));
                next.keys.insert(k.key_id);
            } else {
                missing.push(format!("chain key {}", k.key_id));
            }
        }
        if doc.sfc.pools != self.pools {
            ops.push(Op::SetPools(zsfc_config::pools(&doc.sfc.pools)));
            next.pools = doc.sfc.pools.clone();
        }
        next.chains.clear();
        for (i, c) in doc.sfc.chains.iter().enumerate() {
            let Some(&(_, slot)) = next.out.get(&c.sa) else {
                missing.push(c.sa.clone());
                continue;
            };
            let Some(sa_via) = slots_via(&next.out, &c.sa_via, &mut missing) else {
                continue;
            };
            let installed = |name: &String| self.out.contains_key(name);
            if self.chains.get(&c.id) != Some(c) || !installed(&c.sa) || !c.sa_via.iter().all(|v| installed(&v.sa)) {
                let at = format!("zsfc:sfc.chains[{i}]");
                let mut spec = zsfc_config::chain_spec(c.id, &c.labels, c.ttl, c.nsh.as_ref(), c.integrity, slot, &at)?;
                spec.sa_via = sa_via;
                ops.push(Op::AddChain(spec));
            }
            next.chains.insert(c.id, c.clone());
        }
        next.links.clear();
        for (i, l) in doc.sfc.links.iter().enumerate() {
            if !peers.contains(&l.peer) {
                anyhow::bail!("zsfc:sfc.links[{i}].peer: {} is no peer of this node", l.peer);
            }
            let Some(&(_, slot)) = next.out.get(&l.sa) else {
                missing.push(l.sa.clone());
                continue;
            };
            if self.links.get(&l.peer) != Some(&l.sa) || !self.out.contains_key(&l.sa) {
                ops.push(Op::SetLink(NodeId(l.peer), Some(slot)));
            }
            next.links.insert(l.peer, l.sa.clone());
        }
        if rules != self.rules {
            let built: Result<Vec<Rule>, _> =
                rules.iter().enumerate().map(|(i, r)| zsfc_config::rule(r, &format!("spd-entry[{i}]"))).collect();
            ops.push(Op::SetRules(built?));
            next.rules = rules;
        }
        for peer in self.links.keys().filter(|p| !next.links.contains_key(p)) {
            removals.push(Op::SetLink(NodeId(*peer), None));
        }
        for id in self.chains.keys().filter(|id| !next.chains.contains_key(id)) {
            removals.push(Op::RemoveChain(ChainId(*id)));
        }
        for k in self.keys.iter().filter(|k| !next.keys.contains(k)) {
            removals.push(Op::RemoveKey(*k));
        }
        for l in self.labels.keys().filter(|l| !next.labels.contains_key(l)) {
            removals.push(Op::RemoveLabel(*l));
        }
        for (_, &spi) in self.inb.iter().filter(|(n, _)| !next.inb.contains_key(*n)) {
            removals.push(Op::RemoveIn(spi));
        }
        for (_, &(_, slot)) in self.out.iter().filter(|(n, _)| !next.out.contains_key(*n)) {
            removals.push(Op::RemoveOut(slot));
            next.free.push(slot.0);
        }
        ops.extend(removals);
        Ok((ops, next, missing))
    }
}

/// The outbound slots of SAs listed by instance label; `None` (and the names in `missing`)
/// when one of them is not installed.
fn slots_via(
    out: &HashMap<String, (u32, SaIdx)>,
    via: &[zsfc_config::ikeless::StateVia],
    missing: &mut Vec<String>,
) -> Option<Vec<(u32, SaIdx)>> {
    let mut slots = Vec::with_capacity(via.len());
    for v in via {
        match out.get(&v.sa) {
            Some(&(_, slot)) => slots.push((v.label, slot)),
            None => {
                missing.push(v.sa.clone());
                return None;
            }
        }
    }
    Some(slots)
}

/// Makes `node` (one engine, lane 0) match `doc` directly: the agent's work without the packet
/// loop (benchmarks). Returns the SAs the document lacked keys for.
pub fn apply_to_engine(
    node: &mut Node,
    applied: &mut Applied,
    doc: &NodeState,
    peers: &[u32],
    now: Instant,
) -> anyhow::Result<Vec<String>> {
    let (ops, next, missing) = applied.plan(doc, peers)?;
    apply_ops(node, &ops, 0, now).map_err(|e| anyhow::anyhow!(e))?;
    *applied = next;
    Ok(missing)
}

/// Runs `ops` on one lane's engine; the first failure stops it (the engine keeps what was done).
fn apply_ops(node: &mut Node, ops: &[Op], lane: u32, now: Instant) -> Result<(), String> {
    let sa = |p: &SaParams| zsfc_config::sa_config(p, lane).map_err(|(f, why)| format!("SA {:#x}: {f}: {why}", p.spi));
    for op in ops {
        match op {
            Op::InstallOut(slot, p) => {
                let mut cfg = sa(p)?;
                crate::interop::on_install(&mut cfg, p, lane, "out");
                node.install_outbound(*slot, &cfg, now).map_err(|e| e.to_string())?
            }
            Op::InstallIn(p, usage, via) => {
                let mut cfg = sa(p)?;
                crate::interop::on_install(&mut cfg, p, lane, "in");
                // Planned only for SAs the agent does not know; one with this SPI is a leftover of
                // an apply that failed half-way, so the same document can be applied again.
                node.remove_inbound(cfg.spi);
                node.install_inbound(&cfg, *usage, now).map_err(|e| e.to_string())?;
                if !via.is_empty() {
                    node.set_reseal_via(cfg.spi, via.clone()).map_err(|e| e.to_string())?;
                }
            }
            Op::SetPools(p) => node.set_pools(p.clone()).map_err(|e| e.to_string())?,
            Op::SetLabel(l, a) => node.set_label(*l, *a).map_err(|e| e.to_string())?,
            Op::AddChain(spec) => node.add_chain(spec.clone()).map_err(|e| e.to_string())?,
            Op::SetRules(r) => node.classifier_mut().set_rules(r.clone()),
            Op::SetLink(peer, sa) => node.set_link_sa(*peer, *sa).map_err(|e| e.to_string())?,
            Op::InstallKey(k) => {
                zsfc_config::install_chain_key(node, k, "zsfc:sfc.chain_keys").map_err(|e| e.to_string())?
            }
            Op::RemoveKey(k) => drop(node.remove_chain_key(*k)),
            Op::RemoveChain(id) => drop(node.remove_chain(*id)),
            Op::RemoveLabel(l) => drop(node.remove_label(*l)),
            // Retired, not removed: packets sealed with it may still be queued on the way here.
            Op::RemoveIn(spi) => drop(node.retire_inbound(zsfc_config::lane_spi(*spi, lane), now)),
            Op::RemoveOut(slot) => drop(node.remove_outbound(*slot)),
        }
    }
    Ok(())
}

/// What the agent needs from the node process.
pub(crate) struct AgentSetup {
    pub name: String,
    pub client: Client,
    pub lanes: Vec<Sender<Control>>,
    pub peers: Vec<u32>,
    pub gateway: Option<(Arc<zsfc_gateway::Gateway>, Vec<zsfc_gateway::Service>)>,
    pub ready_file: Option<PathBuf>,
    /// The engines' events, with the lane that raised each.
    pub events: Receiver<(usize, Event)>,
    /// The names of the node's SFs, by `SfId` (for reports of their drops).
    pub sf_names: Vec<String>,
    /// The names of the node's peers, by id (for reports of their liveness).
    pub peer_names: Vec<(u32, String)>,
    /// The certificates the agent renews: the node's own (`identity_dir`), the gateway's.
    pub held: Vec<crate::renew::Held>,
}

/// Starts the agent's threads (state and events); they live as long as the process.
pub(crate) fn start(s: AgentSetup) -> anyhow::Result<()> {
    let mut boot = [0u8; 8];
    aws_lc_rs::rand::fill(&mut boot).map_err(|_| anyhow::anyhow!("no randomness"))?;
    let boot = hex::encode(boot);
    let (client, name, names) = (s.client.clone(), s.name.clone(), (s.sf_names.clone(), s.peer_names.clone()));
    std::thread::Builder::new()
        .name("agent-events".into())
        .spawn(move || crate::report::report_events(&client, &name, &s.events, &names.0, &names.1))?;
    if let Some((gw, _)) = &s.gateway {
        let (client, name, gw) = (s.client.clone(), s.name.clone(), gw.clone());
        std::thread::Builder::new().name("agent-sf-drops".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return tracing::error!("agent: {e}"),
            };
            rt.block_on(follow_sf_drops(&name, &client, &gw));
        })?;
    }
    let (client, name, held) = (s.client.clone(), s.name.clone(), s.held);
    std::thread::Builder::new()
        .name("agent-renew".into())
        .spawn(move || crate::renew::follow(&name, &client, &held))?;
    let AgentSetup { name, client, lanes, peers, gateway, ready_file, .. } = s;
    std::thread::Builder::new().name("agent".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => return tracing::error!("agent: {e}"),
        };
        rt.block_on(follow(name, boot, client, lanes, peers, gateway, ready_file));
    })?;
    Ok(())
}

async fn follow(
    name: String,
    boot: String,
    client: Client,
    lanes: Vec<Sender<Control>>,
    peers: Vec<u32>,
    gateway: Option<(Arc<zsfc_gateway::Gateway>, Vec<zsfc_gateway::Service>)>,
    mut ready_file: Option<PathBuf>,
) {
    let mut applied = Applied::default();
    let mut version = 0u64;
    let mut unreachable = false;
    loop {
        let seal = match PollKey::new() {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!("agent {name:?}: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let path = format!(
            "/restconf/data/zsfc:nodes/node={name}/desired?after={version}&boot={boot}&seal={}",
            seal.public_hex()
        );
        let reply = match client.request("GET", &path, None, POLL_TIMEOUT).await {
            Ok(r) => r,
            Err(e) => {
                if !unreachable {
                    tracing::info!(
                        "agent {name:?}: controller unreachable ({e:#}); the node keeps its SAs until their hard lifetime"
                    );
                    unreachable = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if unreachable {
            tracing::info!("agent {name:?}: controller reachable again");
            unreachable = false;
        }
        match reply.status {
            200 => {}
            204 => continue,
            s => {
                tracing::warn!("agent {name:?}: poll answered {s}: {}", reply.message());
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        // Opened into a zeroize-on-drop buffer; TLS and HTTP only ever held it sealed.
        let doc = seal.open(&name, reply.body).map_err(anyhow::Error::from).and_then(|plain| {
            serde_json::from_slice::<NodeState>(&plain).map_err(|e| anyhow::anyhow!("not a node state: {e}"))
        });
        let (v, result) = match doc {
            // Unreadable: refuse it (the controller audits the error); wait for a newer one.
            Err(e) => (version + 1, Err(e)),
            Ok(doc) => (doc.version, apply(&doc, &mut applied, &peers, &lanes, gateway.as_ref()).await),
        };
        let error = match result {
            Ok(missing) if missing.is_empty() => None,
            Ok(missing) => Some(format!("no key for SAs this node does not have: {}", missing.join(", "))),
            Err(e) => Some(format!("{e:#}")),
        };
        version = version.max(v);
        if let Some(e) = &error {
            tracing::warn!("agent {name:?}: version {v}: {e}");
        }
        let body = serde_json::json!({"zsfc:input": {"node": name, "version": v, "error": error}});
        if let Err(e) = client
            .request("POST", "/restconf/operations/zsfc:ack", Some(body.to_string().into_bytes()), POLL_TIMEOUT)
            .await
        {
            tracing::warn!("agent {name:?}: acknowledging version {v}: {e:#}");
        }
        if error.is_none()
            && let Some(p) = ready_file.take()
        {
            let _ = std::fs::write(&p, b"ready\n");
        }
    }
}

async fn apply(
    doc: &NodeState,
    applied: &mut Applied,
    peers: &[u32],
    lanes: &[Sender<Control>],
    gateway: Option<&(Arc<zsfc_gateway::Gateway>, Vec<zsfc_gateway::Service>)>,
) -> anyhow::Result<Vec<String>> {
    let (ops, next, missing) = applied.plan(doc, peers)?;
    let ops = Arc::new(ops);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    for (lane, tx) in lanes.iter().enumerate() {
        let (ops, done) = (ops.clone(), done_tx.clone());
        tx.send(Control::Configure(Box::new(move |node, now| {
            let _ = done.send(apply_ops(node, &ops, lane as u32, now));
        })))
        .map_err(|_| anyhow::anyhow!("lane {lane} is gone"))?;
    }
    drop((done_tx, ops));
    let n = lanes.len();
    let results = tokio::task::spawn_blocking(move || {
        (0..n).map(|_| done_rx.recv_timeout(Duration::from_secs(5))).collect::<Vec<_>>()
    })
    .await?;
    for (lane, r) in results.into_iter().enumerate() {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => anyhow::bail!("lane {lane}: {e}"),
            Err(_) => anyhow::bail!("lane {lane} did not apply the change in time"),
        }
    }
    *applied = next;
    if let Some((gw, services)) = gateway {
        let grants = doc
            .sfc
            .grants
            .iter()
            .map(|g| zsfc_gateway::Grant {
                identity: g.identity.clone(),
                service: g.service.clone(),
                chain: ChainId(g.chain),
                path: g.path.clone(),
            })
            .collect();
        gw.set_policy(zsfc_gateway::Policy { services: services.clone(), grants });
        gw.set_revoked(doc.sfc.revoked.iter().map(|r| (r.name.clone(), r.before)).collect());
    }
    Ok(missing)
}

/// The gateway's node counts the SF drops other nodes report toward blocking the clients they
/// name (seed 004 REQ11): a long poll of the controller, from the last report on.
async fn follow_sf_drops(name: &str, client: &Client, gw: &zsfc_gateway::Gateway) {
    let mut after = 0u64;
    loop {
        let path = format!("/restconf/data/zsfc:nodes/node={name}/sf-drops?after={after}");
        let reply = match client.request("GET", &path, None, POLL_TIMEOUT).await {
            Ok(r) if r.status == 200 => r,
            _ => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
        let Some(last) = v["zsfc:sf-drops"]["last"].as_u64() else { continue };
        let drops: Vec<zsfc_controller::SfDrops> =
            serde_json::from_value(v["zsfc:sf-drops"]["drops"].clone()).unwrap_or_default();
        for d in drops {
            let Ok(subscriber) = u64::from_str_radix(&d.subscriber, 16) else { continue };
            gw.sf_drops(subscriber, d.count, &format!("{} on {}: {}", d.sf, d.node, d.reason));
        }
        // A restarted controller counts from 0 again.
        after = last;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zsfc_controller::rollout;

    /// The documents of every node of the in-memory example topology, with SPIs from `first`.
    fn generation(first: u32) -> Vec<(zsfc_config::NodeConfig, NodeState)> {
        let t = zsfc_config::Topology::from_toml(include_str!("../../../examples/inmemory-topology.toml")).unwrap();
        let (cfgs, _) = t.compile_from(first).unwrap();
        cfgs.into_iter()
            .map(|c| {
                let d = NodeState::from_config(0, &c, Vec::new(), |_| true);
                (c, d)
            })
            .collect()
    }

    /// The inbound SPIs a document lists.
    fn inbound(d: &NodeState) -> Vec<u32> {
        d.ikeless.sad.entries.iter().filter(|e| e.direction == Direction::Inbound).map(|e| e.config.spi).collect()
    }

    fn spis(node: &Node) -> Vec<u32> {
        let mut v: Vec<u32> = node.inbound_spis().collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn the_agent_follows_a_rollout_step_by_step_on_a_real_engine() {
        let (old, new) = (generation(0x1000), generation(0x2000));
        for ((cfg, o), (_, n)) in old.iter().zip(&new) {
            // The node as it starts under a controller: SFs and peers, no SA, label or chain.
            let node = cfg.for_controller(zsfc_config::ControllerConfig {
                address: "192.0.2.1:8443".into(),
                server_name: "controller".into(),
                ca: "-".into(),
                identity_dir: "-".into(),
                bootstrap: "-".into(),
            });
            let mut engine = node.build(Instant::ZERO).unwrap();
            let peers: Vec<u32> = cfg.peers.iter().map(|p| p.id).collect();
            let mut applied = Applied::default();
            let now = Instant::ZERO;
            // The first state, then the three steps of a rekey.
            assert!(apply_to_engine(&mut engine, &mut applied, o, &peers, now).unwrap().is_empty());
            let (old_in, new_in) = (inbound(o), inbound(n));
            let mut both = [old_in.clone(), new_in.clone()].concat();
            both.sort_unstable();
            let stripped = rollout::strip_keys(o);
            assert!(
                apply_to_engine(&mut engine, &mut applied, &rollout::prepare(&stripped, n, 2), &peers, now)
                    .unwrap()
                    .is_empty()
            );
            assert_eq!(spis(&engine), both, "{}: both generations after prepare", cfg.name);
            let chains_before: Vec<ChainId> = engine.chain_ids().collect();
            assert!(
                apply_to_engine(&mut engine, &mut applied, &rollout::switch(&stripped, n, 3), &peers, now)
                    .unwrap()
                    .is_empty()
            );
            assert_eq!(spis(&engine), both, "{}: both generations while switching", cfg.name);
            assert_eq!(engine.chain_ids().count(), chains_before.len());
            assert!(
                apply_to_engine(&mut engine, &mut applied, &rollout::finish(n, 4), &peers, now).unwrap().is_empty()
            );
            let mut only_new = new_in.clone();
            only_new.sort_unstable();
            let mut retiring: Vec<u32> = engine.retiring_spis().collect();
            retiring.sort_unstable();
            let mut old_sorted = old_in.clone();
            old_sorted.sort_unstable();
            assert_eq!(retiring, old_sorted, "{}: the old generation is retired", cfg.name);
            engine.housekeeping(now + zsfc_dataplane::RETIRE_MIN);
            assert_eq!(spis(&engine), only_new, "{}: the old generation is gone once quiet", cfg.name);
            // Outbound slots are reused: the two generations never need more than twice one.
            let outbound = o.ikeless.sad.entries.iter().filter(|e| e.direction == Direction::Outbound).count();
            assert!(applied.next_slot as usize <= 2 * outbound, "{} slots for {outbound} SAs", applied.next_slot);
            // A document naming an SA this node never got the key of is reported, not guessed.
            let mut gap =
                rollout::strip_keys(&generation(0x3000).into_iter().find(|(c, _)| c.name == cfg.name).unwrap().1);
            gap.version = 5;
            let missing = apply_to_engine(&mut engine, &mut applied, &gap, &peers, now).unwrap();
            assert_eq!(missing.is_empty(), gap.ikeless.sad.entries.is_empty(), "{}: {missing:?}", cfg.name);
        }
    }
}

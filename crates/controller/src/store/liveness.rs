//! Liveness as the nodes see it (issue 20 points 3-4): every node's agent reports the state of
//! its data-plane liveness sessions (BFD-like probes, `zsfc_dataplane::liveness`) when one goes
//! up or down and every few seconds. The nodes repair locally and at once; the controller
//! then takes the instances on a node that its peers see down out of the plan (their weight in
//! every pool is 0, RFC 7665 §5.7 "the SFF ... removes the SFI from the set"), and puts them
//! back when a peer sees the node up again — each change is a rollout, so every classifier
//! and every reverse classifier runs the same pools. A node also reports, per external SF it
//! serves, whether the SF's attachment circuit returns its probes (`zsfc_dataplane::circuit`);
//! an instance whose circuit does not is taken out of the plan the same way, alone (the
//! node's other instances stay).
use super::{ApiError, Controller};
use crate::audit::{self, Kind};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};
use zsfc_config::NodeConfig;

/// One peer in a node's liveness report (`zsfc:liveness`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PeerReport {
    /// The peer node's name.
    pub peer: String,
    /// Whether its liveness session is up (RFC 5880 state Up).
    pub up: bool,
    /// When it last went up or down, on the reporting node's clock (Unix ms).
    pub since_unix_ms: u64,
}

/// One external SF in a node's liveness report: whether its attachment circuit returns the
/// node's probes on every lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CircuitReport {
    /// The SF's name (an external SF with an instance on the reporting node).
    pub sf: String,
    pub up: bool,
    /// When it last went up or down, on the reporting node's clock (Unix ms).
    pub since_unix_ms: u64,
}

/// An SF instance: (SF, node).
pub(crate) type InstanceName = (String, String);

/// Takes the SF instances on the `out` nodes, and the `unusable` instances, out of every pool
/// (weight 0: no new flow goes there, pinned ones move); a pool whose every instance is out
/// stays as it is (the classifiers' liveness then fails its chains closed, `sf_unavailable`).
/// Returns the instances taken out as (SF, node).
pub(crate) fn drain(
    cfgs: &mut [NodeConfig],
    out: &BTreeSet<String>,
    unusable: &BTreeSet<InstanceName>,
) -> Vec<InstanceName> {
    let mut labels = HashMap::new();
    for c in cfgs.iter() {
        for sf in &c.sfs {
            let instance = (sf.name.clone(), c.name.clone());
            if out.contains(&c.name) || unusable.contains(&instance) {
                labels.insert(sf.label, instance);
            }
        }
    }
    let mut drained = HashSet::new();
    for c in cfgs.iter_mut() {
        for pool in &mut c.pools {
            if pool.members.iter().all(|m| labels.contains_key(&m.label)) {
                continue;
            }
            for m in pool.members.iter_mut().filter(|m| labels.contains_key(&m.label)) {
                m.weight = 0;
                drained.insert(m.label);
            }
        }
    }
    let mut taken: Vec<(String, String)> = drained.iter().filter_map(|l| labels.get(l).cloned()).collect();
    taken.sort();
    taken
}

/// A report older than this no longer counts (its node stopped reporting: dead, or cut off).
pub(crate) const REPORT_FRESH: Duration = Duration::from_secs(10);

/// What one node last said about its peers.
#[derive(Debug, Clone)]
pub(crate) struct Reported {
    pub peers: Vec<PeerReport>,
    pub sfs: Vec<CircuitReport>,
    pub at: Instant,
    pub at_unix_ms: i64,
}

/// The liveness the controller knows.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    /// By reporting node.
    pub reports: HashMap<String, Reported>,
    /// When each node's agent last called the controller (Unix ms).
    pub contact: HashMap<String, i64>,
    /// The nodes seen down, and the instances reported unusable, when it last changed
    /// (audited once per change, one rollout asked).
    pub announced: (BTreeSet<String>, BTreeSet<InstanceName>),
}

/// A node as its peers see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    /// Peers whose fresh report says up, and down.
    pub up_by: Vec<String>,
    pub down_by: Vec<String>,
    /// The latest time a peer saw it: the time of a fresh report that says up, or the time a
    /// report says it went down (Unix ms).
    pub last_seen_unix_ms: Option<i64>,
    /// Each fresh report: by whom, up or down, since when (on the reporter's clock, Unix ms).
    pub reports: Vec<(String, bool, u64)>,
}

impl Seen {
    /// Down: a peer sees it down and none sees it up.
    pub fn down(&self) -> bool {
        !self.down_by.is_empty() && self.up_by.is_empty()
    }
}

impl Liveness {
    /// The nodes the fresh reports see down; the last reports of those nodes themselves (sent
    /// before they died) then no longer count for the others.
    pub fn down(&self, names: &[String], now: Instant) -> BTreeSet<String> {
        let none = BTreeSet::new();
        names.iter().filter(|n| self.seen(n, now, &none).down()).cloned().collect()
    }

    /// The instances whose node's fresh report says their circuit does not return probes
    /// (nodes in `down` left out: their instances are out anyway).
    pub fn unusable(&self, now: Instant, down: &BTreeSet<String>) -> BTreeSet<InstanceName> {
        self.reports
            .iter()
            .filter(|(by, r)| now.duration_since(r.at) <= REPORT_FRESH && !down.contains(*by))
            .flat_map(|(by, r)| r.sfs.iter().filter(|c| !c.up).map(move |c| (c.sf.clone(), by.clone())))
            .collect()
    }

    /// The fresh report of the circuit of `sf` on `node`: (up, since Unix ms).
    pub fn circuit(&self, sf: &str, node: &str, now: Instant) -> Option<(bool, u64)> {
        let r = self.reports.get(node).filter(|r| now.duration_since(r.at) <= REPORT_FRESH)?;
        r.sfs.iter().find(|c| c.sf == sf).map(|c| (c.up, c.since_unix_ms))
    }
}

impl Liveness {
    /// How the fresh reports see `node`, leaving out the reports of the nodes in `ignore`.
    pub fn seen(&self, node: &str, now: Instant, ignore: &BTreeSet<String>) -> Seen {
        let mut s = Seen::default();
        let mut reporters: Vec<(&String, &Reported)> = self
            .reports
            .iter()
            .filter(|(by, r)| now.duration_since(r.at) <= REPORT_FRESH && !ignore.contains(*by))
            .collect();
        reporters.sort_by(|a, b| a.0.cmp(b.0));
        for (by, r) in reporters {
            let Some(p) = r.peers.iter().find(|p| p.peer == node) else { continue };
            let seen = if p.up { r.at_unix_ms } else { i64::try_from(p.since_unix_ms).unwrap_or(i64::MAX) };
            s.last_seen_unix_ms = Some(s.last_seen_unix_ms.map_or(seen, |l| l.max(seen)));
            if p.up {
                s.up_by.push(by.clone())
            } else {
                s.down_by.push(by.clone())
            }
            s.reports.push((by.clone(), p.up, p.since_unix_ms));
        }
        s
    }
}

impl Controller {
    fn liveness(&self) -> std::sync::MutexGuard<'_, Liveness> {
        self.liveness.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes that `node`'s agent called.
    pub(crate) fn contact(&self, node: &str) {
        self.liveness().contact.insert(node.to_owned(), audit::unix_ms());
    }

    /// `node`'s report of its peers' liveness and of its external SFs' circuits. Peers must be
    /// nodes of the domain other than itself, SFs external SFs with an instance on it, each
    /// named once. When the set of nodes seen down or of instances unusable changes, a rollout
    /// takes their instances out of the plan or puts them back.
    pub fn report_liveness(&self, node: &str, peers: Vec<PeerReport>, sfs: Vec<CircuitReport>) -> Result<(), ApiError> {
        let (known, served): (Vec<String>, Vec<String>) = {
            let st = self.state();
            let t = &st.domain.topology;
            let served =
                t.sfs.iter().filter(|s| s.external && s.nodes().contains(&node)).map(|s| s.name.clone()).collect();
            (t.nodes.iter().map(|n| n.name.clone()).collect(), served)
        };
        let mut named = BTreeSet::new();
        for c in &sfs {
            if !served.contains(&c.sf) || !named.insert(c.sf.as_str()) {
                return Err(ApiError::new(
                    400,
                    "invalid-value",
                    format!("sfs: {:?} is not an external SF with an instance on {node:?}, named once", c.sf),
                ));
            }
        }
        let mut named = BTreeSet::new();
        for p in &peers {
            if p.peer == node || !known.contains(&p.peer) || !named.insert(p.peer.as_str()) {
                return Err(ApiError::new(
                    400,
                    "invalid-value",
                    format!("peers: {:?} is not another node of the domain, named once", p.peer),
                ));
            }
        }
        let now = audit::unix_ms();
        {
            let mut l = self.liveness();
            l.contact.insert(node.to_owned(), now);
            l.reports.insert(node.to_owned(), Reported { peers, sfs, at: Instant::now(), at_unix_ms: now });
        }
        let down = self.nodes_seen_down();
        // Only an instance in a pool can be taken out (one alone stays: its chains have no
        // other way), so only those ask for a rollout.
        let unusable = self.pooled(self.instances_unusable(&down));
        let now_seen = (down.clone(), unusable.clone());
        let (planned, planned_unusable) = std::mem::replace(&mut self.liveness().announced, now_seen);
        if down != planned || unusable != planned_unusable {
            let (out, back): (Vec<&String>, Vec<&String>) =
                (down.difference(&planned).collect(), planned.difference(&down).collect());
            let words = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
            let instances = |v: Vec<&InstanceName>| v.iter().map(|(s, n)| format!("{s}@{n}")).collect::<Vec<_>>();
            let (broken, mended) = (
                instances(unusable.difference(&planned_unusable).collect()),
                instances(planned_unusable.difference(&unusable).collect()),
            );
            let mut what = Vec::new();
            if !out.is_empty() {
                what.push(format!("seen down by their peers, out of the plan: {}", words(&out)));
            }
            if !back.is_empty() {
                what.push(format!("seen up again, back in the plan: {}", words(&back)));
            }
            if !broken.is_empty() {
                what.push(format!("circuit returns no probe, out of the plan: {}", broken.join(", ")));
            }
            if !mended.is_empty() {
                what.push(format!("circuit returns probes again: {}", mended.join(", ")));
            }
            self.audit(Kind::Notification, node, &format!("liveness: {}", what.join("; ")));
            self.request_rollout();
        }
        Ok(())
    }

    /// The nodes the fresh reports see down.
    pub(crate) fn nodes_seen_down(&self) -> BTreeSet<String> {
        let names: Vec<String> = self.state().domain.topology.nodes.iter().map(|n| n.name.clone()).collect();
        self.liveness().down(&names, Instant::now())
    }

    /// The instances (on nodes not in `down`) whose circuits return no probe.
    pub(crate) fn instances_unusable(&self, down: &BTreeSet<String>) -> BTreeSet<InstanceName> {
        self.liveness().unusable(Instant::now(), down)
    }

    /// The instances of `set` whose SF has several.
    fn pooled(&self, mut set: BTreeSet<InstanceName>) -> BTreeSet<InstanceName> {
        let st = self.state();
        set.retain(|(sf, _)| st.domain.topology.sfs.iter().any(|s| s.name == *sf && s.nodes().len() > 1));
        set
    }

    /// The fresh report of the circuit of `sf` on `node`: (up, since Unix ms).
    pub(crate) fn circuit_liveness(&self, sf: &str, node: &str) -> Option<(bool, u64)> {
        self.liveness().circuit(sf, node, Instant::now())
    }

    /// How the peers see `node`, and when its agent last called (for `zsfc:domain`).
    pub(crate) fn node_liveness(&self, node: &str, down: &BTreeSet<String>) -> serde_json::Value {
        let l = self.liveness();
        let s = l.seen(node, Instant::now(), down);
        let up = if s.down() {
            Some(false)
        } else if s.up_by.is_empty() {
            None
        } else {
            Some(true)
        };
        let reports: Vec<_> = s
            .reports
            .iter()
            .map(|(by, up, since)| serde_json::json!({"by": by, "up": up, "since-unix-ms": since}))
            .collect();
        serde_json::json!({
            "up": up, "up-by": s.up_by, "down-by": s.down_by, "last-seen-unix-ms": s.last_seen_unix_ms,
            "last-contact-unix-ms": l.contact.get(node), "reports": reports,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(peers: &[(&str, bool, u64)], at: Instant, at_unix_ms: i64) -> Reported {
        let peers =
            peers.iter().map(|&(p, up, since)| PeerReport { peer: p.into(), up, since_unix_ms: since }).collect();
        Reported { peers, sfs: Vec::new(), at, at_unix_ms }
    }

    /// A pool member on a node seen down gets weight 0 on every node; a pool whose every
    /// member is down stays as it is; an SF of one instance is never touched.
    #[test]
    fn draining_zeroes_the_weights_of_instances_on_down_nodes_in_every_document() {
        let t = zsfc_config::Topology::from_toml(
            r#"
            version = 1
            nodes = [{ name = "in" }, { name = "a" }, { name = "b" }, { name = "c" }, { name = "out" }]
            endpoints = [{ name = "web", node = "out" }]
            [[sfs]]
            name = "fw"
            instances = [{ node = "a" }, { node = "b", weight = 3 }]
            intrusive = true
            function = { kind = "firewall" }
            [[sfs]]
            name = "log"
            node = "c"
            intrusive = false
            function = { kind = "counter" }
            [[chains]]
            name = "to-web"
            classifier = "in"
            sfs = ["fw", "log"]
            to = "web"
            rules = [{ src = "10.1.0.0/24", dst = "10.9.0.1" }]
            "#,
        )
        .unwrap();
        let mut cfgs = t.compile().unwrap();
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let none = BTreeSet::new();
        let out = drain(&mut cfgs, &set(&["b", "c"]), &none);
        assert_eq!(out, [("fw".to_owned(), "b".to_owned())]);
        for c in &cfgs {
            let w: Vec<u32> = c.pools[0].members.iter().map(|m| m.weight).collect();
            assert_eq!(w, [1, 0], "{}", c.name);
        }
        let mut cfgs = t.compile().unwrap();
        assert!(drain(&mut cfgs, &set(&["a", "b"]), &none).is_empty(), "every instance down: the pool stays");
        assert_eq!(cfgs[0].pools[0].members.iter().map(|m| m.weight).collect::<Vec<_>>(), [1, 3]);
        // An unusable instance goes alone: the node's other SFs stay.
        let mut cfgs = t.compile().unwrap();
        let fw_a = BTreeSet::from([("fw".to_owned(), "a".to_owned())]);
        assert_eq!(drain(&mut cfgs, &BTreeSet::new(), &fw_a), [("fw".to_owned(), "a".to_owned())]);
        assert_eq!(cfgs[0].pools[0].members.iter().map(|m| m.weight).collect::<Vec<_>>(), [0, 3]);
    }

    /// An instance is unusable while its node's fresh report says its circuit is down; a
    /// node seen down, or a stale report, does not count.
    #[test]
    fn an_instance_is_unusable_while_its_nodes_fresh_report_says_its_circuit_is_down() {
        let now = Instant::now();
        let mut l = Liveness::default();
        let mut r = report(&[], now, 1000);
        r.sfs = vec![
            CircuitReport { sf: "fw".into(), up: false, since_unix_ms: 900 },
            CircuitReport { sf: "nat".into(), up: true, since_unix_ms: 10 },
        ];
        l.reports.insert("a".into(), r);
        let none = BTreeSet::new();
        assert_eq!(l.unusable(now, &none), BTreeSet::from([("fw".to_owned(), "a".to_owned())]));
        assert_eq!(l.circuit("fw", "a", now), Some((false, 900)));
        assert_eq!(l.circuit("nat", "a", now), Some((true, 10)));
        assert!(l.unusable(now, &BTreeSet::from(["a".to_owned()])).is_empty());
        assert!(l.unusable(now + REPORT_FRESH + Duration::from_secs(1), &none).is_empty());
    }

    #[test]
    fn a_node_is_down_when_a_fresh_report_says_so_and_none_says_up() {
        let now = Instant::now();
        let mut l = Liveness::default();
        l.reports.insert("ingress".into(), report(&[("sf2", false, 900), ("sf1", true, 100)], now, 1000));
        l.reports.insert("egress".into(), report(&[("sf2", false, 950)], now, 1000));
        let none = BTreeSet::new();
        let sf2 = l.seen("sf2", now, &none);
        assert!(sf2.down(), "{sf2:?}");
        assert_eq!(sf2.last_seen_unix_ms, Some(950), "the latest time a peer saw it");
        assert!(!l.seen("sf1", now, &none).down());
        assert_eq!(l.seen("sf1", now, &none).last_seen_unix_ms, Some(1000), "an up peer was seen at the report");
        assert_eq!(l.seen("nobody-reports-me", now, &none), Seen::default());
        // The dead node's last report (it saw the others up) does not speak for them.
        l.reports.insert("sf2".into(), report(&[("sf1", true, 100)], now, 990));
        let names: Vec<String> = ["ingress", "sf1", "sf2", "egress"].map(String::from).to_vec();
        let down = l.down(&names, now);
        assert_eq!(down.iter().collect::<Vec<_>>(), ["sf2"]);
        assert_eq!(l.seen("sf1", now, &down).up_by, ["ingress"]);
        // One peer still reaches it (a partition, not a death): it stays in the plan.
        l.reports.insert("sf1".into(), report(&[("sf2", true, 10)], now, 1000));
        assert!(!l.seen("sf2", now, &none).down());
        // Reports go stale when their node stops reporting.
        let later = now + REPORT_FRESH + Duration::from_secs(1);
        assert_eq!(l.seen("sf2", later, &none), Seen::default());
    }
}

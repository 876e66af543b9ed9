//! What the controller reports of the domain (`zsfc:domain`) and when its SAs are due for
//! renewal by time.
use super::{Controller, DomainSpec};
use std::sync::atomic::Ordering;
use std::time::Duration;

impl Controller {
    /// How long after a rollout the SAs it made are renewed: 3/4 of the shorter of the soft
    /// and hard time lifetimes (at least 1 s); `None` when SAs have no time lifetime.
    fn renew_every(domain: &DomainSpec) -> Option<Duration> {
        let lt = &domain.topology.sa.lifetime;
        let secs = [lt.soft.seconds, lt.hard.seconds].into_iter().flatten().filter(|&s| s > 0).min()?;
        Some(Duration::from_millis(secs.saturating_mul(750)).max(Duration::from_secs(1)))
    }

    /// Time until the SAs the nodes run are due for renewal (zero: now); `None` when they
    /// never are (no time lifetime, or no rollout yet: nodes that start ask by polling).
    pub(super) fn renewal_due(&self) -> Option<Duration> {
        let st = self.state();
        let every = Self::renew_every(&st.domain)?;
        Some(every.saturating_sub(st.renewed_at?.elapsed()))
    }

    /// The domain as the operator sees it (no key material).
    pub fn status(&self) -> serde_json::Value {
        // Revoked nodes are out of the domain on purpose: shown, not waited for.
        let cut = self.cut_off().unwrap_or_default();
        let down = self.nodes_seen_down();
        let unusable = self.instances_unusable(&down);
        let liveness: std::collections::HashMap<String, serde_json::Value> = {
            let names: Vec<String> = self.state().domain.topology.nodes.iter().map(|n| n.name.clone()).collect();
            names.into_iter().map(|n| (n.clone(), self.node_liveness(&n, &down))).collect()
        };
        let st = self.state();
        let db = self.db();
        let mut nodes = Vec::new();
        let mut converged = !st.rolling && !self.requested.load(Ordering::SeqCst);
        for n in &st.domain.topology.nodes {
            let acked = self.nodes.get(&n.name).map_or(0, |c| *c.acked.borrow());
            let pushed =
                self.nodes.get(&n.name).and_then(|c| c.pending.borrow().as_ref().map(|p| p.version)).unwrap_or(0);
            let revoked = cut.contains(&n.name);
            converged &= revoked || (pushed > 0 && acked >= pushed);
            let enrolled: Option<i64> =
                db.query_row("SELECT enrolled_at FROM nodes WHERE name = ?1", [&n.name], |r| r.get(0)).ok().flatten();
            let sas = st.docs.get(&n.name).map_or(0, |d| d.ikeless.sad.entries.len());
            nodes.push(serde_json::json!({
                "name": n.name, "enrolled": enrolled.is_some(), "pushed-version": pushed,
                "acked-version": acked, "sad-entries": sas, "revoked": revoked,
                "liveness": liveness.get(&n.name),
            }));
        }
        // SAs older than their soft lifetime are a problem whatever the acknowledgements say:
        // renewal failed, or is late.
        let age = st.renewed_at.map(|t| t.elapsed());
        let soft = st.domain.topology.sa.lifetime.soft.seconds.filter(|&s| s > 0).map(Duration::from_secs);
        let past_soft = matches!((age, soft), (Some(a), Some(s)) if a > s);
        converged &= !past_soft;
        let sas = serde_json::json!({
            "age-s": age.map(|a| a.as_secs()), "soft-lifetime-s": soft.map(|s| s.as_secs()),
            "renew-every-s": Self::renew_every(&st.domain).map(|d| d.as_secs_f64()),
            "past-soft-lifetime": past_soft,
        });
        // Every SF instance: whether its node is seen up (and, for an external SF, whether
        // its circuit returns probes), and whether the plan the nodes run (the last rollout's)
        // has it in its pool.
        let instances: Vec<_> = st
            .domain
            .topology
            .sfs
            .iter()
            .flat_map(|sf| {
                let nodes = sf.nodes();
                let pooled = nodes.len() > 1;
                nodes.into_iter().map(move |n| (sf, n, pooled))
            })
            .map(|(sf, node, pooled)| {
                let key = (sf.name.clone(), node.to_owned());
                let circuit = sf
                    .external
                    .then(|| self.circuit_liveness(&sf.name, node))
                    .flatten()
                    .map(|(up, since)| serde_json::json!({"up": up, "since-unix-ms": since}));
                serde_json::json!({
                    "sf": sf.name, "node": node, "pooled": pooled,
                    "up": !down.contains(node) && !unusable.contains(&key), "circuit": circuit,
                    "in-plan": !st.out_of_plan.iter().any(|(s, n)| *s == sf.name && n == node),
                })
            })
            .collect();
        let chains: Vec<_> =
            st.domain.topology.chains.iter().map(|c| serde_json::json!({"name": c.name, "sfs": c.sfs})).collect();
        let bound: Vec<String> = db
            .prepare("SELECT role FROM role_keys ORDER BY role")
            .and_then(|mut q| q.query_map([], |r| r.get(0))?.collect())
            .unwrap_or_default();
        serde_json::json!({"zsfc:domain": {
            "name": st.domain.name, "version": st.version, "rollouts": self.rollouts.load(Ordering::Relaxed),
            "converged": converged, "nodes": nodes, "instances": instances, "chains": chains, "grants": st.domain.grants,
            "next-spi": st.next_spi, "roles-on-tokens": bound, "sas": sas, "revoked": st.domain.revoked,
        }})
    }
}

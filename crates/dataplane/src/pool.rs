//! SF instance pools: several instances of one SF, each flow crossing one of them (RFC 7665
//! §2.2 and §5.7: load distribution with flow affinity).
//!
//! Every instance has a label of its own; a chain names the SF by the label of any of its
//! instances, and a node that knows the pool (the classifier) replaces it per flow with the
//! label of the instance chosen by **weighted rendezvous hashing** (highest random weight,
//! Thaler & Ravishankar 1998; weights as in Schindelhauer & Schomaker 2005): every member gets
//! the score `weight / -ln(u)` with `u` a uniform number from the hash of (pool seed, flow,
//! member label), and the highest score wins. A flow always lands on the same member; adding
//! a member moves only the flows that now score highest on it, removing one moves only its
//! own flows.
//!
//! The flow is the 5-tuple taken **without direction** (the two endpoints sorted), so a
//! chain's return traffic, classified at the far end over the same pool, crosses the same
//! instance and stateful SFs (firewalls) see both directions. Fragments after the first carry
//! no ports and are hashed on addresses and protocol, so they can land elsewhere (the
//! classifier clamps TCP's MSS so that TCP does not fragment).
//!
//! The hash is our own fixed function (splitmix64's finaliser over the fields), not a
//! library's per-process or per-version one, so every node of a domain, whatever its build,
//! computes the same choice.
use zsfc_esp::Instant;
use zsfc_wire::ip::FiveTuple;

/// Hash maps of the engine (see `node/mod.rs`).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// One SF instance in a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub label: u32,
    /// Relative share of the flows; 0: drained (out of the controller's plan, for example
    /// because its node is down): no flow goes to it, and flows pinned to it move.
    pub weight: u32,
}

/// The instances of one SF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// Mixed into every score: the same on every node of the domain.
    pub seed: u64,
    pub members: Vec<Member>,
}

/// How long a pinned flow keeps its instances without a packet (then it is hashed afresh).
pub const PIN_IDLE: core::time::Duration = core::time::Duration::from_secs(120);

/// The instances one flow was steered to in one pool.
#[derive(Debug, Clone, Copy)]
struct Pin {
    label: u32,
    last: Instant,
}

/// What [`Pools::pick`] did besides choosing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Picked {
    /// The flow's instance was down: it moved to a live one (local repair).
    pub moved: bool,
    /// The pin table was full: the flow is steered by the hash alone.
    pub unpinned: bool,
}

/// The pools a node knows, by member label, and the flows pinned to their instances.
///
/// Flow pinning (RFC 7665 §5.7 "flow affinity" across changes): the first packet of a flow
/// takes the rendezvous choice among the instances that are up, and the flow stays there
/// while that instance is up, even when an instance is added or comes back (which would win
/// the hash for some flows); only new flows go to it. A flow whose instance goes down moves
/// to the choice among the live ones and is pinned there. Pins are bounded (`max_pins`) and
/// expire after [`PIN_IDLE`] without a packet.
#[derive(Debug, Default)]
pub(crate) struct Pools {
    pools: Vec<Pool>,
    of: HashMap<u32, usize>,
    /// By (flow hash, pool index).
    pins: HashMap<(u64, usize), Pin>,
    max_pins: usize,
}

impl Pools {
    pub(crate) fn new(max_pins: usize) -> Self {
        Self { max_pins, ..Self::default() }
    }

    /// Replaces every pool. A label in two pools, or a pool without a member of weight 1 or
    /// more, is refused. Pins to instances that stay members of the same pool are kept (pins
    /// to a drained one move with the flow's next packet).
    pub(crate) fn set(&mut self, pools: Vec<Pool>) -> Result<(), (u32, &'static str)> {
        let mut of = HashMap::default();
        for (i, p) in pools.iter().enumerate() {
            if p.members.iter().all(|m| m.weight == 0) {
                let label = p.members.first().map_or(0, |m| m.label);
                return Err((label, "a pool needs a member of weight 1 or more"));
            }
            for m in &p.members {
                if of.insert(m.label, i).is_some() {
                    return Err((m.label, "is a member of two pools (or twice of one)"));
                }
            }
        }
        self.pins.retain(|&(_, pool), pin| of.get(&pin.label) == Some(&pool));
        (self.pools, self.of) = (pools, of);
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }

    /// The member of `label`'s pool that `flow` crosses among those `up` accepts, by the hash
    /// alone; `label` itself outside any pool; `None` when no member is up.
    pub(crate) fn choose(&self, label: u32, flow: u64, up: impl Fn(u32) -> bool) -> Option<u32> {
        let Some(pool) = self.of.get(&label).and_then(|&i| self.pools.get(i)) else {
            return Some(label);
        };
        best(pool, flow, up)
    }

    /// Like [`choose`](Self::choose), keeping a flow on the instance it was pinned to while
    /// that is up, and pinning it.
    pub(crate) fn pick(
        &mut self,
        label: u32,
        flow: u64,
        now: Instant,
        up: impl Fn(u32) -> bool,
    ) -> Option<(u32, Picked)> {
        let Some(&pool) = self.of.get(&label) else {
            return Some((label, Picked::default()));
        };
        let mut picked = Picked::default();
        let Self { pools, pins, .. } = &mut *self;
        let drained = |l: u32| pools.get(pool).is_some_and(|p| p.members.iter().any(|m| m.label == l && m.weight == 0));
        if let Some(pin) = pins.get_mut(&(flow, pool)) {
            if up(pin.label) && !drained(pin.label) {
                pin.last = now;
                return Some((pin.label, picked));
            }
            picked.moved = true;
        }
        let to = self.choose(label, flow, up)?;
        let pin = Pin { label: to, last: now };
        if picked.moved || self.pins.len() < self.max_pins {
            self.pins.insert((flow, pool), pin);
        } else {
            picked.unpinned = true;
        }
        Some((to, picked))
    }

    /// Forgets the pins of flows idle for [`PIN_IDLE`].
    pub(crate) fn expire(&mut self, now: Instant) {
        self.pins.retain(|_, pin| now.saturating_since(pin.last) < PIN_IDLE);
    }

    pub(crate) fn pinned(&self) -> usize {
        self.pins.len()
    }
}

/// The member of `pool` that `flow` ([`flow_hash`]) crosses among those `up` accepts: the
/// highest weighted rendezvous score; drained members (weight 0) never.
fn best(pool: &Pool, flow: u64, up: impl Fn(u32) -> bool) -> Option<u32> {
    let mut best = None;
    for m in pool.members.iter().filter(|m| m.weight > 0 && up(m.label)) {
        let s = score(pool.seed, flow, *m);
        if best.is_none_or(|(b, _)| s > b) {
            best = Some((s, m.label));
        }
    }
    best.map(|b| b.1)
}

/// The instance (member label) a new flow takes in `pool` while every member is up: what every
/// classifier of the domain computes. Observers use it to know a flow's instance (`zsfc bench
/// failover` tells the flows on a killed instance from the others this way).
pub fn rendezvous(pool: &Pool, flow: u64) -> Option<u32> {
    best(pool, flow, |_| true)
}

/// splitmix64's finaliser: a bijection of 64-bit words with full avalanche.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn fold(h: u64, word: u64) -> u64 {
    mix(h ^ word).wrapping_add(0x9e37_79b9_7f4a_7c15)
}

/// The member's rendezvous score for `flow`.
fn score(seed: u64, flow: u64, m: Member) -> f64 {
    let h = fold(fold(seed, flow), u64::from(m.label));
    // 53 random bits, in (0, 1]: ln never sees 0.
    let u = ((h >> 11) + 1) as f64 / (1u64 << 53) as f64;
    f64::from(m.weight) / -u.ln().min(-f64::MIN_POSITIVE)
}

fn addr_words(a: std::net::IpAddr) -> u128 {
    match a {
        std::net::IpAddr::V4(v) => u128::from(u32::from(v)),
        std::net::IpAddr::V6(v) => u128::from(v),
    }
}

/// The flow of a packet without its direction: the same for a packet and its answer.
pub fn flow_hash(t: &FiveTuple) -> u64 {
    let a = (addr_words(t.src), t.src_port);
    let b = (addr_words(t.dst), t.dst_port);
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut h = fold(0, u64::from(t.protocol));
    for (addr, port) in [lo, hi] {
        h = fold(h, addr as u64);
        h = fold(h, (addr >> 64) as u64);
        h = fold(h, u64::from(port));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(i: u32) -> FiveTuple {
        FiveTuple {
            src: std::net::Ipv4Addr::from(0x0a01_0000 + i).into(),
            dst: std::net::Ipv4Addr::new(10, 9, 0, 1).into(),
            protocol: 6,
            src_port: 40000 + (i % 1000) as u16,
            dst_port: 443,
        }
    }

    fn pools(members: &[(u32, u32)]) -> Pools {
        let mut p = Pools::new(1 << 16);
        let members = members.iter().map(|&(label, weight)| Member { label, weight }).collect();
        p.set(vec![Pool { seed: 7, members }]).unwrap();
        p
    }

    #[test]
    fn a_flow_and_its_answer_cross_the_same_member_and_weights_share_the_flows() {
        let p = pools(&[(1000, 1), (1001, 3)]);
        let mut on = HashMap::<u32, u32>::default();
        for i in 0..8000 {
            let t = tuple(i);
            let pick = p.choose(1000, flow_hash(&t), |_| true).unwrap();
            assert_eq!(
                pick,
                p.choose(1001, flow_hash(&t.reversed()), |_| true).unwrap(),
                "either label names the pool"
            );
            *on.entry(pick).or_default() += 1;
        }
        // 1:3 within a few percent.
        let share = f64::from(on[&1001]) / 8000.0;
        assert!((0.72..0.78).contains(&share), "share of the weight-3 member: {share}");
        assert_eq!(p.choose(55, 1, |_| true), Some(55), "a label outside every pool stays");
    }

    #[test]
    fn adding_a_member_moves_only_flows_onto_it_and_removing_one_only_its_own() {
        let two = pools(&[(1000, 1), (1001, 1)]);
        let three = pools(&[(1000, 1), (1001, 1), (1002, 1)]);
        let mut moved = 0;
        for i in 0..6000 {
            let f = flow_hash(&tuple(i));
            let (before, after) = (two.choose(1000, f, |_| true), three.choose(1000, f, |_| true));
            if before != after {
                assert_eq!(after, Some(1002), "a flow moved between old members");
                moved += 1;
            }
        }
        assert!((1700..2300).contains(&moved), "about a third moves to the new member: {moved}");
    }

    #[test]
    fn a_down_member_moves_only_its_flows_and_pinned_flows_stay_when_it_returns() {
        let mut p = pools(&[(1000, 1), (1001, 1)]);
        let t0 = Instant::from_secs(1);
        let flows: Vec<u64> = (0..2000).map(|i| flow_hash(&tuple(i))).collect();
        let first: Vec<u32> = flows.iter().map(|&f| p.pick(1000, f, t0, |_| true).unwrap().0).collect();
        // 1001 goes down: exactly its flows move, all to 1000.
        let down = |l: u32| l != 1001;
        for (&f, &was) in flows.iter().zip(&first) {
            let (to, how) = p.pick(1000, f, t0, down).unwrap();
            assert_eq!(to, 1000);
            assert_eq!(how.moved, was == 1001, "only the flows of the down member move");
        }
        // It returns: no existing flow moves; a new flow may go to it.
        for &f in &flows {
            assert_eq!(p.pick(1001, f, t0, |_| true).unwrap(), (1000, Picked::default()));
        }
        let fresh = (5000..5100).filter(|&i| p.pick(1000, flow_hash(&tuple(i)), t0, |_| true).unwrap().0 == 1001);
        assert!(fresh.count() > 20, "new flows reach the returned member");
        // Idle pins expire; with every member down nothing is chosen.
        p.expire(t0 + PIN_IDLE);
        assert_eq!(p.pinned(), 0);
        assert_eq!(p.pick(1000, flows[0], t0, |_| false), None);
    }

    #[test]
    fn the_pin_table_is_bounded() {
        let mut p = Pools::new(10);
        p.set(vec![Pool { seed: 3, members: vec![Member { label: 1, weight: 1 }, Member { label: 2, weight: 1 }] }])
            .unwrap();
        let unpinned =
            (0..50).filter(|&i| p.pick(1, flow_hash(&tuple(i)), Instant::ZERO, |_| true).unwrap().1.unpinned);
        assert_eq!(unpinned.count(), 40);
        assert_eq!(p.pinned(), 10);
    }

    /// A member the controller drained (weight 0) takes no flow and loses its pinned ones, as a
    /// down one does; put back, it keeps the flows where they are and takes new ones.
    #[test]
    fn a_drained_member_loses_its_flows_and_put_back_takes_only_new_ones() {
        let mut p = pools(&[(1000, 1), (1001, 1)]);
        let t0 = Instant::from_secs(1);
        let flows: Vec<u64> = (0..500).map(|i| flow_hash(&tuple(i))).collect();
        let first: Vec<u32> = flows.iter().map(|&f| p.pick(1000, f, t0, |_| true).unwrap().0).collect();
        let drained = vec![Member { label: 1000, weight: 1 }, Member { label: 1001, weight: 0 }];
        p.set(vec![Pool { seed: 7, members: drained }]).unwrap();
        for (&f, &was) in flows.iter().zip(&first) {
            let (to, how) = p.pick(1001, f, t0, |_| true).unwrap();
            assert_eq!((to, how.moved), (1000, was == 1001), "only the drained member's flows move");
        }
        p.set(vec![Pool {
            seed: 7,
            members: vec![Member { label: 1000, weight: 1 }, Member { label: 1001, weight: 1 }],
        }])
        .unwrap();
        assert!(flows.iter().all(|&f| p.pick(1000, f, t0, |_| true).unwrap() == (1000, Picked::default())));
        let fresh = (5000..5100).filter(|&i| p.pick(1000, flow_hash(&tuple(i)), t0, |_| true).unwrap().0 == 1001);
        assert!(fresh.count() > 20, "new flows reach the member put back");
    }

    #[test]
    fn refuses_shared_members_empty_pools_and_zero_weights() {
        let mut p = Pools::new(16);
        let m = |label, weight| Member { label, weight };
        assert!(p.set(vec![Pool { seed: 1, members: vec![] }]).is_err());
        assert!(p.set(vec![Pool { seed: 1, members: vec![m(20, 0)] }]).is_err());
        assert!(p.set(vec![Pool { seed: 1, members: vec![m(20, 0), m(21, 0)] }]).is_err(), "every member drained");
        let twice = vec![Pool { seed: 1, members: vec![m(20, 1)] }, Pool { seed: 2, members: vec![m(20, 1)] }];
        assert!(p.set(twice).is_err());
        assert!(p.is_empty(), "a refused set leaves the pools as they were");
    }
}

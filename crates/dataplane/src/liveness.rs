//! Liveness of the adjacent nodes: one BFD session per peer (RFC 5880), carried on the data
//! plane as GAL/ACH probes ([`zsfc_wire::bfd`]) in the same tunnel (and, under link
//! protection, the same link ESP) as the steered packets, so a probe that arrives proves the
//! path the packets take.
//!
//! What is implemented of RFC 5880: the three-state handshake (§6.2, §6.8.6), discriminators
//! (§6.3), the detection time from the peer's multiplier and intervals (§6.8.4), transmit
//! jitter of 75-100 % of the interval (§6.8.7). Not implemented: poll/final sequences (the
//! intervals are fixed by configuration), demand mode, echo, BFD authentication (link ESP
//! authenticates the probes when link protection is on; without it, an on-link attacker
//! who can forge steered packets can also forge probes).
use crate::NodeId;
use zsfc_esp::Instant;
use zsfc_wire::bfd::{Control, State};

/// How often a node probes each peer and how many probes may go missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivenessSettings {
    /// Desired transmit interval and required receive interval (RFC 5880 §6.8.2).
    pub interval: core::time::Duration,
    /// Detection multiplier: a peer is down after this many intervals without a probe.
    pub detect_mult: u8,
}

impl Default for LivenessSettings {
    fn default() -> Self {
        Self { interval: core::time::Duration::from_millis(100), detect_mult: 3 }
    }
}

/// What a node knows about one peer's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLiveness {
    pub peer: NodeId,
    pub up: bool,
    /// When the last valid probe from the peer arrived.
    pub last_seen: Option<Instant>,
    /// When `up` last changed (or the session started).
    pub since: Instant,
    /// How often the session went down after being up.
    pub downs: u64,
}

#[derive(Debug)]
struct Session {
    peer: NodeId,
    local_disc: u32,
    remote_disc: u32,
    state: State,
    diag: u8,
    remote_mult: u8,
    remote_min_tx_us: u32,
    last_rx: Option<Instant>,
    next_tx: Instant,
    since: Instant,
    downs: u64,
}

/// The BFD sessions of one node.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    settings: Option<LivenessSettings>,
    sessions: Vec<Session>,
    /// Session index by peer id.
    of: Vec<Option<usize>>,
    /// Sessions that went up or down since the last [`take_changes`](Self::take_changes):
    /// (peer, up, when). At most one per session and direction is kept.
    changes: Vec<(NodeId, bool, Instant)>,
}

fn micros(d: core::time::Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl Liveness {
    /// Probes `peers` with `settings` (`None`: no liveness, every peer counts as up). Sessions
    /// of peers that stay keep their state. `disc` gives each new session its discriminator.
    pub(crate) fn set(
        &mut self,
        settings: Option<LivenessSettings>,
        peers: &[NodeId],
        now: Instant,
        mut disc: impl FnMut() -> u32,
    ) {
        self.settings = settings;
        if settings.is_none() {
            self.sessions.clear();
            self.of.clear();
            self.changes.clear();
            return;
        }
        let mut old: Vec<Session> = core::mem::take(&mut self.sessions);
        for &peer in peers {
            if self.sessions.iter().any(|s| s.peer == peer) {
                continue;
            }
            let s = match old.iter().position(|s| s.peer == peer) {
                Some(i) => old.swap_remove(i),
                None => Session {
                    peer,
                    local_disc: disc().max(1),
                    remote_disc: 0,
                    state: State::Down,
                    diag: 0,
                    remote_mult: 0,
                    remote_min_tx_us: 0,
                    last_rx: None,
                    next_tx: now,
                    since: now,
                    downs: 0,
                },
            };
            self.sessions.push(s);
        }
        self.of.clear();
        for (i, s) in self.sessions.iter().enumerate() {
            let k = s.peer.0 as usize;
            if self.of.len() <= k {
                self.of.resize(k + 1, None);
            }
            self.of[k] = Some(i);
        }
    }

    fn session(&self, peer: NodeId) -> Option<&Session> {
        self.of.get(peer.0 as usize).copied().flatten().and_then(|i| self.sessions.get(i))
    }

    /// Whether packets may be steered to `peer`: its session is up, or it is not probed.
    pub(crate) fn is_up(&self, peer: NodeId) -> bool {
        match (self.settings, self.session(peer)) {
            (Some(_), Some(s)) => s.state == State::Up,
            _ => true,
        }
    }

    /// RFC 5880 §6.8.4: the peer's multiplier times the larger of our required receive
    /// interval and its desired transmit interval.
    fn detection_time(settings: LivenessSettings, s: &Session) -> core::time::Duration {
        let rx = micros(settings.interval).max(s.remote_min_tx_us);
        core::time::Duration::from_micros(u64::from(rx) * u64::from(s.remote_mult.max(1)))
    }

    /// Takes down sessions whose peer fell silent (RFC 5880 §6.8.4, diag 1); returns how many.
    pub(crate) fn expire(&mut self, now: Instant) -> usize {
        let Some(settings) = self.settings else { return 0 };
        let mut n = 0;
        for s in &mut self.sessions {
            if matches!(s.state, State::Init | State::Up)
                && let Some(last) = s.last_rx
                && now.saturating_since(last) > Self::detection_time(settings, s)
            {
                if s.state == State::Up {
                    s.downs += 1;
                    s.since = now;
                    Self::changed(&mut self.changes, s.peer, false, now);
                }
                s.state = State::Down;
                s.diag = 1;
                s.remote_disc = 0;
                n += 1;
            }
        }
        n
    }

    /// The earliest time a probe is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.settings?;
        self.sessions.iter().map(|s| s.next_tx).min()
    }

    /// The next probe due at `now`, if any: to whom, and what. `jitter` (0-255) places the next
    /// one at 75-100 % of the interval (RFC 5880 §6.8.7).
    pub(crate) fn due(&mut self, now: Instant, jitter: u8) -> Option<(NodeId, Control)> {
        let settings = self.settings?;
        let s = self.sessions.iter_mut().filter(|s| s.next_tx <= now).min_by_key(|s| s.next_tx)?;
        let us = micros(settings.interval);
        let wait = u64::from(us) * (75 + u64::from(jitter) % 26) / 100;
        s.next_tx = now + core::time::Duration::from_micros(wait);
        Some((
            s.peer,
            Control {
                diag: s.diag,
                state: s.state,
                detect_mult: settings.detect_mult,
                my_discriminator: s.local_disc,
                your_discriminator: s.remote_disc,
                desired_min_tx_us: us,
                required_min_rx_us: us,
            },
        ))
    }

    /// A probe from `peer` (RFC 5880 §6.8.6). `false`: discarded (no session, or the
    /// discriminators do not match).
    pub(crate) fn on_probe(&mut self, now: Instant, peer: NodeId, c: &Control) -> bool {
        if self.settings.is_none() {
            return false;
        }
        let Some(i) = self.of.get(peer.0 as usize).copied().flatten() else { return false };
        let Some(s) = self.sessions.get_mut(i) else { return false };
        let your = c.your_discriminator;
        if (your == 0 && !matches!(c.state, State::Down | State::AdminDown)) || (your != 0 && your != s.local_disc) {
            return false;
        }
        s.remote_disc = c.my_discriminator;
        s.remote_mult = c.detect_mult;
        s.remote_min_tx_us = c.desired_min_tx_us;
        s.last_rx = Some(now);
        let was_up = s.state == State::Up;
        s.state = match (s.state, c.state) {
            (State::Up, State::Down | State::AdminDown) => State::Down,
            (_, State::AdminDown) => State::Down,
            (State::Down, State::Down) => State::Init,
            (State::Down, State::Init) | (State::Init, State::Init | State::Up) => State::Up,
            (s, _) => s,
        };
        if s.state == State::Up {
            s.diag = 0;
        }
        if was_up != (s.state == State::Up) {
            s.since = now;
            s.downs += u64::from(was_up);
            Self::changed(&mut self.changes, s.peer, !was_up, now);
        }
        true
    }

    /// Records that `peer`'s session went up or down, replacing an older change of the same
    /// peer (so the list stays as long as the sessions are many).
    fn changed(changes: &mut Vec<(NodeId, bool, Instant)>, peer: NodeId, up: bool, now: Instant) {
        changes.retain(|c| c.0 != peer);
        changes.push((peer, up, now));
    }

    /// The sessions that went up or down since the last call, oldest first.
    pub(crate) fn take_changes(&mut self) -> Vec<(NodeId, bool, Instant)> {
        core::mem::take(&mut self.changes)
    }

    pub(crate) fn report(&self) -> impl Iterator<Item = PeerLiveness> + '_ {
        self.sessions.iter().map(|s| PeerLiveness {
            peer: s.peer,
            up: s.state == State::Up,
            last_seen: s.last_rx,
            since: s.since,
            downs: s.downs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Liveness, Liveness) {
        let (mut a, mut b) = (Liveness::default(), Liveness::default());
        let mut n = 10;
        let mut disc = || {
            n += 1;
            n
        };
        a.set(Some(LivenessSettings::default()), &[NodeId(1)], Instant::ZERO, &mut disc);
        b.set(Some(LivenessSettings::default()), &[NodeId(0)], Instant::ZERO, &mut disc);
        (a, b)
    }

    /// Runs both sessions for `ms`, `b` silent when `b_dead`.
    fn run(a: &mut Liveness, b: &mut Liveness, from_ms: u64, ms: u64, b_dead: bool) {
        for t in from_ms..from_ms + ms {
            let now = Instant::from_millis(t);
            a.expire(now);
            b.expire(now);
            while let Some((_, c)) = a.due(now, 255) {
                b.on_probe(now, NodeId(0), &c);
            }
            while let Some((_, c)) = b.due(now, 255) {
                if !b_dead {
                    a.on_probe(now, NodeId(1), &c);
                }
            }
        }
    }

    #[test]
    fn sessions_come_up_go_down_after_the_detection_time_and_come_back() {
        let (mut a, mut b) = pair();
        assert!(!a.is_up(NodeId(1)), "a peer never heard from is not up");
        run(&mut a, &mut b, 0, 300, false);
        assert!(a.is_up(NodeId(1)) && b.is_up(NodeId(0)));
        // b dies at 300 ms: with 100 ms x 3, a sees it down within 300 ms of the last probe.
        run(&mut a, &mut b, 300, 250, true);
        assert!(a.is_up(NodeId(1)), "not down before the detection time");
        run(&mut a, &mut b, 550, 100, true);
        let r: Vec<_> = a.report().collect();
        assert!(!r[0].up && r[0].downs == 1, "{r:?}");
        let changes = a.take_changes();
        assert_eq!(changes.len(), 1, "the last change of the peer is kept: {changes:?}");
        assert!(!changes[0].1 && changes[0].2 == r[0].since, "{changes:?}");
        assert!(a.take_changes().is_empty());
        assert!(r[0].since <= Instant::from_millis(650));
        // b comes back (a fresh process: new discriminator, state Down).
        let mut fresh = Liveness::default();
        fresh.set(Some(LivenessSettings::default()), &[NodeId(0)], Instant::from_millis(700), || 99);
        run(&mut a, &mut fresh, 700, 400, false);
        assert!(a.is_up(NodeId(1)));
    }

    #[test]
    fn probes_with_a_wrong_discriminator_or_from_unknown_peers_are_discarded() {
        let (mut a, mut b) = pair();
        run(&mut a, &mut b, 0, 300, false);
        let (_, mut c) = b.due(Instant::from_millis(400), 0).unwrap();
        c.your_discriminator ^= 1;
        assert!(!a.on_probe(Instant::from_millis(400), NodeId(1), &c));
        assert!(!a.on_probe(Instant::from_millis(400), NodeId(7), &c));
        let mut off = Liveness::default();
        assert!(off.is_up(NodeId(3)), "without liveness every peer counts as up");
        assert!(!off.on_probe(Instant::ZERO, NodeId(3), &c));
    }
}

//! Liveness of external SFs through their attachment circuits (issue 20 point 3): a node that
//! hands packets to an SFC-unaware SF checks, with a probe through the circuit, that the SF
//! still returns what it is given, and reports itself unusable for that SF when it does not.
//!
//! The probe is modelled on the BFD Echo function (RFC 5880 §6.4): a packet the remote end
//! loops back through its forwarding plane, here the SF's, without taking part in any protocol.
//! It is an IPv4 UDP datagram to port 3785 (the BFD echo port, RFC 5881 §4) from a port in
//! 49152-65535, with source and destination 192.0.0.8, the IPv4 dummy address (RFC 7600),
//! which is nobody's; the SF routes it like any other packet it forwards, out of its other
//! interface and back to the node. What it carries is a local matter (RFC 5880 §6.4): a marker
//! and a 16-byte nonce from the CSPRNG. A returning probe is recognised by destination port,
//! length and marker only (a NAT SF rewrites the source), and counts only with the nonce of a
//! probe still outstanding on that circuit: nobody outside the node can keep a dead circuit up.
//!
//! Timing follows the node's liveness settings (interval and detection multiplier, RFC 5880
//! §6.8.4 without negotiation: both ends are this node): a circuit is down after
//! `detect_mult` intervals in which neither a probe nor a packet the proxy handed over came
//! back, up again with the next one (one that never returned anything is down after
//! [`STARTUP_GRACE`]). The proxy's own packets count because under load they prove the same
//! and the probes may be what a full queue drops (RFC 5880 §6.4 lets the echo function stand
//! in for control packets the same way). An SF that
//! filters traffic must let the probes through (for example `-A FORWARD -p udp --dport 3785
//! -d 192.0.0.8 -j ACCEPT`), as it would have to let BFD echo through.
use crate::SfId;
use crate::liveness::LivenessSettings;
use zsfc_esp::Instant;
use zsfc_wire::checksum;

/// The BFD echo port (RFC 5881 §4).
pub const ECHO_PORT: u16 = 3785;
/// Source and destination of every probe: the IPv4 dummy address (RFC 7600).
pub const PROBE_ADDRESS: [u8; 4] = [192, 0, 0, 8];
const MARKER: [u8; 8] = *b"zsfc-ac1";
const NONCE_LEN: usize = 16;
const PAYLOAD_LEN: usize = MARKER.len() + NONCE_LEN;
/// The whole probe: IPv4 header, UDP header, marker and nonce.
pub const PROBE_LEN: usize = 20 + 8 + PAYLOAD_LEN;
/// Probes of one circuit whose return still counts (older ones are forgotten).
const OUTSTANDING: usize = 8;
/// How long a circuit that never returned a probe has before it counts as down (the SF may
/// be wired up after its node starts); once up, the detection time alone applies.
pub const STARTUP_GRACE: core::time::Duration = core::time::Duration::from_secs(3);

/// What a node knows about one external SF's circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitLiveness {
    pub sf: SfId,
    /// `None` until the first probe returned or the first detection time passed.
    pub up: Option<bool>,
    /// When the last probe came back.
    pub last_return: Option<Instant>,
    /// How often the circuit went down after being up.
    pub downs: u64,
}

#[derive(Debug)]
struct Circuit {
    sf: SfId,
    up: Option<bool>,
    /// When probing began (the first probe went out).
    started: Option<Instant>,
    last_return: Option<Instant>,
    next_tx: Instant,
    /// Nonces of the latest probes, oldest overwritten first.
    sent: [[u8; NONCE_LEN]; OUTSTANDING],
    next_slot: usize,
    downs: u64,
}

/// The circuits of one node's external SFs.
#[derive(Debug, Default)]
pub(crate) struct Circuits {
    settings: Option<LivenessSettings>,
    circuits: Vec<Circuit>,
    /// Circuits that went up or down since [`take_changes`](Self::take_changes).
    changes: Vec<(SfId, bool, Instant)>,
}

impl Circuits {
    /// Probes with `settings` (`None`: no probing, every circuit counts as usable).
    pub(crate) fn set(&mut self, settings: Option<LivenessSettings>) {
        if settings != self.settings {
            self.settings = settings;
            for c in &mut self.circuits {
                (c.up, c.started, c.last_return, c.next_tx) = (None, None, None, Instant::ZERO);
            }
        }
    }

    /// Probes the circuit of the external SF `sf` from the next poll on.
    pub(crate) fn add(&mut self, sf: SfId) {
        self.circuits.push(Circuit {
            sf,
            up: None,
            started: None,
            last_return: None,
            next_tx: Instant::ZERO,
            sent: [[0; NONCE_LEN]; OUTSTANDING],
            next_slot: 0,
            downs: 0,
        });
    }

    fn changed(changes: &mut Vec<(SfId, bool, Instant)>, c: &mut Circuit, up: bool, now: Instant) {
        if c.up == Some(true) && !up {
            c.downs += 1;
        }
        c.up = Some(up);
        changes.retain(|&(sf, _, _)| sf != c.sf);
        changes.push((c.sf, up, now));
    }

    /// When `c` counts as down if no probe returns before.
    fn deadline(s: LivenessSettings, c: &Circuit) -> Option<Instant> {
        let detect = s.interval * u32::from(s.detect_mult);
        match (c.up, c.last_return, c.started) {
            (Some(false), ..) => None,
            (_, Some(last), _) => Some(last + detect),
            (_, None, Some(started)) => Some(started + detect.max(STARTUP_GRACE)),
            (_, None, None) => None,
        }
    }

    /// Marks down every circuit whose detection time passed without a returning probe;
    /// returns how many went down.
    pub(crate) fn expire(&mut self, now: Instant) -> usize {
        let Some(s) = self.settings else { return 0 };
        let mut n = 0;
        for c in &mut self.circuits {
            if Self::deadline(s, c).is_some_and(|d| now > d) {
                Self::changed(&mut self.changes, c, false, now);
                n += 1;
            }
        }
        n
    }

    /// When the next probe is due or a detection time ends.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        let s = self.settings?;
        self.circuits.iter().flat_map(|c| [Some(c.next_tx), Self::deadline(s, c)]).flatten().min()
    }

    /// The next probe due at `now`, if any: the SF to send it to and the packet, whose nonce
    /// `nonce` gives.
    pub(crate) fn due(&mut self, now: Instant, nonce: [u8; NONCE_LEN]) -> Option<(SfId, [u8; PROBE_LEN])> {
        let s = self.settings?;
        let c = self.circuits.iter_mut().find(|c| c.next_tx <= now)?;
        c.started.get_or_insert(now);
        c.next_tx = now + s.interval;
        c.sent[c.next_slot] = nonce;
        c.next_slot = (c.next_slot + 1) % OUTSTANDING;
        // The source port: spread over 49152-65535 (RFC 5881 §4), from the nonce.
        let port = 49152 | u16::from_be_bytes([nonce[0], nonce[1]]) & 0x3fff;
        Some((c.sf, probe(port, &nonce)))
    }

    /// A probe came back from `sf`: `true` if it names a probe still outstanding there (the
    /// circuit is up), `false` otherwise (a drop).
    pub(crate) fn on_return(&mut self, now: Instant, sf: SfId, pkt: &[u8]) -> bool {
        let Some(nonce) = pkt.get(PROBE_LEN - NONCE_LEN..PROBE_LEN) else { return false };
        let Some(c) = self.circuits.iter_mut().find(|c| c.sf == sf) else { return false };
        if self.settings.is_none() || c.started.is_none() || !c.sent.iter().any(|n| n == nonce) {
            return false;
        }
        c.last_return = Some(now);
        if c.up != Some(true) {
            Self::changed(&mut self.changes, c, true, now);
        }
        true
    }

    /// A packet the proxy handed to `sf` came back (it matched its cache entry): the circuit
    /// forwards.
    pub(crate) fn on_traffic(&mut self, now: Instant, sf: SfId) {
        if self.settings.is_none() {
            return;
        }
        let Some(c) = self.circuits.iter_mut().find(|c| c.sf == sf) else { return };
        c.last_return = Some(now);
        if c.up != Some(true) && c.started.is_some() {
            Self::changed(&mut self.changes, c, true, now);
        }
    }

    /// Whether a circuit went up or down since [`take_changes`](Self::take_changes).
    pub(crate) fn has_changes(&self) -> bool {
        !self.changes.is_empty()
    }

    pub(crate) fn take_changes(&mut self) -> Vec<(SfId, bool, Instant)> {
        core::mem::take(&mut self.changes)
    }

    pub(crate) fn report(&self) -> impl Iterator<Item = CircuitLiveness> + '_ {
        self.circuits.iter().map(|c| CircuitLiveness {
            sf: c.sf,
            up: if self.settings.is_some() { c.up } else { None },
            last_return: c.last_return,
            downs: c.downs,
        })
    }
}

/// Whether `pkt`, coming back from an external SF, is a circuit probe: IPv4, UDP to
/// [`ECHO_PORT`], the probe's length and marker (addresses and source port may have been
/// translated).
pub fn is_probe(pkt: &[u8]) -> bool {
    let Some(&ver_ihl) = pkt.first() else { return false };
    let ihl = usize::from(ver_ihl & 0x0f) * 4;
    ver_ihl >> 4 == 4
        && pkt.len() == ihl + 8 + PAYLOAD_LEN
        && pkt.get(9) == Some(&17)
        && pkt.get(ihl + 2..ihl + 4) == Some(&ECHO_PORT.to_be_bytes()[..])
        && pkt.get(ihl + 8..ihl + 8 + MARKER.len()) == Some(&MARKER[..])
}

/// The probe from source port `port` with `nonce`.
fn probe(port: u16, nonce: &[u8; NONCE_LEN]) -> [u8; PROBE_LEN] {
    let mut p = [0u8; PROBE_LEN];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(PROBE_LEN as u16).to_be_bytes());
    p[6] = 0x40; // DF: a probe is never fragmented
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&PROBE_ADDRESS);
    p[16..20].copy_from_slice(&PROBE_ADDRESS);
    let ip_check = checksum::finish(checksum::sum(&p[..20]));
    p[10..12].copy_from_slice(&ip_check.to_be_bytes());
    let udp_len = (PROBE_LEN - 20) as u16;
    p[20..22].copy_from_slice(&port.to_be_bytes());
    p[22..24].copy_from_slice(&ECHO_PORT.to_be_bytes());
    p[24..26].copy_from_slice(&udp_len.to_be_bytes());
    p[28..36].copy_from_slice(&MARKER);
    p[36..].copy_from_slice(nonce);
    let sum = checksum::pseudo_v4(PROBE_ADDRESS, PROBE_ADDRESS, 17, udp_len) + checksum::sum(&p[20..]);
    let udp_check = match checksum::finish(sum) {
        0 => 0xffff, // RFC 768: a computed 0 is sent as all ones
        c => c,
    };
    p[26..28].copy_from_slice(&udp_check.to_be_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    fn circuits() -> Circuits {
        let mut c = Circuits::default();
        c.set(Some(LivenessSettings { interval: Duration::from_millis(100), detect_mult: 3 }));
        c.add(SfId(0));
        c.add(SfId(1));
        c
    }

    /// Whether the circuit of `sf` is usable (not probed, or not seen down).
    fn is_up(c: &Circuits, sf: SfId) -> bool {
        c.report().find(|r| r.sf == sf).is_none_or(|r| r.up != Some(false))
    }

    fn at(ms: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(ms)
    }

    /// The probe is a valid IPv4 UDP datagram (both checksums) that `is_probe` knows, also
    /// after a NAT rewrote its source.
    #[test]
    fn the_probe_is_a_checksummed_udp_datagram_to_the_echo_port() {
        let p = probe(50000, &[7; NONCE_LEN]);
        let ip = zsfc_wire::ipv4::Packet::new_checked(&p[..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.protocol(), ip.src(), ip.dst(), ip.dont_frag()), (17, PROBE_ADDRESS, PROBE_ADDRESS, true));
        let sum = checksum::pseudo_v4(PROBE_ADDRESS, PROBE_ADDRESS, 17, (PROBE_LEN - 20) as u16);
        assert_eq!(checksum::finish(sum + checksum::sum(&p[20..])), 0, "UDP checksum");
        assert!(is_probe(&p));
        let mut natted = p;
        natted[12..16].copy_from_slice(&[10, 0, 0, 1]);
        natted[20..22].copy_from_slice(&1234u16.to_be_bytes());
        assert!(is_probe(&natted));
        for bad in [&p[..PROBE_LEN - 1], &p[..20], &[][..]] {
            assert!(!is_probe(bad));
        }
        let mut other_port = p;
        other_port[22..24].copy_from_slice(&53u16.to_be_bytes());
        assert!(!is_probe(&other_port));
    }

    /// A circuit whose probes come back is up; one whose SF stops returning them is down
    /// after the detection time, and up again with the next returning probe. Only a nonce
    /// sent on that circuit counts.
    #[test]
    fn a_circuit_goes_down_when_probes_stop_coming_back_and_up_when_they_return() {
        let mut c = circuits();
        let mut n = 0u8;
        let mut sent = Vec::new();
        for ms in (0..=1000).step_by(10) {
            while let Some((sf, p)) = c.due(at(ms), [n; NONCE_LEN]) {
                n = n.wrapping_add(1);
                sent.push((sf, p));
            }
            // SF 0 loops everything back; SF 1 only until 300 ms.
            for (sf, p) in sent.drain(..) {
                if sf == SfId(0) || ms < 300 {
                    assert!(c.on_return(at(ms), sf, &p));
                }
            }
            c.expire(at(ms));
        }
        let changes = c.take_changes();
        assert_eq!(changes.iter().filter(|x| x.0 == SfId(0)).map(|x| x.1).collect::<Vec<_>>(), [true]);
        let down = changes.iter().find(|x| x.0 == SfId(1)).unwrap();
        assert!(!down.1);
        // The last probe came back at 200 ms: down once 300 ms passed since.
        assert!(down.2 > at(500) && down.2 <= at(510), "down one detection time after the last return: {down:?}");
        assert!(is_up(&c, SfId(0)) && !is_up(&c, SfId(1)));
        // A made-up nonce, or a probe of the other circuit, does not bring it back.
        let (_, p0) = c.due(at(2000), [200; NONCE_LEN]).unwrap();
        assert_eq!(p0[36], 200);
        assert!(!c.on_return(at(2000), SfId(1), &probe(50000, &[99; NONCE_LEN])));
        assert!(!is_up(&c, SfId(1)));
        let (sf, p1) = c.due(at(2000), [201; NONCE_LEN]).unwrap();
        assert_eq!(sf, SfId(1));
        assert!(!c.on_return(at(2001), SfId(1), &p0), "SF 0's probe on SF 1's circuit");
        assert!(c.on_return(at(2001), SfId(1), &p1));
        assert!(is_up(&c, SfId(1)));
        assert_eq!(c.report().find(|r| r.sf == SfId(1)).unwrap().downs, 1);
        // A circuit that never returned a probe has the start-up grace.
        let mut fresh = circuits();
        for ms in (0..=4000).step_by(10) {
            while fresh.due(at(ms), [1; NONCE_LEN]).is_some() {}
            fresh.expire(at(ms));
        }
        let never = fresh.take_changes();
        assert_eq!(never.len(), 2, "{never:?}");
        assert!(never.iter().all(|&(_, up, t)| !up && t > at(3000) && t <= at(3010)), "{never:?}");
        // The proxy's own packets coming back keep a circuit up, also when probes are lost.
        let mut busy = circuits();
        for ms in (0..=4000).step_by(10) {
            while busy.due(at(ms), [2; NONCE_LEN]).is_some() {}
            busy.on_traffic(at(ms), SfId(0));
            busy.expire(at(ms));
        }
        assert!(is_up(&busy, SfId(0)) && !is_up(&busy, SfId(1)));
        // Probing off: every circuit is usable and nothing is due.
        c.set(None);
        assert!(is_up(&c, SfId(1)) && c.due(at(3000), [0; NONCE_LEN]).is_none() && c.next_due().is_none());
    }
}

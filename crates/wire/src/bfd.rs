//! Liveness probes between adjacent nodes: BFD control packets (RFC 5880 §4.1) carried on the
//! MPLS Generic Associated Channel (RFC 5586): the label stack is the GAL (label 13, bottom of
//! stack), then the Associated Channel Header with channel type 0x0007, "BFD control without
//! IP/UDP headers" (RFC 5885 §3.2), then the 24-byte BFD control packet without
//! authentication section (link ESP authenticates it when link protection is on). Stock tshark
//! decodes it under MPLS-in-UDP as GAL / PW-ACH / BFD.
use crate::{Error, Result};

/// The Generic Associated Channel Label (RFC 5586 §4).
pub const GAL: u32 = 13;
/// ACH channel type of BFD control packets without IP/UDP headers (RFC 5885 §3.2).
pub const CHANNEL_BFD: u16 = 0x0007;
/// Length of a BFD control packet without authentication section (RFC 5880 §4.1).
pub const CONTROL_LEN: usize = 24;
/// GAL + ACH + control packet.
pub const PROBE_LEN: usize = 4 + 4 + CONTROL_LEN;

/// A session state (RFC 5880 §4.1, "Sta").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    AdminDown = 0,
    Down = 1,
    Init = 2,
    Up = 3,
}

impl State {
    fn from_bits(b: u8) -> Self {
        match b & 3 {
            0 => State::AdminDown,
            1 => State::Down,
            2 => State::Init,
            _ => State::Up,
        }
    }
}

/// The fields of a BFD control packet that zsfc uses (no poll/final sequences, no demand mode,
/// no echo, no authentication section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    /// Diagnostic code (RFC 5880 §4.1): 0 none, 1 control detection time expired.
    pub diag: u8,
    pub state: State,
    pub detect_mult: u8,
    pub my_discriminator: u32,
    pub your_discriminator: u32,
    /// Microseconds.
    pub desired_min_tx_us: u32,
    /// Microseconds.
    pub required_min_rx_us: u32,
}

impl Control {
    /// Writes the whole probe (GAL, ACH, control packet) into `out`.
    pub fn emit_probe(&self, out: &mut [u8; PROBE_LEN]) {
        // GAL: label 13, TC 0, bottom of stack, TTL 1 (RFC 5586 §4: the GAL's TTL is 1).
        let gal = (GAL << 12) | (1 << 8) | 1;
        out[0..4].copy_from_slice(&gal.to_be_bytes());
        // ACH: 0001 | version 0 | reserved 0 | channel type (RFC 5586 §2.1, RFC 4385 §3).
        out[4..8].copy_from_slice(&(0x1000_0000u32 | u32::from(CHANNEL_BFD)).to_be_bytes());
        let c = &mut out[8..];
        c[0] = (1 << 5) | (self.diag & 0x1f);
        c[1] = (self.state as u8) << 6;
        c[2] = self.detect_mult;
        c[3] = CONTROL_LEN as u8;
        c[4..8].copy_from_slice(&self.my_discriminator.to_be_bytes());
        c[8..12].copy_from_slice(&self.your_discriminator.to_be_bytes());
        c[12..16].copy_from_slice(&self.desired_min_tx_us.to_be_bytes());
        c[16..20].copy_from_slice(&self.required_min_rx_us.to_be_bytes());
        c[20..24].copy_from_slice(&0u32.to_be_bytes());
    }

    /// Reads a probe (labels first). Refuses what RFC 5880 §6.8.6 says to discard: a version
    /// other than 1, a length other than 24 (no authentication section), a detect multiplier
    /// of 0, a My Discriminator of 0, the multipoint bit; and anything that is not a GAL with
    /// the BFD channel type.
    pub fn parse_probe(b: &[u8]) -> Result<Self> {
        let b = b.get(..PROBE_LEN).ok_or(Error::Truncated)?;
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let gal = word(0);
        if gal >> 12 != GAL || gal & 0x100 == 0 {
            return Err(Error::Malformed);
        }
        if word(4) != 0x1000_0000 | u32::from(CHANNEL_BFD) {
            return Err(Error::Unsupported);
        }
        let c = &b[8..];
        let (version, flags) = (c[0] >> 5, c[1] & 0x3f);
        let multipoint = flags & 1 != 0;
        if version != 1 || usize::from(c[3]) != CONTROL_LEN || c[2] == 0 || multipoint {
            return Err(Error::Malformed);
        }
        let me = word(12);
        if me == 0 {
            return Err(Error::Malformed);
        }
        Ok(Self {
            diag: c[0] & 0x1f,
            state: State::from_bits(c[1] >> 6),
            detect_mult: c[2],
            my_discriminator: me,
            your_discriminator: word(16),
            desired_min_tx_us: word(20),
            required_min_rx_us: word(24),
        })
    }
}

/// Whether a labelled packet starts with the GAL (a probe, not a steered packet).
pub fn is_probe(b: &[u8]) -> bool {
    b.get(..3).is_some_and(|w| (u32::from_be_bytes([0, w[0], w[1], w[2]]) >> 4) == GAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_round_trips_and_bad_ones_are_refused() {
        let c = Control {
            diag: 1,
            state: State::Init,
            detect_mult: 3,
            my_discriminator: 7,
            your_discriminator: 9,
            desired_min_tx_us: 100_000,
            required_min_rx_us: 100_000,
        };
        let mut p = [0u8; PROBE_LEN];
        c.emit_probe(&mut p);
        assert!(is_probe(&p));
        assert_eq!(Control::parse_probe(&p), Ok(c));
        assert_eq!(Control::parse_probe(&p[..PROBE_LEN - 1]), Err(Error::Truncated));
        for (at, v, e) in [(5, 0x08, Error::Unsupported), (8, 0x40, Error::Malformed), (10, 0, Error::Malformed)] {
            let mut bad = p;
            bad[at] = v;
            assert_eq!(Control::parse_probe(&bad), Err(e), "byte {at} = {v}");
        }
        let mut zero_me = p;
        zero_me[12..16].fill(0);
        assert_eq!(Control::parse_probe(&zero_me), Err(Error::Malformed));
        // A steered packet's first label is never 13.
        assert!(!is_probe(&[0, 1, 0x01, 0x40]));
    }
}

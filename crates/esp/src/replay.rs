//! The anti-replay window (RFC 4303 §3.4.3, Appendix A2 for extended sequence numbers).
//!
//! A ring of 64-bit words indexed by sequence number. [`ReplayWindow::check`] never changes
//! state, so the AEAD is opened between it and [`ReplayWindow::mark`]: a forged packet can
//! neither move the window nor burn a sequence number.

/// Default window: 1024 packets (RFC 4303 §3.4.3 asks for at least 32, 64 by default).
pub const DEFAULT_WINDOW: u64 = 1024;
const MAX_WINDOW: u64 = 1 << 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// Sequence number 0 is never sent (RFC 4303 §3.3.3: the first packet has 1).
    #[error("sequence number zero")]
    Zero,
    /// Left of the window.
    #[error("sequence number too old")]
    TooOld,
    /// Already received.
    #[error("sequence number replayed")]
    Replayed,
}

/// Sliding window over the highest sequence numbers received.
#[derive(Clone)]
pub struct ReplayWindow {
    /// Highest sequence number marked (0: none yet).
    top: u64,
    size: u64,
    bits: Box<[u64]>,
}

impl core::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplayWindow").field("top", &self.top).field("size", &self.size).finish()
    }
}

impl ReplayWindow {
    /// A window of `size` packets, rounded up to a multiple of 64 and clamped to 64..=65536.
    pub fn new(size: u64) -> Self {
        let size = size.clamp(64, MAX_WINDOW).div_ceil(64) * 64;
        // One spare word: the word holding `top` is partly "future".
        let words = (size / 64 + 1).next_power_of_two();
        Self { top: 0, size, bits: vec![0; words as usize].into_boxed_slice() }
    }

    /// A window of `size` packets that takes `top` as the highest number already received
    /// (for an SA that starts its sequence numbers after `top`).
    pub fn starting_after(size: u64, top: u64) -> Self {
        Self { top, ..Self::new(size) }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The highest sequence number accepted so far.
    pub fn top(&self) -> u64 {
        self.top
    }

    fn slot(&self, seq: u64) -> (usize, u64) {
        let words = self.bits.len() as u64;
        (((seq >> 6) & (words - 1)) as usize, 1u64 << (seq & 63))
    }

    /// Would `seq` be accepted? Changes nothing.
    pub fn check(&self, seq: u64) -> Result<(), ReplayError> {
        if seq == 0 {
            return Err(ReplayError::Zero);
        }
        if seq > self.top {
            return Ok(());
        }
        if self.top - seq >= self.size {
            return Err(ReplayError::TooOld);
        }
        let (w, bit) = self.slot(seq);
        if self.bits.get(w).is_some_and(|v| v & bit != 0) {
            return Err(ReplayError::Replayed);
        }
        Ok(())
    }

    /// Records `seq` as received; call only after [`check`](Self::check) passed and the packet
    /// authenticated.
    pub fn mark(&mut self, seq: u64) {
        if seq > self.top {
            let words = self.bits.len() as u64;
            let (cur, new) = (self.top >> 6, seq >> 6);
            let n = (new - cur).min(words);
            for i in 1..=n {
                let w = ((cur + i) & (words - 1)) as usize;
                if let Some(v) = self.bits.get_mut(w) {
                    *v = 0;
                }
            }
            self.top = seq;
        }
        let (w, bit) = self.slot(seq);
        if let Some(v) = self.bits.get_mut(w) {
            *v |= bit;
        }
    }

    /// Infers the full 64-bit sequence number from its low 32 bits (RFC 4303 Appendix A2.2).
    /// `None` when the value lies before sequence number 0.
    pub fn infer_esn(&self, seq_lo: u32) -> Option<u64> {
        let (th, tl) = ((self.top >> 32) as u32, self.top as u32);
        let w = self.size as u32;
        // RFC 4303 A2.2 writes `Tl - W + 1`; grouped as `Tl - (W - 1)` it cannot underflow
        // in case A (Tl >= W - 1), and is computed modulo 2^32 in case B.
        let bottom = tl.wrapping_sub(w - 1);
        let hi = if tl >= w - 1 {
            if seq_lo >= bottom { Some(th) } else { th.checked_add(1) }
        } else if seq_lo >= bottom {
            th.checked_sub(1)
        } else {
            Some(th)
        };
        hi.map(|h| (u64::from(h) << 32) | u64::from(seq_lo))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn rejects_replayed_sequence_number() {
        let mut w = ReplayWindow::new(1024);
        assert_eq!(w.check(0), Err(ReplayError::Zero));
        w.check(5).unwrap();
        w.mark(5);
        assert_eq!(w.check(5), Err(ReplayError::Replayed));
        w.check(3).unwrap();
        w.mark(2000);
        assert_eq!(w.check(2000 - 1024), Err(ReplayError::TooOld));
        w.check(2000 - 1023).unwrap();
        assert_eq!(w.check(5), Err(ReplayError::TooOld));
    }

    #[test]
    fn window_is_at_least_1024_by_default() {
        assert!(ReplayWindow::new(DEFAULT_WINDOW).size() >= 1024);
        assert_eq!(ReplayWindow::new(1).size(), 64);
    }

    #[test]
    fn infers_high_bits_across_a_wrap() {
        let mut w = ReplayWindow::new(1024);
        w.mark((5u64 << 32) | 10);
        // Just after the wrap: a late packet from the previous epoch.
        assert_eq!(w.infer_esn(u32::MAX - 3), Some((4u64 << 32) | u64::from(u32::MAX - 3)));
        assert_eq!(w.infer_esn(11), Some((5u64 << 32) | 11));
        let mut w = ReplayWindow::new(1024);
        w.mark((5u64 << 32) | u64::from(u32::MAX - 10));
        // Just before the wrap: a new packet from the next epoch.
        assert_eq!(w.infer_esn(3), Some((6u64 << 32) | 3));
        assert_eq!(w.infer_esn(u32::MAX - 20), Some((5u64 << 32) | u64::from(u32::MAX - 20)));
        let w = ReplayWindow::new(64);
        assert_eq!(w.infer_esn(u32::MAX), None);
    }

    #[test]
    fn infers_at_the_window_edge_without_overflow() {
        // Found by the namespace test: top = W - 1 made `Tl - W + 1` underflow (debug panic).
        for top in [1022u64, 1023, 1024, (7 << 32) | 1023] {
            let mut w = ReplayWindow::new(1024);
            w.mark(top);
            let lo = top as u32;
            assert_eq!(w.infer_esn(lo + 1), Some(top + 1), "top {top}");
            assert_eq!(w.infer_esn(lo), Some(top));
            assert_eq!(w.infer_esn(lo.saturating_sub(1000)), Some(top - u64::from(lo.min(1000))));
        }
    }

    /// The model: a set of accepted numbers and the RFC 4303 rule.
    fn model_accepts(seen: &BTreeSet<u64>, size: u64, seq: u64) -> bool {
        let top = seen.last().copied().unwrap_or(0);
        seq != 0 && !seen.contains(&seq) && (seq > top || top - seq < size)
    }

    proptest! {
        #[test]
        fn window_agrees_with_a_set_model(
            size in prop_oneof![Just(64u64), Just(1024), Just(4096), 64u64..3000],
            ops in proptest::collection::vec((0u64..6000, any::<bool>()), 1..400),
        ) {
            let mut w = ReplayWindow::new(size);
            let size = w.size();
            let mut seen = BTreeSet::new();
            for (seq, authentic) in ops {
                let ok = w.check(seq).is_ok();
                prop_assert_eq!(ok, model_accepts(&seen, size, seq), "seq {} top {}", seq, w.top());
                if ok && authentic {
                    w.mark(seq);
                    seen.insert(seq);
                }
            }
        }

        #[test]
        fn inferred_esn_round_trips_inside_the_window(top in 1u64..u64::MAX / 2, back in 0u64..1024, ahead in 0u64..1_000_000) {
            let mut w = ReplayWindow::new(1024);
            w.mark(top);
            let old = top.saturating_sub(back).max(1);
            prop_assert_eq!(w.infer_esn(old as u32), Some(old));
            let new = top + ahead;
            prop_assert_eq!(w.infer_esn(new as u32), Some(new));
        }
    }
}

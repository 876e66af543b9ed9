//! Holds every packet for a fixed time (the seed 003 delay experiments; this kernel has no
//! netem). Constant delay keeps the order.
use std::collections::VecDeque;
use zsfc_dataplane::{DropReason, Instant, PacketBuf, ServiceFunction, SfContext, SfVerdict};

/// The delay SF. At most `capacity` packets wait; more are dropped.
#[derive(Debug)]
pub struct Delay {
    delay: core::time::Duration,
    capacity: usize,
    queue: VecDeque<(Instant, PacketBuf)>,
    held: u64,
    released: u64,
    overflow: u64,
}

impl Delay {
    pub fn new(delay: core::time::Duration, capacity: usize) -> Self {
        Self { delay, capacity, queue: VecDeque::with_capacity(capacity), held: 0, released: 0, overflow: 0 }
    }
}

impl ServiceFunction for Delay {
    fn kind(&self) -> &'static str {
        "delay"
    }
    fn process(&mut self, ctx: &SfContext<'_>, pkt: PacketBuf) -> SfVerdict {
        if self.queue.len() >= self.capacity {
            self.overflow += 1;
            return SfVerdict::Drop(pkt, DropReason::SfQueueFull);
        }
        self.held += 1;
        self.queue.push_back((ctx.now + self.delay, pkt));
        SfVerdict::Held
    }
    fn poll_release(&mut self, now: Instant) -> Option<PacketBuf> {
        if self.queue.front().is_some_and(|(due, _)| *due <= now) {
            self.released += 1;
            return self.queue.pop_front().map(|(_, p)| p);
        }
        None
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.queue.front().map(|(due, _)| *due)
    }
    fn counters(&self, out: &mut dyn FnMut(&'static str, u64)) {
        out("held", self.held);
        out("released", self.released);
        out("overflow", self.overflow);
        out("queued", self.queue.len() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simple::testutil::*;

    #[test]
    fn releases_in_order_after_the_delay_and_bounds_the_queue() {
        let mut d = Delay::new(core::time::Duration::from_millis(10), 2);
        for (t, b) in [(0, 1u8), (3, 2)] {
            assert!(matches!(d.process(&ctx(Instant::from_millis(t)), PacketBuf::from_slice(&[b])), SfVerdict::Held));
        }
        assert!(matches!(
            d.process(&ctx(Instant::from_millis(4)), PacketBuf::from_slice(&[3])),
            SfVerdict::Drop(_, DropReason::SfQueueFull)
        ));
        assert_eq!(d.poll_timeout(), Some(Instant::from_millis(10)));
        assert!(d.poll_release(Instant::from_millis(9)).is_none());
        assert_eq!(d.poll_release(Instant::from_millis(13)).unwrap().as_slice(), &[1]);
        assert_eq!(d.poll_release(Instant::from_millis(13)).unwrap().as_slice(), &[2]);
        assert!(d.poll_release(Instant::from_millis(99)).is_none());
    }
}

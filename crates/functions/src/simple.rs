//! The small SFs: forward, counter, rate limiter.
use zsfc_dataplane::{DropReason, Instant, PacketBuf, ServiceFunction, SfContext, SfVerdict};
use zsfc_wire::ip;

/// Passes every packet.
#[derive(Debug, Default)]
pub struct Forward {
    packets: u64,
}

impl ServiceFunction for Forward {
    fn kind(&self) -> &'static str {
        "forward"
    }
    fn process(&mut self, _: &SfContext<'_>, pkt: PacketBuf) -> SfVerdict {
        self.packets += 1;
        SfVerdict::Pass(pkt)
    }
    fn counters(&self, out: &mut dyn FnMut(&'static str, u64)) {
        out("forwarded", self.packets);
    }
}

/// Counts packets and bytes, by protocol.
#[derive(Debug, Default)]
pub struct Counter {
    packets: u64,
    bytes: u64,
    tcp: u64,
    udp: u64,
    icmp: u64,
    esp: u64,
    other: u64,
}

impl ServiceFunction for Counter {
    fn kind(&self) -> &'static str {
        "counter"
    }
    fn process(&mut self, _: &SfContext<'_>, pkt: PacketBuf) -> SfVerdict {
        self.packets += 1;
        self.bytes += pkt.len() as u64;
        match ip::parse(pkt.as_slice()).map(|s| s.tuple.protocol) {
            Ok(ip::protocol::TCP) => self.tcp += 1,
            Ok(ip::protocol::UDP) => self.udp += 1,
            Ok(ip::protocol::ICMP | ip::protocol::ICMPV6) => self.icmp += 1,
            Ok(ip::protocol::ESP) => self.esp += 1,
            _ => self.other += 1,
        }
        SfVerdict::Pass(pkt)
    }
    fn counters(&self, out: &mut dyn FnMut(&'static str, u64)) {
        out("packets", self.packets);
        out("bytes", self.bytes);
        out("tcp", self.tcp);
        out("udp", self.udp);
        out("icmp", self.icmp);
        out("esp", self.esp);
        out("other", self.other);
    }
}

/// A token bucket: `rate` bytes per second, up to `burst` bytes at once.
#[derive(Debug)]
pub struct RateLimiter {
    rate: u64,
    burst: u64,
    /// Tokens in nano-bytes (bytes × 10⁹) so that refill needs no division per packet.
    tokens: u128,
    last: Option<Instant>,
    passed: u64,
    limited: u64,
}

impl RateLimiter {
    /// `rate` bytes per second with a bucket of `burst` bytes (which starts full).
    pub fn new(rate: u64, burst: u64) -> Self {
        Self { rate, burst, tokens: u128::from(burst) * 1_000_000_000, last: None, passed: 0, limited: 0 }
    }
}

impl ServiceFunction for RateLimiter {
    fn kind(&self) -> &'static str {
        "rate_limiter"
    }
    fn process(&mut self, ctx: &SfContext<'_>, pkt: PacketBuf) -> SfVerdict {
        let cap = u128::from(self.burst) * 1_000_000_000;
        if let Some(last) = self.last {
            let elapsed = ctx.now.saturating_since(last).as_nanos();
            self.tokens = (self.tokens + elapsed * u128::from(self.rate)).min(cap);
        }
        self.last = Some(ctx.now);
        let cost = pkt.len() as u128 * 1_000_000_000;
        if self.tokens >= cost {
            self.tokens -= cost;
            self.passed += 1;
            SfVerdict::Pass(pkt)
        } else {
            self.limited += 1;
            SfVerdict::Drop(pkt, DropReason::SfRateLimited)
        }
    }
    fn counters(&self, out: &mut dyn FnMut(&'static str, u64)) {
        out("passed", self.passed);
        out("limited", self.limited);
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use zsfc_dataplane::{Instant, SfContext};
    use zsfc_wire::{checksum, ipv4, ipv6, tcp, udp};

    pub(crate) fn ctx(now: Instant) -> SfContext<'static> {
        SfContext { now, label: 100, metadata: &[], subscriber: None }
    }

    pub(crate) fn v4(proto: u8, src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16, payload: &[u8]) -> Vec<u8> {
        let l4len = if proto == 6 { 20 } else { 8 };
        let mut b = vec![0u8; 20 + l4len + payload.len()];
        b[20 + l4len..].copy_from_slice(payload);
        let len = (l4len + payload.len()) as u16;
        let pseudo = checksum::pseudo_v4(src, dst, proto, len);
        if proto == 6 {
            tcp::Repr { src_port: sp, dst_port: dp, seq: 1, ack: 1, flags: tcp::flags::ACK, window: 9 }
                .emit(&mut b[20..], Some(pseudo))
                .unwrap();
        } else {
            udp::Repr { src_port: sp, dst_port: dp }.emit(&mut b[20..], payload.len(), Some(pseudo)).unwrap();
        }
        ipv4::Repr::new(src, dst, proto, len).emit(&mut b).unwrap();
        b
    }

    pub(crate) fn v6_udp(src: [u8; 16], sp: u16, dst: [u8; 16], dp: u16, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 48 + payload.len()];
        b[48..].copy_from_slice(payload);
        let len = 8 + payload.len();
        udp::Repr { src_port: sp, dst_port: dp }
            .emit(&mut b[40..], payload.len(), Some(checksum::pseudo_v6(src, dst, 17, len as u32)))
            .unwrap();
        ipv6::Repr {
            src,
            dst,
            next_header: 17,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
            payload_len: len as u16,
        }
        .emit(&mut b)
        .unwrap();
        b
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn rate_limiter_passes_burst_then_refills_at_rate() {
        let pkt = v4(17, [1, 1, 1, 1], 1, [2, 2, 2, 2], 2, &[0; 72]); // 100 bytes
        let mut rl = RateLimiter::new(1000, 300);
        let mut run = |t_ms: u64| {
            matches!(rl.process(&ctx(Instant::from_millis(t_ms)), PacketBuf::from_slice(&pkt)), SfVerdict::Pass(_))
        };
        assert_eq!((0..4).map(|_| run(0)).collect::<Vec<_>>(), vec![true, true, true, false]);
        assert!(!run(50)); // 50 bytes refilled: not enough
        assert!(run(100)); // 100 bytes
        let mut seen = Vec::new();
        rl.counters(&mut |n, v| seen.push((n, v)));
        assert_eq!(seen, vec![("passed", 4), ("limited", 2)]);
    }

    #[test]
    fn counter_counts_by_protocol() {
        let mut c = Counter::default();
        for p in [v4(6, [1; 4], 1, [2; 4], 2, b"x"), v4(17, [1; 4], 1, [2; 4], 2, b"y"), vec![0x45]] {
            assert!(matches!(c.process(&ctx(Instant::ZERO), PacketBuf::from_slice(&p)), SfVerdict::Pass(_)));
        }
        let mut seen = std::collections::HashMap::new();
        c.counters(&mut |n, v| {
            seen.insert(n, v);
        });
        assert_eq!((seen["packets"], seen["tcp"], seen["udp"], seen["other"]), (3, 1, 1, 1));
    }
}

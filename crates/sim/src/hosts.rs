//! Fake end hosts: the local side of a node in the simulation.
use crate::packets::{self, Flow, Parsed};
use zsfc_dataplane::Instant;

/// What sits on the local side of a node: clients at an ingress, the service at an egress.
pub trait LocalSide {
    /// A packet the node delivered; returns packets to send back into the node.
    fn deliver(&mut self, now: Instant, pkt: &[u8]) -> Vec<Vec<u8>>;
    fn as_any(&self) -> &dyn core::any::Any;
}

/// Records what a node delivered whether or not it parses, and checks that it is a plain,
/// well-formed IP packet.
#[derive(Debug, Default)]
pub struct ClientSide {
    pub received: Vec<Parsed>,
    /// Delivered bytes that were not a plain TCP/UDP packet with valid checksums.
    pub malformed: Vec<Vec<u8>>,
}

impl LocalSide for ClientSide {
    fn deliver(&mut self, _: Instant, pkt: &[u8]) -> Vec<Vec<u8>> {
        match packets::dissect(pkt) {
            Some(p) if p.checksums_ok => self.received.push(p),
            _ => self.malformed.push(pkt.to_vec()),
        }
        Vec::new()
    }
    fn as_any(&self) -> &dyn core::any::Any {
        self
    }
}

/// A fake service: records every packet and answers it with `"re:" ‖ payload` on the
/// reversed flow. Anything that is not a plain TCP/UDP packet with valid checksums (labels,
/// NSH, ESP, a broken checksum) is recorded as malformed and not answered.
#[derive(Debug, Default)]
pub struct FakeEchoService {
    pub received: Vec<Parsed>,
    pub malformed: Vec<Vec<u8>>,
    /// The bytes of every packet delivered, in order.
    pub raw: Vec<Vec<u8>>,
}

impl LocalSide for FakeEchoService {
    fn deliver(&mut self, _: Instant, pkt: &[u8]) -> Vec<Vec<u8>> {
        self.raw.push(pkt.to_vec());
        match packets::dissect(pkt) {
            Some(p) if p.checksums_ok => {
                let mut payload = b"re:".to_vec();
                payload.extend_from_slice(&p.payload);
                let reply = packets::build(&Flow::reversed(&p.flow), p.seq, &payload);
                self.received.push(p);
                vec![reply]
            }
            _ => {
                self.malformed.push(pkt.to_vec());
                Vec::new()
            }
        }
    }
    fn as_any(&self) -> &dyn core::any::Any {
        self
    }
}

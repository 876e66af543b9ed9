//! The interface between the node and a service function.
use crate::DropReason;
use zsfc_esp::Instant;
use zsfc_wire::PacketBuf;

/// What an SF did with a packet. The buffer always comes back unless the SF keeps it.
#[derive(Debug)]
pub enum SfVerdict {
    /// Continue along the chain (possibly modified).
    Pass(PacketBuf),
    /// Drop, with the reason counted by the node.
    Drop(PacketBuf, DropReason),
    /// The SF keeps the packet for now and returns it from [`ServiceFunction::poll_release`].
    Held,
}

/// What an SF may know about the packet besides its bytes.
#[derive(Debug, Clone, Copy)]
pub struct SfContext<'a> {
    pub now: Instant,
    /// Label of this SF instance.
    pub label: u32,
    /// MD type 2 context headers of the packet's NSH (empty without one).
    pub metadata: &'a [u8],
    /// The RFC 8979 subscriber id, decrypted, for an SF that [wants it](ServiceFunction::wants_subscriber)
    /// on a node that may read the chain's encrypted metadata.
    pub subscriber: Option<u64>,
}

/// A service function: plain code over a packet buffer, given the time. The packet starts at
/// its IP header; intrusive SFs see the plaintext, non-intrusive ones the ESP packet.
pub trait ServiceFunction: Send {
    /// A short name of the kind of SF ("firewall", "dpi", ...).
    fn kind(&self) -> &'static str;

    fn process(&mut self, ctx: &SfContext<'_>, pkt: PacketBuf) -> SfVerdict;

    /// A held packet whose time has come.
    fn poll_release(&mut self, _now: Instant) -> Option<PacketBuf> {
        None
    }

    /// When [`poll_release`](Self::poll_release) will next have something.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// Reports this SF's counters as (name, value) pairs.
    fn counters(&self, out: &mut dyn FnMut(&'static str, u64));

    /// Whether the SF reads [`SfContext::subscriber`]: decrypting it costs an AES-GCM open per
    /// packet, so only SFs that ask get it.
    fn wants_subscriber(&self) -> bool {
        false
    }
}

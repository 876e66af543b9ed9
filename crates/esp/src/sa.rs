//! Security associations: outbound (seal) and inbound (open), tunnel mode for payloads (IPv4
//! and IPv6), and the link transform around labelled packets.
use crate::key::{Algorithm, SALT_LEN, SaKey};
use crate::replay::{DEFAULT_WINDOW, ReplayError, ReplayWindow};
use crate::time::Instant;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroize;
use zsfc_wire::esp::{self as wesp, HEADER_LEN, ICV_LEN, IV_LEN, TRAILER_LEN};
use zsfc_wire::{PacketBuf, checksum, ip, ipv4, ipv6};

/// Most bytes link ESP adds to a packet: header + IV + 3 padding + trailer + ICV.
pub const OVERHEAD_MAX: usize = HEADER_LEN + IV_LEN + 3 + TRAILER_LEN + ICV_LEN;
/// Most bytes payload ESP (tunnel mode) adds to an IP packet: the outer IPv6 header and
/// [`OVERHEAD_MAX`] (20 fewer for IPv4).
pub const TUNNEL_OVERHEAD_MAX: usize = ipv6::HEADER_LEN + OVERHEAD_MAX;
const HDR_IV: usize = HEADER_LEN + IV_LEN;

/// One set of lifetime limits. `u64::MAX` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub packets: u64,
    pub bytes: u64,
    /// Nanoseconds since the SA was installed.
    pub time_ns: u64,
}

impl Limits {
    pub const UNLIMITED: Self = Self { packets: u64::MAX, bytes: u64::MAX, time_ns: u64::MAX };
}

/// Soft (ask for a rekey) and hard (stop using the key) lifetimes, as in RFC 9061's
/// `sa-lifetime-soft` / `sa-lifetime-hard`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub soft: Limits,
    pub hard: Limits,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self { soft: Limits::UNLIMITED, hard: Limits::UNLIMITED }
    }
}

/// Which limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Packets,
    Bytes,
    Time,
    /// The sequence number space is exhausted (2^32-1 without ESN; RFC 4303 §3.3.3).
    SequenceNumbers,
}

/// Everything needed to install one SA.
#[derive(Debug, Clone)]
pub struct SaConfig {
    pub spi: u32,
    pub key: SaKey,
    /// Extended (64-bit) sequence numbers (RFC 4303 §2.2.1).
    pub esn: bool,
    /// Anti-replay window in packets (inbound only).
    pub replay_window: u64,
    pub lifetimes: Lifetimes,
    /// The sequence number the SA starts after: 0 in service (the first packet carries 1,
    /// RFC 4303 §3.3.3). Interop tests set it near 2^32 to cross the ESN boundary without
    /// sending four billion packets first; both ends of the SA must be given the same value.
    pub first_seq: u64,
}

impl SaConfig {
    pub fn new(spi: u32, key: SaKey) -> Self {
        Self { spi, key, esn: true, replay_window: DEFAULT_WINDOW, lifetimes: Lifetimes::default(), first_seq: 0 }
    }
}

/// State shared by both directions: the AEAD key, the salt and lifetime accounting.
struct Crypto {
    spi: u32,
    alg: Algorithm,
    /// `None` once erased (hard lifetime): the key schedule is freed and cleansed by AWS-LC.
    aead: Option<LessSafeKey>,
    salt: [u8; SALT_LEN],
    esn: bool,
    lifetimes: Lifetimes,
    installed: Instant,
    packets: u64,
    bytes: u64,
}

impl Drop for Crypto {
    fn drop(&mut self) {
        // The AES key schedule lives in AWS-LC, which cleanses it when the context is freed.
        self.salt.zeroize();
    }
}

impl Crypto {
    fn new(cfg: &SaConfig, now: Instant) -> Result<Self, crate::KeyError> {
        let unbound =
            UnboundKey::new(cfg.key.algorithm().aead(), cfg.key.key()).map_err(|_| crate::KeyError::Rejected)?;
        Ok(Self {
            spi: cfg.spi,
            alg: cfg.key.algorithm(),
            aead: Some(LessSafeKey::new(unbound)),
            salt: cfg.key.salt(),
            esn: cfg.esn,
            lifetimes: cfg.lifetimes,
            installed: now,
            packets: 0,
            bytes: 0,
        })
    }

    /// The hard limit reached at `now`; an erased SA has reached its time.
    fn hard(&self, now: Instant) -> Option<Limit> {
        if self.aead.is_none() { Some(Limit::Time) } else { self.exceeded(&self.lifetimes.hard, now) }
    }

    /// The key, unless erased.
    fn key(&self) -> Option<&LessSafeKey> {
        self.aead.as_ref()
    }

    /// Forgets the key material (RFC 9061 §7.2: keys live only as long as they are used).
    fn erase(&mut self) {
        self.aead = None;
        self.salt.zeroize();
    }

    fn exceeded(&self, l: &Limits, now: Instant) -> Option<Limit> {
        if self.packets >= l.packets {
            Some(Limit::Packets)
        } else if self.bytes >= l.bytes {
            Some(Limit::Bytes)
        } else if now.saturating_since(self.installed).as_nanos() >= u128::from(l.time_ns) {
            Some(Limit::Time)
        } else {
            None
        }
    }

    fn nonce(&self, iv: [u8; IV_LEN]) -> Nonce {
        let mut n = [0u8; 12];
        n[..SALT_LEN].copy_from_slice(&self.salt);
        n[SALT_LEN..].copy_from_slice(&iv);
        Nonce::assume_unique_for_key(n)
    }

    /// The high half of the sequence number, which RFC 4543 §3.3 puts into the AAD of a GMAC
    /// packet when the SA uses extended sequence numbers.
    fn esn_high(&self, seq: u64) -> Option<u32> {
        self.esn.then_some((seq >> 32) as u32)
    }

    /// RFC 4106 §5: AAD is SPI ‖ 32-bit seq, or SPI ‖ 64-bit ESN.
    fn aad(&self, seq: u64) -> ([u8; 12], usize) {
        let mut a = [0u8; 12];
        a[..4].copy_from_slice(&self.spi.to_be_bytes());
        if self.esn {
            a[4..].copy_from_slice(&seq.to_be_bytes());
            (a, 12)
        } else {
            a[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
            (a, 8)
        }
    }

    fn debug(&self, f: &mut core::fmt::Formatter<'_>, name: &str) -> core::fmt::Result {
        f.debug_struct(name)
            .field("spi", &format_args!("{:#010x}", self.spi))
            .field("alg", &self.alg)
            .field("esn", &self.esn)
            .field("key", &"<redacted>")
            .field("packets", &self.packets)
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// Why a packet could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("hard lifetime reached ({0:?})")]
    HardLimit(Limit),
    #[error("not an IP packet that payload ESP can carry: {0}")]
    Packet(zsfc_wire::Error),
    #[error("the sealed packet would exceed 65535 bytes")]
    TooBig,
    #[error("an authentication-only (GMAC) SA protects links, not payloads")]
    AuthOnly,
}

/// What [`OutboundSa::seal`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sealed {
    pub seq: u64,
    /// The soft lifetime is reached: the controller should be asked for a new SA.
    pub rekey_wanted: bool,
}

/// The sending side of an SA.
pub struct OutboundSa {
    c: Crypto,
    /// The last sequence number used (0: none yet).
    seq: u64,
}

impl core::fmt::Debug for OutboundSa {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.c.debug(f, "OutboundSa")
    }
}

impl OutboundSa {
    pub fn new(cfg: &SaConfig, now: Instant) -> Result<Self, crate::KeyError> {
        Ok(Self { c: Crypto::new(cfg, now)?, seq: cfg.first_seq })
    }

    pub fn spi(&self) -> u32 {
        self.c.spi
    }

    /// Sequence number of the last packet sealed.
    pub fn last_seq(&self) -> u64 {
        self.seq
    }

    /// Is the hard lifetime reached at `now`? (A node also checks this without traffic.)
    pub fn hard_expired(&self, now: Instant) -> Option<Limit> {
        self.c.hard(now)
    }

    /// Forgets the key (at the hard lifetime); the SA refuses to seal from then on.
    pub fn erase(&mut self) {
        self.c.erase();
    }

    pub fn is_erased(&self) -> bool {
        self.c.aead.is_none()
    }

    /// Encrypts the IP packet that starts `buf` in ESP tunnel mode (RFC 4303 §3.1.2): the whole
    /// packet, its header included, becomes the encrypted payload (next header 4 or 41) behind
    /// an outer header that copies the inner one (addresses, DSCP and ECN, DF, TTL or hop limit,
    /// flow label; protocol 50), so the path and non-intrusive SFs see the same header as before.
    /// The inner header is thereby authenticated end to end, and [`InboundSa::open`] compares
    /// the outer header with it (RFC 4301 §5.2): a hop that rewrote it is found out.
    pub fn seal(&mut self, now: Instant, buf: &mut PacketBuf) -> Result<Sealed, SealError> {
        let s = ip::parse(buf.as_slice()).map_err(SealError::Packet)?;
        // Later fragments carry no ports to classify by (the classifier never sends them).
        if s.later_fragment || s.tuple.protocol == ip::protocol::ESP {
            return Err(SealError::Packet(zsfc_wire::Error::Unsupported));
        }
        if self.c.alg.authenticates_only() {
            return Err(SealError::AuthOnly);
        }
        let seq = self.next_seq(now)?;
        let (outer_len, next_header) =
            if s.is_v4() { (ipv4::MIN_HEADER_LEN, ip::protocol::IPV4) } else { (ipv6::HEADER_LEN, ip::protocol::IPV6) };
        let payload_len = s.total_len;
        let pad = wesp::pad_len(payload_len);
        let new_total = outer_len + HDR_IV + payload_len + pad + TRAILER_LEN + ICV_LEN;
        if new_total > usize::from(u16::MAX) + if s.is_v4() { 0 } else { ipv6::HEADER_LEN } {
            return Err(SealError::TooBig);
        }
        if buf.headroom() < outer_len + HDR_IV
            || buf.tailroom() + (buf.len() - s.total_len) < pad + TRAILER_LEN + ICV_LEN
        {
            return Err(SealError::Packet(zsfc_wire::Error::NoRoom));
        }
        // Link-layer padding after the IP packet is not part of it.
        buf.trim_back(buf.len() - s.total_len).map_err(SealError::Packet)?;
        wesp::emit_trailer(buf.push_back(pad + TRAILER_LEN).map_err(SealError::Packet)?, next_header)
            .map_err(SealError::Packet)?;
        buf.push_back(ICV_LEN).map_err(SealError::Packet)?;
        buf.push_front(outer_len + HDR_IV).map_err(SealError::Packet)?;
        let iv = seq.to_be_bytes();
        let (head, rest) = buf.as_mut_slice().split_at_mut(outer_len + HDR_IV);
        outer_header(&mut head[..outer_len], rest, new_total);
        wesp::emit_header(&mut head[outer_len..], self.c.spi, seq as u32).map_err(SealError::Packet)?;
        head[outer_len + HEADER_LEN..].copy_from_slice(&iv);

        let (aad, aad_len) = self.c.aad(seq);
        let (plain, icv) = rest.split_at_mut(rest.len() - ICV_LEN);
        let key = self.c.key().ok_or(SealError::HardLimit(Limit::Time))?;
        let tag = key
            .seal_in_place_separate_tag(self.c.nonce(iv), Aad::from(&aad[..aad_len]), plain)
            .map_err(|_| SealError::Packet(zsfc_wire::Error::Malformed))?;
        icv.copy_from_slice(tag.as_ref());
        Ok(self.account(now, seq, payload_len))
    }

    /// Wraps the whole of `buf` (a labelled packet, not an IP packet) as the payload of an ESP
    /// packet with `next_header` in its trailer: the link-protected transport between two
    /// adjacent nodes. With a GMAC SA (RFC 4543) header, IV, payload and trailer are all
    /// authenticated and nothing is encrypted; with a GCM SA the payload is encrypted too.
    pub fn seal_link(&mut self, now: Instant, buf: &mut PacketBuf, next_header: u8) -> Result<Sealed, SealError> {
        let seq = self.next_seq(now)?;
        let payload_len = buf.len();
        let pad = wesp::pad_len(payload_len);
        if buf.headroom() < HDR_IV || buf.tailroom() < pad + TRAILER_LEN + ICV_LEN {
            return Err(SealError::Packet(zsfc_wire::Error::NoRoom));
        }
        if payload_len + HDR_IV + pad + TRAILER_LEN + ICV_LEN > usize::from(u16::MAX) {
            return Err(SealError::TooBig);
        }
        wesp::emit_trailer(buf.push_back(pad + TRAILER_LEN).map_err(SealError::Packet)?, next_header)
            .map_err(SealError::Packet)?;
        buf.push_back(ICV_LEN).map_err(SealError::Packet)?;
        let iv = seq.to_be_bytes();
        let h = buf.push_front(HDR_IV).map_err(SealError::Packet)?;
        wesp::emit_header(h, self.c.spi, seq as u32).map_err(SealError::Packet)?;
        h[HEADER_LEN..].copy_from_slice(&iv);

        let nonce = self.c.nonce(iv);
        let key = self.c.key().ok_or(SealError::HardLimit(Limit::Time))?;
        let sealed = if self.c.alg.authenticates_only() {
            // RFC 4543 §3.3: everything is AAD, the plaintext is empty. The IV is the 64-bit
            // sequence number: it never repeats under one key (§3.1 asks only that).
            gmac_in_place(buf, self.c.esn_high(seq), |aad, icv| {
                key.seal_in_place_separate_tag(nonce, Aad::from(aad), &mut [])
                    .map(|tag| icv.copy_from_slice(tag.as_ref()))
            })
            .map_err(SealError::Packet)?
        } else {
            let pkt = buf.as_mut_slice();
            let body_end = pkt.len() - ICV_LEN;
            let (body, icv) = pkt.split_at_mut(body_end);
            let (aad, aad_len) = self.c.aad(seq);
            key.seal_in_place_separate_tag(nonce, Aad::from(&aad[..aad_len]), &mut body[HDR_IV..])
                .map(|tag| icv.copy_from_slice(tag.as_ref()))
        };
        sealed.map_err(|_| SealError::Packet(zsfc_wire::Error::Malformed))?;
        Ok(self.account(now, seq, payload_len))
    }

    /// The next sequence number, if the SA may still seal at `now`.
    fn next_seq(&self, now: Instant) -> Result<u64, SealError> {
        if let Some(l) = self.c.hard(now) {
            return Err(SealError::HardLimit(l));
        }
        let seq = self.seq + 1;
        if !self.c.esn && seq > u64::from(u32::MAX) || seq == u64::MAX {
            return Err(SealError::HardLimit(Limit::SequenceNumbers));
        }
        Ok(seq)
    }

    fn account(&mut self, now: Instant, seq: u64, payload_len: usize) -> Sealed {
        self.seq = seq;
        self.c.packets += 1;
        self.c.bytes += payload_len as u64;
        let rekey_wanted = self.c.exceeded(&self.c.lifetimes.soft, now).is_some()
            || (!self.c.esn && seq > u64::from(u32::MAX) - (u64::from(u32::MAX) >> 4));
        Sealed { seq, rekey_wanted }
    }
}

/// Why an inbound packet was refused. Each maps to one drop counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("not an ESP packet: {0}")]
    Packet(zsfc_wire::Error),
    #[error("SPI does not belong to this SA")]
    WrongSpi,
    #[error("replay: {0}")]
    Replay(ReplayError),
    #[error("ICV check failed")]
    Auth,
    #[error("authenticated packet has a bad ESP trailer")]
    Trailer,
    #[error("SA hard lifetime reached ({0:?})")]
    Expired(Limit),
    #[error("an authentication-only (GMAC) SA protects links, not payloads")]
    AuthOnly,
    /// An authentic dummy packet (next header 59, RFC 4303 §2.6): the receiver discards it.
    #[error("dummy packet (next header 59)")]
    Dummy,
    /// The outer header of an authentic tunnel-mode packet does not carry the inner header's
    /// addresses (or IPv6 flow label): a hop rewrote it (RFC 4301 §5.2).
    #[error("the outer header does not match the authenticated inner header")]
    HeaderMismatch,
    /// An authentic packet that is not tunnel mode: its next header is not 4 or 41.
    #[error("authenticated packet carries next header {0}, not an IP packet (tunnel mode)")]
    NotTunnel(u8),
}

/// Next header of a dummy packet, which traffic-flow confidentiality may send (RFC 4303 §2.6);
/// every receiver discards it silently.
pub const NEXT_HEADER_DUMMY: u8 = 59;

/// What [`InboundSa::open`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    pub seq: u64,
    pub next_header: u8,
}

/// The receiving side of an SA, with its replay window.
pub struct InboundSa {
    c: Crypto,
    window: ReplayWindow,
}

impl core::fmt::Debug for InboundSa {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.c.debug(f, "InboundSa")
    }
}

/// The SPI of the ESP packet that starts `b` (an IP packet), for the SA lookup.
pub fn spi_of(b: &[u8]) -> Result<u32, OpenError> {
    let s = ip::parse(b).map_err(OpenError::Packet)?;
    if s.tuple.protocol != wesp::PROTOCOL || s.later_fragment {
        return Err(OpenError::Packet(zsfc_wire::Error::Unsupported));
    }
    let p = b.get(s.l4_offset..s.total_len).ok_or(OpenError::Packet(zsfc_wire::Error::Truncated))?;
    Ok(wesp::Packet::new_checked(p).map_err(OpenError::Packet)?.spi())
}

impl InboundSa {
    pub fn new(cfg: &SaConfig, now: Instant) -> Result<Self, crate::KeyError> {
        Ok(Self { c: Crypto::new(cfg, now)?, window: ReplayWindow::starting_after(cfg.replay_window, cfg.first_seq) })
    }

    pub fn spi(&self) -> u32 {
        self.c.spi
    }

    pub fn hard_expired(&self, now: Instant) -> Option<Limit> {
        self.c.hard(now)
    }

    /// Forgets the key (at the hard lifetime); the SA refuses every packet from then on.
    pub fn erase(&mut self) {
        self.c.erase();
    }

    pub fn is_erased(&self) -> bool {
        self.c.aead.is_none()
    }

    /// Highest sequence number accepted.
    pub fn highest_seq(&self) -> u64 {
        self.window.top()
    }

    /// Decrypts the ESP tunnel-mode packet that starts `buf`, in place, leaving the inner IP
    /// packet. The inner packet must be IPv4 or IPv6 as the trailer says, and its immutable
    /// header fields must be those of the outer header (RFC 4301 §5.2): addresses, and for IPv6
    /// the flow label (the protocol is the inner one, inside the ciphertext). On error the
    /// buffer content is unspecified (the caller drops it).
    pub fn open(&mut self, now: Instant, buf: &mut PacketBuf) -> Result<Opened, OpenError> {
        let s = ip::parse(buf.as_slice()).map_err(OpenError::Packet)?;
        if s.tuple.protocol != wesp::PROTOCOL || s.later_fragment {
            return Err(OpenError::Packet(zsfc_wire::Error::Unsupported));
        }
        if self.c.alg.authenticates_only() {
            return Err(OpenError::AuthOnly);
        }
        let esp_at = s.l4_offset;
        // 1. Cheap checks before any crypto (RFC 4303 §3.4.3).
        let (seq, iv) = self.precheck(now, &buf.as_slice()[esp_at..s.total_len])?;
        // 2. Authenticate and decrypt.
        buf.trim_back(buf.len() - s.total_len).map_err(OpenError::Packet)?;
        let (aad, aad_len) = self.c.aad(seq);
        let nonce = self.c.nonce(iv);
        let (outer, esp) = buf.as_mut_slice().split_at_mut(esp_at);
        let plain = self
            .c
            .key()
            .ok_or(OpenError::Expired(Limit::Time))?
            .open_in_place(nonce, Aad::from(&aad[..aad_len]), &mut esp[HDR_IV..])
            .map_err(|_| OpenError::Auth)?;
        // 3. Only an authentic packet moves the window.
        self.window.mark(seq);
        let (payload_len, next_header) = wesp::parse_trailer(plain).map_err(|_| OpenError::Trailer)?;
        self.c.packets += 1;
        self.c.bytes += payload_len as u64;
        if next_header == NEXT_HEADER_DUMMY {
            return Err(OpenError::Dummy);
        }
        inner_matches_outer(outer, &plain[..payload_len], next_header)?;
        let strip_tail = plain.len() - payload_len + ICV_LEN;
        buf.trim_back(strip_tail).map_err(OpenError::Packet)?;
        buf.pull_front(esp_at + HDR_IV).map_err(OpenError::Packet)?;
        Ok(Opened { seq, next_header })
    }

    /// Opens what [`OutboundSa::seal_link`] made: `buf` starts with the ESP header and, on
    /// success, holds the payload alone. On error the buffer content is unspecified.
    pub fn open_link(&mut self, now: Instant, buf: &mut PacketBuf) -> Result<Opened, OpenError> {
        // The IV is only an input to the nonce: any value the sender chose is accepted
        // (RFC 4543 §3.1 leaves its construction to the sender, which must never repeat it).
        let (seq, iv) = self.precheck(now, buf.as_slice())?;
        let nonce = self.c.nonce(iv);
        let key = self.c.key().ok_or(OpenError::Expired(Limit::Time))?;
        if self.c.alg.authenticates_only() {
            gmac_in_place(buf, self.c.esn_high(seq), |aad, icv| {
                key.open_in_place(nonce, Aad::from(aad), icv).map(|_| ())
            })
            .map_err(OpenError::Packet)?
            .map_err(|_| OpenError::Auth)?;
        } else {
            let (aad, aad_len) = self.c.aad(seq);
            key.open_in_place(nonce, Aad::from(&aad[..aad_len]), &mut buf.as_mut_slice()[HDR_IV..])
                .map_err(|_| OpenError::Auth)?;
        }
        self.window.mark(seq);
        let pkt = buf.as_slice();
        let n = pkt.len();
        let (payload_len, next_header) =
            wesp::parse_trailer(&pkt[HDR_IV..n - ICV_LEN]).map_err(|_| OpenError::Trailer)?;
        self.c.packets += 1;
        self.c.bytes += payload_len as u64;
        if next_header == NEXT_HEADER_DUMMY {
            return Err(OpenError::Dummy);
        }
        buf.trim_back(n - HDR_IV - payload_len).map_err(OpenError::Packet)?;
        buf.pull_front(HDR_IV).map_err(OpenError::Packet)?;
        Ok(Opened { seq, next_header })
    }

    /// SPI, lifetime and replay window against the ESP packet `esp`: the full sequence number
    /// and the IV, or why the packet is refused before any crypto.
    fn precheck(&self, now: Instant, esp: &[u8]) -> Result<(u64, [u8; IV_LEN]), OpenError> {
        let p = wesp::Packet::new_checked(esp).map_err(OpenError::Packet)?;
        if p.spi() != self.c.spi {
            return Err(OpenError::WrongSpi);
        }
        if let Some(l) = self.c.hard(now) {
            return Err(OpenError::Expired(l));
        }
        let seq = if self.c.esn {
            self.window.infer_esn(p.seq()).ok_or(OpenError::Replay(ReplayError::TooOld))?
        } else {
            u64::from(p.seq())
        };
        self.window.check(seq).map_err(OpenError::Replay)?;
        Ok((seq, p.iv()))
    }
}

/// Runs `f` on the AAD and the ICV of the GMAC ESP packet that is `buf` (ESP header to ICV).
/// RFC 4543 §3.3, figures 5 and 6: the AAD is the packet up to the ICV, and with an ESN it is
/// SPI ‖ seq-high ‖ seq-low ‖ IV ‖ payload ‖ trailer — four bytes that are not on the wire. They
/// are put in place through the headroom (SPI moved four bytes forward, seq-high where it was)
/// and the header is restored afterwards, so the payload is never copied.
fn gmac_in_place<R>(
    buf: &mut PacketBuf,
    esn_high: Option<u32>,
    f: impl FnOnce(&[u8], &mut [u8]) -> R,
) -> Result<R, zsfc_wire::Error> {
    let extra = if esn_high.is_some() { 4 } else { 0 };
    if buf.len() < HDR_IV + ICV_LEN {
        return Err(zsfc_wire::Error::Truncated);
    }
    if let Some(hi) = esn_high {
        buf.push_front(extra)?;
        let pkt = buf.as_mut_slice();
        pkt.copy_within(4..8, 0);
        pkt[4..8].copy_from_slice(&hi.to_be_bytes());
    }
    let pkt = buf.as_mut_slice();
    let body_end = pkt.len() - ICV_LEN;
    let (body, icv) = pkt.split_at_mut(body_end);
    let r = f(body, icv);
    if extra > 0 {
        pkt.copy_within(0..4, 4);
        buf.pull_front(extra)?;
    }
    Ok(r)
}

/// Writes into `out` the outer header of a tunnel-mode packet of `total` bytes whose inner IP
/// packet is at the start of `inner`: a copy of the inner base header (RFC 4301 §5.1.2: DSCP and
/// ECN, DF, TTL or hop limit, flow label copied) without IPv4 options or IPv6 extension headers,
/// protocol ESP, and for IPv4 no fragment fields and a new checksum.
fn outer_header(out: &mut [u8], inner: &[u8], total: usize) {
    out.copy_from_slice(&inner[..out.len()]);
    if out.len() == ipv4::MIN_HEADER_LEN {
        out[ipv4::field::VER_IHL] = 0x45;
        out[ipv4::field::FLAGS_FRAG] &= 0x40;
        out[ipv4::field::FLAGS_FRAG + 1] = 0;
        out[ipv4::field::PROTOCOL] = wesp::PROTOCOL;
        out[ipv4::field::TOTAL_LEN..ipv4::field::TOTAL_LEN + 2].copy_from_slice(&(total as u16).to_be_bytes());
        out[ipv4::field::CHECKSUM..ipv4::field::CHECKSUM + 2].fill(0);
        let c = checksum::finish(checksum::sum(out));
        out[ipv4::field::CHECKSUM..ipv4::field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
    } else {
        out[ipv6::field::PAYLOAD_LEN..ipv6::field::PAYLOAD_LEN + 2]
            .copy_from_slice(&((total - ipv6::HEADER_LEN) as u16).to_be_bytes());
        out[ipv6::field::NEXT_HEADER] = wesp::PROTOCOL;
    }
}

/// RFC 4301 §5.2: the decrypted inner packet is the IP version the trailer names, is exactly
/// the payload, and carries the outer header's immutable fields (IPv4: addresses; IPv6:
/// addresses and flow label). Anything else is an outer header changed on the way, or a sender
/// that is not in tunnel mode.
fn inner_matches_outer(outer: &[u8], inner: &[u8], next_header: u8) -> Result<(), OpenError> {
    match next_header {
        ip::protocol::IPV4 => {
            let i = ipv4::Packet::new_checked(inner).map_err(|_| OpenError::Trailer)?;
            if usize::from(i.total_len()) != inner.len() {
                return Err(OpenError::Trailer);
            }
            // The outer header's own length field covers the ESP packet, so it is read raw.
            let addresses = ipv4::field::SRC.start..ipv4::field::DST.end;
            if outer.first().map(|b| b >> 4) != Some(4) || outer.get(addresses.clone()) != inner.get(addresses) {
                return Err(OpenError::HeaderMismatch);
            }
        }
        ip::protocol::IPV6 => {
            let i = ipv6::Packet::new_checked(inner).map_err(|_| OpenError::Trailer)?;
            if ipv6::HEADER_LEN + usize::from(i.payload_len()) != inner.len() {
                return Err(OpenError::Trailer);
            }
            let addresses = ipv6::field::SRC.start..ipv6::field::DST.end;
            let flow_label = |h: &[u8]| h.get(1..4).map(|b| u32::from_be_bytes([0, b[0] & 0x0f, b[1], b[2]]));
            if outer.first().map(|b| b >> 4) != Some(6)
                || outer.get(addresses.clone()) != inner.get(addresses)
                || flow_label(outer) != flow_label(inner)
            {
                return Err(OpenError::HeaderMismatch);
            }
        }
        _ => return Err(OpenError::NotTunnel(next_header)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet() -> PacketBuf {
        let mut b = [0u8; 28];
        ipv4::Repr {
            src: [1, 1, 1, 1],
            dst: [2, 2, 2, 2],
            protocol: 17,
            ttl: 1,
            ident: 0,
            tos: 0,
            dont_frag: false,
            payload_len: 8,
        }
        .emit(&mut b)
        .unwrap();
        PacketBuf::from_slice(&b)
    }

    #[test]
    fn never_wraps_a_32_bit_sequence_number() {
        let cfg = SaConfig { esn: false, ..SaConfig::new(1, SaKey::generate(Algorithm::Aes128Gcm).unwrap()) };
        let mut tx = OutboundSa::new(&cfg, Instant::ZERO).unwrap();
        tx.seq = u64::from(u32::MAX) - 1;
        assert!(tx.seal(Instant::ZERO, &mut packet()).unwrap().rekey_wanted);
        assert_eq!(tx.seal(Instant::ZERO, &mut packet()), Err(SealError::HardLimit(Limit::SequenceNumbers)));
    }

    #[test]
    fn esn_sender_continues_past_2_pow_32() {
        let cfg = SaConfig::new(1, SaKey::generate(Algorithm::Aes128Gcm).unwrap());
        let mut tx = OutboundSa::new(&cfg, Instant::ZERO).unwrap();
        let mut rx = InboundSa::new(&cfg, Instant::ZERO).unwrap();
        tx.seq = u64::from(u32::MAX) - 2;
        rx.window.mark(tx.seq);
        for _ in 0..5 {
            let mut p = packet();
            let s = tx.seal(Instant::ZERO, &mut p).unwrap();
            assert_eq!(rx.open(Instant::ZERO, &mut p).unwrap().seq, s.seq);
        }
        assert_eq!(rx.highest_seq(), u64::from(u32::MAX) + 3);
    }
}

//! Security associations: outbound (seal) and inbound (open), transport mode, IPv4 and IPv6.
use crate::key::{Algorithm, SALT_LEN, SaKey};
use crate::replay::{DEFAULT_WINDOW, ReplayError, ReplayWindow};
use crate::time::Instant;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroize;
use zsfc_wire::esp::{self as wesp, HEADER_LEN, ICV_LEN, IV_LEN, TRAILER_LEN};
use zsfc_wire::{PacketBuf, ip, ipv4, ipv6};

/// Most bytes ESP adds to a packet: header + IV + 3 padding + trailer + ICV.
pub const OVERHEAD_MAX: usize = HEADER_LEN + IV_LEN + 3 + TRAILER_LEN + ICV_LEN;
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
    #[error("not an IP packet that ESP transport mode can carry: {0}")]
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

    /// Encrypts the IP packet that starts `buf` in ESP transport mode.
    pub fn seal(&mut self, now: Instant, buf: &mut PacketBuf) -> Result<Sealed, SealError> {
        let s = ip::parse(buf.as_slice()).map_err(SealError::Packet)?;
        if s.later_fragment || s.tuple.protocol == ip::protocol::ESP {
            return Err(SealError::Packet(zsfc_wire::Error::Unsupported));
        }
        if self.c.alg.authenticates_only() {
            return Err(SealError::AuthOnly);
        }
        let seq = self.next_seq(now)?;
        let payload_len = s.total_len - s.esp_offset;
        let pad = wesp::pad_len(payload_len);
        let added = HDR_IV + pad + TRAILER_LEN + ICV_LEN;
        let new_total = s.total_len + added;
        if new_total > usize::from(u16::MAX) + if s.is_v4() { 0 } else { ipv6::HEADER_LEN } {
            return Err(SealError::TooBig);
        }
        if buf.headroom() < HDR_IV || buf.tailroom() + (buf.len() - s.total_len) < pad + TRAILER_LEN + ICV_LEN {
            return Err(SealError::Packet(zsfc_wire::Error::NoRoom));
        }
        // Link-layer padding after the IP packet is not part of it.
        buf.trim_back(buf.len() - s.total_len).map_err(SealError::Packet)?;

        let next_header = buf.as_slice()[s.esp_nh_field];
        wesp::emit_trailer(buf.push_back(pad + TRAILER_LEN).map_err(SealError::Packet)?, next_header)
            .map_err(SealError::Packet)?;
        buf.push_back(ICV_LEN).map_err(SealError::Packet)?;
        let gap = buf.open_gap(s.esp_offset, HDR_IV).map_err(SealError::Packet)?;
        wesp::emit_header(gap, self.c.spi, seq as u32).map_err(SealError::Packet)?;
        let iv = seq.to_be_bytes();
        gap[HEADER_LEN..].copy_from_slice(&iv);

        let pkt = buf.as_mut_slice();
        pkt[s.esp_nh_field] = wesp::PROTOCOL;
        set_ip_len(pkt, new_total);

        let (aad, aad_len) = self.c.aad(seq);
        let body_end = pkt.len() - ICV_LEN;
        let (body, icv) = pkt.split_at_mut(body_end);
        let plain = &mut body[s.esp_offset + HDR_IV..];
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

    /// Decrypts the ESP transport-mode packet that starts `buf`, in place. On error the
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
        let pkt = buf.as_mut_slice();
        let sealed = &mut pkt[esp_at + HDR_IV..];
        let plain = self
            .c
            .key()
            .ok_or(OpenError::Expired(Limit::Time))?
            .open_in_place(nonce, Aad::from(&aad[..aad_len]), sealed)
            .map_err(|_| OpenError::Auth)?;
        // 3. Only an authentic packet moves the window.
        self.window.mark(seq);
        let (payload_len, next_header) = wesp::parse_trailer(plain).map_err(|_| OpenError::Trailer)?;
        self.c.packets += 1;
        self.c.bytes += payload_len as u64;
        if next_header == NEXT_HEADER_DUMMY {
            return Err(OpenError::Dummy);
        }
        let strip_tail = plain.len() - payload_len + ICV_LEN;
        pkt[s.l4_nh_field] = next_header;
        let new_total = s.total_len - HDR_IV - strip_tail;
        set_ip_len(pkt, new_total);
        buf.trim_back(strip_tail).map_err(OpenError::Packet)?;
        buf.close_gap(esp_at, HDR_IV).map_err(OpenError::Packet)?;
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

/// Writes the new total length of the IP packet `pkt` (and the IPv4 header checksum).
fn set_ip_len(pkt: &mut [u8], total: usize) {
    if let Ok(mut p) = ipv4::Packet::new_checked(&mut *pkt) {
        p.set_total_len(total as u16);
        p.fill_checksum();
    } else if pkt.first().is_some_and(|b| b >> 4 == 6) && pkt.len() >= ipv6::HEADER_LEN {
        let len = (total - ipv6::HEADER_LEN) as u16;
        pkt[4..6].copy_from_slice(&len.to_be_bytes());
    }
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

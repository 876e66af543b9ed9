//! Every reason a packet can be dropped, each with its own counter (VPP's `*_error.def` idea).

macro_rules! drop_reasons {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// Why a packet was dropped. One counter per variant; the names are the metric labels.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason {
            $($(#[$doc])* $variant,)*
        }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            pub const COUNT: usize = Self::ALL.len();

            /// The snake_case name used in metrics and reports.
            pub const fn name(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)*
                }
            }
        }
    };
}

drop_reasons! {
    /// A header or the length it declares runs past the end of the packet.
    Truncated => "truncated",
    /// A header field holds a value its standard forbids.
    Malformed => "malformed",
    /// Valid, but a protocol or feature zsfc does not carry (fragments into ESP, ESP in ESP...).
    Unsupported => "unsupported",
    /// More labels than the configured depth limit.
    LabelStackTooDeep => "label_stack_too_deep",
    /// A packet from outside the domain (the local side) that carries an MPLS label stack or an
    /// NSH, or is addressed to an MPLS tunnel (MPLS-in-UDP port 6635, MPLS-in-IP): SFC
    /// encapsulation never enters from outside.
    EncapFromOutside => "encap_from_outside",
    /// The top label is not known at this node.
    UnknownLabel => "unknown_label",
    /// An MPLS or NSH TTL reached zero (a loop, or a path too long).
    TtlExpired => "ttl_expired",
    /// The label stack ends at an SF label: the path has no destination.
    MissingServiceLabel => "missing_service_label",
    /// Labels remain below a service (delivery) label.
    LabelsBelowService => "labels_below_service",
    /// Not enough head- or tailroom left in the buffer.
    NoBufferRoom => "no_buffer_room",
    /// No flow entry and no rule matched, or a rule denied (default deny).
    NoMatchingRule => "no_matching_rule",
    /// A chain, SA or SF named by configuration is missing.
    NotConfigured => "not_configured",
    /// No inbound SA with this SPI.
    EspBadSpi => "esp_bad_spi",
    /// Sequence number already seen or left of the anti-replay window.
    EspReplay => "esp_replay",
    /// ICV check failed: tampered, forged or wrong key.
    EspAuthFailed => "esp_auth_failed",
    /// The outer header of an authentic payload ESP packet does not carry the addresses (IPv6:
    /// and flow label) of the inner header it protects: rewritten on the way (RFC 4301 §5.2).
    InnerHeaderMismatch => "inner_header_mismatch",
    /// An authentic dummy packet (ESP next header 59, RFC 4303 §2.6), payload or link:
    /// discarded, never delivered.
    EspDummy => "esp_dummy",
    /// The NSH TTL reached 0 at this SFF (RFC 8300 §2.2): a forwarding loop, or a path longer
    /// than the classifier allowed.
    NshTtlExpired => "nsh_ttl_expired",
    /// SF pools: no instance of an SF the flow must cross is up (RFC 7665 §5.7: the chain
    /// fails closed instead of skipping the SF).
    SfUnavailable => "sf_unavailable",
    /// A liveness probe (RFC 5880 control packet on the GAL, RFC 5586) that is malformed,
    /// comes from a node that is not probed here, or names another session; or a circuit probe
    /// back from an external SF that no outstanding probe of that circuit sent (`circuit.rs`).
    ProbeRefused => "probe_refused",
    /// The decrypted ESP trailer is inconsistent.
    EspBadTrailer => "esp_bad_trailer",
    /// Not an ESP packet where one was expected, or an ESP packet that cannot be parsed.
    EspMalformed => "esp_malformed",
    /// The sealed packet would not fit an IP length field.
    EspTooBig => "esp_too_big",
    /// The packet, encapsulated, would be larger than the link to the next node carries
    /// (`NodeSettings::max_datagram`): never sent as fragments; a classifier answers the
    /// sender with ICMP fragmentation needed / packet too big (RFC 1191, RFC 8201).
    TooBig => "too_big",
    /// The SA's hard lifetime is reached (fail closed until a new SA arrives).
    SaExpired => "sa_expired",
    /// The inbound SA is meant for another role (re-seal vs. terminate) than the label asks.
    SaRoleMismatch => "sa_role_mismatch",
    /// Proxy RX: a packet without SFC encapsulation, or without fields to key it (RX_IGNORED).
    ProxyRxIgnored => "proxy_rx_ignored",
    /// Proxy RX: a packet with the same key is already cached (RX_COLLISION).
    ProxyCollision => "proxy_collision",
    /// Proxy TX: the packet from the SF has no key (TX_IGNORED).
    ProxyTxIgnored => "proxy_tx_ignored",
    /// Proxy TX: no cached headers for the packet (TX_NOT_CACHED: evicted, or made by the SF).
    ProxyNotCached => "proxy_not_cached",
    /// Firewall SF: an ACL rule denied the packet.
    SfFirewallDeny => "sf_firewall_deny",
    /// DPI SF: the payload contains a blocked pattern.
    SfDpiMatch => "sf_dpi_match",
    /// Rate limiter SF: no token left.
    SfRateLimited => "sf_rate_limited",
    /// NAT SF: a returning packet has no translation entry.
    SfNatNoMapping => "sf_nat_no_mapping",
    /// NAT SF: no free port in the pool.
    SfNatExhausted => "sf_nat_exhausted",
    /// Delay SF: its queue is full.
    SfQueueFull => "sf_queue_full",
    /// An SF could not parse the packet it was given.
    SfBadPacket => "sf_bad_packet",
    /// Link protection is on and a packet from the domain is not link ESP under a link SA this
    /// node holds (plain labels, an unknown SPI, a payload SA's SPI).
    LinkUnauthenticated => "link_unauthenticated",
    /// A link ESP packet failed its ICV (forged or changed on the link).
    LinkAuthFailed => "link_auth_failed",
    /// A link ESP packet was seen before or is older than the window (replayed on the link).
    LinkReplay => "link_replay",
    /// Link protection is on and there is no link SA to the next node: fail closed.
    LinkNoSa => "link_no_sa",
    /// SFC integrity is required here and the packet has no RFC 9145 MAC header.
    SfcIntegrityMissing => "sfc_integrity_missing",
    /// The MAC header names a key id this node does not hold for the packet's chain.
    SfcKeyUnknown => "sfc_key_unknown",
    /// The NSH timestamp is outside the accepted window (RFC 9145 §7.4: replayed or delayed).
    SfcStale => "sfc_stale",
    /// The MAC over labels and NSH does not match: changed by a hop without the chain key.
    SfcMacFailed => "sfc_mac_failed",
    /// The proof of transit does not add up at the chain's end: an SF was skipped.
    PotFailed => "pot_failed",
    /// At the chain's end: NSH fields the classifier set (SPI, tenant id and other static
    /// context headers, timestamp, nonce, encrypted subscriber id) were changed on the way by a
    /// node that holds the chain key (the PktID derived from them with the origin key differs).
    SfcOriginFailed => "sfc_origin_failed",
    // Drops the I/O drivers decide before the engine sees a packet or after it gave its verdict
    // (`zsfc_io::IoStats::drops`), declared here so that every drop has one reason and one
    // metric, whoever counts it.
    /// A datagram from an address that is no peer's (the driver drops it before the engine).
    UdpUnknownSource => "udp_unknown_source",
    /// An MPLS frame from a MAC address that is no peer's.
    EthUnknownSource => "eth_unknown_source",
    /// A frame on the domain link that carries no MPLS packet to hand on (a runt: the socket
    /// takes MPLS frames only).
    EthRunt => "eth_runt",
    /// An MPLS frame not addressed to this node's interface (broadcast, multicast, or unicast
    /// to another address): never forwarded, or every node that saw it would.
    EthNotForUs => "eth_not_for_us",
    /// An MPLS frame with an 802.1Q/802.1ad tag: the domain's links are untagged.
    EthTagged => "eth_tagged",
    /// A frame the receive ring could not hand over whole (longer than a slot or block, or with
    /// inconsistent offsets).
    EthRingError => "eth_ring_error",
    /// A frame on an attachment circuit that is not an IP packet for the node (ARP, neighbour
    /// discovery, the node's own frames).
    CircuitNotIp => "circuit_not_ip",
    /// The driver could not carry out a verdict: no peer address, no TUN, no attachment
    /// circuit for the SF, or the kernel refused the send.
    Undeliverable => "undeliverable",
}

/// One counter per [`DropReason`]. Plain integers: each worker owns its own set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropCounters([u64; DropReason::COUNT]);

impl Default for DropCounters {
    fn default() -> Self {
        Self([0; DropReason::COUNT])
    }
}

impl DropCounters {
    #[inline]
    pub fn add(&mut self, r: DropReason) {
        if let Some(c) = self.0.get_mut(r as usize) {
            *c += 1;
        }
    }
    pub fn get(&self, r: DropReason) -> u64 {
        self.0.get(r as usize).copied().unwrap_or(0)
    }
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    /// The non-zero counters, by name.
    pub fn nonzero(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.get(r))).filter(|&(_, n)| n > 0)
    }
    /// Adds every counter of `other` (aggregation over workers).
    pub fn merge(&mut self, other: &Self) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }
}

impl From<zsfc_wire::Error> for DropReason {
    fn from(e: zsfc_wire::Error) -> Self {
        use zsfc_wire::Error as E;
        match e {
            E::Truncated => Self::Truncated,
            E::Malformed => Self::Malformed,
            E::TooDeep => Self::LabelStackTooDeep,
            E::Unsupported => Self::Unsupported,
            E::NoRoom => Self::NoBufferRoom,
        }
    }
}

impl From<zsfc_esp::OpenError> for DropReason {
    fn from(e: zsfc_esp::OpenError) -> Self {
        use zsfc_esp::OpenError as E;
        match e {
            E::Packet(_) => Self::EspMalformed,
            E::WrongSpi => Self::EspBadSpi,
            E::Replay(_) => Self::EspReplay,
            E::Auth => Self::EspAuthFailed,
            E::Trailer => Self::EspBadTrailer,
            E::Expired(_) => Self::SaExpired,
            E::AuthOnly => Self::SaRoleMismatch,
            E::Dummy => Self::EspDummy,
            E::HeaderMismatch => Self::InnerHeaderMismatch,
            E::NotTunnel(_) => Self::EspBadTrailer,
        }
    }
}

impl From<zsfc_esp::SealError> for DropReason {
    fn from(e: zsfc_esp::SealError) -> Self {
        use zsfc_esp::SealError as E;
        match e {
            E::HardLimit(_) => Self::SaExpired,
            E::Packet(zsfc_wire::Error::NoRoom) => Self::NoBufferRoom,
            E::Packet(zsfc_wire::Error::Unsupported) => Self::Unsupported,
            E::Packet(w) => w.into(),
            E::TooBig => Self::EspTooBig,
            E::AuthOnly => Self::SaRoleMismatch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        assert!(names.iter().all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
    }

    #[test]
    fn counts_per_reason() {
        let mut c = DropCounters::default();
        c.add(DropReason::EspReplay);
        c.add(DropReason::EspReplay);
        c.add(DropReason::SaExpired);
        assert_eq!(c.get(DropReason::EspReplay), 2);
        assert_eq!(c.total(), 3);
        assert_eq!(c.nonzero().count(), 2);
    }
}

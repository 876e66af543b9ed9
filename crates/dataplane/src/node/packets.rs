//! The packet path of [`Node`]: the three doors ([`Node::handle_local`],
//! [`Node::handle_from_peer`] / [`Node::handle_from_domain`], [`Node::handle_from_sf`]), the
//! timers ([`Node::poll_output`], [`Node::housekeeping`]) and what they share: routing by the
//! top label, the proxy's two halves around an SF, delivery, link ESP to and from peers.
use super::*;

impl Node {
    // ---- packet entry points ---------------------------------------------------------------

    pub(super) fn drop(&mut self, r: DropReason, buf: PacketBuf) -> Verdict {
        self.drops.add(r);
        // Only the drop path pays for the report (RFC 9061 `sadb-bad-spi`); the agent rate-limits it.
        if r == DropReason::EspBadSpi
            && self.events.len() < MAX_EVENTS
            && let Ok(spi) = spi_of(buf.as_slice())
        {
            self.events.push_back(Event::BadSpi { spi });
        }
        Verdict::Drop(r, buf)
    }

    /// Classifier: a plain IP packet from the local side.
    pub fn handle_local(&mut self, now: Instant, mut buf: PacketBuf) -> Verdict {
        let s = match ip::parse(buf.as_slice()) {
            Ok(s) => s,
            Err(e) => {
                let b = buf.as_slice();
                let encap =
                    mpls::stack_depth(b, self.settings.max_label_depth).is_ok() || nsh::Header::new_checked(b).is_ok();
                return self.drop(if encap { DropReason::EncapFromOutside } else { e.into() }, buf);
            }
        };
        if carries_sfc_encapsulation(&s.tuple) {
            return self.drop(DropReason::EncapFromOutside, buf);
        }
        let Some((chain_id, subscriber)) = self.classifier.classify_subscriber(&s.tuple) else {
            return self.drop(DropReason::NoMatchingRule, buf);
        };
        let Some(chain) = self.chains.get(&chain_id) else {
            return self.drop(DropReason::NotConfigured, buf);
        };
        if let Some(max) = self.settings.max_datagram {
            let room = pmtu::inner_room(max, chain.encap.len(), s.is_v4(), self.settings.link_auth);
            if buf.len() > room {
                return self.too_big(now, buf, room);
            }
        }
        // SF pools: each pooled SF's instance for this flow, among those on live nodes (local
        // repair, RFC 7665 §5.7), and the SA to the first encrypting one. The labels are
        // steered once they are pushed.
        let hash = pool::flow_hash(&s.tuple);
        let flow = (!self.pools.is_empty()).then_some(hash);
        let mut steer = [0u32; STEER_MAX];
        let mut sa_idx = chain.sa;
        if let Some(flow) = flow {
            let (labels, liveness) = (&self.labels, &self.liveness);
            let up = |l: u32| match labels.get(&l) {
                Some(LabelAction::Remote(peer)) => liveness.is_up(*peer),
                _ => true,
            };
            let mut via = None;
            for (i, &from) in chain.labels.iter().enumerate() {
                let Some((to, how)) = self.pools.pick(from, flow, now, up) else {
                    return self.drop(DropReason::SfUnavailable, buf);
                };
                self.stats.flows_moved += u64::from(how.moved);
                self.stats.pins_refused += u64::from(how.unpinned);
                if let Some(at) = steer.get_mut(i) {
                    *at = to;
                }
                via = via.or_else(|| chain.sa_via.iter().find(|(v, _)| *v == to).map(|v| v.1));
            }
            sa_idx = via.unwrap_or(sa_idx);
        }
        let Some(Some(slot)) = self.outbound.get_mut(sa_idx.0 as usize) else {
            return self.drop(DropReason::NotConfigured, buf);
        };
        buf.meta = Default::default();
        buf.meta.entropy = entropy(hash);
        if let Some(max) = self.settings.tcp_mss_clamp
            && s.tuple.protocol == ip::protocol::TCP
            && !s.later_fragment
            && let Some(seg) = buf.as_mut_slice().get_mut(s.l4_offset..s.total_len)
            && let Ok(mut seg) = tcp::Segment::new_checked(seg)
            && seg.clamp_mss(max).is_some_and(|old| old > max)
        {
            self.stats.mss_clamped += 1;
        }
        match slot.sa.seal(now, &mut buf) {
            Ok(sealed) => report_rekey(&mut self.events, slot, sa_idx, sealed.rekey_wanted),
            Err(e) => return self.drop(e.into(), buf),
        }
        match buf.push_front(chain.encap.len()) {
            Ok(h) => {
                h.copy_from_slice(&chain.encap);
                if flow.is_some() {
                    for (i, (lse, &from)) in h.chunks_exact_mut(LSE_LEN).zip(&chain.labels).enumerate() {
                        let to = steer.get(i).copied().unwrap_or(from);
                        if from != to
                            && let Ok(e) = Lse::read(lse)
                        {
                            lse.copy_from_slice(&Lse::new(to, e.tc(), e.bos(), e.ttl()).to_bytes());
                        }
                    }
                }
                if let Some(at) = chain.nsh_next_proto {
                    h[at] = if s.is_v4() { nsh::next_proto::IPV4 } else { nsh::next_proto::IPV6 };
                }
            }
            Err(_) => return self.drop(DropReason::NoBufferRoom, buf),
        }
        if let Some(key_id) = chain.key_id
            && let Err(r) = self.impose(now, key_id, subscriber, buf.as_mut_slice())
        {
            return self.drop(r, buf);
        }
        self.stats.classified += 1;
        self.route(now, buf, false)
    }

    /// SFF: a labelled packet (label stack first) from another node; under link protection
    /// the link ESP around it is checked and removed first.
    pub fn handle_from_domain(&mut self, now: Instant, buf: PacketBuf) -> Verdict {
        self.handle_from(now, None, buf)
    }

    /// [`handle_from_domain`](Self::handle_from_domain) for a packet the driver knows came
    /// from `peer` (by its address): liveness probes count only from a known peer.
    pub fn handle_from_peer(&mut self, now: Instant, peer: NodeId, buf: PacketBuf) -> Verdict {
        self.handle_from(now, Some(peer), buf)
    }

    pub(super) fn handle_from(&mut self, now: Instant, peer: Option<NodeId>, mut buf: PacketBuf) -> Verdict {
        if self.settings.link_auth
            && let Err(r) = self.open_link(now, &mut buf)
        {
            return self.drop(r, buf);
        }
        if bfd::is_probe(buf.as_slice()) {
            return self.on_probe(now, peer, buf);
        }
        self.route(now, buf, true)
    }

    /// A liveness probe. A malformed one is a drop; a well-formed one for no session here
    /// (the peer is not probed, or one of the two restarted) is discarded as RFC 5880 §6.8.6
    /// says, counted in `probes_ignored`: it is the normal start of a session.
    pub(super) fn on_probe(&mut self, now: Instant, peer: Option<NodeId>, buf: PacketBuf) -> Verdict {
        let Ok(c) = bfd::Control::parse_probe(buf.as_slice()) else {
            return self.drop(DropReason::ProbeRefused, buf);
        };
        if peer.is_some_and(|p| self.liveness.on_probe(now, p, &c)) {
            self.stats.probes_rx += 1;
            self.report_liveness_changes();
        } else {
            self.stats.probes_ignored += 1;
        }
        Verdict::Consumed(buf)
    }

    /// Cheap checks first: the SPI must name a link SA of this node before any crypto runs.
    pub(super) fn open_link(&mut self, now: Instant, buf: &mut PacketBuf) -> Result<(), DropReason> {
        let spi = match zsfc_wire::esp::Packet::new_checked(buf.as_slice()) {
            Ok(p) => p.spi(),
            Err(_) => return Err(DropReason::LinkUnauthenticated),
        };
        let Some(InboundSlot { sa, usage: SaUse::Link, .. }) = self.inbound.get_mut(&spi) else {
            return Err(DropReason::LinkUnauthenticated);
        };
        use zsfc_esp::OpenError as E;
        match sa.open_link(now, buf) {
            Ok(o) if o.next_header == MPLS_IN_IP => Ok(()),
            Ok(_) => Err(DropReason::Unsupported),
            Err(E::Replay(_)) => Err(DropReason::LinkReplay),
            Err(E::Dummy) => Err(DropReason::EspDummy),
            Err(E::Auth | E::Trailer) => Err(DropReason::LinkAuthFailed),
            Err(E::Expired(_)) => Err(DropReason::SaExpired),
            Err(_) => Err(DropReason::LinkUnauthenticated),
        }
    }

    /// The last step before a packet leaves for `peer`: link ESP around it when the link has
    /// an SA; without one, under link protection, the packet is dropped (fail closed).
    pub(super) fn send_to_peer(&mut self, now: Instant, peer: NodeId, mut buf: PacketBuf) -> Verdict {
        let Some(idx) = self.link_sa(peer) else {
            if self.settings.link_auth {
                return self.drop(DropReason::LinkNoSa, buf);
            }
            return self.forward(peer, buf);
        };
        let Some(Some(slot)) = self.outbound.get_mut(idx.0 as usize) else {
            return self.drop(DropReason::LinkNoSa, buf);
        };
        match slot.sa.seal_link(now, &mut buf, MPLS_IN_IP) {
            Ok(sealed) => report_rekey(&mut self.events, slot, idx, sealed.rekey_wanted),
            Err(e) => return self.drop(e.into(), buf),
        }
        self.forward(peer, buf)
    }

    /// The last step to a peer: nothing larger than the link carries leaves (no IP fragments).
    pub(super) fn forward(&mut self, peer: NodeId, buf: PacketBuf) -> Verdict {
        if self.settings.max_datagram.is_some_and(|max| buf.len() > usize::from(max)) {
            return self.drop(DropReason::TooBig, buf);
        }
        self.stats.forwarded += 1;
        Verdict::Forward(peer, buf)
    }

    /// A classifier's inner packet that would not fit its link once encapsulated: dropped, and
    /// the sender told the MTU that fits (`room`), as far as the rate limit allows.
    pub(super) fn too_big(&mut self, now: Instant, mut buf: PacketBuf, room: usize) -> Verdict {
        self.drops.add(DropReason::TooBig);
        let mtu = u16::try_from(room).unwrap_or(u16::MAX);
        if let Some(err) = pmtu::too_big(buf.as_slice(), mtu)
            && self.icmp.allow(now)
            && buf.set(&err, DEFAULT_HEADROOM).is_ok()
        {
            self.stats.icmp_too_big += 1;
            return Verdict::Deliver(buf);
        }
        Verdict::Drop(DropReason::TooBig, buf)
    }

    /// Proxy TX: a packet coming back from the external SF `sf`.
    pub fn handle_from_sf(&mut self, now: Instant, sf: SfId, mut buf: PacketBuf) -> Verdict {
        if circuit::is_probe(buf.as_slice()) {
            if !self.circuits.on_return(now, sf, buf.as_slice()) {
                return self.drop(DropReason::ProbeRefused, buf);
            }
            self.stats.circuit_probes_rx += 1;
            self.report_liveness_changes();
            return Verdict::Consumed(buf);
        }
        self.stats.from_external_sf += 1;
        // What comes back from the circuit is a new buffer: the flow's entropy again, from the
        // packet the SF returned (a flow keeps its source port across the SF).
        if let Ok(s) = ip::parse(buf.as_slice()) {
            buf.meta.entropy = entropy(pool::flow_hash(&s.tuple));
        }
        match self.sf_tx(now, sf, buf) {
            Step::Route(b) => {
                self.circuits.on_traffic(now, sf);
                self.route(now, b, false)
            }
            Step::Done(v) => v,
        }
    }

    /// Packets that SFs held (delay) and release at `now`, and liveness probes due; call until
    /// `None`.
    pub fn poll_output(&mut self, now: Instant) -> Option<Verdict> {
        for i in 0..self.sfs.len() {
            let released = match self.sfs.get_mut(i).map(|s| &mut s.attach) {
                Some(SfAttach::InProcess(sf)) => sf.poll_release(now),
                _ => None,
            };
            if let Some(b) = released {
                return Some(match self.sf_tx(now, SfId(i as u32), b) {
                    Step::Route(b) => self.route(now, b, false),
                    Step::Done(v) => v,
                });
            }
        }
        // A circuit also comes up on the proxy's own packets (`handle_from_sf`): report that too.
        if self.liveness.expire(now) + self.circuits.expire(now) > 0 || self.circuits.has_changes() {
            self.report_liveness_changes();
        }
        if let Some(v) = self.poll_circuit_probe(now) {
            return Some(v);
        }
        if self.liveness.next_due().is_none_or(|t| t > now) {
            return None;
        }
        let jitter = self.random::<1>().map_or(255, |[j]| j);
        while let Some((peer, c)) = self.liveness.due(now, jitter) {
            // Under link protection a probe waits for the link's SA (it is not a drop).
            if self.settings.link_auth && self.link_sa(peer).is_none() {
                continue;
            }
            let mut buf = PacketBuf::new(DEFAULT_HEADROOM + bfd::PROBE_LEN + DEFAULT_TAILROOM, DEFAULT_HEADROOM);
            let mut probe = [0u8; bfd::PROBE_LEN];
            c.emit_probe(&mut probe);
            match buf.push_back(bfd::PROBE_LEN) {
                Ok(b) => b.copy_from_slice(&probe),
                Err(_) => return Some(self.drop(DropReason::NoBufferRoom, buf)),
            }
            self.stats.probes_tx += 1;
            return Some(self.send_to_peer(now, peer, buf));
        }
        None
    }

    /// The next probe due into an external SF's attachment circuit.
    pub(super) fn poll_circuit_probe(&mut self, now: Instant) -> Option<Verdict> {
        if self.circuits.next_due().is_none_or(|t| t > now) {
            return None;
        }
        let Some(nonce) = self.random::<16>() else {
            // No randomness, no probe (a guessable nonce would let the SF's traffic forge one).
            return None;
        };
        let (sf, probe) = self.circuits.due(now, nonce)?;
        let mut buf = PacketBuf::new(DEFAULT_HEADROOM + circuit::PROBE_LEN + DEFAULT_TAILROOM, DEFAULT_HEADROOM);
        match buf.push_back(circuit::PROBE_LEN) {
            Ok(b) => b.copy_from_slice(&probe),
            Err(_) => return Some(self.drop(DropReason::NoBufferRoom, buf)),
        }
        self.stats.circuit_probes_tx += 1;
        Some(Verdict::ToSf(sf, buf))
    }

    /// The next time [`poll_output`](Self::poll_output) has something to release.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sfs
            .iter()
            .filter_map(|s| match &s.attach {
                SfAttach::InProcess(sf) => sf.poll_timeout(),
                SfAttach::External => None,
            })
            .chain(self.liveness.next_due())
            .chain(self.circuits.next_due())
            .min()
    }

    /// Periodic upkeep: forgets cached headers of packets their SF never returned, and the key
    /// material of every SA past its hard lifetime (forward secrecy: an expired key is gone
    /// from the node, not just unused; the SA stays as a tombstone that refuses packets, counted
    /// as `sa_expired`, until the controller removes it).
    pub fn housekeeping(&mut self, now: Instant) -> usize {
        self.housekept_at = now;
        self.pools.expire(now);
        for slot in self.outbound.iter_mut().flatten() {
            if !slot.sa.is_erased() && slot.sa.hard_expired(now).is_some() {
                slot.sa.erase();
                self.stats.sas_erased += 1;
            }
        }
        for slot in self.inbound.values_mut() {
            if !slot.sa.is_erased() && slot.sa.hard_expired(now).is_some() {
                slot.sa.erase();
                self.stats.sas_erased += 1;
            }
        }
        let before = self.inbound.len();
        self.inbound.retain(|_, slot| match &mut slot.retiring {
            None => true,
            Some((since, seen)) => {
                let highest = slot.sa.highest_seq();
                let age = now.saturating_since(*since);
                let keep = (highest != *seen || age < RETIRE_MIN) && age < RETIRE_MAX;
                *seen = highest;
                keep
            }
        });
        self.stats.sas_retired += (before - self.inbound.len()) as u64;
        self.sfs.iter_mut().map(|s| s.cache.expire(now, s.cache_max_age)).sum()
    }

    /// SPIs of the SAs (outbound and inbound) that still hold key material.
    pub fn keyed_spis(&self) -> Vec<u32> {
        let out = self.outbound.iter().flatten().filter(|s| !s.sa.is_erased()).map(|s| s.sa.spi());
        out.chain(self.inbound.values().filter(|s| !s.sa.is_erased()).map(|s| s.sa.spi())).collect()
    }

    /// The SFF loop: act on top labels until the packet leaves this node.
    pub(super) fn route(&mut self, now: Instant, mut buf: PacketBuf, mut arrived: bool) -> Verdict {
        // Each turn pops a label or returns, so the stack depth bounds the loop.
        for _ in 0..=self.settings.max_label_depth {
            let depth = match mpls::stack_depth(buf.as_slice(), self.settings.max_label_depth) {
                Ok(d) => d,
                Err(e) => return self.drop(e.into(), buf),
            };
            let Ok(top) = Lse::read(buf.as_slice()) else {
                return self.drop(DropReason::Truncated, buf);
            };
            let Some(&action) = self.labels.get(&top.label()) else {
                return self.drop(DropReason::UnknownLabel, buf);
            };
            match action {
                LabelAction::Remote(peer) => {
                    if arrived {
                        // A transit hop: RFC 3032 §2.4.1, decrement and drop at zero.
                        if top.ttl() <= 1 {
                            return self.drop(DropReason::TtlExpired, buf);
                        }
                        buf.as_mut_slice()[..LSE_LEN].copy_from_slice(&top.with_ttl(top.ttl() - 1).to_bytes());
                    }
                    return self.send_to_peer(now, peer, buf);
                }
                LabelAction::Sf(id) => {
                    if depth == 1 {
                        return self.drop(DropReason::MissingServiceLabel, buf);
                    }
                    if arrived && let Err(r) = self.check_integrity(now, buf.as_slice()) {
                        return self.drop(r, buf);
                    }
                    if let Err(r) = pop_label(&mut buf, top) {
                        return self.drop(r, buf);
                    }
                    match self.sf_rx(now, id, buf) {
                        Step::Route(b) => buf = b,
                        Step::Done(v) => return v,
                    }
                    arrived = false;
                }
                LabelAction::Deliver => {
                    if depth != 1 {
                        return self.drop(DropReason::LabelsBelowService, buf);
                    }
                    if arrived && let Err(r) = self.check_integrity(now, buf.as_slice()) {
                        return self.drop(r, buf);
                    }
                    if let Err(r) = self.check_transit(buf.as_slice()) {
                        return self.drop(r, buf);
                    }
                    if let Err(e) = buf.pull_front(LSE_LEN) {
                        return self.drop(e.into(), buf);
                    }
                    return self.deliver(now, buf);
                }
            }
        }
        self.drop(DropReason::LabelStackTooDeep, buf)
    }

    /// Egress: strip the NSH, decrypt with a terminating SA, deliver.
    pub(super) fn deliver(&mut self, now: Instant, mut buf: PacketBuf) -> Verdict {
        if buf.as_slice().first().is_some_and(|&b| nsh::looks_like_nsh(b)) {
            let len = match nsh::Header::new_checked(buf.as_slice()) {
                Ok(h) => h.len(),
                Err(e) => return self.drop(e.into(), buf),
            };
            if let Err(e) = buf.pull_front(len) {
                return self.drop(e.into(), buf);
            }
        }
        let spi = match spi_of(buf.as_slice()) {
            Ok(s) => s,
            Err(e) => return self.drop(e.into(), buf),
        };
        let Some(slot) = self.inbound.get_mut(&spi) else {
            return self.drop(DropReason::EspBadSpi, buf);
        };
        if slot.usage != SaUse::Terminate {
            return self.drop(DropReason::SaRoleMismatch, buf);
        }
        if let Err(e) = slot.sa.open(now, &mut buf) {
            return self.drop(e.into(), buf);
        }
        buf.meta = Default::default();
        self.stats.delivered += 1;
        Verdict::Deliver(buf)
    }

    /// Proxy RX: cache what is left of the encapsulation, decrypt for an intrusive SF, run an
    /// in-process SF or hand the packet to an external one.
    pub(super) fn sf_rx(&mut self, now: Instant, id: SfId, mut buf: PacketBuf) -> Step {
        let max_depth = self.settings.max_label_depth;
        let Some(slot) = self.sfs.get_mut(id.0 as usize) else {
            return Step::Done(self.drop(DropReason::NotConfigured, buf));
        };
        let (encap_len, has_nsh) = match proxy::encap_len(buf.as_slice(), max_depth) {
            Ok(v) => v,
            Err(e) => {
                slot.cache.stats.rx_ignored += 1;
                return Step::Done(self.drop(e.into(), buf));
            }
        };
        // Only with SF pools may the re-seal SA depend on the labels.
        let pooled = slot.intrusive && !self.pools.is_empty();
        let via = if pooled { reseal_via(&self.inbound, buf.as_slice(), encap_len) } else { None };
        let ticket = match slot.cache.stage(&buf.as_slice()[..encap_len]) {
            Ok(t) => t,
            Err(_) => return Step::Done(self.drop(DropReason::NoBufferRoom, buf)),
        };
        if let Err(e) = buf.pull_front(encap_len) {
            slot.cache.abort(ticket);
            return Step::Done(self.drop(e.into(), buf));
        }
        let mut reseal = None;
        if slot.intrusive {
            let opened = match spi_of(buf.as_slice()) {
                Err(e) => Err(e.into()),
                Ok(spi) => match self.inbound.get_mut(&spi) {
                    None => Err(DropReason::EspBadSpi),
                    Some(InboundSlot { usage: SaUse::Terminate | SaUse::Link, .. }) => Err(DropReason::SaRoleMismatch),
                    Some(InboundSlot { sa, usage: SaUse::Reseal(out), .. }) => {
                        reseal = Some(via.unwrap_or(*out));
                        sa.open(now, &mut buf).map_err(DropReason::from)
                    }
                },
            };
            if let Err(r) = opened {
                slot.cache.abort(ticket);
                return Step::Done(self.drop(r, buf));
            }
        }
        let key = match slot.key_mode {
            KeyMode::Metadata => {
                let k = slot.cache.next_meta_key();
                buf.meta.proxy_key = Some(k);
                CacheKey::Meta(k)
            }
            KeyMode::Headers | KeyMode::Translated => match slot.header_key(buf.as_slice()) {
                Some(k) => CacheKey::Header(k),
                None => {
                    slot.cache.abort(ticket);
                    slot.cache.stats.rx_ignored += 1;
                    return Step::Done(self.drop(DropReason::ProxyRxIgnored, buf));
                }
            },
        };
        if slot.cache.commit(ticket, key, reseal, now).is_err() {
            return Step::Done(self.drop(DropReason::ProxyCollision, buf));
        }
        let verdict = match &mut slot.attach {
            SfAttach::External => {
                self.stats.to_external_sf += 1;
                return Step::Done(Verdict::ToSf(id, buf));
            }
            SfAttach::InProcess(sf) => {
                let hdr = if has_nsh { slot.cache.peek(&key).unwrap_or(&[]) } else { &[] };
                let subscriber =
                    if sf.wants_subscriber() { subscriber_in(&self.chain_keys, hdr, max_depth) } else { None };
                sf.process(&SfContext { now, label: slot.label, metadata: nsh_context(hdr), subscriber }, buf)
            }
        };
        match verdict {
            SfVerdict::Pass(b) => self.sf_tx(now, id, b),
            SfVerdict::Drop(b, r) => {
                // Only the drop path reads the subscriber id (bounded like every event).
                if matches!(r, DropReason::SfDpiMatch | DropReason::SfFirewallDeny)
                    && has_nsh
                    && self.events.len() < MAX_EVENTS
                {
                    let hdr = slot.cache.peek(&key).unwrap_or(&[]);
                    let subscriber = subscriber_in(&self.chain_keys, hdr, max_depth).filter(|&s| s != 0);
                    if let Some(subscriber) = subscriber {
                        self.events.push_back(Event::SfDrop { subscriber, sf: id, reason: r });
                    }
                }
                slot.cache.forget(&key);
                Step::Done(self.drop(r, b))
            }
            SfVerdict::Held => Step::Done(Verdict::Held),
        }
    }

    /// Proxy TX: find the cached encapsulation, re-seal with this node's SA for an intrusive
    /// SF, restore the headers, decrement the NSH service index on the SF's behalf and the TTL
    /// as the SFF that forwards the packet on.
    pub(super) fn sf_tx(&mut self, now: Instant, id: SfId, mut buf: PacketBuf) -> Step {
        let Some(slot) = self.sfs.get_mut(id.0 as usize) else {
            return Step::Done(self.drop(DropReason::NotConfigured, buf));
        };
        let key = match slot.key_mode {
            KeyMode::Metadata => buf.meta.proxy_key.take().map(CacheKey::Meta),
            KeyMode::Headers | KeyMode::Translated => slot.header_key(buf.as_slice()).map(CacheKey::Header),
        };
        let Some(key) = key else {
            slot.cache.stats.tx_ignored += 1;
            return Step::Done(self.drop(DropReason::ProxyTxIgnored, buf));
        };
        let outbound = &mut self.outbound;
        let events = &mut self.events;
        let max_depth = self.settings.max_label_depth;
        let restored = slot.cache.take_with(&key, |hdr, reseal| {
            if let Some(idx) = reseal {
                let Some(Some(out)) = outbound.get_mut(idx.0 as usize) else {
                    return Err(DropReason::NotConfigured);
                };
                let sealed = out.sa.seal(now, &mut buf).map_err(DropReason::from)?;
                report_rekey(events, out, idx, sealed.rekey_wanted);
            }
            let h = buf.push_front(hdr.len()).map_err(|_| DropReason::NoBufferRoom)?;
            h.copy_from_slice(hdr);
            if let Some(at) = mpls::stack_depth(hdr, max_depth).ok().map(|d| d * LSE_LEN)
                && hdr.get(at).is_some_and(|b| nsh::looks_like_nsh(*b))
                && let Some(base) = h.get_mut(at..at + 8)
            {
                // RFC 8300 §2.3: the proxy decrements the SI on behalf of an SFC-unaware SF.
                base[7] = base[7].saturating_sub(1);
                // RFC 8300 §2.2: the SFF decrements the TTL before it forwards (0 becomes 63)
                // and does not forward a packet whose TTL is then 0. The MAC leaves it out.
                let ttl = ((base[0] & 0x0f) << 2) | (base[1] >> 6);
                let ttl = if ttl == 0 { 63 } else { ttl - 1 };
                if ttl == 0 {
                    return Err(DropReason::NshTtlExpired);
                }
                base[0] = (base[0] & 0xf0) | (ttl >> 2);
                base[1] = (base[1] & 0x3f) | ((ttl & 3) << 6);
            }
            Ok(())
        });
        let label = slot.label;
        match restored {
            None => Step::Done(self.drop(DropReason::ProxyNotCached, buf)),
            Some(Err(r)) => Step::Done(self.drop(r, buf)),
            Some(Ok(())) => match self.reprotect(label, buf.as_mut_slice()) {
                Ok(()) => Step::Route(buf),
                Err(r) => Step::Done(self.drop(r, buf)),
            },
        }
    }
}

/// The re-seal SA that the labels left in `b[..encap_len]` call for, when the inbound SA
/// after them re-seals per pool instance ([`Node::set_reseal_via`]).
pub(super) fn reseal_via(inbound: &HashMap<u32, InboundSlot>, b: &[u8], encap_len: usize) -> Option<SaIdx> {
    let spi = spi_of(b.get(encap_len..)?).ok()?;
    let via = &inbound.get(&spi)?.reseal_via;
    if via.is_empty() {
        return None;
    }
    let labels = b.get(..encap_len)?;
    let mut more = true;
    mpls::entries(labels)
        .take_while(|e| std::mem::replace(&mut more, !e.bos()))
        .find_map(|e| via.iter().find(|(l, _)| *l == e.label()).map(|v| v.1))
}

pub(super) fn refusal(r: IntegrityFailure) -> DropReason {
    match r {
        IntegrityFailure::Missing => DropReason::SfcIntegrityMissing,
        IntegrityFailure::UnknownKey => DropReason::SfcKeyUnknown,
        IntegrityFailure::Stale => DropReason::SfcStale,
        IntegrityFailure::BadMac => DropReason::SfcMacFailed,
        IntegrityFailure::PotFailed => DropReason::PotFailed,
        IntegrityFailure::OriginMismatch => DropReason::SfcOriginFailed,
    }
}

pub(super) fn check_label(label: u32) -> Result<(), ConfigError> {
    if !(mpls::FIRST_UNRESERVED_LABEL..=mpls::LABEL_MAX).contains(&label) {
        return Err(ConfigError::Label {
            label,
            why: format!("must be in {}..={}", mpls::FIRST_UNRESERVED_LABEL, mpls::LABEL_MAX),
        });
    }
    Ok(())
}

/// Pops the top label `top`, carrying its TTL minus one into the new top entry (RFC 3032
/// §2.4.1 uniform model: the minimum of the two).
pub(super) fn pop_label(buf: &mut PacketBuf, top: Lse) -> Result<(), DropReason> {
    if top.ttl() <= 1 {
        return Err(DropReason::TtlExpired);
    }
    let b = buf.as_mut_slice();
    let next = Lse::read(b.get(LSE_LEN..).unwrap_or(&[]))?;
    let ttl = next.ttl().min(top.ttl() - 1);
    if let Some(n) = b.get_mut(LSE_LEN..2 * LSE_LEN) {
        n.copy_from_slice(&next.with_ttl(ttl).to_bytes());
    }
    buf.pull_front(LSE_LEN)?;
    Ok(())
}

/// The NSH context headers inside cached encapsulation bytes.
pub(super) fn nsh_context(hdr: &[u8]) -> &[u8] {
    let at = mpls::stack_depth(hdr, mpls::DEFAULT_MAX_DEPTH).map_or(hdr.len(), |d| d * LSE_LEN);
    let rest = hdr.get(at..).unwrap_or(&[]);
    match nsh::Header::new_checked(rest) {
        Ok(h) => rest.get(nsh::BASE_LEN..h.len()).unwrap_or(&[]),
        Err(_) => &[],
    }
}

/// The subscriber id in the cached encapsulation `hdr`, for a node that holds the chain's
/// encryption key.
pub(super) fn subscriber_in(keys: &HashMap<u32, ChainKey>, hdr: &[u8], max_depth: usize) -> Option<u64> {
    let l = integrity::locate(hdr, max_depth).ok().flatten()?;
    integrity::subscriber(keys.get(&l.key_id)?, hdr, &l)
}

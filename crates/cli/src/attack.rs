//! `zsfc attack`: an attacker on a link inside the domain, for the security tests and for
//! operators who want to see their domain refuse it. Run it in the namespace (or on the host)
//! of a node: it taps the node's link, captures the domain's frames on their way to `--to` (a
//! node's IPv4 address on MPLS-in-UDP links, its MAC address on Ethernet + MPLS links), then
//! sends them back onto the link as
//! - `replay`: the captured frames unchanged (a recorded packet played again);
//! - `forge`: the captured frames with a changed payload byte and a sequence number ahead of
//!   the window (a forged packet that would pass the replay check);
//! - `strip`: the captured frames without their link ESP (a labelled packet injected by someone
//!   without the link key);
//! - `skip` (a domain without link protection): the captured frames without their top label,
//!   so that the packet passes the SF it names (the next node forwards it to the SF after);
//!   with `--stolen-config`, as a compromised SF node that holds the chain key and computes the
//!   NSH MAC again;
//! - `meta` (a domain without link protection): the captured frames with one byte of the first
//!   NSH context header changed (metadata rewritten on the way, a tenant id say); with
//!   `--stolen-config`, by a compromised SF node that computes the NSH MAC again;
//! - `rewrite`: the captured frames with the inner packet's addresses changed (destination up
//!   by one, source down by one, so the IPv4 checksum still holds): a packet sent elsewhere than
//!   its sender said. Link ESP (port 4500) is left as it is (an on-link attacker) or, with
//!   `--stolen-config`, sealed again under the stolen node's link SA (a compromised node);
//! - `flood`: for `--seconds`, frames as fast as one thread can send, each a captured frame
//!   with random bytes after the UDP (or Ethernet) header, or after the link SPI with
//!   `--keep-spi` (a flood of malformed packets from a peer's address).
//!
//! The frames keep the addresses of the peer that sent the originals, so they pass every
//! address filter and reach the receiving node's engine. Frames are sent with the UDP checksum
//! 0 (allowed for IPv4), so the kernel hands changed ones to the node as they are.
use anyhow::Context;
use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, bind, recv, send, socket};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};
use zsfc_wire::{esp::UDP_ENCAP_PORT, mpls::in_udp::PORT};

/// The ports the domain's links use: MPLS-in-UDP (RFC 7510), link ESP (RFC 3948).
fn domain_port(p: u16) -> bool {
    p == PORT || p == UDP_ENCAP_PORT
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    Replay,
    Forge,
    Strip,
    Skip,
    Meta,
    Rewrite,
    Flood,
}

#[derive(Debug, clap::Args)]
pub(crate) struct AttackArgs {
    /// The link to tap and send on (the node's interface towards the domain).
    #[arg(long)]
    dev: String,
    /// Capture frames going to this node: its IPv4 address (MPLS-in-UDP) or MAC address
    /// (Ethernet + MPLS, `02:00:5a:00:00:02`).
    #[arg(long, value_parser = target)]
    to: Target,
    #[arg(long, value_enum)]
    mode: Mode,
    /// Frames to capture before attacking.
    #[arg(long, default_value_t = 100)]
    capture: usize,
    /// Give up capturing after this many seconds.
    #[arg(long, default_value_t = 20)]
    capture_timeout: u64,
    /// The UDP destination port of the frames to capture (by default the domain's: 6635,
    /// MPLS-in-UDP, and 4500, link ESP; a service's port to capture a client's frames at an
    /// ingress).
    #[arg(long)]
    port: Option<u16>,
    /// Flood: send to this UDP port instead of the captured one.
    #[arg(long)]
    flood_port: Option<u16>,
    /// Flood: keep the link SPI of the captured frames (each malformed frame then costs the
    /// receiver an ICV check, the most a forged packet can cost).
    #[arg(long)]
    keep_spi: bool,
    /// How long a flood lasts.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Seconds to wait between capturing and sending (a packet played long after it was sent,
    /// or an attack that starts once the link is quiet).
    #[arg(long, default_value_t = 0.0)]
    wait_s: f64,
    /// Send every frame to this MAC address instead of the one it was captured with: an
    /// attacker in the middle (by ARP spoofing, say) that passes its frames on to the real next
    /// hop.
    #[arg(long, value_parser = mac)]
    via_mac: Option<[u8; 6]>,
    /// `skip`, `meta` and `rewrite` as a compromised SF node: the node file of that node (with
    /// its chain and link keys), to compute the NSH MAC again after the label is gone or the
    /// metadata changed, or to seal link ESP again after the inner header changed.
    #[arg(long)]
    stolen_config: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Ip(Ipv4Addr),
    Mac([u8; 6]),
}

fn mac(s: &str) -> Result<[u8; 6], String> {
    zsfc_config::parse_mac(s).ok_or_else(|| format!("{s:?} is not a MAC address"))
}

fn target(s: &str) -> Result<Target, String> {
    match (s.parse(), zsfc_config::parse_mac(s)) {
        (Ok(ip), _) => Ok(Target::Ip(ip)),
        (_, Some(mac)) => Ok(Target::Mac(mac)),
        _ => Err(format!("{s:?} is neither an IPv4 address nor a MAC address")),
    }
}

const ETH_HDR: usize = 14;
const ESP_HDR_IV: usize = 16;
const ESP_ICV: usize = 16;

/// One captured frame and where its UDP header starts (`None`: an Ethernet + MPLS frame).
struct Frame {
    bytes: Vec<u8>,
    udp_at: Option<usize>,
}

impl Frame {
    /// Where the domain's packet (link ESP or the label stack) starts.
    fn payload_at(&self) -> usize {
        self.udp_at.map_or(ETH_HDR, |u| u + 8)
    }

    /// Rewrites IP total length, IP checksum, UDP length and UDP checksum (0) after the UDP
    /// payload changed length or content (an MPLS frame has no length to fix).
    fn fix_headers(&mut self) {
        let Some(udp_at) = self.udp_at else { return };
        let ip_len = self.bytes.len() - ETH_HDR;
        let udp_len = self.bytes.len() - udp_at;
        // The length first: the checked view refuses a total length beyond the buffer.
        self.bytes[ETH_HDR + 2..ETH_HDR + 4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        if let Ok(mut ip) = zsfc_wire::ipv4::Packet::new_checked(&mut self.bytes[ETH_HDR..]) {
            ip.fill_checksum();
        }
        self.bytes[udp_at + 4..udp_at + 6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        self.bytes[udp_at + 6..udp_at + 8].copy_from_slice(&[0, 0]);
    }
}

pub(crate) fn run(a: &AttackArgs) -> anyhow::Result<bool> {
    let stolen_cfg = match &a.stolen_config {
        None => None,
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            Some(zsfc_config::NodeConfig::from_toml(&text)?)
        }
    };
    let stolen = stolen_cfg.as_ref().map(|c| c.build(zsfc_dataplane::Instant::ZERO)).transpose()?;
    let fd = tap(&a.dev)?;
    let frames = capture(&fd, a.to, a.port, a.capture, Duration::from_secs(a.capture_timeout))?;
    anyhow::ensure!(!frames.is_empty(), "no frame to {:?} (port {:?}) seen on {}", a.to, a.port, a.dev);
    anyhow::ensure!(
        a.mode == Mode::Flood || a.port.is_none_or(domain_port),
        "replay, forge and strip work on the domain's frames (ports {PORT} and {UDP_ENCAP_PORT})"
    );
    anyhow::ensure!(
        a.flood_port.is_none() || matches!(a.to, Target::Ip(_)),
        "--flood-port is for UDP frames: give --to an IPv4 address"
    );
    let mut frames = frames;
    if let Some(mac) = a.via_mac {
        frames.iter_mut().for_each(|f| f.bytes[..6].copy_from_slice(&mac));
    }
    std::thread::sleep(Duration::from_secs_f64(a.wait_s.clamp(0.0, 3600.0)));
    let mut sent = 0u64;
    let started = Instant::now();
    match a.mode {
        Mode::Replay => {
            for mut f in frames.into_iter() {
                // The same bytes; only the UDP checksum (left partial by checksum offload in a
                // captured outgoing frame) becomes 0.
                f.fix_headers();
                sent += send_frame(&fd, &f.bytes);
            }
        }
        Mode::Forge => {
            for mut f in frames.into_iter() {
                let p = f.payload_at();
                // Sequence number far ahead of the window, and a changed byte of the payload.
                let seq = u32::from_be_bytes(f.bytes[p + 4..p + 8].try_into()?).wrapping_add(100_000);
                f.bytes[p + 4..p + 8].copy_from_slice(&seq.to_be_bytes());
                let last = f.bytes.len() - ESP_ICV - 1;
                f.bytes[last] ^= 0x20;
                f.fix_headers();
                sent += send_frame(&fd, &f.bytes);
            }
        }
        Mode::Strip => {
            for mut f in frames.into_iter() {
                let p = f.payload_at();
                let end = f.bytes.len() - ESP_ICV;
                // Trailer: padding, pad length, next header, just before the ICV.
                let pad = usize::from(f.bytes[end - 2]);
                let inner_end = end.saturating_sub(2 + pad).max(p + ESP_HDR_IV);
                let inner = f.bytes[p + ESP_HDR_IV..inner_end].to_vec();
                f.bytes.truncate(p);
                f.bytes.extend_from_slice(&inner);
                f.fix_headers();
                sent += send_frame(&fd, &f.bytes);
            }
        }
        Mode::Skip | Mode::Meta => {
            for mut f in frames.into_iter() {
                let p = f.payload_at();
                let depth = zsfc_wire::mpls::stack_depth(&f.bytes[p..], 16).unwrap_or(0);
                if a.mode == Mode::Skip {
                    anyhow::ensure!(depth >= 2, "a frame with {depth} labels has no SF to skip (link protection on?)");
                    f.bytes.drain(p..p + 4);
                } else {
                    let nsh = p + depth * 4;
                    anyhow::ensure!(
                        f.bytes.get(nsh).is_some_and(|&b| zsfc_wire::nsh::looks_like_nsh(b)),
                        "no NSH below the labels (link protection on, or a chain without NSH?)"
                    );
                    // Base header 8 bytes, context header 4, then its value.
                    f.bytes[nsh + 12] ^= 0x01;
                }
                if let Some(node) = &stolen {
                    node.refresh_nsh_mac(&mut f.bytes[p..]).map_err(|r| anyhow::anyhow!("re-MAC: {}", r.name()))?;
                }
                f.fix_headers();
                sent += send_frame(&fd, &f.bytes);
            }
        }
        Mode::Rewrite => {
            // Link ESP to reseal only where the frames carry it (UDP-encapsulated ESP).
            let protected = frames.first().and_then(|f| f.udp_at.and_then(|u| f.bytes.get(u + 2..u + 4)))
                == Some(&UDP_ENCAP_PORT.to_be_bytes()[..]);
            let mut reseal = match (&stolen_cfg, a.to) {
                (Some(cfg), Target::Ip(to)) if protected => Some(link_sa_to(cfg, to, &frames)?),
                _ => None,
            };
            for mut f in frames.into_iter() {
                rewrite_inner_addresses(&mut f, reseal.as_mut())?;
                f.fix_headers();
                sent += send_frame(&fd, &f.bytes);
            }
        }
        Mode::Flood => {
            let mut rng = [0u8; 4096];
            let deadline = started + Duration::from_secs_f64(a.seconds);
            let mut templates = frames;
            'flood: loop {
                aws_lc_rs::rand::fill(&mut rng).map_err(|_| anyhow::anyhow!("no randomness"))?;
                for (i, f) in templates.iter_mut().enumerate() {
                    let p = f.payload_at() + if a.keep_spi { 4 } else { 0 };
                    let n = f.bytes.len() - p;
                    let off = (i * 61) % (rng.len() - n.min(rng.len() - 1));
                    let take = n.min(rng.len() - off);
                    f.bytes[p..p + take].copy_from_slice(&rng[off..off + take]);
                    f.fix_headers();
                    if let (Some(port), Some(u)) = (a.flood_port, f.udp_at) {
                        f.bytes[u + 2..u + 4].copy_from_slice(&port.to_be_bytes());
                    }
                    sent += send_frame(&fd, &f.bytes);
                    if sent.is_multiple_of(256) && Instant::now() >= deadline {
                        break 'flood;
                    }
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({"mode": format!("{:?}", a.mode).to_lowercase(), "captured": a.capture, "sent": sent,
            "seconds": secs, "pps": sent as f64 / secs.max(1e-9)})
    );
    Ok(true)
}

/// The outbound link SA of the stolen node towards the peer at `to`, its sequence numbers 512
/// ahead of the highest the real node used in `frames` (a compromised node may send any): close
/// enough that the real node's next few hundred stay inside the receiver's window (much further
/// and, under ESN, the receiver would read them as the next 2^32 epoch and fail them).
fn link_sa_to(cfg: &zsfc_config::NodeConfig, to: Ipv4Addr, frames: &[Frame]) -> anyhow::Result<zsfc_esp::OutboundSa> {
    let peer = cfg
        .peers
        .iter()
        .find(|p| {
            p.address.as_deref().and_then(|a| a.parse::<std::net::SocketAddr>().ok()).map(|a| a.ip()) == Some(to.into())
        })
        .with_context(|| format!("the stolen node has no peer at {to}"))?;
    let link = cfg.links.iter().find(|l| l.peer == peer.id).context("the stolen node has no link SA to that peer")?;
    let sa = cfg.outbound_sas.iter().find(|o| o.index == link.sa).context("the link's SA is not in the file")?;
    let mut sa = zsfc_config::sa_config(&sa.sa, 0).map_err(|(f, why)| anyhow::anyhow!("{f}: {why}"))?;
    let used = frames
        .iter()
        .filter_map(|f| f.bytes.get(f.payload_at() + 4..f.payload_at() + 8))
        .filter_map(|b| b.try_into().ok().map(u32::from_be_bytes))
        .max()
        .unwrap_or(0);
    sa.first_seq = u64::from(used) + 512;
    Ok(zsfc_esp::OutboundSa::new(&sa, zsfc_esp::Instant::ZERO)?)
}

/// Changes the addresses of the IPv4 packet under the labels (and NSH) of `f` so that its
/// header checksum still holds; with `reseal`, the frame's link ESP is sealed again around the
/// changed packet, otherwise it is left as it was.
fn rewrite_inner_addresses(f: &mut Frame, reseal: Option<&mut zsfc_esp::OutboundSa>) -> anyhow::Result<()> {
    let udp_at = f.udp_at.context("rewrite works on MPLS-in-UDP and UDP-encapsulated ESP frames")?;
    let protected = f.bytes.get(udp_at + 2..udp_at + 4) == Some(&UDP_ENCAP_PORT.to_be_bytes()[..]);
    let p = f.payload_at();
    let labelled = if protected { p + ESP_HDR_IV } else { p };
    let depth = zsfc_wire::mpls::stack_depth(f.bytes.get(labelled..).unwrap_or(&[]), 16)?;
    let mut at = labelled + depth * 4;
    if f.bytes.get(at).is_some_and(|&b| zsfc_wire::nsh::looks_like_nsh(b)) {
        at += zsfc_wire::nsh::Header::new_checked(&f.bytes[at..])?.len();
    }
    let ip = f.bytes.get_mut(at..at + 20).context("no IPv4 header under the labels")?;
    anyhow::ensure!(ip[0] >> 4 == 4 && ip[15] > 0 && ip[19] < 255, "not an IPv4 packet this can rewrite");
    // One's complement: +1 in the destination's last word and -1 in the source's cancel out.
    ip[19] += 1;
    ip[15] -= 1;
    if let (true, Some(sa)) = (protected, reseal) {
        let end = f.bytes.len() - ESP_ICV;
        let pad = usize::from(f.bytes[end - 2]);
        let mut buf = zsfc_wire::PacketBuf::from_slice(&f.bytes[labelled..end - 2 - pad]);
        sa.seal_link(zsfc_esp::Instant::ZERO, &mut buf, 137).map_err(|e| anyhow::anyhow!("link ESP: {e}"))?;
        f.bytes.truncate(p);
        f.bytes.extend_from_slice(buf.as_slice());
    }
    Ok(())
}

/// An AF_PACKET socket on `dev` that sees frames in both directions and can send raw frames.
fn tap(dev: &str) -> anyhow::Result<OwnedFd> {
    let link = nix::ifaddrs::getifaddrs()?
        .filter(|a| a.interface_name == dev)
        .find_map(|a| a.address.and_then(|s| s.as_link_addr().copied()))
        .with_context(|| format!("no interface named {dev:?}"))?;
    let fd = socket(AddressFamily::Packet, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::EthAll)?;
    bind(fd.as_raw_fd(), &link)?;
    nix::sys::socket::setsockopt(
        &fd,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(0, 200_000),
    )?;
    Ok(fd)
}

/// Frames of IPv4/UDP to `to`:`port` (one datagram each: the link must not carry GSO batches,
/// see the tests), or MPLS frames to MAC address `to`.
fn capture(fd: &OwnedFd, to: Target, port: Option<u16>, n: usize, patience: Duration) -> anyhow::Result<Vec<Frame>> {
    // Big enough for link ESP around at least one label.
    const DOMAIN_MIN: usize = ESP_HDR_IV + 4 + 4 + ESP_ICV;
    let mut out = Vec::with_capacity(n);
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + patience;
    while out.len() < n && Instant::now() < deadline {
        let len = match recv(fd.as_raw_fd(), &mut buf, nix::sys::socket::MsgFlags::empty()) {
            Ok(l) => l,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let f = &buf[..len];
        let to = match to {
            Target::Mac(mac) => {
                // Liveness probes (plain GAL/BFD without link protection) are not steered
                // packets: they carry nothing to rewrite or replay.
                if f.len() >= ETH_HDR + DOMAIN_MIN
                    && f[..6] == mac
                    && f[12..14] == zsfc_wire::ethernet::ethertype::MPLS.to_be_bytes()
                    && !zsfc_wire::bfd::is_probe(&f[ETH_HDR..])
                {
                    out.push(Frame { bytes: f.to_vec(), udp_at: None });
                }
                continue;
            }
            Target::Ip(ip) => ip,
        };
        if f.len() < ETH_HDR + 20 + 8 || f[12..14] != [0x08, 0x00] {
            continue;
        }
        let Ok(ip) = zsfc_wire::ipv4::Packet::new_checked(&f[ETH_HDR..]) else { continue };
        let udp_at = ETH_HDR + ip.header_len();
        let udp_dst = f.get(udp_at + 2..udp_at + 4).map(|p| u16::from_be_bytes([p[0], p[1]]));
        let wanted = |d: u16| port.map_or(domain_port(d), |p| p == d);
        if ip.protocol() != 17 || Ipv4Addr::from(ip.dst()) != to || !udp_dst.is_some_and(wanted) {
            continue;
        }
        if udp_dst.is_some_and(domain_port)
            && (len < udp_at + 8 + DOMAIN_MIN || {
                // Under link ESP (AES-GMAC: the labels stay readable) or plain.
                let labels = if udp_dst == Some(UDP_ENCAP_PORT) { udp_at + 8 + ESP_HDR_IV } else { udp_at + 8 };
                f.get(labels..).is_some_and(zsfc_wire::bfd::is_probe)
            })
        {
            continue;
        }
        out.push(Frame { bytes: f.to_vec(), udp_at: Some(udp_at) });
    }
    Ok(out)
}

fn send_frame(fd: &OwnedFd, frame: &[u8]) -> u64 {
    u64::from(send(fd.as_raw_fd(), frame, nix::sys::socket::MsgFlags::empty()).is_ok())
}

//! One node process: its engines (one per worker lane), the I/O drivers, the gateway, the
//! controller agent and the metrics endpoint, until SIGTERM or SIGINT.
use anyhow::Context;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use zsfc_config::NodeConfig;
use zsfc_config::PeerLink;
use zsfc_dataplane::Instant;
use zsfc_io::{AttachmentKind, AttachmentSpec, Drivers, PeerAddr, TransportSpec, TunSpec};

/// What a node process is started with.
#[derive(Debug, Clone)]
pub struct Options {
    /// The node's configuration file.
    pub config: std::path::PathBuf,
    /// Written once every device exists and the gateway (if any) listens: the node is ready.
    pub ready_file: Option<std::path::PathBuf>,
}

// The configuration's limit is what the Ethernet driver can mark.
const _: () = assert!(zsfc_config::MAX_ETHERNET_LANES == zsfc_io::MAX_TC_LANES as u32);

/// Runs the node until it is told to stop; `Ok(true)` after a clean stop.
pub fn run(a: &Options) -> anyhow::Result<bool> {
    // The file's text holds keys: zeroized when it goes, like everything that holds them.
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(&a.config).with_context(|| format!("reading {}", a.config.display()))?,
    );
    let mut cfg = NodeConfig::from_toml(&text).with_context(|| a.config.display().to_string())?;
    let io = cfg.io_settings().with_context(|| a.config.display().to_string())?;
    let lanes = cfg.settings.lanes;
    let mut nodes = Vec::new();
    for lane in 0..lanes {
        nodes.push(cfg.build_lane(Instant::ZERO, lane).with_context(|| a.config.display().to_string())?);
    }
    drop(text);
    // The engines hold the keys now (and erase them at each SA's hard lifetime).
    cfg.forget_keys();
    // Enrol (or load the node's certificate) before anything is opened: a refusal stops here.
    let controller = match &cfg.controller {
        Some(c) => Some(crate::agent::enrolled_client(c, &cfg.name).context("controller")?),
        None => None,
    };
    let tun = io.tun.as_ref().map(|t| TunSpec { name: t.name.clone(), addresses: t.addresses.clone(), mtu: t.mtu });
    let mut attachments = Vec::new();
    for a in &io.attachments {
        let node = &nodes[0];
        let sf = node
            .sf_ids()
            .find(|&id| node.sf_report(id).is_some_and(|r| r.name == a.sf))
            .with_context(|| format!("the external SF {:?} was not built", a.sf))?;
        let kind = match a.veth_peer {
            Some(to_sf_mac) => AttachmentKind::Veth { to_sf_mac },
            None => AttachmentKind::Tun,
        };
        let (to_sf, from_sf) = (a.to_sf.clone(), a.from_sf.clone());
        attachments.push(AttachmentSpec { sf, lane: a.lane as u16, to_sf, from_sf, mtu: a.mtu, kind });
    }
    let peers: Vec<(u32, PeerAddr)> = io
        .peers
        .iter()
        .map(|&(id, l)| {
            (
                id,
                match l {
                    PeerLink::Udp(a) => PeerAddr::Udp(a),
                    PeerLink::Ethernet(m) => PeerAddr::Ethernet(m),
                },
            )
        })
        .collect();
    let ring = match io.ring {
        zsfc_config::EthernetRing::Frames => zsfc_io::RingKind::Frames,
        zsfc_config::EthernetRing::Blocks => zsfc_io::RingKind::Blocks,
    };
    let transport =
        TransportSpec { listen: io.listen, ethernet: io.ethernet.clone(), ring, link_esp: cfg.settings.link_auth };
    let mut drivers = Drivers::open_lanes(&transport, &peers, tun.as_ref(), &attachments, lanes as u16)?;
    if let Some(t) = &io.tun {
        crate::routes::install(&t.name, &t.routes)?;
    }
    let (control_tx, control_rx): (Vec<_>, Vec<_>) = (0..lanes).map(|_| std::sync::mpsc::channel()).unzip();
    let agent_lanes = control_tx.clone();
    let mut services = Vec::new();
    let gateway = match &io.gateway {
        None => None,
        Some(g) => {
            services = g
                .services
                .iter()
                .map(|(name, address)| zsfc_gateway::Service { name: name.clone(), address: *address })
                .collect();
            let settings = zsfc_gateway::GatewaySettings {
                listen: g.listen,
                ca: g.ca.clone(),
                cert: g.cert.clone(),
                key: g.key.clone(),
                inner_source: g.inner_source,
                policy: zsfc_gateway::Policy {
                    services: g
                        .services
                        .iter()
                        .map(|(name, address)| zsfc_gateway::Service { name: name.clone(), address: *address })
                        .collect(),
                    grants: g
                        .grants
                        .iter()
                        .map(|(identity, service, chain, path)| zsfc_gateway::Grant {
                            identity: identity.clone(),
                            service: service.clone(),
                            chain: zsfc_dataplane::ChainId(*chain),
                            path: path.clone(),
                        })
                        .collect(),
                },
                limits: {
                    let l = g.rate_limits;
                    let rate = |per_s: u32, burst: u32| zsfc_gateway::Rate {
                        per_s: f64::from(per_s),
                        burst: f64::from(burst.max(1)),
                    };
                    zsfc_gateway::RateLimits {
                        per_source: rate(l.per_source_per_s, l.per_source_burst),
                        per_identity: rate(l.per_identity_per_s, l.per_identity_burst),
                    }
                },
                blocking: zsfc_gateway::Blocking {
                    after: g.blocking.after_refusals,
                    within: std::time::Duration::from_secs(g.blocking.within_s.into()),
                    duration: std::time::Duration::from_secs(g.blocking.block_s.into()),
                },
            };
            let gw = zsfc_gateway::start(settings, control_tx).context("starting the gateway")?;
            tracing::info!("zsfc node {:?}: gateway listening on {} (mutual TLS 1.3)", cfg.name, gw.local_addr);
            Some(Arc::new(gw))
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing signal handlers")?;
    }
    if let Some(w) = crate::interop::warning() {
        tracing::info!("zsfc node {:?}: {w}", cfg.name);
    }
    tracing::info!(
        "zsfc node {:?}: {} ({} peers){}{}",
        cfg.name,
        [
            io.listen.map(|l| format!("MPLS-in-UDP on {l}")),
            io.ethernet.as_ref().map(|e| format!("Ethernet+MPLS on {e} (ring of {})", ring.name())),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" and "),
        io.peers.len(),
        tun.as_ref().map(|t| format!(", local side on {}", t.name)).unwrap_or_default(),
        if lanes > 1 { format!(", {lanes} lanes") } else { String::new() }
    );
    let peer_names: Vec<(u32, String)> = cfg.peers.iter().map(|p| (p.id, p.name.clone())).collect();
    let metrics: Vec<crate::metrics::Metrics> =
        (0..lanes).map(|_| crate::metrics::Metrics::new(peer_names.clone())).collect();
    if let Some(listen) = io.metrics {
        let registry = crate::metrics::registry(&cfg.name, &metrics);
        let gw = gateway.as_ref().map(|g| g.stats.clone());
        let at = crate::metrics::serve(listen, registry, metrics[0].clone(), gw)?;
        tracing::info!("zsfc node {:?}: metrics on http://{at}/metrics", cfg.name);
    }
    let (events_tx, events_rx) = std::sync::mpsc::channel();
    match controller {
        // Ready once the controller's first state is applied.
        Some(client) => crate::agent::start(crate::agent::AgentSetup {
            name: cfg.name.clone(),
            client,
            lanes: agent_lanes,
            peers: io.peers.iter().map(|&(id, _)| id).collect(),
            gateway: gateway.clone().map(|g| (g, services)),
            ready_file: a.ready_file.clone(),
            events: events_rx,
            sf_names: nodes[0].sf_ids().filter_map(|id| nodes[0].sf_report(id)).map(|r| r.name).collect(),
            peer_names: peer_names.clone(),
            held: held_certificates(&cfg, &io, gateway.as_ref()),
        })?,
        None => {
            drop((events_rx, agent_lanes));
            if let Some(p) = &a.ready_file {
                std::fs::write(p, b"ready\n").with_context(|| format!("writing {}", p.display()))?;
            }
        }
    }
    // One thread per lane; every lane stops on the same signal.
    let results: Vec<Result<(), zsfc_io::IoError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = drivers
            .iter_mut()
            .zip(nodes.iter_mut())
            .zip(control_rx.into_iter().zip(&metrics))
            .enumerate()
            .map(|(lane, ((d, n), (rx, m)))| {
                let (stop, events) = (&stop, events_tx.clone());
                scope.spawn(move || {
                    d.run(n, stop, Some(&rx), |io, node| {
                        m.publish(io, node);
                        while let Some(e) = node.poll_event() {
                            let _ = events.send((lane, e));
                        }
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(zsfc_io::IoError::Io(std::io::Error::other("a lane panicked")))))
            .collect()
    });
    for r in results {
        r?;
    }

    // Final report on stdout: what the drivers and the engine of each lane did.
    for (lane, (d, node)) in drivers.iter().zip(&nodes).enumerate() {
        let name = if lanes > 1 { format!("{} lane {lane}", cfg.name) } else { cfg.name.clone() };
        report(&name, &d.stats, node, if lane == 0 { gateway.as_deref() } else { None });
    }
    Ok(true)
}

/// The certificates the agent renews: the node's own, and the gateway's where it runs one.
fn held_certificates(
    cfg: &zsfc_config::NodeConfig,
    io: &zsfc_config::IoSettings,
    gateway: Option<&Arc<zsfc_gateway::Gateway>>,
) -> Vec<crate::renew::Held> {
    let mut held = Vec::new();
    if let Some(c) = &cfg.controller {
        let dir = std::path::PathBuf::from(&c.identity_dir);
        held.push(crate::renew::Held {
            what: "node",
            cert: dir.join("node.pem"),
            key: dir.join("node.key"),
            gateway: None,
        });
    }
    if let (Some(g), Some(gw)) = (&io.gateway, gateway) {
        held.push(crate::renew::Held {
            what: "gateway",
            cert: g.cert.clone(),
            key: g.key.clone(),
            gateway: Some(gw.clone()),
        });
    }
    held
}

fn report(name: &str, s: &zsfc_io::IoStats, node: &zsfc_dataplane::Node, gateway: Option<&zsfc_gateway::Gateway>) {
    println!(
        "node {}: udp rx {} tx {} ({} receives, {} sends) eth rx {} tx {} other {} ring-errors {} unknown-source {}/{}; tun rx {} ({} reads) tx {}; sf rx {} tx {}; undeliverable {}",
        name,
        s.udp_rx,
        s.udp_tx,
        s.udp_recv_calls,
        s.udp_send_calls,
        s.eth_rx,
        s.eth_tx,
        s.eth_other,
        s.eth_ring_errors,
        s.udp_unknown_source,
        s.eth_unknown_source,
        s.tun_rx,
        s.tun_reads,
        s.tun_tx,
        s.sf_rx,
        s.sf_tx,
        s.undeliverable
    );
    if let Some(gw) = gateway {
        let g = &gw.stats;
        let refused: Vec<String> =
            zsfc_gateway::ClientRefusal::ALL.iter().map(|&r| format!("{}={}", r.name(), g.refused(r))).collect();
        println!(
            "gateway: accepted {} served {} refused {}",
            g.accepted.load(std::sync::atomic::Ordering::Relaxed),
            g.served.load(std::sync::atomic::Ordering::Relaxed),
            refused.join(" ")
        );
        println!("flows: inserted {} refused {}", s.flows_inserted, s.flows_refused);
    }
    let n = node.stats();
    println!("engine: classified {} forwarded {} delivered {}", n.classified, n.forwarded, n.delivered);
    for (r, c) in node.drops().nonzero().chain(s.drops().into_iter().filter(|d| d.1 > 0)) {
        println!("drop {} {c}", r.name());
    }
    for id in node.sf_ids() {
        if let Some(r) = node.sf_report(id) {
            let own: Vec<String> = r.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let p = &r.proxy;
            println!(
                "sf {} rx_success={} tx_success={} {} proxy: rx_ignored={} rx_collision={} tx_ignored={} \
                 tx_not_cached={} evicted={} expired={} sf_dropped={} peak_in_flight={} cached={}",
                r.name,
                p.rx_success,
                p.tx_success,
                own.join(" "),
                p.rx_ignored,
                p.rx_collision,
                p.tx_ignored,
                p.tx_not_cached,
                p.evicted,
                p.expired,
                p.sf_dropped,
                p.peak_in_flight,
                r.cached
            );
        }
    }
}

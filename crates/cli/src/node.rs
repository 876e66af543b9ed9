//! `zsfc node`: one node process.
use anyhow::Context;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use zsfc_config::NodeConfig;
use zsfc_config::PeerLink;
use zsfc_dataplane::Instant;
use zsfc_io::{AttachmentSpec, Drivers, PeerAddr, TransportSpec, TunSpec};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The node's configuration file.
    #[arg(long)]
    config: std::path::PathBuf,
    /// Written once every device exists and the gateway (if any) listens: the node is ready.
    #[arg(long)]
    ready_file: Option<std::path::PathBuf>,
}

pub(crate) fn run(a: &Args) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(&a.config).with_context(|| format!("reading {}", a.config.display()))?;
    let cfg = NodeConfig::from_toml(&text).with_context(|| a.config.display().to_string())?;
    let io = cfg.io_settings().with_context(|| a.config.display().to_string())?;
    let mut node = cfg.build(Instant::ZERO).with_context(|| a.config.display().to_string())?;
    drop(text);
    let tun = io.tun.as_ref().map(|t| TunSpec { name: t.name.clone(), addresses: t.addresses.clone(), mtu: t.mtu });
    let mut attachments = Vec::new();
    for a in &io.attachments {
        let sf = node
            .sf_ids()
            .find(|&id| node.sf_report(id).is_some_and(|r| r.name == a.sf))
            .with_context(|| format!("the external SF {:?} was not built", a.sf))?;
        attachments.push(AttachmentSpec { sf, to_sf: a.to_sf.clone(), from_sf: a.from_sf.clone(), mtu: a.mtu });
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
    let transport = TransportSpec { listen: io.listen, ethernet: io.ethernet.clone() };
    let mut drivers = Drivers::open(&transport, &peers, tun.as_ref(), &attachments)?;
    let (control_tx, control_rx) = std::sync::mpsc::channel();
    let gateway = match &io.gateway {
        None => None,
        Some(g) => {
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
            };
            let gw = zsfc_gateway::start(settings, control_tx).context("starting the gateway")?;
            eprintln!("zsfc node {:?}: gateway listening on {} (mutual TLS 1.3)", cfg.name, gw.local_addr);
            Some(gw)
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing signal handlers")?;
    }
    eprintln!(
        "zsfc node {:?}: {}{} ({} peers){}",
        cfg.name,
        io.listen.map(|l| format!("MPLS-in-UDP on {l}")).unwrap_or_default(),
        io.ethernet.as_ref().map(|e| format!(" Ethernet+MPLS on {e}")).unwrap_or_default(),
        io.peers.len(),
        tun.as_ref().map(|t| format!(", local side on {}", t.name)).unwrap_or_default()
    );
    let metrics = crate::metrics::Metrics::default();
    if let Some(listen) = io.metrics {
        let registry = metrics.registry(&cfg.name);
        let gw = gateway.as_ref().map(|g| g.stats.clone());
        let at = crate::metrics::serve(listen, registry, metrics.clone(), gw)?;
        eprintln!("zsfc node {:?}: metrics on http://{at}/metrics", cfg.name);
    }
    if let Some(p) = &a.ready_file {
        std::fs::write(p, b"ready\n").with_context(|| format!("writing {}", p.display()))?;
    }
    drivers.run(&mut node, &stop, Some(&control_rx), |io, node| metrics.publish(io, node))?;

    // Final report on stdout: what the drivers and the engine did.
    let s = drivers.stats;
    println!(
        "node {}: udp rx {} tx {} ({} receives, {} sends) eth rx {} tx {} other {} unknown-source {}; tun rx {} ({} reads) tx {}; sf rx {} tx {}; undeliverable {}",
        cfg.name,
        s.udp_rx,
        s.udp_tx,
        s.udp_recv_calls,
        s.udp_send_calls,
        s.eth_rx,
        s.eth_tx,
        s.eth_other,
        s.udp_unknown_source,
        s.tun_rx,
        s.tun_reads,
        s.tun_tx,
        s.sf_rx,
        s.sf_tx,
        s.undeliverable
    );
    if let Some(gw) = &gateway {
        let g = &gw.stats;
        let refused: Vec<String> =
            zsfc_gateway::Refusal::ALL.iter().map(|&r| format!("{}={}", r.name(), g.refused(r))).collect();
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
    for (r, c) in node.drops().nonzero() {
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
    Ok(true)
}

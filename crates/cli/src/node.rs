//! `zsfc node`: one node process.
use anyhow::Context;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use zsfc_config::NodeConfig;
use zsfc_dataplane::Instant;
use zsfc_io::{Drivers, TunSpec};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The node's configuration file.
    #[arg(long)]
    config: std::path::PathBuf,
}

pub(crate) fn run(a: &Args) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(&a.config).with_context(|| format!("reading {}", a.config.display()))?;
    let cfg = NodeConfig::from_toml(&text).with_context(|| a.config.display().to_string())?;
    let io = cfg.io_settings().with_context(|| a.config.display().to_string())?;
    let mut node = cfg.build(Instant::ZERO).with_context(|| a.config.display().to_string())?;
    drop(text);
    let tun = io.tun.as_ref().map(|t| TunSpec { name: t.name.clone(), addresses: t.addresses.clone(), mtu: t.mtu });
    let mut drivers = Drivers::open(io.listen, &io.peers, tun.as_ref())?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing signal handlers")?;
    }
    eprintln!(
        "zsfc node {:?}: listening on {} ({} peers){}",
        cfg.name,
        io.listen,
        io.peers.len(),
        tun.as_ref().map(|t| format!(", local side on {}", t.name)).unwrap_or_default()
    );
    drivers.run(&mut node, &stop)?;

    // Final report on stdout: what the drivers and the engine did.
    let s = drivers.stats;
    println!(
        "node {}: udp rx {} tx {} unknown-source {}; tun rx {} tx {}; undeliverable {}",
        cfg.name, s.udp_rx, s.udp_tx, s.udp_unknown_source, s.tun_rx, s.tun_tx, s.undeliverable
    );
    let n = node.stats();
    println!("engine: classified {} forwarded {} delivered {}", n.classified, n.forwarded, n.delivered);
    for (r, c) in node.drops().nonzero() {
        println!("drop {} {c}", r.name());
    }
    for id in node.sf_ids() {
        if let Some(r) = node.sf_report(id) {
            let own: Vec<String> = r.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!(
                "sf {} rx_success={} tx_success={} {}",
                r.name,
                r.proxy.rx_success,
                r.proxy.tx_success,
                own.join(" ")
            );
        }
    }
    Ok(true)
}

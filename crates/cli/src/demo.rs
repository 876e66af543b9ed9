//! `zsfc demo`: the in-memory reference chain with real packets, and a report of their fate.
use anyhow::Context;
use std::collections::BTreeMap;
use zsfc_sim::packets::{self, Flow};
use zsfc_sim::scenario::{self, EGRESS, INGRESS};
use zsfc_sim::{ClientSide, FakeEchoService, LinkModel};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Packets per flow (four flows: IPv4/IPv6 × TCP/UDP).
    #[arg(long, default_value_t = 100)]
    packets: u32,
    /// Write the non-intrusive logger SF's capture here (ESP packets; open with Wireshark).
    #[arg(long, default_value = "zsfc-demo-logger.pcap")]
    pcap: std::path::PathBuf,
    /// Push an NSH (MD type 2) with a subscriber id below the labels.
    #[arg(long)]
    nsh: bool,
    /// Packets lost per million on every link.
    #[arg(long, default_value_t = 0)]
    loss_ppm: u32,
    /// Random extra delay on links in microseconds (reorders packets).
    #[arg(long, default_value_t = 0)]
    jitter_us: u64,
}

fn flows() -> [(&'static str, Flow); 4] {
    [
        ("client 10.1.0.5  TCP -> 10.9.0.1:80", Flow::tcp("10.1.0.5", 40000, scenario::SERVICE_V4, 80)),
        ("client 10.1.0.6  UDP -> 10.9.0.1:53", Flow::udp("10.1.0.6", 5353, scenario::SERVICE_V4, 53)),
        ("client fd01::5   TCP -> [fd09::1]:80", Flow::tcp("fd01::5", 40001, scenario::SERVICE_V6, 80)),
        ("client fd01::6   UDP -> [fd09::1]:53", Flow::udp("fd01::6", 5354, scenario::SERVICE_V6, 53)),
    ]
}

/// Returns Ok(true) when every packet met its expected fate.
pub(crate) fn run(a: &Args) -> anyhow::Result<bool> {
    let pcap = std::fs::File::create(&a.pcap).with_context(|| format!("creating {}", a.pcap.display()))?;
    let mut sim = scenario::six_sf_chain(Box::new(std::io::BufWriter::new(pcap)), a.nsh)?;
    sim.link = LinkModel {
        jitter: core::time::Duration::from_micros(a.jitter_us),
        loss_ppm: a.loss_ppm,
        ..LinkModel::default()
    };

    println!("zsfc demo: in-memory domain, fake clock, real packets");
    println!(
        "  forward chain 1 : ingress -> firewall(I) -> dpi(I, external) -> counter(N, external) -> nat(I) -> logger(N) -> delay 1ms(I) -> egress -> service"
    );
    println!("  return chain 2  : egress -> nat(I) -> logger(N) -> ingress");
    println!("  (I = intrusive: decrypts and re-encrypts with its own SA; N = non-intrusive: sees ESP only)\n");

    let mut sent: BTreeMap<usize, (u32, u32)> = BTreeMap::new(); // flow -> (packets, with "test")
    let t0 = sim.now;
    for i in 0..a.packets {
        for (f, (_, flow)) in flows().iter().enumerate() {
            let test = i % 10 == 7;
            let mut payload = format!("flow{f} packet{i} ").into_bytes();
            if test {
                payload.extend_from_slice(b"GET /test");
            }
            payload.resize(64 + (i as usize * 97) % 1300, b'.');
            let at = t0 + core::time::Duration::from_micros(u64::from(i) * 100 + f as u64);
            sim.send_local(INGRESS, at, &packets::build(flow, i + 1, &payload));
            let e = sent.entry(f).or_default();
            e.0 += 1;
            e.1 += u32::from(test);
        }
    }
    sim.run(usize::MAX);

    let svc = sim.local::<FakeEchoService>(EGRESS).context("service side")?;
    let cl = sim.local::<ClientSide>(INGRESS).context("client side")?;
    let nat_of = |f: &Flow| if f.src.is_ipv4() { scenario::NAT_V4 } else { scenario::NAT_V6 };
    println!("{:<40} {:>6} {:>11} {:>12} {:>14}", "traffic", "sent", "DPI-blocked", "at service", "answers back");
    let mut ok = svc.malformed.is_empty() && cl.malformed.is_empty();
    for (f, (name, flow)) in flows().iter().enumerate() {
        let (n, tests) = sent.get(&f).copied().unwrap_or_default();
        let nat: std::net::IpAddr = nat_of(flow).parse()?;
        let at_service = svc
            .received
            .iter()
            .filter(|p| {
                p.flow.dst == flow.dst
                    && p.flow.dst_port == flow.dst_port
                    && p.flow.src == nat
                    && p.payload.starts_with(format!("flow{f} ").as_bytes())
            })
            .count();
        let back = cl.received.iter().filter(|p| p.flow == flow.reversed()).count();
        println!("{name:<40} {n:>6} {tests:>11} {at_service:>12} {back:>14}");
        if a.loss_ppm == 0 {
            ok &= at_service == (n - tests) as usize && back == at_service;
        }
    }
    println!(
        "\nservice side: {} packets, all plain IP with valid checksums, source rewritten to the NAT address: {}",
        svc.received.len(),
        if svc.malformed.is_empty() { "yes" } else { "NO" }
    );

    // Let the proxies forget the headers of packets the external DPI dropped without a word.
    sim.advance(core::time::Duration::from_secs(3));
    println!(
        "\nservice functions (proxy cache counters as in seed 003; `expired` = entries of packets an external SF dropped):"
    );
    println!(
        "{:<8} {:<9} {:<5} {:<9} {:>9} {:>9} {:>9} {:>10} {:>8}  own counters",
        "node", "sf", "label", "mode", "rx_succ", "tx_succ", "collide", "not_cached", "expired"
    );
    for s in &sim.nodes {
        for id in s.node.sf_ids() {
            let Some(r) = s.node.sf_report(id) else { continue };
            let mut own: Vec<String> = r.counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if let Some(ext) = s.external.get(&id) {
                ext.counters(&mut |k, v| own.push(format!("{k}={v}")));
            }
            let mode = format!("{}{}", if r.intrusive { "I" } else { "N" }, if r.external { ",ext" } else { "" });
            println!(
                "{:<8} {:<9} {:<5} {:<9} {:>9} {:>9} {:>9} {:>10} {:>8}  {}",
                s.name,
                r.name,
                r.label,
                mode,
                r.proxy.rx_success,
                r.proxy.tx_success,
                r.proxy.rx_collision,
                r.proxy.tx_not_cached,
                r.proxy.expired,
                own.join(" ")
            );
        }
    }
    println!("\ndrops by node and reason:");
    let mut any = false;
    for s in &sim.nodes {
        for (r, n) in s.node.drops().nonzero() {
            println!("  {:<8} {:<24} {n}", s.name, r.name());
            any = true;
        }
    }
    if !any {
        println!("  none inside the nodes");
    }
    println!("  dropped silently by external SFs (the DPI): {}", sim.external_dropped);
    println!("  lost on links by the loss model: {}", sim.link_lost);
    println!("\nproxy caches after the run and housekeeping: {} entries", sim.cached_packets());
    ok &= sim.cached_packets() == 0;
    println!("logger capture written to {}", a.pcap.display());
    println!("\nresult: {}", if ok { "every packet met its expected fate" } else { "UNEXPECTED OUTCOME" });
    Ok(ok)
}

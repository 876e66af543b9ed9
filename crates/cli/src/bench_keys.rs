//! `zsfc bench rekey`: a numbered UDP stream through a 3-SF chain (two intrusive SFs) while the
//! controller rekeys the whole domain every second; counts lost and duplicated packets and the
//! nodes' replay and bad-SPI drops. `zsfc bench keying`: the controller and engine costs of keys.
use crate::traffic::{Counted, Stream};
use crate::up::RunningLab;
use anyhow::Context;
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use zsfc_config::{
    Function, Lab, LabChain, LabClient, LabGateway, LabNode, LabRule, LabService, LabSf, Protocol, ProtocolName,
    SaDefaults, ServiceKind,
};

#[derive(Debug, clap::Args)]
pub(crate) struct RekeyArgs {
    /// Packets per second of the UDP stream.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Length of the stream; the domain is rekeyed once a second meanwhile.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    #[arg(long)]
    json: Option<PathBuf>,
    #[arg(long, default_value = "/run/zsfc-bench")]
    state_dir: PathBuf,
}

#[derive(Debug, Serialize)]
struct RekeyResult {
    #[serde(flatten)]
    counted: Counted,
    rekeys: u64,
    rate_pps: u64,
    seconds: u64,
    replay_drops: u64,
    bad_spi_drops: u64,
    expired_drops: u64,
    /// Slowest rekey (all three steps, every node acknowledging), milliseconds.
    max_rekey_ms: u64,
}

const SINK_PORT: u16 = 7100;

fn sf(name: &str, node: &str, intrusive: bool, function: Function) -> LabSf {
    LabSf {
        name: name.into(),
        node: node.into(),
        intrusive,
        function: Some(function),
        iptables: None,
        translates_addresses: false,
        cache_capacity: None,
    }
}

/// client → ingress → sf1 [firewall, intrusive] → sf2 [counter; dpi, intrusive] → egress.
pub(crate) fn rekey_lab() -> Lab {
    let udp = Protocol::Name(ProtocolName::Udp);
    Lab {
        version: zsfc_config::VERSION,
        name: "rekey".into(),
        mtu: 1500,
        transport: Default::default(),
        attachments: Default::default(),
        lanes: 1,
        nodes: ["ingress", "sf1", "sf2", "egress"].iter().map(|n| LabNode { name: (*n).into() }).collect(),
        gateway: LabGateway { node: "ingress".into(), port: 443 },
        services: vec![LabService {
            name: "sink".into(),
            node: "egress".into(),
            kind: ServiceKind::UdpEcho,
            port: 7007,
            files: 9,
            bytes: 1_200_000,
            return_sfs: Vec::new(),
            return_prefixes: Vec::new(),
        }],
        sfs: vec![
            sf("fw", "sf1", true, Function::Firewall { default: zsfc_config::AclAction::Allow, rules: Vec::new() }),
            sf("count", "sf2", false, Function::Counter),
            sf("dpi", "sf2", true, Function::Dpi { patterns: vec!["never-in-this-stream".into()] }),
        ],
        chains: vec![LabChain {
            name: "stream".into(),
            service: "sink".into(),
            clients: Vec::new(),
            sfs: vec!["fw".into(), "count".into(), "dpi".into()],
            path: None,
            rules: vec![LabRule { protocol: udp, port: Some(SINK_PORT) }],
        }],
        clients: vec![LabClient { name: "c".into() }],
        expect: Vec::new(),
        sa: SaDefaults::default(),
        controller: Default::default(),
    }
}

/// Sum of one drop reason over every node's final report.
fn drops(report: &str, reason: &str) -> u64 {
    let prefix = format!("drop {reason} ");
    report.lines().filter_map(|l| l.strip_prefix(&prefix)).filter_map(|n| n.trim().parse::<u64>().ok()).sum()
}

pub(crate) fn rekey(a: &RekeyArgs) -> anyhow::Result<bool> {
    eprintln!("bench rekey: building the lab (4 nodes, controller, 3 SFs of which 2 intrusive)...");
    let lab = RunningLab::start(&rekey_lab(), &a.state_dir)?;
    let plan = &lab.plan;
    let egress = plan.nodes.iter().find(|n| n.name == "egress").context("no egress")?;
    let to = std::net::SocketAddr::new(plan.services[0].address.into(), SINK_PORT);
    eprintln!("bench rekey: {} packets/s for {} s, rekeying every second...", a.rate, a.seconds);
    let stream = Stream::start(&plan.clients[0].ns, &egress.ns, to, a.rate, Duration::from_secs(a.seconds))?;
    let length = Duration::from_secs(a.seconds);
    let (rekeys, slowest) = crate::control::with_operator(lab.state_dir(), &plan.name, |c| {
        let start = Instant::now();
        let (mut n, mut slowest) = (0u64, Duration::ZERO);
        // Start and end with quiet time so the stream's first and last packets see stable keys
        // too; rekey once a second in between.
        std::thread::sleep(Duration::from_millis(500));
        while start.elapsed() + Duration::from_secs(1) < length {
            let t = Instant::now();
            let r = c.blocking("POST", "/restconf/operations/zsfc:rekey", None, Duration::from_secs(30))?;
            anyhow::ensure!(r.status == 200, "rekey: {} {}", r.status, r.message());
            n += 1;
            slowest = slowest.max(t.elapsed());
            eprint!("\rbench rekey: {n} rekeys ({} ms the slowest)", slowest.as_millis());
            std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
        }
        eprintln!();
        Ok((n, slowest))
    })?;
    let counted = stream.finish()?;
    let report = lab.finish();
    let r = RekeyResult {
        counted,
        rekeys,
        rate_pps: a.rate,
        seconds: a.seconds,
        replay_drops: drops(&report, "esp_replay"),
        bad_spi_drops: drops(&report, "esp_bad_spi"),
        expired_drops: drops(&report, "sa_expired"),
        max_rekey_ms: slowest.as_millis() as u64,
    };
    println!(
        "sent {} received {} lost {} duplicated {} | rekeys {} (slowest {} ms) | drops: replay {} bad-SPI {} expired {}",
        r.counted.sent,
        r.counted.received,
        r.counted.lost,
        r.counted.duplicated,
        r.rekeys,
        r.max_rekey_ms,
        r.replay_drops,
        r.bad_spi_drops,
        r.expired_drops
    );
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&r)?)?;
    }
    Ok(true)
}

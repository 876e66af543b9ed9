//! `zsfc bench chain` and `zsfc bench pageload`: the seed 000 experiments on this machine, in
//! network namespaces, with real traffic (iperf3, curl over mutual TLS). Every run is bounded in
//! time; progress goes to stderr, the table to stdout, `--json FILE` writes the numbers.
use anyhow::{Context, bail};
use serde::Serialize;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;
use zsfc_config::{Function, Protocol, ProtocolName, SaDefaults};
use zsfc_lab::shell::{in_ns, ip, sysctl};
use zsfc_lab::{
    CertChoice, Lab, LabChain, LabClient, LabGateway, LabNode, LabRule, LabService, LabSf, LabTransport, ServiceKind,
};
use zsfc_lab::{LabGuard, Namespaces};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// TCP goodput through 0..6 SFs: kernel forwarding vs zsfc forwarding vs intrusive SFs.
    Chain(ChainArgs),
    /// The 9-file, 1.2 MB page over mutual TLS, through the DPI chain and through no SF.
    Pageload(PageloadArgs),
    /// Seed 003 on one external SFC-unaware SF behind the caching proxy.
    Proxy(ProxyArgs),
    /// A UDP stream through a 3-SF chain while the controller rekeys every second.
    Rekey(crate::bench_keys::RekeyArgs),
    /// Key handling costs: SAs installed per second, memory per SA, push latency and controller
    /// CPU for 1,000 chains.
    Keying(crate::bench_keys::KeyingArgs),
    /// Failover in an SF pool: TCP and 64 UDP flows through two instances, one instance's node
    /// killed with SIGKILL and restarted; gaps, losses, moved flows, detection times.
    Failover(crate::bench_failover::FailoverArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct ProxyArgs {
    /// Label stack depths the proxy caches.
    #[arg(long, value_delimiter = ',', default_value = "1,3,5,10")]
    labels: Vec<usize>,
    /// Cache sizes for the delaying SF.
    #[arg(long, value_delimiter = ',', default_value = "1000,2500,5000,10000,100000")]
    cache_sizes: Vec<usize>,
    /// Delay of the delaying SF, in milliseconds.
    #[arg(long, default_value_t = 20)]
    delay_ms: u64,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ChainArgs {
    /// Numbers of SFs in the chain.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2,4,6")]
    sfs: Vec<usize>,
    /// Modes: kernel (plain IP forwarding, no zsfc), forward (zsfc, SFs do not decrypt),
    /// intrusive (every SF decrypts and re-encrypts), secure (intrusive with every protection
    /// on: link authentication, SFC integrity with encrypted metadata, proof of transit).
    #[arg(long, value_delimiter = ',', default_value = "kernel,forward,intrusive,secure")]
    modes: Vec<String>,
    /// Link MTUs inside the domain.
    #[arg(long, value_delimiter = ',', default_value = "1500,9000")]
    mtu: Vec<u16>,
    /// How nodes reach each other: udp (MPLS-in-UDP) or ethernet (Ethernet + MPLS frames).
    #[arg(long, default_value = "udp")]
    transport: String,
    /// With --transport ethernet: how the receive ring hands frames over, frames (TPACKET_V2)
    /// or blocks (TPACKET_V3).
    #[arg(long, default_value = "frames")]
    ring: String,
    /// Worker lanes per node.
    #[arg(long, default_value_t = 1)]
    lanes: u32,
    /// Rounds: the whole sweep runs this many times, one cell after another in each round (so
    /// that a busy moment of the machine spreads over the cells), and each cell reports the
    /// median of its runs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    rounds: u32,
    #[command(flatten)]
    run: RunArgs,
}

/// What every traffic benchmark takes.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// Seconds of traffic per run.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Parallel TCP streams.
    #[arg(long, default_value_t = 4)]
    streams: u32,
    /// Write the results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    lab: BenchLab,
}

/// The lab a benchmark builds: its name (unique per run unless given) and where it keeps its
/// files. A lab of that name that is up already is an error, never removed: a benchmark removes
/// only what it built.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchLab {
    /// The benchmark lab's name [default: the benchmark's and this process's id, unique per run].
    #[arg(long)]
    name: Option<String>,
    /// Where the benchmark labs keep their files.
    #[arg(long, default_value = "/run/zsfc-bench")]
    pub(crate) state_dir: PathBuf,
}

impl BenchLab {
    /// The lab's name: `--name`, or `default` and this process's id.
    fn name(&self, default: &str) -> String {
        self.name.clone().unwrap_or_else(|| format!("{default}{}", std::process::id()))
    }

    /// Builds `lab` under this name (or its own name and this process's id).
    pub(crate) fn start(&self, mut lab: Lab) -> anyhow::Result<LabGuard> {
        lab.name = self.name(&lab.name);
        LabGuard::up(&lab, &self.state_dir, &std::env::current_exe().context("finding the zsfc binary")?)
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct PageloadArgs {
    /// Fetches per path (the median is reported).
    #[arg(long, default_value_t = 7)]
    runs: usize,
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    lab: BenchLab,
}

#[derive(Debug, Serialize)]
struct Row {
    sfs: usize,
    mode: String,
    mtu: u16,
    goodput_mbps: f64,
    /// Largest peak resident memory of a node process (KiB); 0 for the kernel mode.
    peak_rss_kib: u64,
    /// Peak resident memory of each node process (KiB).
    nodes_peak_rss_kib: std::collections::BTreeMap<String, u64>,
    /// CPU time all node processes spent per byte delivered (ns/B); absent for the kernel
    /// mode. Less sensitive than goodput to what else runs on the machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    node_cpu_ns_per_byte: Option<f64>,
    /// With `--rounds` above 1: every round's goodput (the row holds their medians).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rounds_mbps: Vec<f64>,
}

/// The median (the mean of the middle two for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One row per cell from the runs of every round, in the order of the first round.
fn merge_rounds(runs: Vec<Row>, rounds: u32) -> Vec<Row> {
    let mut cells: Vec<Vec<Row>> = Vec::new();
    for r in runs {
        match cells.iter_mut().find(|c| c[0].sfs == r.sfs && c[0].mode == r.mode && c[0].mtu == r.mtu) {
            Some(c) => c.push(r),
            None => cells.push(vec![r]),
        }
    }
    cells
        .into_iter()
        .map(|c| {
            let goodputs: Vec<f64> = c.iter().map(|r| r.goodput_mbps).collect();
            let cpu = c.iter().map(|r| r.node_cpu_ns_per_byte).collect::<Option<Vec<f64>>>().map(median);
            let peak =
                c.iter().max_by_key(|r| r.peak_rss_kib).map(|r| r.nodes_peak_rss_kib.clone()).unwrap_or_default();
            Row {
                sfs: c[0].sfs,
                mode: c[0].mode.clone(),
                mtu: c[0].mtu,
                goodput_mbps: median(goodputs.clone()),
                peak_rss_kib: c.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0),
                nodes_peak_rss_kib: peak,
                node_cpu_ns_per_byte: cpu,
                rounds_mbps: if rounds > 1 { goodputs } else { Vec::new() },
            }
        })
        .collect()
}

/// What `secure` costs against `intrusive` in each (SFs, MTU) that ran both: goodput lost and
/// the ratio of the nodes' CPU per byte.
fn secure_costs(rows: &[Row]) -> Vec<(usize, u16, f64, Option<f64>)> {
    let find = |n: usize, mtu: u16, mode: &str| rows.iter().find(|r| r.sfs == n && r.mtu == mtu && r.mode == mode);
    rows.iter()
        .filter(|r| r.mode == "secure")
        .filter_map(|s| {
            let i = find(s.sfs, s.mtu, "intrusive")?;
            let cost = 100.0 * (1.0 - s.goodput_mbps / i.goodput_mbps.max(f64::MIN_POSITIVE));
            let cpu = s.node_cpu_ns_per_byte.zip(i.node_cpu_ns_per_byte).map(|(a, b)| a / b);
            Some((s.sfs, s.mtu, cost, cpu))
        })
        .collect()
}

pub(crate) fn run(c: &Command) -> anyhow::Result<bool> {
    match c {
        Command::Chain(a) => chain(a),
        Command::Pageload(a) => pageload(a),
        Command::Proxy(a) => proxy(a),
        Command::Rekey(a) => crate::bench_keys::rekey(a),
        Command::Keying(a) => crate::bench_keys::keying(a),
        Command::Failover(a) => crate::bench_failover::failover(a),
    }
}

fn tcp() -> Protocol {
    Protocol::Name(ProtocolName::Tcp)
}

/// A lab: client → ingress → `n` SF nodes (one forwarding SF each) → egress with iperf3.
fn chain_lab(n: usize, intrusive: bool, mtu: u16, transport: LabTransport) -> Lab {
    let mut nodes = vec![LabNode { name: "ingress".into() }];
    nodes.extend((1..=n).map(|i| LabNode { name: format!("sf{i}") }));
    nodes.push(LabNode { name: "egress".into() });
    Lab {
        version: zsfc_config::VERSION,
        name: "bench".into(),
        mtu,
        transport,
        ring: None,
        attachments: zsfc_lab::LabAttachments::Veth,
        lanes: 1,
        nodes,
        gateway: LabGateway {
            node: "ingress".into(),
            also_on: Vec::new(),
            port: 443,
            rate_limits: Default::default(),
            blocking: Default::default(),
        },
        services: vec![LabService {
            name: "perf".into(),
            node: "egress".into(),
            kind: ServiceKind::Iperf3,
            port: 5201,
            files: 9,
            bytes: 1_200_000,
            return_sfs: Vec::new(),
            return_prefixes: Vec::new(),
        }],
        sfs: (1..=n)
            .map(|i| LabSf {
                name: format!("f{i}"),
                node: Some(format!("sf{i}")),
                instances: Vec::new(),
                intrusive,
                function: Some(Function::Forward),
                iptables: None,
                translates_addresses: false,
                cache_capacity: None,
            })
            .collect(),
        chains: vec![LabChain {
            name: "perf".into(),
            service: "perf".into(),
            clients: Vec::new(),
            sfs: (1..=n).map(|i| format!("f{i}")).collect(),
            path: None,
            rules: vec![LabRule { protocol: tcp(), port: None }],
            tenant: None,
        }],
        clients: vec![LabClient { name: "c".into() }],
        expect: Vec::new(),
        sa: SaDefaults::default(),
        controller: Default::default(),
        link_protection: false,
        sfc_integrity: false,
        liveness: Default::default(),
        certificates: Default::default(),
    }
}

/// iperf3 from `client_ns` to `server`:`port`; received goodput in Mb/s.
fn iperf(client_ns: &str, server: &str, port: u16, seconds: u32, streams: u32) -> anyhow::Result<f64> {
    Ok(iperf_bytes(client_ns, server, port, seconds, streams)?.0)
}

/// iperf3's goodput (Mb/s) and the bytes its server received.
fn iperf_bytes(client_ns: &str, server: &str, port: u16, seconds: u32, streams: u32) -> anyhow::Result<(f64, f64)> {
    let (port, seconds, streams) = (port.to_string(), seconds.to_string(), streams.to_string());
    let args = ["iperf3", "-c", server, "-p", &port, "-t", &seconds, "-P", &streams, "-J", "--connect-timeout", "3000"];
    let out = in_ns(client_ns, &args).context("iperf3")?;
    let v: serde_json::Value = serde_json::from_str(&out).context("iperf3's JSON")?;
    let received = &v["end"]["sum_received"];
    let bps = received["bits_per_second"].as_f64().context("iperf3 reported no goodput")?;
    let bytes = received["bytes"].as_f64().context("iperf3 reported no byte count")?;
    Ok((bps / 1e6, bytes))
}

/// The kernel baseline: as many namespaces in a line as the zsfc chain has (client, ingress,
/// `n` SF nodes, egress), plain IP forwarding between them, iperf3 at the end.
fn kernel_run(name: &str, n: usize, mtu: u16, seconds: u32, streams: u32) -> anyhow::Result<f64> {
    let names: Vec<String> = (0..n + 3).map(|i| format!("zsfc-{name}-k{i}")).collect();
    // Removed, with the iperf3 server, whatever happens.
    let mut namespaces = Namespaces::new();
    (|| -> anyhow::Result<f64> {
        let mtu = mtu.to_string();
        for ns in &names {
            namespaces.add(ns)?;
            sysctl(ns, &["net.ipv4.ip_forward=1"])?;
        }
        // Link i joins node i (10.250.i.1) and node i+1 (10.250.i.2).
        for i in 0..names.len() - 1 {
            let (a, b) = (&names[i], &names[i + 1]);
            ip(&[
                "link", "add", "kr", "mtu", &mtu, "netns", a, "type", "veth", "peer", "name", "kl", "mtu", &mtu,
                "netns", b,
            ])?;
            ip(&["-n", a, "link", "set", "kr", "up"])?;
            ip(&["-n", b, "link", "set", "kl", "up"])?;
            ip(&["-n", a, "addr", "add", &format!("10.250.{i}.1/24"), "dev", "kr"])?;
            ip(&["-n", b, "addr", "add", &format!("10.250.{i}.2/24"), "dev", "kl"])?;
        }
        let last = names.len() - 1;
        for (j, ns) in names.iter().enumerate() {
            if j < last {
                ip(&["-n", ns, "route", "add", "default", "via", &format!("10.250.{j}.2")])?;
            } else {
                ip(&["-n", ns, "route", "add", "default", "via", &format!("10.250.{}.1", j - 1)])?;
            }
            for k in 0..j.saturating_sub(1) {
                if j < last {
                    ip(&[
                        "-n",
                        ns,
                        "route",
                        "add",
                        &format!("10.250.{k}.0/24"),
                        "via",
                        &format!("10.250.{}.1", j - 1),
                    ])?;
                }
            }
        }
        let server = format!("10.250.{}.2", last - 1);
        let srv = std::process::Command::new("ip")
            .args(["netns", "exec", &names[last], "iperf3", "-s", "-1", "-B", &server])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(std::time::Duration::from_millis(300));
        let r = iperf(&names[0], &server, 5201, seconds, streams);
        let mut srv = srv;
        let _ = srv.kill();
        let _ = srv.wait();
        r
    })()
}

fn chain(a: &ChainArgs) -> anyhow::Result<bool> {
    for m in &a.modes {
        if !["kernel", "forward", "intrusive", "secure"].contains(&m.as_str()) {
            bail!("--modes: {m:?} is not kernel, forward, intrusive or secure");
        }
    }
    let transport = match a.transport.as_str() {
        "udp" => LabTransport::Udp,
        "ethernet" => LabTransport::Ethernet,
        t => bail!("--transport: {t:?} is not udp or ethernet"),
    };
    let ring = match (a.ring.as_str(), transport) {
        ("frames", _) => None,
        ("blocks", LabTransport::Ethernet) => Some(zsfc_config::EthernetRing::Blocks),
        ("blocks", _) => bail!("--ring blocks needs --transport ethernet"),
        (r, _) => bail!("--ring: {r:?} is not frames or blocks"),
    };
    let total = a.mtu.len() * a.sfs.len() * a.modes.len() * a.rounds as usize;
    let mut rows = Vec::new();
    let mut k = 0;
    for round in 1..=a.rounds {
        for &mtu in &a.mtu {
            for &n in &a.sfs {
                for mode in &a.modes {
                    k += 1;
                    let r = if a.rounds > 1 { format!("round {round}: ") } else { String::new() };
                    eprint!("[{k}/{total}] {r}{n} SFs, {mode}, MTU {mtu}: ");
                    let (goodput, nodes, cpu) = if mode == "kernel" {
                        (kernel_run(&a.run.lab.name("kbench"), n, mtu, a.run.seconds, a.run.streams)?, Vec::new(), None)
                    } else {
                        let mut spec = chain_lab(n, mode == "intrusive" || mode == "secure", mtu, transport);
                        spec.lanes = a.lanes;
                        spec.ring = ring;
                        spec.link_protection = mode == "secure";
                        spec.sfc_integrity = mode == "secure";
                        let lab = a.run.lab.start(spec)?;
                        let server = lab.plan.services[0].address.to_string();
                        let port = lab.plan.services[0].port;
                        let before = lab.node_cpu_seconds();
                        let (goodput, bytes) =
                            iperf_bytes(&lab.plan.clients[0].ns, &server, port, a.run.seconds, a.run.streams)?;
                        let cpu = (lab.node_cpu_seconds() - before) * 1e9 / bytes.max(1.0);
                        (goodput, lab.node_peak_rss(), Some(cpu))
                    };
                    let rss = nodes.iter().map(|r| r.1).max().unwrap_or(0);
                    let per_byte = cpu.map(|c| format!(", nodes' CPU {c:.2} ns/B")).unwrap_or_default();
                    eprintln!("{goodput:.0} Mb/s (max node RSS {rss} KiB{per_byte})");
                    rows.push(Row {
                        sfs: n,
                        mode: mode.clone(),
                        mtu,
                        goodput_mbps: goodput,
                        peak_rss_kib: rss,
                        nodes_peak_rss_kib: nodes.into_iter().collect(),
                        node_cpu_ns_per_byte: cpu,
                        rounds_mbps: Vec::new(),
                    });
                }
            }
        }
    }
    let rows = merge_rounds(rows, a.rounds);
    if a.rounds > 1 {
        println!("medians of {} rounds", a.rounds);
    }
    println!(
        "{:>4} {:>10} {:>6} {:>14} {:>16} {:>18}",
        "SFs", "mode", "MTU", "goodput Mb/s", "max node RSS", "nodes' CPU ns/B"
    );
    for r in &rows {
        let rss = if r.peak_rss_kib == 0 { "-".into() } else { format!("{} KiB", r.peak_rss_kib) };
        let cpu = r.node_cpu_ns_per_byte.map_or("-".into(), |c| format!("{c:.2}"));
        println!("{:>4} {:>10} {:>6} {:>14.0} {:>16} {:>18}", r.sfs, r.mode, r.mtu, r.goodput_mbps, rss, cpu);
    }
    let costs = secure_costs(&rows);
    for (n, mtu, cost, cpu) in &costs {
        let cpu = cpu.map(|c| format!(", nodes' CPU per byte ×{c:.2}")).unwrap_or_default();
        println!("secure against intrusive, {n} SFs, MTU {mtu}: {cost:.0}% less goodput{cpu}");
    }
    if let Some(p) = &a.run.json {
        let costs: Vec<_> = costs
            .iter()
            .map(|(n, mtu, cost, cpu)| serde_json::json!({"sfs": n, "mtu": mtu, "goodput_cost_percent": cost, "cpu_per_byte_ratio": cpu}))
            .collect();
        let doc = serde_json::json!({ "rows": rows, "secure_cost": costs });
        std::fs::write(p, serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(true)
}

/// A lab with one web service and two clients: `dpi` through an intrusive DPI SF, `direct`
/// through no SF; both through the mutual-TLS gateway.
fn pageload_lab() -> Lab {
    let text = r#"
version = 1
name = "pageload"
nodes = [{ name = "ingress" }, { name = "sf" }, { name = "egress" }]
gateway = { node = "ingress" }
clients = [{ name = "dpi" }, { name = "direct" }]
services = [{ name = "web", node = "egress", kind = "http", port = 80 }]
sfs = [{ name = "dpi", node = "sf", intrusive = true, function = { kind = "dpi", patterns = ["test"] } }]
chains = [
  { name = "via-dpi", service = "web", clients = ["dpi"], sfs = ["dpi"] },
  { name = "direct", service = "web", clients = ["direct"] },
]
"#;
    #[allow(clippy::expect_used)]
    Lab::from_toml(text).expect("the built-in pageload lab parses")
}

fn pageload(a: &PageloadArgs) -> anyhow::Result<bool> {
    let lab = a.lab.start(pageload_lab())?;
    let svc = lab.plan.services[0].clone();
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for run in 0..a.runs {
        // Interleaved, so a busy moment of the machine hits both.
        for (i, client) in lab.plan.clients.iter().enumerate() {
            let t = Instant::now();
            let (got, outcome) =
                zsfc_lab::check::fetch_page(&lab.plan, &lab.pki(), client, &svc, "/", CertChoice::Own)?;
            let s = t.elapsed().as_secs_f64();
            if outcome != Some(zsfc_lab::Outcome::Served) {
                bail!("run {run}: client {} did not get the page: {got}", client.name);
            }
            eprintln!("[{}/{}] {}: {s:.3} s", run + 1, a.runs, client.name);
            times[i].push(s);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let chain_s = median(&mut times[0]);
    let nochain_s = median(&mut times[1]);
    println!("page: {} files, {} bytes, median of {} fetches over mutual TLS", svc.files, svc.bytes, a.runs);
    println!("  through the DPI chain: {chain_s:.3} s");
    println!("  through no SF:         {nochain_s:.3} s");
    println!("  ratio:                 {:.2}", chain_s / nochain_s);
    for (n, kib) in lab.node_peak_rss() {
        println!("  node {n}: peak RSS {kib} KiB");
    }
    if let Some(p) = &a.json {
        let v = serde_json::json!({ "chain_s": chain_s, "nochain_s": nochain_s, "ratio": chain_s / nochain_s });
        std::fs::write(p, serde_json::to_string_pretty(&v)?)?;
    }
    Ok(true)
}

/// The proxy counters of SF `name` in the nodes' final reports.
fn proxy_counters(report: &str, name: &str) -> serde_json::Map<String, serde_json::Value> {
    let prefix = format!("sf {name} ");
    let mut m = serde_json::Map::new();
    if let Some(line) = report.lines().find(|l| l.starts_with(&prefix)) {
        for (k, v) in line.split_whitespace().filter_map(|w| w.split_once('=')) {
            if let Ok(n) = v.parse::<u64>() {
                m.insert(k.to_owned(), n.into());
            }
        }
    }
    m
}

/// Stops a proxy lab: the SF's proxy counters and the largest node peak RSS (KiB).
fn finish(lab: LabGuard) -> (serde_json::Map<String, serde_json::Value>, u64) {
    let rss = lab.node_peak_rss().iter().map(|r| r.1).max().unwrap_or(0);
    (proxy_counters(&lab.finish(), "sf"), rss)
}

fn counter(m: &serde_json::Map<String, serde_json::Value>, k: &str) -> u64 {
    m.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0)
}

/// client → ingress → [the SF under test on `sfnode`] → egress (+ `extra` forwarding SFs there,
/// each a label the proxy must cache) → iperf3. `clients` clients, each with its own chain and
/// service through the same SF.
fn proxy_lab(sf: LabSf, extra: usize, clients: usize) -> Lab {
    let mut sfs = vec![sf.clone()];
    sfs.extend((1..=extra).map(|i| LabSf {
        name: format!("pad{i}"),
        node: Some("egress".into()),
        instances: Vec::new(),
        intrusive: false,
        function: Some(Function::Forward),
        iptables: None,
        translates_addresses: false,
        cache_capacity: None,
    }));
    let mut path = vec![sf.name.clone()];
    path.extend((1..=extra).map(|i| format!("pad{i}")));
    let mut lab = chain_lab(0, false, 1500, LabTransport::Udp);
    lab.name = "pbench".into();
    lab.nodes = ["ingress", "sfnode", "egress"].iter().map(|n| LabNode { name: (*n).into() }).collect();
    lab.sfs = sfs;
    lab.clients = (1..=clients).map(|i| LabClient { name: format!("c{i}") }).collect();
    lab.services = (1..=clients)
        .map(|i| LabService { name: format!("perf{i}"), port: 5200 + i as u16, ..lab.services[0].clone() })
        .collect();
    lab.chains = (1..=clients)
        .map(|i| LabChain {
            name: format!("p{i}"),
            service: format!("perf{i}"),
            clients: Vec::new(),
            sfs: path.clone(),
            path: None,
            rules: vec![LabRule { protocol: tcp(), port: Some(5200 + i as u16) }],
            tenant: None,
        })
        .collect();
    lab
}

fn external(name: &str, rules: &[&str]) -> LabSf {
    LabSf {
        name: name.into(),
        node: Some("sfnode".into()),
        instances: Vec::new(),
        intrusive: false,
        function: None,
        iptables: Some(rules.iter().map(|r| (*r).to_owned()).collect()),
        translates_addresses: false,
        cache_capacity: None,
    }
}

/// Runs iperf3 from every client of `lab` at once; goodput of each in Mb/s.
fn iperf_all(lab: &LabGuard, seconds: u32, streams: u32) -> anyhow::Result<Vec<f64>> {
    std::thread::scope(|s| {
        let runs: Vec<_> = lab
            .plan
            .clients
            .iter()
            .zip(&lab.plan.services)
            .map(|(c, svc)| {
                let addr = svc.address.to_string();
                s.spawn(move || iperf(&c.ns, &addr, svc.port, seconds, streams))
            })
            .collect();
        runs.into_iter().map(|h| h.join().map_err(|_| anyhow::anyhow!("iperf3 thread panicked"))?).collect()
    })
}

fn proxy(a: &ProxyArgs) -> anyhow::Result<bool> {
    let accept = external("sf", &["-A FORWARD -j ACCEPT"]);
    let mut out = serde_json::Map::new();

    println!("1. goodput through one external SF behind the caching proxy, by label stack depth");
    println!(
        "{:>7} {:>14} {:>12} {:>12} {:>14}",
        "labels", "goodput Mb/s", "rx_success", "tx_success", "node peak RSS"
    );
    let mut rows = Vec::new();
    for &k in &a.labels {
        eprint!("   {k} labels: ");
        let lab = a.run.lab.start(proxy_lab(accept.clone(), k.saturating_sub(1), 1))?;
        let g = iperf_all(&lab, a.run.seconds, a.run.streams)?[0];
        let (c, rss) = finish(lab);
        eprintln!("{g:.0} Mb/s");
        println!("{k:>7} {g:>14.0} {:>12} {:>12} {rss:>10} KiB", counter(&c, "rx_success"), counter(&c, "tx_success"));
        rows.push(serde_json::json!({ "labels": k, "goodput_mbps": g, "proxy": c, "peak_rss_kib": rss }));
    }
    out.insert("labels".into(), rows.into());

    println!("\n2. an SF that drops 1% of packets (iptables statistic)");
    eprint!("   1% loss: ");
    let lossy = external("sf", &["-A FORWARD -m statistic --mode random --probability 0.01 -j DROP"]);
    let lab = a.run.lab.start(proxy_lab(lossy, 0, 1))?;
    let g = iperf_all(&lab, a.run.seconds, a.run.streams)?[0];
    let (c, rss) = finish(lab);
    eprintln!("{g:.0} Mb/s");
    println!(
        "   goodput {g:.0} Mb/s, node peak RSS {rss} KiB; proxy: rx_success {} tx_success {} expired {} \
         tx_not_cached {} cached at the end {}",
        counter(&c, "rx_success"),
        counter(&c, "tx_success"),
        counter(&c, "expired"),
        counter(&c, "tx_not_cached"),
        counter(&c, "cached")
    );
    out.insert("loss_1pct".into(), serde_json::json!({ "goodput_mbps": g, "proxy": c }));

    println!("\n3. a delaying SF ({} ms) by cache size", a.delay_ms);
    println!(
        "{:>8} {:>14} {:>10} {:>10} {:>16} {:>14}",
        "cache", "goodput Mb/s", "evicted", "not_cached", "peak in flight", "node peak RSS"
    );
    let mut rows = Vec::new();
    for &size in &a.cache_sizes {
        eprint!("   cache {size}: ");
        let delay = LabSf {
            name: "sf".into(),
            node: Some("sfnode".into()),
            instances: Vec::new(),
            intrusive: false,
            function: Some(Function::Delay { delay_us: a.delay_ms * 1000, capacity: size.max(1000) * 2 }),
            iptables: None,
            translates_addresses: false,
            cache_capacity: Some(size),
        };
        let lab = a.run.lab.start(proxy_lab(delay, 0, 1))?;
        let g = iperf_all(&lab, a.run.seconds, a.run.streams)?[0];
        let (c, rss) = finish(lab);
        eprintln!("{g:.0} Mb/s");
        println!(
            "{size:>8} {g:>14.0} {:>10} {:>10} {:>16} {rss:>10} KiB",
            counter(&c, "evicted"),
            counter(&c, "tx_not_cached"),
            counter(&c, "peak_in_flight")
        );
        rows.push(serde_json::json!({ "cache": size, "goodput_mbps": g, "proxy": c, "peak_rss_kib": rss }));
    }
    out.insert("delay".into(), rows.into());

    println!("\n4. two chains through one external SF at once");
    eprint!("   two chains: ");
    let lab = a.run.lab.start(proxy_lab(accept, 0, 2))?;
    let g = iperf_all(&lab, a.run.seconds, a.run.streams)?;
    let (c, rss) = finish(lab);
    eprintln!("{:.0} + {:.0} Mb/s", g[0], g[1]);
    println!(
        "   chain 1 {:.0} Mb/s, chain 2 {:.0} Mb/s, node peak RSS {rss} KiB; proxy: rx_success {} tx_success {} \
         collisions {}",
        g[0],
        g[1],
        counter(&c, "rx_success"),
        counter(&c, "tx_success"),
        counter(&c, "rx_collision")
    );
    out.insert("two_chains".into(), serde_json::json!({ "goodput_mbps": g, "proxy": c }));
    if let Some(p) = &a.run.json {
        std::fs::write(p, serde_json::to_string_pretty(&out)?)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(sfs: usize, mode: &str, mtu: u16, goodput: f64, cpu: Option<f64>) -> Row {
        Row {
            sfs,
            mode: mode.into(),
            mtu,
            goodput_mbps: goodput,
            peak_rss_kib: goodput as u64,
            nodes_peak_rss_kib: Default::default(),
            node_cpu_ns_per_byte: cpu,
            rounds_mbps: Vec::new(),
        }
    }

    #[test]
    fn rounds_merge_into_medians_and_secure_is_costed_against_intrusive() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        let runs = vec![
            row(1, "intrusive", 1500, 1000.0, Some(8.0)),
            row(1, "secure", 1500, 700.0, Some(12.0)),
            row(1, "kernel", 1500, 9000.0, None),
            row(1, "intrusive", 1500, 1200.0, Some(7.0)),
            row(1, "secure", 1500, 900.0, Some(11.0)),
            row(1, "kernel", 1500, 8000.0, None),
            row(1, "intrusive", 1500, 1100.0, Some(9.0)),
            row(1, "secure", 1500, 800.0, Some(10.0)),
            row(1, "kernel", 1500, 7000.0, None),
        ];
        let rows = merge_rounds(runs, 3);
        let cells: Vec<(&str, f64, Option<f64>, u64)> =
            rows.iter().map(|r| (r.mode.as_str(), r.goodput_mbps, r.node_cpu_ns_per_byte, r.peak_rss_kib)).collect();
        assert_eq!(
            cells,
            [
                ("intrusive", 1100.0, Some(8.0), 1200),
                ("secure", 800.0, Some(11.0), 900),
                ("kernel", 8000.0, None, 9000)
            ]
        );
        assert_eq!(rows[0].rounds_mbps, [1000.0, 1200.0, 1100.0]);
        let costs = secure_costs(&rows);
        assert_eq!(costs.len(), 1);
        let (n, mtu, cost, cpu) = costs[0];
        assert_eq!((n, mtu), (1, 1500));
        assert!((cost - 100.0 * 300.0 / 1100.0).abs() < 1e-9, "{cost}");
        assert!((cpu.unwrap() - 11.0 / 8.0).abs() < 1e-12);
        // One round: the row is the run, with no list of rounds.
        assert!(merge_rounds(vec![row(0, "forward", 9000, 5.0, None)], 1)[0].rounds_mbps.is_empty());
    }
}

//! `zsfc bench rekey`: a numbered UDP stream through a 3-SF chain (two intrusive SFs) while the
//! controller rekeys the whole domain every second; counts lost and duplicated packets and the
//! nodes' replay and bad-SPI drops. `zsfc bench keying`: the controller and engine costs of keys.
use crate::traffic::{Counted, Stream};
use anyhow::Context;
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use zsfc_config::{Function, Protocol, ProtocolName, SaDefaults};
use zsfc_lab::{Lab, LabChain, LabClient, LabGateway, LabNode, LabRule, LabService, LabSf, ServiceKind};

#[derive(Debug, clap::Args)]
pub(crate) struct RekeyArgs {
    /// Packets per second of the UDP stream.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Length of the stream; the domain is rekeyed once a second meanwhile.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// The controller's wait between switching to new SAs and removing the old (nodes keep a
    /// removed inbound SA until nothing arrives on it, so even 0 should lose nothing).
    #[arg(long, default_value_t = 300)]
    grace_ms: u64,
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    lab: crate::bench::BenchLab,
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
    /// Drops by link authentication, SFC integrity or proof of transit (a key missing or
    /// switched too early would show here).
    protection_drops: u64,
    /// Slowest rekey (all three steps, every node acknowledging), milliseconds.
    max_rekey_ms: u64,
}

const SINK_PORT: u16 = 7100;

fn sf(name: &str, node: &str, intrusive: bool, function: Function) -> LabSf {
    LabSf {
        name: name.into(),
        node: Some(node.into()),
        instances: Vec::new(),
        intrusive,
        function: Some(function),
        iptables: None,
        translates_addresses: false,
        cache_capacity: None,
    }
}

/// client → ingress → sf1 [firewall, intrusive] → sf2 [counter; dpi, intrusive] → egress, with
/// link protection and SFC integrity.
pub(crate) fn rekey_lab() -> Lab {
    let udp = Protocol::Name(ProtocolName::Udp);
    Lab {
        version: zsfc_config::VERSION,
        name: "rekey".into(),
        mtu: 1500,
        transport: Default::default(),
        ring: None,
        attachments: Default::default(),
        lanes: 1,
        nodes: ["ingress", "sf1", "sf2", "egress"].iter().map(|n| LabNode { name: (*n).into() }).collect(),
        gateway: LabGateway {
            node: "ingress".into(),
            also_on: Vec::new(),
            port: 443,
            rate_limits: Default::default(),
            blocking: Default::default(),
        },
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
            tenant: None,
        }],
        clients: vec![LabClient { name: "c".into() }],
        expect: Vec::new(),
        sa: SaDefaults::default(),
        controller: Default::default(),
        // Every key the controller rolls: payload SAs, link SAs and chain keys.
        link_protection: true,
        sfc_integrity: true,
        liveness: Default::default(),
        certificates: Default::default(),
    }
}

/// Sum of one drop reason over every node's final report.
fn drops(report: &str, reason: &str) -> u64 {
    let prefix = format!("drop {reason} ");
    report.lines().filter_map(|l| l.strip_prefix(&prefix)).filter_map(|n| n.trim().parse::<u64>().ok()).sum()
}

pub(crate) fn rekey(a: &RekeyArgs) -> anyhow::Result<bool> {
    eprintln!("bench rekey: building the lab (4 nodes, controller, 3 SFs of which 2 intrusive)...");
    let mut spec = rekey_lab();
    spec.controller.grace_ms = a.grace_ms;
    let lab = a.lab.start(spec)?;
    let plan = &lab.plan;
    let egress = plan.nodes.iter().find(|n| n.name == "egress").context("no egress")?;
    let to = std::net::SocketAddr::new(plan.services[0].address.into(), SINK_PORT);
    eprintln!("bench rekey: {} packets/s for {} s, rekeying every second...", a.rate, a.seconds);
    let stream = Stream::start(&plan.clients[0].ns, &egress.ns, to, a.rate, Duration::from_secs(a.seconds))?;
    let length = Duration::from_secs(a.seconds);
    let (rekeys, slowest) = zsfc_lab::access::with_operator(lab.state_dir(), &plan.name, |c| {
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
    for l in report.lines().filter(|l| l.starts_with("drop ") || l.starts_with("node ")) {
        eprintln!("bench rekey: {l}");
    }
    let r = RekeyResult {
        counted,
        rekeys,
        rate_pps: a.rate,
        seconds: a.seconds,
        replay_drops: drops(&report, "esp_replay"),
        bad_spi_drops: drops(&report, "esp_bad_spi"),
        expired_drops: drops(&report, "sa_expired"),
        protection_drops: report
            .lines()
            .filter_map(|l| l.strip_prefix("drop "))
            .filter(|l| l.starts_with("link_") || l.starts_with("sfc_") || l.starts_with("pot_"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum(),
        max_rekey_ms: slowest.as_millis() as u64,
    };
    println!(
        "sent {} received {} lost {} duplicated {} | rekeys {} (slowest {} ms) | drops: replay {} bad-SPI {} \
         expired {} link/integrity/POT {}",
        r.counted.sent,
        r.counted.received,
        r.counted.lost,
        r.counted.duplicated,
        r.rekeys,
        r.max_rekey_ms,
        r.replay_drops,
        r.bad_spi_drops,
        r.expired_drops,
        r.protection_drops
    );
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&r)?)?;
    }
    Ok(true)
}

#[derive(Debug, clap::Args)]
pub(crate) struct KeyingArgs {
    /// Chains of the domain the controller rekeys (one SA each).
    #[arg(long, default_value_t = 1000)]
    chains: usize,
    /// Rollouts to time (each: install, switch, remove, all acknowledged).
    #[arg(long, default_value_t = 20)]
    rollouts: usize,
    /// SAs installed into one node engine for the install rate and the memory per SA.
    #[arg(long, default_value_t = 100_000)]
    sas: usize,
    /// Anti-replay window of those SAs, in packets (zsfc's default; RFC 9061's is 64).
    #[arg(long, default_value_t = zsfc_esp::DEFAULT_WINDOW)]
    replay_window: u64,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
struct KeyingResult {
    /// SAs per second a node takes from a pushed document: JSON parse, checks, install.
    sa_install_per_s: f64,
    /// The engine's install alone (AEAD key schedule, table entry).
    engine_install_per_s: f64,
    /// One rollout step (publish to every node's acknowledgement) for `chains` chains.
    push_p50_ms: f64,
    push_p99_ms: f64,
    /// Resident memory an installed inbound SA costs the node.
    bytes_per_sa: f64,
    /// Controller CPU seconds per 1,000 SAs rekeyed (make-before-break: three pushes).
    cpu_s_per_1000_rekeys: f64,
    chains: usize,
    rollouts: usize,
    sas: usize,
    replay_window: u64,
}

fn rss_kib() -> u64 {
    zsfc_lab::shell::proc_status_kib("self", "VmRSS").unwrap_or(0)
}

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map_or(Vec::new(), |(_, r)| r.split_whitespace().collect());
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    let hz: u64 = zsfc_lab::shell::sh("getconf", &["CLK_TCK"]).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(100);
    Duration::from_micros(ticks * 1_000_000 / hz.max(1))
}

fn sa_params(n: usize, replay_window: u64) -> anyhow::Result<Vec<zsfc_config::SaParams>> {
    (0..n)
        .map(|i| {
            Ok(zsfc_config::SaParams {
                spi: 0x1000 + i as u32,
                algorithm: zsfc_config::Algorithm::Aes256Gcm,
                keymat: zsfc_config::KeyMaterial(zsfc_esp::SaKey::generate_keymat(zsfc_esp::Algorithm::Aes256Gcm)?),
                esn: true,
                replay_window,
                lifetime: Default::default(),
            })
        })
        .collect()
}

/// Install rate through the node's document path, install rate and memory of the engine.
fn engine_costs(n: usize, replay_window: u64) -> anyhow::Result<(f64, f64, f64)> {
    use zsfc_config::ikeless::NodeState;
    let params = sa_params(n, replay_window)?;
    // Memory: what stays after installing `n` inbound SAs (transient values reuse freed memory).
    let mut node = zsfc_dataplane::Node::new(Default::default());
    let now = zsfc_dataplane::Instant::ZERO;
    let before = rss_kib();
    let t = Instant::now();
    for p in &params {
        let cfg = zsfc_config::sa_config(p, 0).map_err(|(f, why)| anyhow::anyhow!("{f}: {why}"))?;
        node.install_inbound(&cfg, zsfc_dataplane::SaUse::Terminate, now)?;
    }
    let engine_rate = n as f64 / t.elapsed().as_secs_f64();
    let bytes = (rss_kib().saturating_sub(before) * 1024) as f64 / n as f64;
    drop(node);
    // The agent's path: the controller's JSON document, parsed, checked, planned, installed.
    let mut cfg = zsfc_config::NodeConfig::from_toml(&format!("version = {}\nname = \"n\"", zsfc_config::VERSION))?;
    cfg.inbound_sas = params
        .into_iter()
        .map(|sa| zsfc_config::InboundSaConfig { sa, reseal: None, reseal_via: Vec::new(), link: false })
        .collect();
    let body = serde_json::to_vec(&NodeState::from_config(1, &cfg, Vec::new(), |_| true))?;
    drop(cfg);
    let mut node = zsfc_dataplane::Node::new(Default::default());
    let mut applied = zsfc_node::agent::Applied::default();
    let t = Instant::now();
    let doc: NodeState = serde_json::from_slice(&body)?;
    let missing = zsfc_node::agent::apply_to_engine(&mut node, &mut applied, &doc, &[], now)?;
    anyhow::ensure!(missing.is_empty(), "SAs without keys: {missing:?}");
    let doc_rate = n as f64 / t.elapsed().as_secs_f64();
    Ok((doc_rate, engine_rate, bytes))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// A domain of two nodes and `chains` chains (one SA each) on an in-process controller over
/// loopback TLS; both nodes are in-process agents with real engines. Returns push latencies
/// and the controller's CPU per 1,000 SAs rekeyed.
fn controller_costs(chains: usize, rollouts: usize) -> anyhow::Result<(Vec<Duration>, f64)> {
    use zsfc_config::{TopoChain, TopoEndpoint, TopoNode, Topology};
    let node = |name: &str| TopoNode {
        name: name.into(),
        address: Some("127.0.0.1:9".into()),
        ethernet: None,
        mac: None,
        mtu: None,
        local: None,
        tcp_mss_clamp: None,
    };
    let topology = Topology {
        version: zsfc_config::VERSION,
        nodes: vec![node("a"), node("b")],
        endpoints: vec![TopoEndpoint { name: "to-b".into(), node: "b".into(), label: None }],
        sfs: Vec::new(),
        chains: (0..chains)
            .map(|i| TopoChain {
                also_classified_at: Vec::new(),
                name: format!("c{i}"),
                classifier: "a".into(),
                sfs: Vec::new(),
                to: "to-b".into(),
                rules: Vec::new(),
                gateway: true,
                nsh: None,
            })
            .collect(),
        sa: Default::default(),
        link_protection: false,
        sfc_integrity: false,
        liveness: Default::default(),
        certificates: Default::default(),
    };
    let spec = zsfc_controller::DomainSpec {
        name: "keying".into(),
        topology,
        gateway_nodes: Vec::new(),
        grants: Vec::new(),
        rekey: zsfc_controller::RekeySettings { period_s: 0, grace_ms: 0, ack_timeout_ms: 30_000 },
        // Two in-process nodes on one address rekeying back to back: no admission limit.
        api: zsfc_controller::limit::ApiLimits {
            connections_per_s: 1_000_000,
            burst: 1_000_000,
            max_open: 4096,
            max_open_per_source: 4096,
        },
        revoked: Vec::new(),
    };
    let dir = std::env::temp_dir().join(format!("zsfc-keying-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        let db = dir.join("controller.db");
        let (init, ca) = zsfc_controller::Controller::init(&db, &spec)?;
        let ca_pem = ca.pem().to_owned();
        drop(ca);
        let ctl = zsfc_controller::Controller::open(&db)?;
        // One worker thread: the controller's CPU time is that thread's.
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?.to_string();
        rt.spawn(zsfc_controller::serve(ctl.clone(), listener, "controller"));
        rt.spawn(ctl.clone().run_background());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut agents = Vec::new();
        for (name, token) in &init.tokens {
            let cfg = zsfc_config::ControllerConfig {
                address: addr.clone(),
                server_name: "controller".into(),
                ca: dir.join("ca.pem").display().to_string(),
                identity_dir: dir.join(format!("{name}.id")).display().to_string(),
                bootstrap: dir.join(format!("{name}.token")).display().to_string(),
            };
            std::fs::write(&cfg.ca, &ca_pem)?;
            zsfc_controller::pki::write_private(std::path::Path::new(&cfg.bootstrap), token.as_bytes())?;
            let client = zsfc_node::agent::enrolled_client(&cfg, name)?;
            let (name, stop) = (name.clone(), stop.clone());
            agents.push(std::thread::spawn(move || fake_free_agent(&name, &client, &stop)));
        }
        // The first rollout (asked for by the nodes' first polls) must be done and acknowledged.
        // ...and any second one the nodes' first polls asked for: quiet and converged.
        let t = Instant::now();
        let done = || ctl.rollouts.load(std::sync::atomic::Ordering::Relaxed);
        loop {
            anyhow::ensure!(t.elapsed() < Duration::from_secs(60), "the first rollout did not finish");
            let before = done();
            std::thread::sleep(Duration::from_millis(500));
            if before > 0 && done() == before && ctl.status()["zsfc:domain"]["converged"] == true {
                break;
            }
        }
        let _ = ctl.take_push_latencies();
        let cpu0 = rt.block_on(rt.spawn(async { thread_cpu() }))?;
        for i in 0..rollouts {
            let c = ctl.clone();
            rt.block_on(rt.spawn(async move { c.rollout("bench keying").await }))?
                .map_err(|e| anyhow::anyhow!("rollout: {e}"))?;
            eprint!("\rbench keying: {}/{rollouts} rollouts of {chains} SAs", i + 1);
        }
        eprintln!();
        let cpu = rt.block_on(rt.spawn(async { thread_cpu() }))?.saturating_sub(cpu0);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut lat = ctl.take_push_latencies();
        lat.sort();
        drop(rt);
        for a in agents {
            let _ = a.join();
        }
        let per_1000 = cpu.as_secs_f64() / rollouts as f64 / (chains as f64 / 1000.0);
        Ok((lat, per_1000))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A node's agent without a packet loop: polls, installs into its own engine, acknowledges.
fn fake_free_agent(name: &str, client: &zsfc_controller::client::Client, stop: &std::sync::atomic::AtomicBool) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
    let mut node = zsfc_dataplane::Node::new(Default::default());
    let mut applied = zsfc_node::agent::Applied::default();
    let peers = [0, 1];
    let epoch = Instant::now();
    let mut version = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let Ok(seal) = zsfc_controller::sealed::PollKey::new() else { continue };
        let path = format!(
            "/restconf/data/zsfc:nodes/node={name}/desired?after={version}&boot=bench&seal={}",
            seal.public_hex()
        );
        let Ok(r) = rt.block_on(client.request("GET", &path, None, Duration::from_secs(2))) else { continue };
        if r.status != 200 {
            continue;
        }
        let Ok(plain) = seal.open(name, r.body) else { continue };
        let Ok(doc) = serde_json::from_slice::<zsfc_config::ikeless::NodeState>(&plain) else { continue };
        let now = zsfc_dataplane::Instant::from_nanos(epoch.elapsed().as_nanos() as u64);
        let error =
            zsfc_node::agent::apply_to_engine(&mut node, &mut applied, &doc, &peers, now).err().map(|e| e.to_string());
        version = doc.version;
        let body = serde_json::json!({"zsfc:input": {"node": name, "version": version, "error": error}});
        let _ = rt.block_on(client.request(
            "POST",
            "/restconf/operations/zsfc:ack",
            Some(body.to_string().into_bytes()),
            Duration::from_secs(5),
        ));
    }
}

pub(crate) fn keying(a: &KeyingArgs) -> anyhow::Result<bool> {
    eprintln!("bench keying: installing {} SAs into one engine...", a.sas);
    let (doc_rate, engine_rate, bytes) = engine_costs(a.sas, a.replay_window)?;
    eprintln!("bench keying: controller with {} chains, {} rollouts...", a.chains, a.rollouts);
    let (lat, cpu) = controller_costs(a.chains, a.rollouts)?;
    let r = KeyingResult {
        sa_install_per_s: doc_rate,
        engine_install_per_s: engine_rate,
        push_p50_ms: percentile(&lat, 0.5),
        push_p99_ms: percentile(&lat, 0.99),
        bytes_per_sa: bytes,
        cpu_s_per_1000_rekeys: cpu,
        chains: a.chains,
        rollouts: a.rollouts,
        sas: a.sas,
        replay_window: a.replay_window,
    };
    println!("SAs installed per second (pushed document: parse, check, install): {:.0}", r.sa_install_per_s);
    println!("SAs installed per second (engine only):                           {:.0}", r.engine_install_per_s);
    println!("memory per installed SA ({}-packet window):                    {:.0} B", a.replay_window, r.bytes_per_sa);
    println!(
        "push latency, {} chains (publish to every node's ack): p50 {:.1} ms, p99 {:.1} ms ({} pushes)",
        a.chains,
        r.push_p50_ms,
        r.push_p99_ms,
        lat.len()
    );
    println!("controller CPU per 1,000 SAs rekeyed (three pushes):              {:.3} s", r.cpu_s_per_1000_rekeys);
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&r)?)?;
    }
    Ok(true)
}

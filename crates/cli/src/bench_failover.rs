//! `zsfc bench failover` (issue 20 point 8): a chain through a pool of two intrusive firewall
//! instances (sf1, sf2) carries an iperf3 TCP load and a numbered UDP load of many flows; sf2's
//! node is killed with SIGKILL at a fixed time and restarted (`zsfc restart`) later. Reported
//! per phase (before the kill, while sf2 is down, after its restart): goodput, each group's
//! longest per-flow gap and packets lost, and flows moved; and the detection times.
//!
//! Which flows were on the killed instance is computed, not guessed from what happened to
//! them: every classifier picks a flow's instance by the pool's weighted rendezvous hash
//! (`zsfc_dataplane::rendezvous`), which this benchmark evaluates for each flow's 5-tuple over
//! the pool the lab's nodes run.
use crate::bench::BenchLab;
use crate::traffic::{PhaseCounted, Stream};
use anyhow::{Context, bail};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use zsfc_lab::shell::in_ns;
use zsfc_lab::{Lab, LabGuard};

#[derive(Debug, clap::Args)]
pub(crate) struct FailoverArgs {
    /// UDP flows (numbered packets, round-robin over as many source ports).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(2..=1024))]
    flows: u16,
    /// UDP packets per second over all flows.
    #[arg(long, default_value_t = 3200)]
    rate: u64,
    /// Seconds of load before sf2's node is killed.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=600))]
    before: u32,
    /// Seconds from the kill to the restart.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=600))]
    down: u32,
    /// Seconds of load after the restart began.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=600))]
    after: u32,
    /// Parallel iperf3 TCP streams.
    #[arg(long, default_value_t = 4)]
    streams: u32,
    /// The TCP load's total rate in Mb/s (0: as fast as it goes, which on a small machine
    /// leaves the nodes no CPU for anything else).
    #[arg(long, default_value_t = 200)]
    tcp_mbps: u32,
    /// Write the results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    lab: BenchLab,
}

/// The benchmark's lab: examples/failover.toml with an iperf3 service through the same pool.
const LAB: &str = r#"
version = 1
name = "fobench"
nodes = [{ name = "ingress" }, { name = "sf1" }, { name = "sf2" }, { name = "egress" }]
gateway = { node = "ingress" }
clients = [{ name = "alice" }]
liveness = { interval_ms = 100, detect_mult = 3 }

[[services]]
name = "sink"
node = "egress"
kind = "udp_echo"
port = 7007

[[services]]
name = "perf"
node = "egress"
kind = "iperf3"
port = 5201

[[sfs]]
name = "fw"
instances = [{ node = "sf1" }, { node = "sf2" }]
intrusive = true
function = { kind = "firewall", default = "allow" }

[[chains]]
name = "stream"
service = "sink"
sfs = ["fw"]
rules = [{ protocol = "udp", port = 7100 }, { protocol = "udp", port = 7007 }]

[[chains]]
name = "perf"
service = "perf"
sfs = ["fw"]
rules = [{ protocol = "tcp", port = 5201 }]
"#;

/// The UDP stream's port on the sink's address (a rule of the `stream` chain).
const STREAM_PORT: u16 = 7100;
const KILLED: &str = "sf2";
const PHASES: [&str; 3] = ["before", "during", "after"];

/// One group of flows (on the killed instance, or not) in one phase.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Group {
    flows: usize,
    max_gap_s: f64,
    lost: u64,
    sent: u64,
}

impl Group {
    fn of<'a>(flows: impl Iterator<Item = &'a PhaseCounted>) -> Self {
        flows.fold(Self::default(), |g, f| Self {
            flows: g.flows + 1,
            max_gap_s: g.max_gap_s.max(f.longest_gap_s),
            lost: g.lost + f.lost,
            sent: g.sent + f.sent,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
struct Phase {
    phase: &'static str,
    goodput_mbps: f64,
    affected: Group,
    unaffected: Group,
    /// Flows the ingress moved to another instance (its `flows_moved` counter: UDP flows and
    /// TCP streams).
    flows_moved: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    detection_s: Option<f64>,
    affected_max_gap_s: f64,
    affected_lost: u64,
    unaffected_lost: u64,
    unaffected_moved: u64,
    return_detection_s: Option<f64>,
    return_max_gap_s: f64,
    return_lost: u64,
    return_moved: u64,
    goodput_mbps: serde_json::Value,
    affected_flows: usize,
    unaffected_flows: usize,
    tcp_streams_on_killed: u64,
    phases: Vec<Phase>,
    flows: u16,
    rate_pps: u64,
    seconds: [u32; 3],
    liveness_interval_ms: u32,
    liveness_detect_mult: u8,
}

/// The ingress's `flows_moved` counter.
fn flows_moved(lab: &LabGuard) -> anyhow::Result<u64> {
    let url = format!("http://{}/metrics", zsfc_lab::METRICS_LISTEN);
    let text = in_ns(&lab.plan.nodes[0].ns, &["curl", "-s", "--max-time", "2", &url])?;
    let packets = zsfc_lab::check::metric_values(&text, "zsfc_packets_total", "what");
    Ok(packets.iter().find(|p| p.0 == "flows_moved").map_or(0, |p| p.1))
}

/// The controller's `zsfc:domain`, as the auditor reads it.
fn domain(lab: &LabGuard) -> anyhow::Result<serde_json::Value> {
    zsfc_lab::access::with_role_in_lab(lab.state_dir(), &lab.plan.name, zsfc_controller::Role::Auditor, |c| {
        let r = c.blocking("GET", "/restconf/data/zsfc:domain", None, Duration::from_secs(5))?;
        anyhow::ensure!(r.status == 200, "{} {}", r.status, r.message());
        Ok(serde_json::from_slice(&r.body)?)
    })
}

/// When the ingress reported the killed node's session `up` or down (Unix ms), per `domain`.
fn ingress_saw(domain: &serde_json::Value, up: bool) -> Option<i64> {
    let node = domain["zsfc:domain"]["nodes"].as_array()?.iter().find(|n| n["name"] == KILLED)?;
    let r = node["liveness"]["reports"].as_array()?.iter().find(|r| r["by"] == "ingress" && r["up"] == up)?;
    r["since-unix-ms"].as_i64()
}

/// For each UDP flow (by source port), whether the classifier's hash puts it on the killed
/// instance.
fn on_killed(lab: &LabGuard, ports: &[u16], to: SocketAddr, protocol: u8) -> anyhow::Result<Vec<bool>> {
    let nodes = &lab.plan.nodes;
    let pool = nodes[0].config.pools.iter().find(|p| p.sf == "fw").context("the lab has no pool of fw")?;
    let pool = zsfc_config::pools(std::slice::from_ref(pool)).remove(0);
    let killed = nodes.iter().find(|n| n.name == KILLED).context("no sf2")?;
    let client = IpAddr::V4(lab.plan.clients[0].address);
    Ok(ports
        .iter()
        .map(|&src_port| {
            let t = zsfc_wire::ip::FiveTuple { src: client, dst: to.ip(), protocol, src_port, dst_port: to.port() };
            let label = zsfc_dataplane::rendezvous(&pool, zsfc_dataplane::flow_hash(&t));
            killed.config.sfs.iter().any(|sf| Some(sf.label) == label)
        })
        .collect())
}

/// iperf3's received goodput (Mb/s) per phase, from its 0.5 s intervals (each placed by its
/// middle, from iperf3's start).
fn goodput_by_phase(iperf_json: &str, bounds: [f64; 2]) -> anyhow::Result<[f64; 3]> {
    let v: serde_json::Value = serde_json::from_str(iperf_json).context("iperf3's JSON")?;
    let mut sums = [(0.0, 0.0); 3];
    for i in v["intervals"].as_array().into_iter().flatten() {
        let s = &i["sum"];
        let (Some(a), Some(b), Some(bps)) = (s["start"].as_f64(), s["end"].as_f64(), s["bits_per_second"].as_f64())
        else {
            continue;
        };
        let phase = bounds.iter().filter(|&&x| (a + b) / 2.0 >= x).count();
        sums[phase].0 += bps * (b - a);
        sums[phase].1 += b - a;
    }
    Ok(sums.map(|(bits, secs)| if secs > 0.0 { bits / secs / 1e6 } else { 0.0 }))
}

pub(crate) fn failover(a: &FailoverArgs) -> anyhow::Result<bool> {
    let spec = Lab::from_toml(LAB).map_err(|e| anyhow::anyhow!("the benchmark's lab: {e}"))?;
    let liveness = spec.liveness;
    eprintln!("building the lab (4 nodes, a pool of 2 firewall instances)...");
    let lab = a.lab.start(spec)?;
    let service = |name: &str| lab.plan.services.iter().find(|s| s.name == name).context("a service is missing");
    let (sink, perf) = (service("sink")?, service("perf")?);
    let to = SocketAddr::new(IpAddr::V4(sink.address), STREAM_PORT);
    let egress_ns = &lab.plan.nodes[sink.node].ns;
    let client_ns = lab.plan.clients[0].ns.clone();
    let total = a.before + a.down + a.after;
    let bounds = [Duration::from_secs(a.before.into()), Duration::from_secs((a.before + a.down).into())];

    let mut args: Vec<String> = ["iperf3", "-c", &perf.address.to_string(), "-p", &perf.port.to_string()]
        .into_iter()
        .map(String::from)
        .collect();
    args.extend(["-t", &total.to_string(), "-P", &a.streams.to_string(), "-i", "0.5", "-J"].map(String::from));
    args.extend(["--connect-timeout", "3000"].map(String::from));
    if a.tcp_mbps > 0 {
        args.extend(["-b".to_owned(), format!("{}M", (a.tcp_mbps / a.streams.max(1)).max(1))]);
    }
    eprintln!(
        "load: {} UDP flows at {} packets/s and {} iperf3 streams ({}) for {total} s; sf2 killed at {} s, \
         restarted at {} s",
        a.flows,
        a.rate,
        a.streams,
        if a.tcp_mbps > 0 { format!("{} Mb/s", a.tcp_mbps) } else { "unlimited".into() },
        a.before,
        a.before + a.down
    );
    let iperf = std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        in_ns(&client_ns, &args)
    });
    let t0 = Instant::now();
    let stream = Stream::start_phased(
        &lab.plan.clients[0].ns,
        egress_ns,
        to,
        a.rate,
        Duration::from_secs(total.into()),
        a.flows,
        bounds.to_vec(),
    )?;
    let at = |d: Duration| std::thread::sleep(d.saturating_sub(t0.elapsed()));

    at(bounds[0]);
    let moved_before = flows_moved(&lab)?;
    let pid: i32 = std::fs::read_to_string(lab.state_dir().join(format!("{KILLED}.pid")))?.trim().parse()?;
    let killed_at = zsfc_controller::audit::unix_ms();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
        .context("killing sf2's node")?;
    eprintln!("killed sf2's node (pid {pid})");

    at(bounds[1]);
    let moved_down = flows_moved(&lab)?;
    let while_down = domain(&lab)?;
    let restarted_at = zsfc_controller::audit::unix_ms();
    let (root, name, bin) = (a.lab.state_dir.clone(), lab.plan.name.clone(), std::env::current_exe()?);
    let restart = std::thread::spawn(move || zsfc_lab::restart(&root, &name, KILLED, &bin));
    eprintln!("restarting sf2's node");

    let (_, flows, phased) = stream.finish_phased()?;
    let iperf = iperf.join().map_err(|_| anyhow::anyhow!("iperf3's thread panicked"))?.context("iperf3")?;
    let restarted = restart.join().map_err(|_| anyhow::anyhow!("the restart panicked"))?.context("restarting sf2")?;
    eprintln!("sf2 runs again (pid {}, domain version {})", restarted.pid, restarted.version);
    let moved_after = flows_moved(&lab)?;
    let after = domain(&lab)?;

    let ports: Vec<u16> = flows.iter().map(|f| f.source_port).collect();
    let killed = on_killed(&lab, &ports, to, 17)?;
    // The iperf3 streams are flows too (the ingress's counter counts their moves).
    let iperf_json: serde_json::Value = serde_json::from_str(&iperf).context("iperf3's JSON")?;
    let tcp_ports: Vec<u16> = iperf_json["start"]["connected"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| u16::try_from(c["local_port"].as_u64()?).ok())
        .collect();
    let perf_to = SocketAddr::new(IpAddr::V4(perf.address), perf.port);
    let tcp_on_killed = on_killed(&lab, &tcp_ports, perf_to, 6)?.iter().filter(|&&k| k).count() as u64;
    let affected_flows = killed.iter().filter(|&&k| k).count();
    if affected_flows == 0 || affected_flows == killed.len() {
        bail!("the hash put {affected_flows} of {} flows on sf2: use more flows", killed.len());
    }
    let goodput = goodput_by_phase(&iperf, [bounds[0].as_secs_f64(), bounds[1].as_secs_f64()])?;
    let moved = [moved_before, moved_down - moved_before, moved_after - moved_down];
    let phases: Vec<Phase> = (0..3)
        .map(|p| {
            let group = |want: bool| {
                Group::of(phased.iter().zip(&killed).filter(|(_, k)| **k == want).filter_map(|(f, _)| f.get(p)))
            };
            Phase {
                phase: PHASES[p],
                goodput_mbps: goodput[p],
                affected: group(true),
                unaffected: group(false),
                flows_moved: moved[p],
            }
        })
        .collect();
    let secs = |from: i64, to: Option<i64>| to.map(|t| (t - from) as f64 / 1000.0);
    let (during, back) = (&phases[1], &phases[2]);
    let report = Report {
        detection_s: secs(killed_at, ingress_saw(&while_down, false)),
        affected_max_gap_s: during.affected.max_gap_s,
        affected_lost: during.affected.lost,
        unaffected_lost: phases.iter().map(|p| p.unaffected.lost).sum(),
        unaffected_moved: during.flows_moved.saturating_sub(affected_flows as u64 + tcp_on_killed)
            + phases[0].flows_moved,
        return_detection_s: secs(restarted_at, ingress_saw(&after, true)),
        return_max_gap_s: back.affected.max_gap_s.max(back.unaffected.max_gap_s),
        return_lost: back.affected.lost + back.unaffected.lost,
        return_moved: back.flows_moved,
        goodput_mbps: serde_json::json!({"before": goodput[0], "during": goodput[1], "after": goodput[2]}),
        affected_flows,
        unaffected_flows: killed.len() - affected_flows,
        tcp_streams_on_killed: tcp_on_killed,
        phases,
        flows: a.flows,
        rate_pps: a.rate,
        seconds: [a.before, a.down, a.after],
        liveness_interval_ms: liveness.interval_ms,
        liveness_detect_mult: liveness.detect_mult,
    };
    print_report(&report);
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    drop(lab);
    Ok(true)
}

fn print_report(r: &Report) {
    println!(
        "UDP flows: {} on the killed instance sf2, {} on sf1 (and {} of the TCP streams on sf2); liveness {} ms x {}",
        r.affected_flows, r.unaffected_flows, r.tcp_streams_on_killed, r.liveness_interval_ms, r.liveness_detect_mult
    );
    println!(
        "{:>7} {:>9} {:>26} {:>26} {:>6}",
        "phase", "TCP Mb/s", "on sf2: max gap s / lost", "on sf1: max gap s / lost", "moved"
    );
    for p in &r.phases {
        println!(
            "{:>7} {:>9.0} {:>19.3} / {:<4} {:>19.3} / {:<4} {:>6}",
            p.phase,
            p.goodput_mbps,
            p.affected.max_gap_s,
            p.affected.lost,
            p.unaffected.max_gap_s,
            p.unaffected.lost,
            p.flows_moved
        );
    }
    let s = |d: Option<f64>| d.map_or("not reported".to_owned(), |d| format!("{d:.3} s"));
    println!("detection: {} from the kill to the ingress seeing sf2 down", s(r.detection_s));
    println!("return: {} from `zsfc restart` to the ingress seeing sf2 up", s(r.return_detection_s));
    let mut missed = Vec::new();
    if r.affected_max_gap_s >= 1.0 {
        missed.push(format!("flows on sf2 stood still {:.3} s (target < 1 s)", r.affected_max_gap_s));
    }
    if r.unaffected_lost > 0 {
        missed.push(format!("flows on sf1 lost {} packets (target 0)", r.unaffected_lost));
    }
    if r.unaffected_moved > 0 {
        missed.push(format!("{} flows on sf1 moved (target 0)", r.unaffected_moved));
    }
    if r.return_moved > 0 {
        missed.push(format!("{} flows moved at sf2's return (target 0)", r.return_moved));
    }
    if missed.is_empty() {
        println!(
            "targets met: flows on sf2 back within 1 s, flows on sf1 lost nothing and never moved, none moved back"
        );
    } else {
        println!("targets NOT met: {}", missed.join("; "));
    }
}

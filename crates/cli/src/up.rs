//! `zsfc up`, `zsfc down`, `zsfc check` and `zsfc run`: a whole domain in network namespaces
//! from one lab file ([`zsfc_lab::Lab`]).
//!
//! `up` plans everything first (so a mistake in the file changes nothing), then creates the
//! namespaces, links, PKI and node files, starts every process, waits until each node is ready
//! and each service listens, and prints a summary. Everything it creates is named after the lab
//! (`zsfc-NAME-*` namespaces, `STATE/NAME`), so `down` finds and removes it all, also after a
//! crash of `up` or of a node.
use crate::pki::write_private;
use anyhow::{Context, bail};
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use zsfc_controller::pki::Ca;
use zsfc_lab::{CertChoice, Lab, LabPlan, Outcome, ServiceKind};

/// How long a node or service may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a client waits for an answer before a request counts as blocked.
const BLOCK_TIMEOUT_S: u32 = 4;

#[derive(Debug, clap::Args)]
pub(crate) struct UpArgs {
    /// The lab file.
    file: PathBuf,
    /// Where labs keep their files (certificates, node files, logs).
    #[arg(long, default_value = "/run/zsfc")]
    state_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub(crate) struct DownArgs {
    /// The lab's name.
    name: String,
    #[arg(long, default_value = "/run/zsfc")]
    state_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// The lab's name.
    name: String,
    #[arg(long, default_value = "/run/zsfc")]
    state_dir: PathBuf,
}

/// The paths of one lab's state.
struct State {
    dir: PathBuf,
}

impl State {
    /// The state of lab `name` under `root`, as an absolute path (node processes get it).
    fn new(root: &Path, name: &str) -> Self {
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        Self { dir: root.join(name) }
    }
    fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }
    fn log(&self, who: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{who}.log"))
    }
    fn controller_db(&self) -> PathBuf {
        self.dir.join("controller.db")
    }
    fn lab_file(&self) -> PathBuf {
        self.dir.join("lab.toml")
    }
}

fn load(file: &Path) -> anyhow::Result<Lab> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    Lab::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

fn plan(lab: &Lab, file: &Path, state: &State) -> anyhow::Result<LabPlan> {
    lab.plan(&state.dir).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

/// Runs a command; its failure is an error that shows the command and what it printed.
pub(crate) fn sh(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program} (is it installed?)"))?;
    if !out.status.success() {
        bail!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn ip(args: &[&str]) -> anyhow::Result<()> {
    sh("ip", args).map(drop)
}

/// Runs `args` inside namespace `ns`.
pub(crate) fn in_ns(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    sh("ip", &all)
}

/// A veth pair: `dev` in namespace `ns`, its peer `peer` in `peer_ns`, both with `mtu`.
fn veth(ns: &str, dev: &str, peer_ns: &str, peer: &str, mtu: &str) -> anyhow::Result<()> {
    ip(&[
        "link", "add", dev, "mtu", mtu, "netns", ns, "type", "veth", "peer", "name", peer, "mtu", mtu, "netns", peer_ns,
    ])
}

pub(crate) fn sysctl(ns: &str, settings: &[&str]) -> anyhow::Result<()> {
    let mut args = vec!["sysctl", "-qw"];
    args.extend_from_slice(settings);
    in_ns(ns, &args).map(drop)
}

pub(crate) fn add_ns(ns: &str) -> anyhow::Result<()> {
    ip(&["netns", "add", ns])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])
}

/// Starts a long-running process in `ns`, detached from this one (its own process group, output
/// to its log), and returns its pid.
pub(crate) fn spawn(ns: &str, args: &[&str], log: &Path) -> anyhow::Result<u32> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {} in {ns}", args.join(" ")))?;
    Ok(child.id())
}

pub(crate) fn wait_until(what: &str, log: Option<&Path>, mut ok: impl FnMut() -> bool) -> anyhow::Result<()> {
    let t = Instant::now();
    while !ok() {
        if t.elapsed() > READY_TIMEOUT {
            let tail = log.and_then(|l| std::fs::read_to_string(l).ok()).unwrap_or_default();
            bail!("timed out waiting for {what}{}{}", if tail.is_empty() { "" } else { "; its log:\n" }, tail.trim());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

pub(crate) fn listening(ns: &str, udp: bool, port: u16) -> bool {
    let filter = format!("sport = :{port}");
    in_ns(ns, &["ss", "-Hn", if udp { "-lu" } else { "-lt" }, &filter]).is_ok_and(|o| !o.trim().is_empty())
}

/// The namespaces of lab `name` that exist now.
pub(crate) fn lab_namespaces(name: &str) -> Vec<String> {
    let prefix = format!("zsfc-{name}-");
    sh("ip", &["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

/// A memory figure (`VmRSS`, `VmHWM`...) of process `pid` (or `self`) from /proc, in KiB.
pub(crate) fn proc_status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let v = status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    v.trim().trim_end_matches("kB").trim().parse().ok()
}

/// User + system CPU time of process `pid` from /proc (fields 14 and 15 of `stat`, in USER_HZ
/// ticks, which Linux fixes at 100 per second for every architecture's /proc).
pub(crate) fn proc_cpu_seconds(pid: &str) -> Option<f64> {
    cpu_seconds_of_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn cpu_seconds_of_stat(stat: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces and parentheses: count from its closing one.
    let mut fields = stat.get(stat.rfind(')')? + 2..)?.split(' ');
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// A lab built from a [`Lab`] value (benchmarks); torn down when dropped.
pub(crate) struct RunningLab {
    pub(crate) plan: LabPlan,
    state: State,
    down: bool,
}

impl RunningLab {
    pub(crate) fn start(lab: &Lab, state_root: &Path) -> anyhow::Result<Self> {
        let state = State::new(state_root, &lab.name);
        let plan = lab.plan(&state.dir).map_err(|e| anyhow::anyhow!("lab {}: {e}", lab.name))?;
        if !lab_namespaces(&lab.name).is_empty() || state.dir.exists() {
            teardown(&lab.name, &state, false);
        }
        if let Err(e) = build(lab, &plan, &state) {
            teardown(&lab.name, &state, false);
            return Err(e);
        }
        Ok(Self { plan, state, down: false })
    }

    /// Peak resident memory of each node process (name, KiB), from /proc.
    pub(crate) fn node_peak_rss(&self) -> Vec<(String, u64)> {
        self.node_pids().filter_map(|(name, pid)| Some((name.to_owned(), proc_status_kib(&pid, "VmHWM")?))).collect()
    }

    /// (name, pid) of every node process that has a pid file.
    fn node_pids(&self) -> impl Iterator<Item = (&str, String)> + '_ {
        self.plan.nodes.iter().filter_map(|n| {
            let pid = std::fs::read_to_string(self.state.dir.join(format!("{}.pid", n.name))).ok()?;
            Some((n.name.as_str(), pid.trim().to_owned()))
        })
    }

    /// CPU time (user + system, seconds) the node processes have used so far, all threads;
    /// the kernel's work done in a node's context (its system calls, the TCP stack behind its
    /// TUN writes) included.
    pub(crate) fn node_cpu_seconds(&self) -> f64 {
        self.node_pids().filter_map(|(_, pid)| proc_cpu_seconds(&pid)).sum()
    }

    pub(crate) fn pki(&self) -> PathBuf {
        self.state.pki()
    }

    /// The lab's state directory (its controller's database, credentials, logs).
    pub(crate) fn state_dir(&self) -> &Path {
        &self.state.dir
    }
}

impl RunningLab {
    /// Stops the lab and returns the nodes' final reports.
    pub(crate) fn finish(mut self) -> String {
        self.down = true;
        teardown(&self.plan.name, &self.state, true)
    }
}

impl Drop for RunningLab {
    fn drop(&mut self) {
        if !self.down {
            teardown(&self.plan.name, &self.state, false);
        }
    }
}

pub(crate) fn up(a: &UpArgs) -> anyhow::Result<bool> {
    let lab = load(&a.file)?;
    let state = State::new(&a.state_dir, &lab.name);
    let plan = plan(&lab, &a.file, &state)?;
    if !lab_namespaces(&lab.name).is_empty() || state.dir.exists() {
        bail!("lab {:?} is already up (or left over): run `zsfc down {}` first", lab.name, lab.name);
    }
    match build(&lab, &plan, &state) {
        Ok(()) => {
            summary(&plan, &state);
            Ok(true)
        }
        Err(e) => {
            eprintln!("zsfc up: {e:#}\nremoving what was built...");
            teardown(&lab.name, &state, false);
            Err(e.context(format!("lab {:?} could not be brought up", lab.name)))
        }
    }
}

fn build(lab: &Lab, plan: &LabPlan, state: &State) -> anyhow::Result<()> {
    for d in [state.dir.clone(), state.pki().join("clients"), state.pki().join("outsider"), state.dir.join("logs")] {
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    std::fs::write(state.lab_file(), toml::to_string(lab)?)?;
    // The controller's database: the domain, its CA, one bootstrap token per node.
    let spec = zsfc_controller::DomainSpec {
        name: plan.name.clone(),
        topology: plan.topology.clone(),
        gateway_node: Some(plan.nodes[plan.gateway.node].name.clone()),
        grants: plan.grants.clone(),
        rekey: zsfc_controller::RekeySettings {
            period_s: plan.controller.rekey_period_s,
            grace_ms: plan.controller.grace_ms,
            ..Default::default()
        },
        api: Default::default(),
    };
    let (init, ca) = zsfc_controller::Controller::init(&state.controller_db(), &spec)?;
    make_pki(plan, state, &ca)?;
    drop(ca);
    for (node, token) in &init.tokens {
        write_private(&state.dir.join(format!("{node}.token")), token.as_bytes())?;
    }

    // The domain segment: one bridge, one veth per node.
    add_ns(&plan.bridge_ns)?;
    ip(&["-n", &plan.bridge_ns, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", &plan.bridge_ns, "link", "set", "br0", "up"])?;
    // The host's br_netfilter (Docker loads it) would pass every frame crossing the segment
    // through iptables hooks that hold no rule here; it is turned off in this namespace only
    // (`-e`: the keys exist only while the module is loaded).
    sysctl(
        &plan.bridge_ns,
        &[
            "-e",
            "net.bridge.bridge-nf-call-iptables=0",
            "net.bridge.bridge-nf-call-ip6tables=0",
            "net.bridge.bridge-nf-call-arptables=0",
        ],
    )?;
    let mtu = plan.link_mtu.to_string();
    for (i, n) in plan.nodes.iter().enumerate() {
        add_ns(&n.ns)?;
        let port = format!("n{i}");
        veth(&n.ns, "eth0", &plan.bridge_ns, &port, &mtu)?;
        ip(&["-n", &n.ns, "addr", "add", &n.address, "dev", "eth0"])?;
        if let Some(mac) = &n.mac {
            ip(&["-n", &n.ns, "link", "set", "eth0", "address", mac])?;
        }
        ip(&["-n", &n.ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &plan.bridge_ns, "link", "set", &port, "master", "br0", "up"])?;
    }
    // The control segment (seed 004 REQ1): a bridge of its own, every node's `ctl0` and the
    // controller, in a namespace of its own, on it; the controller has no domain-segment side.
    ip(&["-n", &plan.bridge_ns, "link", "add", "br1", "type", "bridge"])?;
    ip(&["-n", &plan.bridge_ns, "link", "set", "br1", "up"])?;
    for (i, n) in plan.nodes.iter().enumerate() {
        let port = format!("k{i}");
        veth(&n.ns, "ctl0", &plan.bridge_ns, &port, "1500")?;
        ip(&["-n", &n.ns, "addr", "add", &n.control_address, "dev", "ctl0"])?;
        ip(&["-n", &n.ns, "link", "set", "ctl0", "up"])?;
        ip(&["-n", &plan.bridge_ns, "link", "set", &port, "master", "br1", "up"])?;
    }
    let ctl_ns = format!("{}-ctl", plan.prefix);
    add_ns(&ctl_ns)?;
    veth(&ctl_ns, "eth0", &plan.bridge_ns, "ctl", "1500")?;
    ip(&["-n", &ctl_ns, "addr", "add", zsfc_lab::CONTROLLER_PREFIX, "dev", "eth0"])?;
    ip(&["-n", &ctl_ns, "link", "set", "eth0", "up"])?;
    ip(&["-n", &ctl_ns, "link", "set", "lo", "up"])?;
    ip(&["-n", &plan.bridge_ns, "link", "set", "ctl", "master", "br1", "up"])?;
    let bin = std::env::current_exe().context("finding the zsfc binary")?;
    let bin = bin.to_str().context("the zsfc binary's path is not UTF-8")?;
    let db = state.controller_db();
    let (nodes, management) = (zsfc_lab::CONTROLLER_ADDRESS, zsfc_lab::MANAGEMENT_ADDRESS);
    let db = db.to_str().unwrap_or_default();
    let args = [bin, "controller", "--db", db, "--listen", nodes, "--management-listen", management];
    let pid = spawn(&ctl_ns, &args, &state.log("controller"))?;
    std::fs::write(state.dir.join("controller.pid"), pid.to_string())?;
    let port = |a: &str| a.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()).unwrap_or(8443);
    wait_until("the controller", Some(&state.log("controller")), || {
        listening(&ctl_ns, false, port(nodes)) && listening(&ctl_ns, false, port(management))
    })?;

    // The client network on the gateway node.
    let gw = &plan.nodes[plan.gateway.node];
    ip(&["-n", &gw.ns, "link", "add", "clients", "mtu", &mtu, "type", "bridge"])?;
    ip(&["-n", &gw.ns, "addr", "add", &format!("{}/24", plan.gateway.address), "dev", "clients"])?;
    ip(&["-n", &gw.ns, "link", "set", "clients", "up"])?;
    sysctl(&gw.ns, &["net.ipv4.ip_forward=1"])?;
    for (k, c) in plan.clients.iter().enumerate() {
        add_ns(&c.ns)?;
        let port = format!("c{k}");
        veth(&c.ns, "eth0", &gw.ns, &port, &mtu)?;
        ip(&["-n", &c.ns, "addr", "add", &format!("{}/24", c.address), "dev", "eth0"])?;
        ip(&["-n", &c.ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &c.ns, "route", "add", "default", "via", &plan.gateway.address.to_string()])?;
        ip(&["-n", &gw.ns, "link", "set", &port, "master", "clients", "up"])?;
    }

    // Veth attachment circuits (one per lane) exist before their node opens them.
    for sf in &plan.external_sfs {
        let node_ns = &plan.nodes[sf.node].ns;
        if sf.circuits.iter().any(|c| c.veth.is_some()) {
            add_ns(&sf.ns)?;
        }
        for c in &sf.circuits {
            let Some(v) = &c.veth else { continue };
            for (node_end, sf_end) in [(&c.to_sf, &v.sf_in), (&c.from_sf, &v.sf_out)] {
                ip(&[
                    "link", "add", node_end, "mtu", &mtu, "netns", node_ns, "type", "veth", "peer", "name", sf_end,
                    "mtu", &mtu, "netns", &sf.ns,
                ])?;
                // The node's kernel must not route what the SF sends back: only zsfc reads it.
                sysctl(
                    node_ns,
                    &[
                        &format!("net.ipv6.conf.{node_end}.disable_ipv6=1"),
                        &format!("net.ipv4.conf.{node_end}.forwarding=0"),
                    ],
                )?;
            }
            ip(&["-n", &sf.ns, "link", "set", &v.sf_in, "address", &v.sf_in_mac])?;
            ip(&["-n", node_ns, "link", "set", &c.from_sf, "address", &v.node_from_sf_mac])?;
            for dev in [&c.to_sf, &c.from_sf] {
                ip(&["-n", node_ns, "link", "set", dev, "up"])?;
            }
        }
    }

    // The nodes: their files hold no key, label, chain or rule; the controller pushes those.
    for n in &plan.nodes {
        let cfg = state.dir.join(format!("{}.toml", n.name));
        let file = n.config.for_controller(zsfc_config::ControllerConfig {
            address: zsfc_lab::CONTROLLER_ADDRESS.into(),
            server_name: "controller".into(),
            ca: state.pki().join("ca.pem").display().to_string(),
            identity_dir: state.dir.join(format!("{}.id", n.name)).display().to_string(),
            bootstrap: state.dir.join(format!("{}.token", n.name)).display().to_string(),
        });
        write_private(&cfg, file.to_toml()?.as_bytes())?;
        let ready = state.dir.join(format!("{}.ready", n.name));
        let args = [
            bin,
            "node",
            "--config",
            cfg.to_str().unwrap_or_default(),
            "--ready-file",
            ready.to_str().unwrap_or_default(),
        ];
        let pid = spawn(&n.ns, &args, &state.log(&n.name))?;
        std::fs::write(state.dir.join(format!("{}.pid", n.name)), pid.to_string())?;
    }
    for n in &plan.nodes {
        let ready = state.dir.join(format!("{}.ready", n.name));
        wait_until(&format!("node {}", n.name), Some(&state.log(&n.name)), || ready.exists())?;
        if n.config.local.is_some() {
            // Labs are IPv4 inside: no IPv6 neighbour discovery or router solicitations from
            // the device (the classifier would count them as `no_matching_rule`). Below an MTU
            // of 1280 the kernel has taken IPv6 off the device already (`-e`: no such key).
            sysctl(&n.ns, &["-e", &format!("net.ipv6.conf.{}.disable_ipv6=1", zsfc_lab::LOCAL_DEV)])?;
            ip(&["-n", &n.ns, "link", "set", zsfc_lab::LOCAL_DEV, "up"])?;
            for r in &n.local_routes {
                ip(&["-n", &n.ns, "route", "add", r, "dev", zsfc_lab::LOCAL_DEV])?;
            }
        }
    }
    // Every node runs the controller's latest state (keys, chains, policy).
    crate::control::wait_converged(&state.dir, &plan.name, READY_TIMEOUT)?;

    // External SFs: their own namespace, routing each circuit's in side to its own out side
    // (lane j's through routing table 100 + j), so that every lane gets back what it sent.
    for sf in &plan.external_sfs {
        let node_ns = &plan.nodes[sf.node].ns;
        if sf.circuits.iter().all(|c| c.veth.is_none()) {
            add_ns(&sf.ns)?;
        }
        sysctl(
            &sf.ns,
            &["net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"],
        )?;
        for (lane, c) in sf.circuits.iter().enumerate() {
            let (sf_in, sf_out) = match &c.veth {
                Some(v) => (v.sf_in.clone(), v.sf_out.clone()),
                None => {
                    // TUN circuits: the node created both devices; they move into the SF's namespace.
                    for dev in [&c.to_sf, &c.from_sf] {
                        ip(&["-n", node_ns, "link", "set", dev, "netns", &sf.ns])?;
                    }
                    (c.to_sf.clone(), c.from_sf.clone())
                }
            };
            for dev in [&sf_in, &sf_out] {
                sysctl(&sf.ns, &[&format!("net.ipv6.conf.{dev}.disable_ipv6=1")])?;
                ip(&["-n", &sf.ns, "link", "set", dev, "up"])?;
            }
            sysctl(&sf.ns, &[&format!("net.ipv4.conf.{sf_in}.rp_filter=0")])?;
            let table = (100 + lane).to_string();
            // Lane 0 uses the main table (as with one lane); the others a table each.
            let route = |args: &[&str]| {
                let mut a = vec!["-n", sf.ns.as_str(), "route", "add"];
                a.extend_from_slice(args);
                if lane > 0 {
                    a.extend_from_slice(&["table", &table]);
                }
                ip(&a)
            };
            match &c.veth {
                Some(v) => {
                    // The way out: a next hop whose MAC is the node's end (no ARP needed).
                    let (here, next) =
                        (format!("169.254.0.{}/30", 4 * lane + 1), format!("169.254.0.{}", 4 * lane + 2));
                    ip(&["-n", &sf.ns, "addr", "add", &here, "dev", &sf_out])?;
                    let lladdr = &v.node_from_sf_mac;
                    ip(&["-n", &sf.ns, "neigh", "add", &next, "lladdr", lladdr, "dev", &sf_out, "nud", "permanent"])?;
                    route(&["default", "via", &next, "dev", &sf_out])?;
                }
                None => route(&["default", "dev", &sf_out])?,
            }
            if lane > 0 {
                ip(&["-n", &sf.ns, "rule", "add", "iif", &sf_in, "lookup", &table])?;
            }
        }
        for rule in &sf.iptables {
            let mut args = vec!["iptables"];
            args.extend(rule.iter().map(String::as_str));
            in_ns(&sf.ns, &args).with_context(|| format!("SF {}: an iptables rule", sf.name))?;
        }
    }

    // Services.
    for s in &plan.services {
        let ns = &plan.nodes[s.node].ns;
        let log = state.log(&format!("service-{}", s.name));
        let port = s.port.to_string();
        let addr = s.address.to_string();
        let pid = match s.kind {
            ServiceKind::Http => {
                let www = state.dir.join(format!("www-{}", s.name));
                write_site(&www, s.files, s.bytes)?;
                let dir = www.to_str().unwrap_or_default();
                spawn(ns, &["python3", "-m", "http.server", &port, "--bind", &addr, "--directory", dir], &log)?
            }
            ServiceKind::UdpEcho => spawn(ns, &["python3", "-c", UDP_ECHO, &addr, &port], &log)?,
            ServiceKind::Iperf3 => spawn(ns, &["iperf3", "-s", "-B", &addr, "-p", &port], &log)?,
        };
        std::fs::write(state.dir.join(format!("service-{}.pid", s.name)), pid.to_string())?;
        wait_until(&format!("service {}", s.name), Some(&log), || {
            listening(ns, s.kind == ServiceKind::UdpEcho, s.port)
        })?;
    }
    Ok(())
}

const UDP_ECHO: &str = "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind((sys.argv[1],int(sys.argv[2])))\nwhile True:\n d,a=s.recvfrom(65535)\n s.sendto(b're:'+d,a)\n";

fn index_html(files: u32) -> String {
    let parts = files.saturating_sub(1);
    format!(
        "<html><body>{}</body></html>\n",
        (1..=parts).map(|i| format!("<img src=\"part{i}.bin\">")).collect::<String>()
    )
}

/// The files of a service's web page: `index.html` naming `files - 1` parts, `bytes` in all.
pub(crate) fn site_files(files: u32, bytes: u64) -> Vec<(String, u64)> {
    let parts = files.saturating_sub(1);
    let index = index_html(files);
    let rest = bytes.saturating_sub(index.len() as u64);
    let mut out = vec![("index.html".to_owned(), index.len() as u64)];
    for i in 1..=parts {
        let size = rest / u64::from(parts) + u64::from(u64::from(i) <= rest % u64::from(parts));
        out.push((format!("part{i}.bin"), size));
    }
    out
}

fn write_site(dir: &Path, files: u32, bytes: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    for (i, (name, size)) in site_files(files, bytes).into_iter().enumerate() {
        let body: Vec<u8> = if i == 0 {
            index_html(files).into_bytes()
        } else {
            (0..size).map(|k| alphabet[(k % alphabet.len() as u64) as usize]).collect()
        };
        std::fs::write(dir.join(name), body)?;
    }
    // Outside the page: a file whose name a DPI rule for "test" catches in the request.
    std::fs::write(dir.join("test.html"), b"<p>you passed</p>\n")?;
    Ok(())
}

fn make_pki(plan: &LabPlan, state: &State, ca: &Ca) -> anyhow::Result<()> {
    let pki = state.pki();
    std::fs::write(pki.join("ca.pem"), ca.pem())?;
    crate::pki::issue_roles(ca, &pki)?;
    let gw_ip: IpAddr = plan.gateway.address.into();
    let (cert, key) = ca.issue("gateway", true, &plan.gateway.server_names, &[gw_ip])?;
    std::fs::write(pki.join("gateway.pem"), cert)?;
    write_private(&pki.join("gateway.key"), key.as_bytes())?;
    // Same names from a CA nobody trusts: what a client from elsewhere would present.
    let outsider = Ca::new(&format!("zsfc {} outsider CA", plan.name))?;
    for c in &plan.clients {
        let (cert, key) = ca.issue(&c.name, false, &[], &[])?;
        std::fs::write(pki.join("clients").join(format!("{}.pem", c.name)), cert)?;
        write_private(&pki.join("clients").join(format!("{}.key", c.name)), key.as_bytes())?;
        let (cert, key) = outsider.issue(&c.name, false, &[], &[])?;
        std::fs::write(pki.join("outsider").join(format!("{}.pem", c.name)), cert)?;
        write_private(&pki.join("outsider").join(format!("{}.key", c.name)), key.as_bytes())?;
    }
    Ok(())
}

fn summary(plan: &LabPlan, state: &State) {
    let gw = &plan.nodes[plan.gateway.node];
    println!("lab {} is up (state in {})", plan.name, state.dir.display());
    let ring = plan.nodes.iter().find_map(|n| n.config.transport.as_ref().filter(|t| t.ethernet.is_some()));
    let transport = match ring.map(|t| t.ring.unwrap_or_default()) {
        Some(zsfc_config::EthernetRing::Frames) => "Ethernet + MPLS (receive ring of frames, TPACKET_V2)",
        Some(zsfc_config::EthernetRing::Blocks) => "Ethernet + MPLS (receive ring of blocks, TPACKET_V3)",
        None => "MPLS-in-UDP",
    };
    let mut protections = Vec::new();
    if plan.topology.link_protection {
        protections.push("link ESP (AES-GMAC) on every hop");
    }
    if plan.topology.sfc_integrity {
        protections.push("SFC integrity (RFC 9145 MAC, encrypted subscriber id) and proof of transit");
    }
    println!(
        "  links: {transport} on one segment (bridge in {}), MTU {}, inner MTU {}{}",
        plan.bridge_ns,
        plan.link_mtu,
        plan.inner_mtu,
        if protections.is_empty() { String::new() } else { format!("; {}", protections.join("; ")) }
    );
    for n in &plan.nodes {
        let roles: Vec<&str> = [
            (n.config.gateway.is_some(), "gateway+classifier"),
            (!n.config.sfs.is_empty(), "SFF+proxy"),
            (n.config.labels.iter().any(|l| l.deliver) && n.config.gateway.is_none(), "egress"),
        ]
        .into_iter()
        .filter_map(|(on, r)| on.then_some(r))
        .collect();
        let sfs: Vec<&str> = n.config.sfs.iter().map(|s| s.name.as_str()).collect();
        println!("  node {:<10} ns {:<24} {} {} SFs [{}]", n.name, n.ns, n.address, roles.join(","), sfs.join(","));
    }
    for sf in &plan.external_sfs {
        let circuits: Vec<String> = sf.circuits.iter().map(|c| format!("{} -> {}", c.to_sf, c.from_sf)).collect();
        println!(
            "  external SF {} in ns {} ({}, iptables rules: {})",
            sf.name,
            sf.ns,
            circuits.join(", "),
            sf.iptables.len()
        );
    }
    for s in &plan.services {
        println!(
            "  service {} ({}) at {}:{} on node {}",
            s.name, s.server_name, s.address, s.port, plan.nodes[s.node].name
        );
    }
    for c in &plan.clients {
        println!("  client {} in ns {} at {}", c.name, c.ns, c.address);
    }
    for c in &plan.chains {
        println!("  chain {c}");
    }
    println!(
        "  controller https://{} in ns {}-ctl, on the control segment (every node's ctl0) only (domain CA, \
         every node's SAs, chains and policy; log {})",
        zsfc_lab::CONTROLLER_ADDRESS,
        plan.prefix,
        state.log("controller").display()
    );
    if let (Some(c), Some(s)) = (plan.clients.first(), plan.services.iter().find(|s| s.kind == ServiceKind::Http)) {
        let pki = state.pki();
        println!("try, as {}:", c.name);
        println!(
            "  ip netns exec {} curl --cacert {} --cert {} --key {} --resolve {}:{}:{} https://{}:{}/index.html",
            c.ns,
            pki.join("ca.pem").display(),
            pki.join("clients").join(format!("{}.pem", c.name)).display(),
            pki.join("clients").join(format!("{}.key", c.name)).display(),
            s.server_name,
            plan.gateway.port,
            plan.gateway.address,
            s.server_name,
            plan.gateway.port
        );
    }
    println!("  the gateway's log: {}", state.log(&gw.name).display());
    println!("  a node's counters: ip netns exec {} curl -s http://{}/metrics", gw.ns, zsfc_lab::METRICS_LISTEN);
    println!("live counters: zsfc status {}; expected outcomes: zsfc check {}", plan.name, plan.name);
    println!(
        "keys and paths: zsfc rekey {n}; zsfc chain {n} CHAIN SF...; zsfc policy {n} --grant ID=SERVICE:CHAIN; \
         zsfc audit verify {}",
        state.controller_db().display(),
        n = plan.name
    );
    println!("stop with: zsfc down {}", plan.name);
}

pub(crate) fn down(a: &DownArgs) -> anyhow::Result<bool> {
    let state = State::new(&a.state_dir, &a.name);
    let found = !lab_namespaces(&a.name).is_empty() || state.dir.exists();
    if !found {
        println!("lab {} is not up; nothing to remove", a.name);
        return Ok(true);
    }
    print!("{}", teardown(&a.name, &state, true));
    let left = lab_namespaces(&a.name);
    if !left.is_empty() {
        bail!("namespaces left behind: {}", left.join(" "));
    }
    println!("lab {} is down", a.name);
    Ok(true)
}

fn signal(pid: &str, sig: nix::sys::signal::Signal) {
    if let Ok(p) = pid.trim().parse::<i32>() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), sig);
    }
}

/// Stops every process of the lab (SIGTERM, then SIGKILL), shows the nodes' final reports,
/// deletes its namespaces (their veths and TUN devices go with them) and its state.
fn teardown(name: &str, state: &State, report: bool) -> String {
    let namespaces = lab_namespaces(name);
    let pids = |ns: &[String]| -> Vec<String> {
        ns.iter()
            .flat_map(|n| {
                sh("ip", &["netns", "pids", n]).unwrap_or_default().lines().map(str::to_owned).collect::<Vec<_>>()
            })
            .collect()
    };
    for p in pids(&namespaces) {
        signal(&p, nix::sys::signal::Signal::SIGTERM);
    }
    let t = Instant::now();
    while !pids(&namespaces).is_empty() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in pids(&namespaces) {
        signal(&p, nix::sys::signal::Signal::SIGKILL);
    }
    let reports = if report { final_reports(state) } else { String::new() };
    for n in &namespaces {
        let _ = sh("ip", &["netns", "del", n]);
    }
    let _ = std::fs::remove_dir_all(&state.dir);
    reports
}

/// The final report lines of every node log (what each node printed on SIGTERM).
fn final_reports(state: &State) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(state.dir.join("logs")) else { return out };
    let mut logs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    logs.sort();
    for l in logs {
        let text = std::fs::read_to_string(&l).unwrap_or_default();
        let report: Vec<&str> = text
            .lines()
            .filter(|x| {
                ["node ", "engine:", "drop ", "sf ", "gateway: accepted", "flows:"].iter().any(|p| x.starts_with(p))
            })
            .collect();
        if !report.is_empty() {
            out.push_str(&report.join("\n"));
            out.push('\n');
        }
    }
    out
}

/// One checked outcome.
#[derive(Debug)]
pub(crate) struct Checked {
    pub what: String,
    pub want: String,
    pub got: String,
    pub ok: bool,
}

/// The samples of `metric` in a metrics text, keyed by the value of `label` (one entry per
/// sample: a node with several lanes has one per lane).
fn metric_values(text: &str, metric: &str, label: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter_map(|l| {
            let (labels, v) = l.rsplit_once(' ')?;
            let key = labels.split(&format!("{label}=\"")).nth(1)?.split('"').next()?;
            Some((key.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// Engine drop reasons that are an SF's decision to block traffic.
const BLOCKING_DROPS: [&str; 3] = ["sf_dpi_match", "sf_firewall_deny", "sf_rate_limited"];

/// Packets SFs have blocked in the whole domain so far: the engines' blocking drops (from every
/// node's metrics) and the packets matched by DROP or REJECT rules in external SFs' iptables.
fn blocked_by_sfs(plan: &LabPlan) -> u64 {
    let url = format!("http://{}/metrics", zsfc_lab::METRICS_LISTEN);
    let engines: u64 = plan
        .nodes
        .iter()
        .filter_map(|n| in_ns(&n.ns, &["curl", "-s", "--max-time", "2", &url]).ok())
        .flat_map(|text| metric_values(&text, "zsfc_drops_total", "reason"))
        .filter(|(reason, _)| BLOCKING_DROPS.contains(&reason.as_str()))
        .map(|(_, v)| v)
        .sum();
    let externals: u64 = plan
        .external_sfs
        .iter()
        .filter_map(|sf| in_ns(&sf.ns, &["iptables", "-nvxL"]).ok())
        .map(|t| dropped_by_rules(&t))
        .sum();
    engines + externals
}

/// Packets matched by DROP or REJECT rules in `iptables -nvxL` output.
fn dropped_by_rules(listing: &str) -> u64 {
    listing
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && matches!(f[2], "DROP" | "REJECT")).then(|| f[0].parse::<u64>().ok()).flatten()
        })
        .sum()
}

/// `zsfc status NAME`: every node's live counters, from its metrics endpoint.
pub(crate) fn status(a: &CheckArgs) -> anyhow::Result<bool> {
    let state = State::new(&a.state_dir, &a.name);
    let lab = load(&state.lab_file()).with_context(|| format!("is lab {:?} up?", a.name))?;
    let plan = plan(&lab, &state.lab_file(), &state)?;
    let url = format!("http://{}/metrics", zsfc_lab::METRICS_LISTEN);
    let mut all_up = true;
    for n in &plan.nodes {
        let text = match in_ns(&n.ns, &["curl", "-s", "--max-time", "2", &url]) {
            Ok(t) if !t.trim().is_empty() => t,
            _ => {
                println!("node {}: not answering", n.name);
                all_up = false;
                continue;
            }
        };
        let value = |metric: &str, label: &str| metric_values(&text, metric, label);
        let packets = value("zsfc_packets_total", "what");
        let get = |k: &str| packets.iter().find(|p| p.0 == k).map_or(0, |p| p.1);
        let drops: Vec<String> = value("zsfc_drops_total", "reason")
            .into_iter()
            .filter(|d| d.1 > 0)
            .map(|(r, v)| format!("{r}={v}"))
            .collect();
        println!(
            "node {:<10} classified {:>8} forwarded {:>8} delivered {:>8}  drops: {}",
            n.name,
            get("classified"),
            get("forwarded"),
            get("delivered"),
            if drops.is_empty() { "none".to_owned() } else { drops.join(" ") }
        );
        let gw: Vec<String> = value("zsfc_gateway_total", "outcome")
            .into_iter()
            .filter(|g| g.1 > 0)
            .map(|(o, v)| format!("{o}={v}"))
            .collect();
        if !gw.is_empty() {
            println!("     gateway: {}", gw.join(" "));
        }
    }
    // Reading needs no more than the auditor's credentials (least privilege).
    let auditor = zsfc_controller::Role::Auditor;
    match crate::control::with_role_in_lab(&state.dir, &a.name, auditor, |c| {
        let r = c.blocking("GET", "/restconf/data/zsfc:domain", None, Duration::from_secs(5))?;
        anyhow::ensure!(r.status == 200, "{} {}", r.status, r.message());
        Ok(serde_json::from_slice::<serde_json::Value>(&r.body)?)
    }) {
        Ok(v) => {
            let d = &v["zsfc:domain"];
            let acked: Vec<String> = d["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| format!("{}@{}", n["name"].as_str().unwrap_or("?"), n["acked-version"]))
                .collect();
            println!(
                "controller  version {} rollouts {} {} acknowledged: {}",
                d["version"],
                d["rollouts"],
                if d["converged"] == true { "converged," } else { "rolling out," },
                acked.join(" ")
            );
            let on_tokens: Vec<&str> =
                d["roles-on-tokens"].as_array().into_iter().flatten().filter_map(|r| r.as_str()).collect();
            if !on_tokens.is_empty() {
                println!("            roles on hardware tokens: {}", on_tokens.join(" "));
            }
        }
        Err(e) => {
            all_up = false;
            println!("controller  NOT ANSWERING: {e:#}");
        }
    }
    Ok(all_up)
}

pub(crate) fn check(a: &CheckArgs) -> anyhow::Result<bool> {
    let state = State::new(&a.state_dir, &a.name);
    let lab = load(&state.lab_file()).with_context(|| format!("is lab {:?} up?", a.name))?;
    let plan = plan(&lab, &state.lab_file(), &state)?;
    let results = run_checks(&lab, &plan, &state)?;
    Ok(print_checks(&results))
}

fn print_checks(results: &[Checked]) -> bool {
    println!("{:<48} {:<32} {:<36} result", "what", "expected", "happened");
    for r in results {
        println!("{:<48} {:<32} {:<36} {}", r.what, r.want, r.got, if r.ok { "ok" } else { "FAILED" });
    }
    let failed = results.iter().filter(|r| !r.ok).count();
    println!("{} of {} outcomes as expected", results.len() - failed, results.len());
    failed == 0
}

fn run_checks(lab: &Lab, plan: &LabPlan, state: &State) -> anyhow::Result<Vec<Checked>> {
    let gw_log = state.log(&plan.nodes[plan.gateway.node].name);
    let refusals = |reason: &str| {
        std::fs::read_to_string(&gw_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("gateway: refused") && l.contains(&format!("reason={reason}")))
            .count()
    };
    let mut out = Vec::new();
    for e in &lab.expect {
        let client = plan.clients.iter().find(|c| c.name == e.client).context("client")?;
        let service = plan.services.iter().find(|s| s.name == e.service).context("service")?;
        let cert = match e.certificate {
            CertChoice::Own => " with its certificate",
            CertChoice::None => " without a certificate",
            CertChoice::Outsider => " with another CA's certificate",
        };
        let what = format!("{}{cert}: {} {}", e.client, e.service, e.request);
        let want = match (e.outcome, &e.reason) {
            (Outcome::Refused, Some(r)) => format!("refused ({r})"),
            (o, _) => format!("{o:?}").to_lowercase(),
        };
        let before = e.reason.as_deref().map(&refusals);
        let blocked_before = (e.outcome == Outcome::Blocked).then(|| blocked_by_sfs(plan));
        let (mut got, outcome) = match service.kind {
            ServiceKind::Http => fetch_page(plan, &state.pki(), client, service, &e.request, e.certificate)?,
            ServiceKind::UdpEcho => udp_request(client, service, &e.request)?,
            ServiceKind::Iperf3 => bail!("expect[]: an iperf3 service is for benchmarks, not for expected outcomes"),
        };
        let mut ok = outcome == Some(e.outcome);
        if let (Some(Outcome::Blocked), Some(n)) = (outcome, blocked_before) {
            // No answer is not enough: an SF must have dropped it (the counters are published
            // once a second).
            let t = Instant::now();
            while blocked_by_sfs(plan) <= n && t.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(200));
            }
            let by = blocked_by_sfs(plan).saturating_sub(n);
            got =
                if by > 0 { format!("{got}, {by} pkt dropped by SFs") } else { format!("{got}, but no SF dropped it") };
            ok &= by > 0;
        }
        if let (Some(r), Some(n)) = (e.reason.as_deref(), before) {
            // The gateway logs after it decides; give it a moment.
            let t = Instant::now();
            while refusals(r) <= n && t.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(50));
            }
            ok &= refusals(r) > n;
        }
        out.push(Checked { what, want, got, ok });
    }
    Ok(out)
}

/// Fetches over mutual TLS with curl in the client's namespace. `/` fetches the whole page.
pub(crate) fn fetch_page(
    plan: &LabPlan,
    pki: &Path,
    client: &zsfc_lab::PlannedClient,
    service: &zsfc_lab::PlannedService,
    request: &str,
    cert: CertChoice,
) -> anyhow::Result<(String, Option<Outcome>)> {
    let host = &service.server_name;
    let resolve = format!("{host}:{}:{}", plan.gateway.port, plan.gateway.address);
    let (paths, want_bytes): (Vec<String>, Option<u64>) = if request == "/" {
        let files = site_files(service.files, service.bytes);
        (files.iter().map(|(n, _)| format!("/{n}")).collect(), Some(service.bytes))
    } else {
        (vec![request.to_owned()], None)
    };
    let urls: Vec<String> = paths.iter().map(|p| format!("https://{host}:{}{p}", plan.gateway.port)).collect();
    let ca = pki.join("ca.pem");
    let dir = match cert {
        CertChoice::Own => Some(pki.join("clients")),
        CertChoice::Outsider => Some(pki.join("outsider")),
        CertChoice::None => None,
    };
    let cert_files = dir.map(|d| (d.join(format!("{}.pem", client.name)), d.join(format!("{}.key", client.name))));
    let max_time = BLOCK_TIMEOUT_S.to_string();
    let mut args: Vec<String> = ["netns", "exec", &client.ns, "curl", "-s", "--max-time", &max_time, "--cacert"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    args.push(ca.display().to_string());
    if let Some((c, k)) = &cert_files {
        args.extend(["--cert".into(), c.display().to_string(), "--key".into(), k.display().to_string()]);
    }
    args.extend(["--resolve".into(), resolve, "-w".into(), "%{http_code} %{size_download}\\n".into()]);
    for u in &urls {
        args.extend(["-o".into(), "/dev/null".into(), u.clone()]);
    }
    let t = Instant::now();
    let out = Command::new("ip").args(&args).stdin(Stdio::null()).output().context("running curl")?;
    let secs = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut ok_files = 0;
    let mut bytes = 0u64;
    for l in stdout.lines() {
        let mut f = l.split_whitespace();
        if f.next() == Some("200") {
            ok_files += 1;
            bytes += f.next().and_then(|b| b.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    let code = out.status.code().unwrap_or(-1);
    let served = code == 0 && ok_files == urls.len() && want_bytes.is_none_or(|w| w == bytes);
    Ok(match (served, code) {
        (true, _) => (format!("{ok_files} files, {bytes} B in {secs:.2} s"), Some(Outcome::Served)),
        (false, 0) => (format!("answered, but: {}", stdout.trim().replace('\n', ", ")), None),
        // curl 28: the operation timed out (the session stood, no answer came).
        (false, 28) => (format!("no answer in {BLOCK_TIMEOUT_S} s"), Some(Outcome::Blocked)),
        (false, c) => (format!("refused by the gateway (curl {c})"), Some(Outcome::Refused)),
    })
}

/// Sends one datagram from the client's namespace and waits for the echo.
fn udp_request(
    client: &zsfc_lab::PlannedClient,
    service: &zsfc_lab::PlannedService,
    request: &str,
) -> anyhow::Result<(String, Option<Outcome>)> {
    const SEND: &str = "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(float(sys.argv[4]))\ns.sendto(sys.argv[3].encode(),(sys.argv[1],int(sys.argv[2])))\ntry:\n print(s.recv(65535).decode())\nexcept socket.timeout:\n print('<timeout>')\n";
    let out = in_ns(
        &client.ns,
        &[
            "python3",
            "-c",
            SEND,
            &service.address.to_string(),
            &service.port.to_string(),
            request,
            &BLOCK_TIMEOUT_S.to_string(),
        ],
    )?;
    let answer = out.trim();
    Ok(if answer == format!("re:{request}") {
        (format!("echo {answer:?}"), Some(Outcome::Served))
    } else {
        (format!("no echo ({answer})"), Some(Outcome::Blocked))
    })
}

/// `zsfc run FILE`: up, check every expected outcome, down — always down, also on failure.
pub(crate) fn run(a: &UpArgs) -> anyhow::Result<bool> {
    let lab = load(&a.file)?;
    let state = State::new(&a.state_dir, &lab.name);
    up(a)?;
    let plan = plan(&lab, &a.file, &state)?;
    let results = run_checks(&lab, &plan, &state);
    println!();
    let ok = match &results {
        Ok(r) => print_checks(r),
        Err(e) => {
            eprintln!("zsfc run: checking failed: {e:#}");
            false
        }
    };
    println!("\ntearing down; the nodes' final reports:");
    down(&DownArgs { name: lab.name.clone(), state_dir: a.state_dir.clone() })?;
    Ok(ok && results.is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_evidence_is_read_from_metrics_and_iptables_counters() {
        let metrics = "# TYPE zsfc_drops counter\nzsfc_drops_total{node=\"sf\",reason=\"sf_dpi_match\"} 6\n\
                       zsfc_drops_total{node=\"sf\",reason=\"esp_auth\"} 2\nzsfc_packets_total{what=\"udp_rx\"} 9\n";
        let drops = metric_values(metrics, "zsfc_drops_total", "reason");
        assert_eq!(drops, vec![("sf_dpi_match".to_owned(), 6), ("esp_auth".to_owned(), 2)]);
        let listing = "Chain INPUT (policy ACCEPT 0 packets, 0 bytes)\n    pkts      bytes target     prot opt in     out     source               destination\n\
                       Chain FORWARD (policy ACCEPT 120 packets, 9000 bytes)\n    pkts      bytes target     prot opt in     out     source               destination\n\
                       \x20      6      400 DROP       0    --  *      *       0.0.0.0/0            0.0.0.0/0            STRING match  \"test\"\n\
                       \x20      2      100 REJECT     17   --  *      *       0.0.0.0/0            0.0.0.0/0            reject-with icmp-port-unreachable\n\
                       \x20     50     4000 ACCEPT     0    --  *      *       0.0.0.0/0            0.0.0.0/0\n";
        assert_eq!(dropped_by_rules(listing), 8);
    }

    #[test]
    fn cpu_time_is_read_after_the_command_name_whatever_it_holds() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
        let stat = "4242 (zsfc (node) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(cpu_seconds_of_stat(stat), Some(3.25));
        assert_eq!(cpu_seconds_of_stat("4242 (zsfc) S 1"), None);
        // This process's own figure grows while it spins (bounded in time on a loaded machine).
        let me = std::process::id().to_string();
        let (start, spin) = (proc_cpu_seconds(&me).unwrap(), std::time::Instant::now());
        while proc_cpu_seconds(&me).unwrap() < start + 0.05 {
            assert!(spin.elapsed() < std::time::Duration::from_secs(20), "CPU time did not grow while spinning");
        }
    }

    #[test]
    fn a_site_has_its_files_and_bytes() {
        let files = site_files(9, 1_200_000);
        assert_eq!(files.len(), 9);
        assert_eq!(files.iter().map(|f| f.1).sum::<u64>(), 1_200_000);
        assert_eq!(files[0].0, "index.html");
        assert_eq!(site_files(1, 10).len(), 1);
    }
}

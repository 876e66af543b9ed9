//! `zsfc up`, `zsfc down`, `zsfc restart`, `zsfc check`, `zsfc status` and `zsfc run`: the arguments and what
//! is printed; the labs themselves are `zsfc_lab`'s (planned, built, checked and removed there).
//!
//! `up` plans everything first (so a mistake in the file changes nothing), then builds the lab
//! and prints a summary. Everything it creates is recorded under `STATE/NAME` (the namespaces by
//! exact name), so `down` removes it all, also after a crash of `up` or of a node, and nothing
//! of another lab.
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::time::Duration;
use zsfc_lab::check::{Checked, metric_values, run_checks};
use zsfc_lab::shell::in_ns;
use zsfc_lab::{Down, Lab, LabGuard, LabPlan, State};

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
pub(crate) struct RestartArgs {
    /// The lab's name.
    name: String,
    /// The node to restart.
    node: String,
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

fn load(file: &Path) -> anyhow::Result<Lab> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    Lab::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

fn plan(lab: &Lab, file: &Path, state: &State) -> anyhow::Result<LabPlan> {
    lab.plan(&state.dir).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

/// A protection the lab file turned off is a warning line on stderr (`zsfc up`, `zsfc run`).
fn warn(lab: &Lab, file: &Path) {
    for w in zsfc_lab::warnings(lab) {
        eprintln!("{}: {w}", file.display());
    }
}

/// The `zsfc` binary the lab's node and controller processes run: this one.
fn this_binary() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("finding the zsfc binary")
}

pub(crate) fn up(a: &UpArgs) -> anyhow::Result<bool> {
    let lab = load(&a.file)?;
    let state = State::new(&a.state_dir, &lab.name);
    plan(&lab, &a.file, &state)?;
    warn(&lab, &a.file);
    match LabGuard::up(&lab, &a.state_dir, &this_binary()?) {
        Ok(guard) => {
            print!("{}", zsfc_lab::summary(&guard.plan, &guard.state));
            guard.keep();
            Ok(true)
        }
        Err(e) => {
            eprintln!("zsfc up: {e:#}\n(what was built is removed)");
            Err(e.context(format!("lab {:?} could not be brought up", lab.name)))
        }
    }
}

pub(crate) fn down(a: &DownArgs) -> anyhow::Result<bool> {
    match zsfc_lab::down(&a.state_dir, &a.name)? {
        Down::NotUp => println!("lab {} is not up; nothing to remove", a.name),
        Down::Removed(reports) => {
            print!("{reports}");
            println!("lab {} is down", a.name);
        }
    }
    Ok(true)
}

pub(crate) fn restart(a: &RestartArgs) -> anyhow::Result<bool> {
    let r = zsfc_lab::restart(&a.state_dir, &a.name, &a.node, &this_binary()?)?;
    match r.stopped {
        Some(old) => println!("node {}: stopped pid {old}, started pid {}", a.node, r.pid),
        None => println!("node {}: was not running; started pid {}", a.node, r.pid),
    }
    println!("domain converged at version {}: node {} runs its document and fresh SAs", r.version, a.node);
    Ok(true)
}

pub(crate) fn status(a: &CheckArgs) -> anyhow::Result<bool> {
    let state = State::new(&a.state_dir, &a.name);
    let lab = load(&state.lab_file()).with_context(|| format!("is lab {:?} up?", a.name))?;
    let plan = plan(&lab, &state.lab_file(), &state)?;
    let url = format!("http://{}/metrics", zsfc_lab::METRICS_LISTEN);
    let mut all_up = true;
    for (index, n) in plan.nodes.iter().enumerate() {
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
        // Liveness of the peers as this node's probes see them (-1: never heard from).
        let silent = value("zsfc_peer_silent_ms", "peer");
        let peers: Vec<String> = value("zsfc_peer_up", "peer")
            .into_iter()
            .map(|(p, up)| {
                let seen = match silent.iter().find(|s| s.0 == p) {
                    Some((_, ms)) => format!("last seen {:.1} s ago", *ms as f64 / 1000.0),
                    None => "never seen".to_owned(),
                };
                format!("{p} {} ({seen})", if up == 1 { "up" } else { "DOWN" })
            })
            .collect();
        if !peers.is_empty() {
            println!("     peers: {}", peers.join(", "));
        }
        if (index == plan.gateway.node || plan.more_gateways.iter().any(|g| g.node == index))
            && let Some(dropped) = zsfc_lab::check::border_drops(&n.ns)
        {
            println!("     border: dropped {dropped} packets from the client network (iptables)");
        }
    }
    // Reading needs no more than the auditor's credentials (least privilege).
    let auditor = zsfc_controller::Role::Auditor;
    match zsfc_lab::access::with_role_in_lab(&state.dir, &a.name, auditor, |c| {
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
                "controller  version {} rollouts {} {}, acknowledged: {}",
                d["version"],
                d["rollouts"],
                crate::control::convergence(d),
                acked.join(" ")
            );
            println!("            {}", crate::control::sa_ages(d));
            for l in crate::control::liveness_lines(d) {
                println!("            {l}");
            }
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

/// `zsfc run FILE`: up, check every expected outcome, down — always down, also on failure.
pub(crate) fn run(a: &UpArgs) -> anyhow::Result<bool> {
    let lab = load(&a.file)?;
    plan(&lab, &a.file, &State::new(&a.state_dir, &lab.name))?;
    warn(&lab, &a.file);
    let guard = LabGuard::up(&lab, &a.state_dir, &this_binary()?)
        .map_err(|e| e.context(format!("lab {:?} could not be brought up", lab.name)))?;
    print!("{}", zsfc_lab::summary(&guard.plan, &guard.state));
    let results = run_checks(&lab, &guard.plan, &guard.state);
    println!();
    let ok = match &results {
        Ok(r) => print_checks(r),
        Err(e) => {
            eprintln!("zsfc run: checking failed: {e:#}");
            false
        }
    };
    println!("\ntearing down; the nodes' final reports:");
    print!("{}", guard.finish());
    println!("lab {} is down", lab.name);
    Ok(ok)
}

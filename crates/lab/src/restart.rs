//! `zsfc restart LAB NODE`: one node process of a running lab stopped (if it still runs) and
//! started again from its file, as systemd's `Restart=on-failure` does on a host. The new process
//! loads the identity the old one enrolled with, creates its devices and routes, and the
//! controller, seeing a new boot, gives it its document and fresh SAs; nothing else in the lab
//! is touched.
use crate::build::{start_node, wait_node_ready};
use crate::plan::{Lab, LabAttachments};
use crate::shell::READY_TIMEOUT;
use crate::state::State;
use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::Path;
use std::time::{Duration, Instant};

/// What [`restart`] did.
#[derive(Debug)]
pub struct Restarted {
    /// The pid of the process stopped, when one still ran.
    pub stopped: Option<u32>,
    /// The new process's pid.
    pub pid: u32,
    /// The controller's version once every node runs it again.
    pub version: u64,
}

/// How long a node has to stop on SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Restarts node `node` of lab `name` (state under `state_root`) with `bin`, and waits until
/// the domain runs the controller's latest state again.
pub fn restart(state_root: &Path, name: &str, node: &str, bin: &Path) -> anyhow::Result<Restarted> {
    let state = State::new(state_root, name);
    let text = std::fs::read_to_string(state.lab_file()).with_context(|| format!("is lab {name:?} up?"))?;
    let lab = Lab::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", state.lab_file().display()))?;
    let plan = lab.plan(&state.dir).map_err(|e| anyhow::anyhow!("lab {name}: {e}"))?;
    let Some(index) = plan.nodes.iter().position(|n| n.name == node) else {
        let names: Vec<&str> = plan.nodes.iter().map(|n| n.name.as_str()).collect();
        bail!("lab {name} has no node {node:?} (its nodes: {})", names.join(", "));
    };
    let n = &plan.nodes[index];
    if lab.attachments == LabAttachments::Tun && plan.external_sfs.iter().any(|sf| sf.node == index) {
        bail!(
            "node {node} serves external SFs over TUN circuits (attachments = \"tun\"), which go with its \
             process: rebuild the lab (zsfc down, zsfc up) or use veth circuits"
        );
    }
    let bin = bin.to_str().context("the zsfc binary's path is not UTF-8")?;
    let config = state.dir.join(format!("{node}.toml"));
    // The node's return is a rollout (fresh SAs for its links): wait for one after this version.
    let before = crate::access::domain_version(&state.dir, &plan.name).context("the lab's controller")?;
    let stopped = stop(&state.dir.join(format!("{node}.pid")), &config)?;
    start_node(&state, n, bin)?;
    wait_node_ready(&state, n)?;
    let pid: u32 = std::fs::read_to_string(state.dir.join(format!("{node}.pid")))?.trim().parse()?;
    let domain = crate::access::wait_converged_after(&state.dir, &plan.name, before, READY_TIMEOUT)
        .with_context(|| format!("node {node} runs again (pid {pid}), but the domain did not converge"))?;
    let version = domain["zsfc:domain"]["version"].as_u64().unwrap_or_default();
    Ok(Restarted { stopped, pid, version })
}

/// Stops the process the pid file names, if it still runs and is this node's (its command
/// line names the node's file): SIGTERM, then SIGKILL after [`STOP_GRACE`]. A pid the kernel gave
/// to another process since is left alone.
fn stop(pid_file: &Path, config: &Path) -> anyhow::Result<Option<u32>> {
    let pid: u32 = match std::fs::read_to_string(pid_file) {
        Ok(t) => t.trim().parse().with_context(|| pid_file.display().to_string())?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context(pid_file.display().to_string()),
    };
    if !runs(pid, config) {
        return Ok(None);
    }
    let target = Pid::from_raw(i32::try_from(pid).context("pid out of range")?);
    let _ = kill(target, Signal::SIGTERM);
    let t = Instant::now();
    while runs(pid, config) {
        if t.elapsed() > STOP_GRACE {
            let _ = kill(target, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Some(pid))
}

/// Whether `pid` is a live (not zombie) process whose command line names `config`.
fn runs(pid: u32, config: &Path) -> bool {
    let proc = Path::new("/proc").join(pid.to_string());
    let Ok(cmdline) = std::fs::read(proc.join("cmdline")) else { return false };
    let zombie = std::fs::read_to_string(proc.join("stat"))
        .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')));
    let wanted = config.as_os_str().as_encoded_bytes();
    !zombie && cmdline.split(|b| *b == 0).any(|arg| arg == wanted)
}

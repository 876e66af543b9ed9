//! The one RAII guard of everything a lab creates. [`Namespaces`] owns the network namespaces
//! this process made (and the processes inside them); [`LabGuard`] owns a whole lab (its
//! namespaces and its state directory). Dropping either removes what it owns, on success and
//! on failure alike, and never anything it did not create: a lab's namespaces are recorded by
//! exact name as they are made, so `zsfc down fbh` cannot touch lab `fbh-x`.
use crate::build::build;
use crate::plan::{Lab, LabPlan};
use crate::shell::{add_ns, proc_cpu_seconds, proc_status_kib, sh};
use crate::state::State;
use anyhow::{Context, bail};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Network namespaces created through this value; removed, with every process in them, when it
/// is dropped (or by [`Namespaces::remove_all`]).
#[derive(Debug, Default)]
pub struct Namespaces {
    names: Vec<String>,
    /// Where each created name is appended (a lab's [`State::namespaces_file`]), so that
    /// another process (`zsfc down`) can remove exactly these later.
    record: Option<PathBuf>,
    /// Processes this process started in them, waited for once stopped (no zombie).
    children: Vec<std::process::Child>,
}

impl Namespaces {
    pub fn new() -> Self {
        Self::default()
    }

    /// Namespaces whose names are also appended to `file` as they are created.
    pub fn recorded_in(file: PathBuf) -> Self {
        Self { names: Vec::new(), record: Some(file), children: Vec::new() }
    }

    /// The namespaces recorded in `file` by an earlier [`Namespaces::recorded_in`], owned now
    /// by this value (`zsfc down`).
    pub fn from_record(file: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(file)?;
        let names = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
        Ok(Self { names, record: None, children: Vec::new() })
    }

    /// Creates namespace `ns` (with its loopback up). An existing namespace is an error: it
    /// belongs to someone else and is never taken over.
    pub fn add(&mut self, ns: &str) -> anyhow::Result<()> {
        if Path::new("/run/netns").join(ns).exists() {
            bail!("namespace {ns} exists already (another lab's, or left over): not taking it over");
        }
        add_ns(ns)?;
        self.names.push(ns.to_owned());
        if let Some(file) = &self.record {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(file)
                .with_context(|| format!("recording namespace {ns} in {}", file.display()))?;
            writeln!(f, "{ns}")?;
        }
        Ok(())
    }

    /// Takes `child` (started in one of the namespaces) along: stopped with the namespaces and
    /// waited for.
    pub fn adopt(&mut self, child: std::process::Child) {
        self.children.push(child);
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The namespaces of these that exist now.
    pub fn existing(&self) -> Vec<String> {
        self.names.iter().filter(|n| Path::new("/run/netns").join(n).exists()).cloned().collect()
    }

    /// Stops every process in the namespaces (SIGTERM, after 5 s SIGKILL), calls `before_delete`
    /// (the processes have written their last words by then), and deletes the namespaces (their
    /// veths and TUN devices go with them).
    pub fn remove_all_then(&mut self, before_delete: impl FnOnce()) {
        let namespaces = self.existing();
        let pids = || -> Vec<String> {
            namespaces
                .iter()
                .flat_map(|n| {
                    sh("ip", &["netns", "pids", n]).unwrap_or_default().lines().map(str::to_owned).collect::<Vec<_>>()
                })
                .collect()
        };
        for p in pids() {
            signal(&p, nix::sys::signal::Signal::SIGTERM);
        }
        let t = Instant::now();
        while !pids().is_empty() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(50));
        }
        for p in pids() {
            signal(&p, nix::sys::signal::Signal::SIGKILL);
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
        before_delete();
        for n in &namespaces {
            let _ = sh("ip", &["netns", "del", n]);
        }
        self.names.clear();
    }

    pub fn remove_all(&mut self) {
        self.remove_all_then(|| ());
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        self.remove_all();
    }
}

fn signal(pid: &str, sig: nix::sys::signal::Signal) {
    if let Ok(p) = pid.trim().parse::<i32>() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), sig);
    }
}

/// A running lab: built by [`LabGuard::up`], removed (processes, namespaces, state) when dropped
/// unless [`LabGuard::keep`] hands it over to a later `zsfc down`.
#[derive(Debug)]
pub struct LabGuard {
    pub plan: LabPlan,
    pub state: State,
    namespaces: Namespaces,
    /// Handed over to a later `zsfc down`: dropping removes nothing.
    kept: bool,
}

impl LabGuard {
    /// Plans `lab` and builds it under `state_root`, its node and controller processes running
    /// `bin` (the `zsfc` binary). A lab of that name that is up (or left over) is an error, never
    /// removed: only its owner's `zsfc down` may. A failed build removes what it built.
    pub fn up(lab: &Lab, state_root: &Path, bin: &Path) -> anyhow::Result<Self> {
        let state = State::new(state_root, &lab.name);
        let plan = lab.plan(&state.dir).map_err(|e| anyhow::anyhow!("lab {}: {e}", lab.name))?;
        if state.dir.exists() {
            bail!("lab {:?} is already up (or left over): run `zsfc down {}` first", lab.name, lab.name);
        }
        std::fs::create_dir_all(&state.dir).with_context(|| format!("creating {}", state.dir.display()))?;
        let mut guard = Self { namespaces: Namespaces::recorded_in(state.namespaces_file()), plan, state, kept: false };
        build(lab, &guard.plan, &guard.state, &mut guard.namespaces, bin)?;
        Ok(guard)
    }

    /// Leaves the lab running after this process ends; `zsfc down NAME` removes it.
    pub fn keep(mut self) {
        self.kept = true;
        // The namespaces are the lab's, no longer this value's.
        self.namespaces.names.clear();
    }

    /// Stops the lab and returns the nodes' final reports.
    pub fn finish(mut self) -> String {
        let mut reports = String::new();
        let state = self.state.clone();
        self.namespaces.remove_all_then(|| reports = final_reports(&state));
        reports
    }

    /// Peak resident memory of each node process (name, KiB), from /proc.
    pub fn node_peak_rss(&self) -> Vec<(String, u64)> {
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
    pub fn node_cpu_seconds(&self) -> f64 {
        self.node_pids().filter_map(|(_, pid)| proc_cpu_seconds(&pid)).sum()
    }

    pub fn pki(&self) -> PathBuf {
        self.state.pki()
    }

    /// The lab's state directory (its controller's database, credentials, logs).
    pub fn state_dir(&self) -> &Path {
        &self.state.dir
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if !self.kept {
            self.namespaces.remove_all();
            let _ = std::fs::remove_dir_all(&self.state.dir);
        }
    }
}

/// What [`down`] found.
#[derive(Debug)]
pub enum Down {
    /// The lab was removed; the nodes' final reports.
    Removed(String),
    /// No lab of that name has state here.
    NotUp,
}

/// `zsfc down NAME`: removes lab `name` whose state is under `state_root` — the namespaces it
/// recorded, by exact name, with their processes, and its state directory.
pub fn down(state_root: &Path, name: &str) -> anyhow::Result<Down> {
    let state = State::new(state_root, name);
    if !state.dir.exists() {
        return Ok(Down::NotUp);
    }
    let mut namespaces = match Namespaces::from_record(&state.namespaces_file()) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Namespaces::new(),
        Err(e) => return Err(e).with_context(|| state.namespaces_file().display().to_string()),
    };
    let recorded = namespaces.names().to_vec();
    let mut reports = String::new();
    namespaces.remove_all_then(|| reports = final_reports(&state));
    let left: Vec<&String> = recorded.iter().filter(|n| Path::new("/run/netns").join(n).exists()).collect();
    if !left.is_empty() {
        bail!("namespaces left behind: {}", left.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "));
    }
    std::fs::remove_dir_all(&state.dir).with_context(|| format!("removing {}", state.dir.display()))?;
    Ok(Down::Removed(reports))
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

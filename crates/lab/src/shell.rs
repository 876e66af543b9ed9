//! Running the system's tools (ip, sysctl, ss) and reading /proc: what building, checking
//! and measuring a lab are made of.
use anyhow::{Context, bail};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a node or service may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs a command; its failure is an error that shows the command and what it printed.
pub fn sh(program: &str, args: &[&str]) -> anyhow::Result<String> {
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

pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    sh("ip", args).map(drop)
}

/// Runs `args` inside namespace `ns`.
pub fn in_ns(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["netns", "exec", ns];
    all.extend_from_slice(args);
    sh("ip", &all)
}

/// A veth pair: `dev` in namespace `ns`, its peer `peer` in `peer_ns`, both with `mtu`.
pub(crate) fn veth(ns: &str, dev: &str, peer_ns: &str, peer: &str, mtu: &str) -> anyhow::Result<()> {
    ip(&[
        "link", "add", dev, "mtu", mtu, "netns", ns, "type", "veth", "peer", "name", peer, "mtu", mtu, "netns", peer_ns,
    ])
}

pub fn sysctl(ns: &str, settings: &[&str]) -> anyhow::Result<()> {
    let mut args = vec!["sysctl", "-qw"];
    args.extend_from_slice(settings);
    in_ns(ns, &args).map(drop)
}

pub(crate) fn add_ns(ns: &str) -> anyhow::Result<()> {
    ip(&["netns", "add", ns])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])
}

/// Starts a long-running process in `ns`, detached from this one (its own process group, output
/// appended to its log: a restarted process keeps what the one before it wrote), and returns its pid.
pub fn spawn(ns: &str, args: &[&str], log: &Path) -> anyhow::Result<u32> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
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

/// Waits (polling every 50 ms, for at most [`READY_TIMEOUT`]) until `ok`; the error shows `log`'s text.
/// Moves the calling thread into network namespace `ns` (a thread of its own: the rest of the
/// process stays where it is).
pub fn enter_ns(ns: &str) -> anyhow::Result<()> {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).with_context(|| format!("namespace {ns}"))?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).with_context(|| format!("entering {ns}"))?;
    Ok(())
}

pub fn wait_until(what: &str, log: Option<&Path>, mut ok: impl FnMut() -> bool) -> anyhow::Result<()> {
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

pub fn listening(ns: &str, udp: bool, port: u16) -> bool {
    let filter = format!("sport = :{port}");
    in_ns(ns, &["ss", "-Hn", if udp { "-lu" } else { "-lt" }, &filter]).is_ok_and(|o| !o.trim().is_empty())
}

/// A memory figure (`VmRSS`, `VmHWM`...) of process `pid` (or `self`) from /proc, in KiB.
pub fn proc_status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let v = status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    v.trim().trim_end_matches("kB").trim().parse().ok()
}

/// User + system CPU time of process `pid` from /proc (fields 14 and 15 of `stat`, in USER_HZ
/// ticks, which Linux fixes at 100 per second for every architecture's /proc).
pub fn proc_cpu_seconds(pid: &str) -> Option<f64> {
    cpu_seconds_of_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn cpu_seconds_of_stat(stat: &str) -> Option<f64> {
    // The command name (field 2) may hold spaces and parentheses: count from its closing one.
    let mut fields = stat.get(stat.rfind(')')? + 2..)?.split(' ');
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

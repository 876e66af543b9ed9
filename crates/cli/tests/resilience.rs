//! Issue 20, resilience: nodes that fail and come back, in labs in network namespaces. Needs
//! root, iproute2, curl and python3 (./test.sh installs them); each test runs its lab under a
//! unique name and `zsfc down` runs at the end also when the test fails.
mod common;
use common::*;
use std::time::Duration;

/// Nodes that come back: an egress killed with SIGKILL and an ingress still running are each
/// brought back by `zsfc restart`, with their identities and without rebuilding the lab; the
/// domain converges on fresh SAs and the service answers again. The egress's route to the
/// clients comes back with it (the node installs its `[local] routes` on the TUN device it
/// creates: before, `zsfc up` added them once and a restarted egress had none). The node's log
/// keeps what the process before it wrote; an unknown node is named with the lab's nodes.
#[test]
fn killed_or_running_nodes_restarted_by_zsfc_restart_carry_traffic_again() {
    usable();
    let mut lab = LabRun::new("quickstart", "rs");
    lab.up();
    assert_eq!(fetch_as(&lab, "alice"), 200);
    let text = |o: std::process::Output| {
        (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
    };

    let pid = pid_of(&lab, "egress");
    nix_kill(pid);
    while alive(pid) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_ne!(fetch_as(&lab, "alice"), 200, "served with the egress dead");
    let (ok, out) = text(lab.zsfc(&["restart", &lab.name, "egress"]));
    assert!(ok && out.contains("node egress: was not running; started pid"), "{out}");
    assert!(out.contains("domain converged at version"), "{out}");
    let served_after_egress = fetch_as(&lab, "alice");

    let old = pid_of(&lab, "ingress");
    let (ok, out) = text(lab.zsfc(&["restart", &lab.name, "ingress"]));
    assert!(ok && out.contains(&format!("node ingress: stopped pid {old}, started pid")), "{out}");
    assert!(!alive(old) || std::fs::read_to_string(format!("/proc/{old}/stat")).unwrap_or_default().contains(") Z"));
    let served_after_ingress = fetch_as(&lab, "alice");
    let log = std::fs::read_to_string(lab.state_file("logs/ingress.log")).unwrap();
    let starts = log.matches("gateway listening on").count();

    let (ok, out) = text(lab.zsfc(&["restart", &lab.name, "nosuch"]));
    assert!(!ok && out.contains("has no node \"nosuch\" (its nodes: ingress, sf, egress)"), "{out}");
    let audit = audit_rows(&lab.state_file("controller.db"));
    lab.down();
    assert_eq!(served_after_egress, 200, "the restarted egress does not serve");
    assert_eq!(served_after_ingress, 200, "the restarted ingress does not serve");
    assert_eq!(starts, 2, "the ingress's log lost the first process's lines:\n{log}");
    for node in ["egress", "ingress"] {
        assert!(audit.contains(&format!("|push|{node}|node (re)started")), "{audit}");
    }
}

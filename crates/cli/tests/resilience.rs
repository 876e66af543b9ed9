//! Issue 20, resilience: nodes that fail and come back, in labs in network namespaces. Needs
//! root, iproute2, curl and python3 (./test.sh installs them); each test runs its lab under a
//! unique name and `zsfc down` runs at the end also when the test fails.
#![expect(clippy::unwrap_used, reason = "tests: a failure should stop them loudly, with its place")]
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

/// SF pools (examples/pools.toml): connections spread over both instances of a stateful
/// iptables firewall and of a built-in DPI, and every answer comes back through the instance
/// its connection crossed — the firewall drops answers to connections it did not see open,
/// and no proof of transit fails. A rekey (fresh SAs per pair of instances) keeps it so.
#[test]
fn an_sf_pool_spreads_connections_and_answers_return_through_their_instance() {
    usable();
    let mut lab = LabRun::new("pools", "pl");
    lab.up();
    let fetch_all = |n: usize| -> Vec<u32> { (0..n).map(|_| fetch_as(&lab, "alice")).collect() };
    let codes = fetch_all(24);
    assert!(codes.iter().all(|&c| c == 200), "every connection served: {codes:?}");
    // [circuit probes, ESTABLISHED answers, NEW to port 80, DROP] on each firewall instance.
    let (fw1, fw2) = (forward_counters(&lab, "sf-fw"), forward_counters(&lab, "sf-fw-1"));
    for (name, c) in [("sf1", &fw1), ("sf2", &fw2)] {
        assert_eq!(c.len(), 4, "{name}'s firewall rules: {c:?}");
        assert!(c[0] > 0, "{name}'s node probes its firewall's circuit: {c:?}");
        assert!(c[1] > 0 && c[2] > 0, "{name}'s firewall instance carried connections: {c:?}");
        assert_eq!(c[3], 0, "{name}'s firewall dropped packets of a connection it did not see open: {c:?}");
    }
    assert_eq!(fw1[2] + fw2[2], 24, "each connection opened at one firewall instance: {fw1:?} {fw2:?}");
    for node in ["sf1", "sf2"] {
        let passed = metric(&lab, node, "zsfc_sf_total", &["sf=\"dpi\"", "proxy_tx_success"]);
        assert!(passed > 0, "the DPI instance on {node} carried packets");
    }
    assert!(lab.zsfc(&["rekey", &lab.name]).status.success(), "rekey");
    let codes = fetch_all(8);
    assert!(codes.iter().all(|&c| c == 200), "served after the rekey: {codes:?}");
    let table = lab.check();
    assert!(table.contains("2 of 2 outcomes as expected"), "{table}");
    let report = lab.down();
    for reason in ["pot_failed", "sfc_mac_failed", "sa_role_mismatch", "esp_bad_spi", "unknown_label"] {
        assert_eq!(count(&report, &format!("drop {reason} ")), 0, "{reason}:\n{report}");
    }
}

/// An external SF that stops forwarding (issue 20 point 3): the firewall instance on sf1
/// (examples/pools.toml) has its namespace's IP forwarding turned off. sf1's node sees its
/// circuit probes stop coming back and reports itself unusable for `fw`; the controller takes
/// fw@sf1 alone out of the plan (dpi@sf1 stays), audited, and every new connection is served
/// through fw@sf2. Forwarding on again: the circuit is up, fw@sf1 back in the plan and
/// carrying connections.
#[test]
fn an_external_sf_that_stops_forwarding_is_taken_out_of_its_pool_and_put_back() {
    usable();
    let mut lab = LabRun::new("pools", "ac");
    lab.up();
    let domain = |lab: &LabRun| String::from_utf8_lossy(&lab.zsfc(&["domain", &lab.name]).stdout).into_owned();
    let forwarding = |on: bool| {
        let v = format!("net.ipv4.ip_forward={}", u8::from(on));
        let mut sysctl = std::process::Command::new("ip");
        sysctl.args(["netns", "exec", &lab.ns("sf-fw"), "sysctl", "-qw", &v]);
        assert!(sysctl.status().unwrap().success());
    };
    // `zsfc domain` once it shows all of `what` and every node runs the plan that follows.
    let wait_for = |lab: &LabRun, what: &[&str]| -> String {
        let t = std::time::Instant::now();
        loop {
            let d = domain(lab);
            if (what.iter().all(|w| d.contains(w)) && d.contains("(converged)"))
                || t.elapsed() > Duration::from_secs(20)
            {
                return d;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let both_up =
        ["instance fw@sf1 up, circuit returns probes, in the plan", "instance fw@sf2 up, circuit returns probes"];
    let before = wait_for(&lab, &both_up);
    // The gauge as sf1 publishes it (once a second): `want`, or what it shows after 3 s.
    let gauge = |lab: &LabRun, want: u64| {
        let t = std::time::Instant::now();
        loop {
            let v = metric(lab, "sf1", "zsfc_sf_circuit_up", &["sf=\"fw\""]);
            if v == want || t.elapsed() > Duration::from_secs(3) {
                return v;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let circuit_up = gauge(&lab, 1);

    forwarding(false);
    let out = wait_for(&lab, &["OUT of the plan"]);
    let circuit_down = gauge(&lab, 0);
    let opened_before = forward_counters(&lab, "sf-fw-1")[2];
    let codes: Vec<u32> = (0..12).map(|_| fetch_as(&lab, "alice")).collect();
    let opened_on_sf2 = forward_counters(&lab, "sf-fw-1")[2] - opened_before;

    forwarding(true);
    let back = wait_for(&lab, &both_up);
    let sf1_before = forward_counters(&lab, "sf-fw")[2];
    let codes_back: Vec<u32> = (0..16).map(|_| fetch_as(&lab, "alice")).collect();
    let sf1_opened = forward_counters(&lab, "sf-fw")[2] - sf1_before;
    let audit = audit_rows(&lab.state_file("controller.db"));
    let log = std::fs::read_to_string(lab.state_file("logs/sf1.log")).unwrap_or_default();
    lab.down();

    assert!(before.contains("instance fw@sf2 up, circuit returns probes, in the plan"), "{before}");
    assert_eq!(circuit_up, 1, "sf1's gauge while its firewall forwards");
    assert!(out.contains("instance fw@sf1 DOWN, circuit returns NO probe"), "{out}");
    assert!(out.contains("fw@sf1 DOWN, circuit returns NO probe (since") && out.contains("OUT of the plan"), "{out}");
    assert!(out.contains("instance dpi@sf1 up, in the plan"), "only the dead SF goes: {out}");
    assert!(out.contains("instance fw@sf2 up, circuit returns probes, in the plan"), "{out}");
    assert_eq!(circuit_down, 0, "sf1's gauge once its firewall stopped forwarding");
    assert!(log.contains("external SF fw (lane 0) DOES NOT return probes: unusable"), "{log}");
    assert!(codes.iter().all(|&c| c == 200), "connections while fw@sf1 is dead: {codes:?}");
    assert_eq!(opened_on_sf2, 12, "every new connection opened at fw@sf2");
    assert!(back.contains("instance fw@sf1 up, circuit returns probes, in the plan"), "{back}");
    assert!(audit.contains("liveness: circuit returns no probe, out of the plan: fw@sf1"), "{audit}");
    assert!(audit.contains("liveness: circuit returns probes again: fw@sf1"), "{audit}");
    assert!(codes_back.iter().all(|&c| c == 200), "connections after fw@sf1 came back: {codes_back:?}");
    assert!(sf1_opened > 0, "no new connection reached fw@sf1 once it was back");
}

/// Two ingress gateways (examples/gateways.toml, issue 20 point 7): alice is served through
/// either gateway's address, the DPI holds behind the second as behind the first, and a client
/// given both addresses is still served — by the second — after the first gateway's node was
/// killed with SIGKILL.
#[test]
fn a_second_gateway_serves_new_connections_once_the_first_is_lost() {
    usable();
    let mut lab = LabRun::new("gateways", "g2");
    lab.up();
    let fetch = |lab: &LabRun, addresses: &str, path: &str| -> u32 {
        let pki = |f: &str| lab.state_file(&format!("pki/{f}")).display().to_string();
        let host = format!("web.{}", lab.name);
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &lab.ns("c-alice"), "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["--max-time", "5", "--cacert", &pki("ca.pem")])
            .args(["--cert", &pki("clients/alice.pem"), "--key", &pki("clients/alice.key")])
            .args(["--resolve", &format!("{host}:443:{addresses}"), &format!("https://{host}{path}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
    };
    let served = |lab: &LabRun, node: &str| metric(lab, node, "zsfc_gateway_total", &["outcome=\"served\""]);
    let (first, second) = (fetch(&lab, "172.16.0.1", "/index.html"), fetch(&lab, "172.16.1.1", "/index.html"));
    let dpi_behind_second = fetch(&lab, "172.16.1.1", "/test.html");
    let both = fetch(&lab, "172.16.0.1,172.16.1.1", "/index.html");
    let (by_first, by_second) = (served(&lab, "ingress"), served(&lab, "ingress2"));

    let ingress = pid_of(&lab, "ingress");
    nix_kill(ingress);
    let t = std::time::Instant::now();
    while alive(ingress) && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let to_the_lost_one = fetch(&lab, "172.16.0.1", "/index.html");
    let after: Vec<u32> = (0..5).map(|_| fetch(&lab, "172.16.0.1,172.16.1.1", "/index.html")).collect();
    let by_second_after = served(&lab, "ingress2");
    let report = lab.down();

    assert_eq!((first, second), (200, 200), "served through each gateway");
    assert_eq!(dpi_behind_second, 0, "the DPI let /test.html through the second gateway");
    assert_eq!(both, 200);
    // The first address answers first while it lives (index, both); the second served index
    // and the request the DPI dropped (the gateway proxied it; the SF stopped it).
    assert_eq!((by_first, by_second), (2, 2), "connections served by each gateway");
    assert_eq!(to_the_lost_one, 0, "the killed gateway still answered");
    assert!(after.iter().all(|&c| c == 200), "new connections with the first gateway lost: {after:?}");
    assert_eq!(by_second_after, by_second + 5, "the second gateway served them");
    for reason in ["pot_failed", "sfc_mac_failed", "sa_role_mismatch", "esp_bad_spi", "unknown_label"] {
        assert_eq!(count(&report, &format!("drop {reason} ")), 0, "{reason}:\n{report}");
    }
}

/// `zsfc traffic` from alice to the sink on the egress: `flows` flows at `rate` packets/s in
/// all for `seconds`, started now; its JSON report when `wait` is called.
fn start_flows(lab: &LabRun, flows: u32, rate: u32, seconds: u32) -> std::process::Child {
    std::process::Command::new(&lab.bin)
        .args(["traffic", "--from-ns", &lab.ns("c-alice"), "--to-ns", &lab.ns("egress"), "--to", "10.9.0.1:7100"])
        .args(["--rate", &rate.to_string(), "--seconds", &seconds.to_string(), "--flows", &flows.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Each flow's (packets lost, longest gap in seconds) from a finished `zsfc traffic`.
fn flows_of(c: std::process::Child) -> Vec<(u64, f64)> {
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success(), "zsfc traffic failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let flows = v["flows"].as_array().unwrap();
    flows.iter().map(|f| (f["lost"].as_u64().unwrap(), f["longest_gap_s"].as_f64().unwrap())).collect()
}

/// Failover in an SF pool (examples/failover.toml, issue 20 points 3-4): 64 UDP flows cross a
/// firewall pool on sf1 and sf2. sf2's node is killed with SIGKILL under load: the ingress's
/// liveness probes see it down and move exactly the flows that were on it to sf1, each back
/// within 1 s, with no word from the controller; the flows on sf1 lose nothing. sf2 restarted
/// under load: no existing flow moves back (pinned), nothing is lost; new flows reach it. The
/// agents report the liveness to the controller, which takes sf2's instance out of the plan
/// while it is down and puts it back after (`zsfc domain`, audited). With every instance dead
/// the chain fails closed, counted as `sf_unavailable`.
///
/// It measures timing, so it runs the release build and runs alone (.config/nextest.toml): on
/// a loaded machine a debug build at this rate lost packets on every flow.
#[test]
fn killing_an_sf_instance_moves_only_its_flows_within_a_second_and_they_stay_when_it_returns() {
    usable();
    let mut lab = LabRun::new("failover", "fo");
    lab.bin = common::release_bin();
    lab.up();
    let moved = |lab: &LabRun| metric(lab, "ingress", "zsfc_packets_total", &["flows_moved"]);
    let through = |lab: &LabRun, node: &str| metric(lab, node, "zsfc_sf_total", &["sf=\"fw\"", "proxy_tx_success"]);

    let t = start_flows(&lab, 64, 3200, 6);
    std::thread::sleep(Duration::from_secs(2));
    let sf2 = pid_of(&lab, "sf2");
    nix_kill(sf2);
    let killed = flows_of(t);
    let peers = lab.zsfc(&["status", &lab.name]);
    let domain_down = String::from_utf8_lossy(&lab.zsfc(&["domain", &lab.name]).stdout).into_owned();
    let moved_at_kill = moved(&lab);

    let t = start_flows(&lab, 64, 3200, 6);
    std::thread::sleep(Duration::from_secs(1));
    let restarted = lab.zsfc(&["restart", &lab.name, "sf2"]);
    let returned = flows_of(t);
    let (moved_at_return, sf2_carried) = (moved(&lab), through(&lab, "sf2"));
    let domain_back = String::from_utf8_lossy(&lab.zsfc(&["domain", &lab.name]).stdout).into_owned();
    let fresh = flows_of(start_flows(&lab, 64, 3200, 2));
    let sf2_carried_new = through(&lab, "sf2");

    nix_kill(pid_of(&lab, "sf1"));
    nix_kill(pid_of(&lab, "sf2"));
    std::thread::sleep(Duration::from_millis(600));
    let none = flows_of(start_flows(&lab, 8, 800, 1));
    let unavailable = metric(&lab, "ingress", "zsfc_drops_total", &["sf_unavailable"]);
    let audit = audit_rows(&lab.state_file("controller.db"));
    lab.down();

    // A flow sends every 20 ms; one on the killed instance stands still until the probes miss
    // (200-300 ms at 100 ms x 3), one on sf1 never that long.
    let (affected, unaffected): (Vec<&(u64, f64)>, Vec<_>) = killed.iter().partition(|f| f.1 > 0.15);
    assert!(!affected.is_empty() && affected.len() < 64, "flows on the killed instance: {killed:?}");
    for (lost, gap) in &killed {
        assert!(*gap < 1.0, "a flow stood still for {gap:.3} s (lost {lost})");
    }
    assert!(unaffected.iter().all(|f| f.0 == 0), "flows on sf1 lost packets: {killed:?}");
    assert_eq!(moved_at_kill, affected.len() as u64, "the moved flows are exactly those that stood still: {killed:?}");
    let status = String::from_utf8_lossy(&peers.stdout);
    assert!(status.contains("sf2 DOWN") && status.contains("sf1 up"), "{status}");
    // The agents told the controller, which took sf2's instance out of the plan and put it back.
    assert!(domain_down.contains("liveness sf2          DOWN (seen down by"), "{domain_down}");
    assert!(domain_down.contains("instance fw@sf2 DOWN, OUT of the plan"), "{domain_down}");
    assert!(domain_down.contains("instance fw@sf1 up, in the plan"), "{domain_down}");
    assert!(domain_back.contains("instance fw@sf2 up, in the plan"), "{domain_back}");
    assert!(audit.contains("liveness: seen down by their peers, out of the plan: sf2"), "{audit}");
    assert!(audit.contains("liveness: seen up again, back in the plan: sf2"), "{audit}");
    assert!(restarted.status.success(), "{}", String::from_utf8_lossy(&restarted.stderr));
    assert!(returned.iter().all(|f| f.0 == 0), "packets lost while sf2 came back: {returned:?}");
    assert_eq!(moved_at_return, moved_at_kill, "no flow moved when sf2 came back");
    assert_eq!(sf2_carried, 0, "flows pinned to sf1 moved back to sf2");
    assert!(fresh.iter().all(|f| f.0 == 0), "new flows lost packets: {fresh:?}");
    assert!(sf2_carried_new > 0, "no new flow reached the returned instance");
    assert!(none.iter().all(|f| f.0 > 0) && unavailable > 0, "with no instance left: {none:?}, {unavailable}");
}

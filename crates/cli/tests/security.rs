//! Attacks on a running domain, each by a real attacker process (`zsfc attack`) on a link of
//! the domain: replayed, forged and injected packets refused by the next node, and floods of
//! malformed packets that leave valid traffic flowing. Needs root (./test.sh).
mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

/// The sf node's address on the domain segment of the `secure` example (node 1).
const SF_ADDRESS: &str = "10.200.0.2";

/// Runs `zsfc attack` in namespace `ns` and returns what it reports.
fn attack(ns: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new("ip").args(["netns", "exec", ns, BIN, "attack"]).args(args).output().unwrap();
    assert!(out.status.success(), "zsfc attack {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn up_secure(tag: &str) -> LabRun {
    usable();
    let mut lab = LabRun::new("secure", tag);
    lab.up();
    // One datagram per frame on the ingress's link, so that the attacker captures packets
    // rather than the kernel's UDP GSO batches.
    let ok = Command::new("ip")
        .args(["-n", &lab.ns("ingress"), "link", "set", "eth0", "gso_max_segs", "1"])
        .status()
        .unwrap();
    assert!(ok.success());
    lab
}

#[test]
fn an_on_link_attacker_cannot_replay_forge_or_inject() {
    let lab = up_secure("a");
    let drops = |reason: &str| metric(&lab, "sf", "zsfc_drops_total", &[&format!("reason=\"{reason}\"")]);
    let before: Vec<u64> = ["link_replay", "link_auth_failed", "link_unauthenticated"].map(drops).to_vec();
    assert_eq!(before, [0, 0, 0], "no link drop before the attack");
    let lab_ref = &lab;
    let (counted, sent) = std::thread::scope(|s| {
        let traffic = s.spawn(move || stream(lab_ref, 2000, 6));
        std::thread::sleep(Duration::from_millis(500));
        let ingress = lab_ref.ns("ingress");
        let sent: Vec<u64> = ["replay", "forge", "strip"]
            .iter()
            .map(|mode| {
                let r = attack(&ingress, &["--dev", "eth0", "--to", SF_ADDRESS, "--mode", mode, "--capture", "200"]);
                r["sent"].as_u64().unwrap()
            })
            .collect();
        (traffic.join().unwrap(), sent)
    });
    assert!(sent.iter().all(|&n| n == 200), "the attacker sent every frame: {sent:?}");
    // The stream itself: nothing lost, nothing delivered twice.
    let (tx, rx, lost, dup) = counted;
    assert_eq!((rx, lost, dup), (tx, 0, 0), "the valid stream");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(drops("link_replay"), 200, "replayed frames");
    assert_eq!(drops("link_auth_failed"), 200, "forged frames");
    assert_eq!(drops("link_unauthenticated"), 200, "frames injected without link ESP");
}

/// Packets of a 10,000 packet/s stream delivered in 3 s, while `flood` runs beside it.
fn delivered_while(lab: &LabRun, flood: impl FnOnce() -> serde_json::Value + Send) -> (u64, serde_json::Value) {
    std::thread::scope(|s| {
        let traffic = s.spawn(|| stream(lab, 10_000, 3));
        let report = flood();
        let (_, rx, _, dup) = traffic.join().unwrap();
        assert_eq!(dup, 0);
        (rx, report)
    })
}

#[test]
fn floods_of_malformed_packets_at_an_sf_node_and_at_the_ingress_leave_valid_traffic_flowing() {
    let lab = up_secure("f");
    let (baseline, _) = delivered_while(&lab, || serde_json::Value::Null);
    assert!(baseline > 25_000, "the unflooded stream delivers: {baseline}");
    let drops = |node: &str, reason: &str| metric(&lab, node, "zsfc_drops_total", &[&format!("reason=\"{reason}\"")]);

    // At the SF node, from the ingress's link: frames with the real link SPI and random
    // bytes after it, so each costs the SF node an ICV check.
    let ingress = lab.ns("ingress");
    let (rx, r) = delivered_while(&lab, || {
        std::thread::sleep(Duration::from_millis(300));
        let args = ["--dev", "eth0", "--to", SF_ADDRESS, "--mode", "flood", "--keep-spi", "--seconds", "2.5"];
        attack(&ingress, &args)
    });
    let flood_sent = r["sent"].as_u64().unwrap();
    eprintln!("flood at the SF node: {flood_sent} frames ({:.0}/s), valid {rx} of baseline {baseline}", r["pps"]);
    assert!(rx * 10 >= baseline * 8, "valid traffic under the flood at the SF node: {rx} < 80% of {baseline}");
    std::thread::sleep(Duration::from_millis(1500));
    let refused = drops("sf", "link_auth_failed") + drops("sf", "link_unauthenticated") + drops("sf", "link_replay");
    assert!(refused * 2 >= flood_sent, "the SF node refused the flood it received: {refused} of {flood_sent}");

    // At the ingress, from a client: MPLS-in-UDP from outside the domain.
    let alice = lab.ns("c-alice");
    let (rx, r) = delivered_while(&lab, || {
        std::thread::sleep(Duration::from_millis(300));
        let args = ["--dev", "eth0", "--to", "10.9.0.1", "--port", "7100", "--mode", "flood", "--flood-port", "6635"];
        attack(&alice, &[&args[..], &["--seconds", "2.5"]].concat())
    });
    let flood_sent = r["sent"].as_u64().unwrap();
    eprintln!("flood at the ingress: {flood_sent} frames ({:.0}/s), valid {rx} of baseline {baseline}", r["pps"]);
    assert!(rx * 10 >= baseline * 8, "valid traffic under the flood at the ingress: {rx} < 80% of {baseline}");
    std::thread::sleep(Duration::from_millis(1500));
    let refused = drops("ingress", "encap_from_outside");
    assert!(refused * 2 >= flood_sent, "the ingress refused the flood it received: {refused} of {flood_sent}");
}

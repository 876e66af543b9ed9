//! The controller in network namespaces: keys pushed and rotated while traffic runs, nodes
//! failing closed without it and recovering when it returns, refusals in the audit log, chains
//! changed at run time. Needs root (./test.sh).
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers of tests and benchmarks: a failure should stop them loudly, with its place"
)]
mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The release build: whether packets sealed with an old key arrive within the grace period is
/// a matter of the nodes' queueing delay, which a debug build under a loaded CI machine inflates
/// to seconds (seen: 12,236 of 400,000 packets behind their keys).
#[test]
fn rekeying_every_second_for_20_s_loses_no_packet() {
    usable();
    let dir = std::env::temp_dir().join(format!("zsfc-rekey-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("rekey.json");
    let out = Command::new(release_bin())
        .args(["bench", "rekey", "--rate", "20000", "--seconds", "20", "--json", json.to_str().unwrap()])
        .args(["--state-dir", dir.join("state").to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} missing in {v}"));
    assert!(n("sent") >= 20_000 * 19, "{v}");
    assert_eq!(n("received"), n("sent"), "{v}");
    assert_eq!((n("lost"), n("duplicated")), (0, 0), "{v}");
    assert!(n("rekeys") >= 15, "{v}");
    assert_eq!((n("replay_drops"), n("bad_spi_drops"), n("expired_drops"), n("protection_drops")), (0, 0, 0, 0), "{v}");
}

#[test]
fn without_the_controller_nodes_fail_closed_at_hard_lifetime_and_recover_without_restart() {
    usable();
    let mut lab = LabRun::new("keys", "o");
    lab.up();
    // Soft lifetime 3 s, hard 5 s: 8 s of traffic needs rekeys asked for by the nodes.
    let (sent, received, lost, dup) = stream(&lab, 2000, 8);
    assert!(sent > 15_000 && received == sent && lost == 0 && dup == 0, "{sent} {received} {lost} {dup}");
    let nodes: Vec<i32> = ["ingress", "sf", "egress"].iter().map(|n| pid_of(&lab, n)).collect();

    // Controller gone: traffic goes on while the SAs live...
    nix_kill(pid_of(&lab, "controller"));
    let (sent, received, ..) = stream(&lab, 1000, 1);
    assert!(received > sent / 2, "traffic stopped at once without the controller: {received} of {sent}");
    // ...and stops at their hard lifetime, counted as sa_expired.
    std::thread::sleep(Duration::from_secs(5));
    let (sent, received, ..) = stream(&lab, 1000, 2);
    assert_eq!(received, 0, "{received} of {sent} packets crossed after the hard lifetime");
    assert!(metric(&lab, "ingress", "zsfc_drops", &["sa_expired"]) > 0, "no sa_expired drop counted");
    // Every key these nodes were sent is past its hard lifetime, and no node's memory holds a
    // document in plaintext: they arrive sealed to each poll's own key (TLS and HTTP buffers,
    // freed unerased, kept every node's last documents, keys and all, before the seal).
    no_key_document_in_memory(&nodes);

    // Controller back (same database): new SAs reach the running nodes.
    let db = lab.state_file("controller.db");
    let log = std::fs::File::create(lab.state_file("logs/controller-again.log")).unwrap();
    let mut ctl = Command::new("ip")
        .args(["netns", "exec", &lab.ns("ctl"), BIN, "controller", "--db", db.to_str().unwrap()])
        .args(["--listen", "10.201.0.250:8443", "--management-listen", "127.0.0.1:8444"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !lab.zsfc(&["rekey", &lab.name]).status.success() {
        assert!(t.elapsed() < Duration::from_secs(30), "the restarted controller never rekeyed");
        std::thread::sleep(Duration::from_millis(500));
    }
    let (sent, received, lost, _) = stream(&lab, 2000, 3);
    assert!(received == sent && lost == 0, "after the controller returned: {received} of {sent}");
    for (n, pid) in ["ingress", "sf", "egress"].iter().zip(&nodes) {
        assert!(alive(*pid) && pid_of(&lab, n) == *pid, "node {n} was restarted");
    }
    no_key_document_in_memory(&nodes);
    lab.down();
    let _ = ctl.wait();
}

fn no_key_document_in_memory(nodes: &[i32]) {
    for (n, pid) in ["ingress", "sf", "egress"].iter().zip(nodes) {
        let found = memory::key_documents_in_memory(*pid as u32);
        assert!(found.is_empty(), "node {n} holds key documents in plaintext: {found:?}");
    }
}

/// `curl` of the controller's interface for nodes, inside its namespace; the HTTP status or 0
/// for a failed handshake.
fn curl(lab: &LabRun, extra: &[&str], url: &str) -> u32 {
    curl_at(lab, "10.201.0.250:8443", extra, url)
}

/// [`curl`] of the controller's interface for the operator (its namespace's loopback).
fn curl_mgmt(lab: &LabRun, extra: &[&str], url: &str) -> u32 {
    curl_at(lab, "127.0.0.1:8444", extra, url)
}

fn curl_at(lab: &LabRun, at: &str, extra: &[&str], url: &str) -> u32 {
    let ca = lab.state_file("pki/ca.pem");
    let (addr, port) = at.rsplit_once(':').unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ns("ctl"), "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["--max-time", "5", "--cacert", ca.to_str().unwrap(), "--resolve", &format!("controller:{port}:{addr}")])
        .args(extra)
        .arg(format!("https://controller:{port}{url}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

#[test]
fn refused_enrolments_and_api_calls_are_audited_and_tampering_is_detected() {
    usable();
    let mut lab = LabRun::new("keys", "a");
    lab.up();
    let domain = "/restconf/data/zsfc:domain";
    assert_eq!(curl(&lab, &[], domain), 401, "no client certificate");
    let alice = (lab.state_file("pki/clients/alice.pem"), lab.state_file("pki/clients/alice.key"));
    let as_alice = ["--cert", alice.0.to_str().unwrap(), "--key", alice.1.to_str().unwrap()];
    assert_eq!(curl(&lab, &as_alice, domain), 403, "a client's certificate is not the operator's");
    let other = (lab.state_file("pki/outsider/alice.pem"), lab.state_file("pki/outsider/alice.key"));
    let as_outsider = ["--cert", other.0.to_str().unwrap(), "--key", other.1.to_str().unwrap()];
    assert_eq!(curl(&lab, &as_outsider, domain), 0, "another CA's certificate must fail the handshake");
    let wrong = r#"{"zsfc:input":{"node":"sf","token":"00112233","csr":"-"}}"#;
    let post = ["-X", "POST", "-H", "content-type: application/yang-data+json", "-d", wrong];
    assert_eq!(curl(&lab, &post, "/restconf/operations/zsfc:enrol"), 403, "a used bootstrap token");
    let op = (lab.state_file("pki/operator.pem"), lab.state_file("pki/operator.key"));
    let as_operator = ["--cert", op.0.to_str().unwrap(), "--key", op.1.to_str().unwrap()];
    assert_eq!(curl_mgmt(&lab, &as_operator, domain), 200);
    assert_eq!(curl_mgmt(&lab, &as_operator, "/restconf/data/zsfc:nothing"), 404);
    assert_eq!(
        curl_mgmt(&lab, &as_operator, "/restconf/data/zsfc:domain/chain=stream"),
        405,
        "GET on a PUT-only resource"
    );
    // Seed 004 REQ1: the operator's interface is not the nodes' — each refuses the other's callers.
    assert_eq!(curl(&lab, &as_operator, domain), 403, "the operator on the nodes' interface");
    assert_eq!(curl_mgmt(&lab, &post, "/restconf/operations/zsfc:enrol"), 403, "enrolment on the operator's");

    let db = lab.state_file("controller.db");
    let rows = audit_rows(&db);
    for want in [
        "|enrol|ingress|",
        "|enrol|sf|",
        "|enrol|egress|",
        "without a client certificate",
        "|refused|client/alice|",
        "TLS handshake",
        "|refused|sf|enrolment from",
        "the bootstrap token was already used",
        "|rekey|domain|",
        "|refused|role/operator|read the domain from 10.201.0.250:",
        "administrative roles use the management interface",
    ] {
        assert!(rows.contains(want), "audit log lacks {want:?}:\n{rows}");
    }
    let verify = |db: &std::path::Path| Command::new(BIN).args(["audit", "verify"]).arg(db).output().unwrap();
    let out = verify(&db);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact"));

    // Someone rewrites history: record 3 now says something else.
    let copy = lab.state_file("tampered.db");
    std::fs::copy(&db, &copy).unwrap();
    let edit = "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nc.execute(\"UPDATE audit SET detail='nothing happened' WHERE seq=3\")\nc.commit()";
    assert!(Command::new("python3").args(["-c", edit]).arg(&copy).status().unwrap().success());
    let out = verify(&copy);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains("record 3"), "{text}");
    lab.down();
}

#[test]
fn a_chain_changed_at_run_time_carries_new_flows_on_the_new_path() {
    usable();
    let mut lab = LabRun::new("keys", "c");
    lab.up();
    let rx = |sf: &str| metric(&lab, "sf", "zsfc_sf", &[&format!("sf=\"{sf}\""), "counter=\"proxy_rx_success\""]);
    let settle = || std::thread::sleep(Duration::from_millis(1500)); // metrics refresh every second
    let (sent, received, ..) = stream(&lab, 1000, 2);
    assert_eq!(received, sent);
    settle();
    let (fw0, count0) = (rx("fw"), rx("count"));
    assert!(fw0 >= sent && count0 >= sent, "fw {fw0} count {count0} after {sent}");

    // Take the firewall out: new packets pass the counter only.
    let out = lab.zsfc(&["chain", &lab.name, "stream", "count"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (sent, received, ..) = stream(&lab, 1000, 2);
    assert_eq!(received, sent);
    settle();
    let (fw1, count1) = (rx("fw"), rx("count"));
    assert_eq!(fw1, fw0, "the firewall still saw packets after it left the chain");
    assert!(count1 >= count0 + sent, "count {count0} -> {count1} after {sent}");

    // Back in, after the counter this time.
    let out = lab.zsfc(&["chain", &lab.name, "stream", "count", "fw"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (sent, received, ..) = stream(&lab, 1000, 2);
    assert_eq!(received, sent);
    settle();
    assert!(rx("fw") >= fw1 + sent && rx("count") >= count1 + sent);
    // The policy is checked: a chain with an SF that does not exist is refused with the reason.
    let out = lab.zsfc(&["chain", &lab.name, "stream", "no-such-sf"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-sf"), "{}", String::from_utf8_lossy(&out.stderr));
    lab.down();
}

/// `curl` as `client` (with its certificate) to the lab's web service through the gateway:
/// the HTTP code, or 0 when the gateway closed the connection.

#[test]
fn a_client_policy_changed_at_run_time_applies_to_new_connections() {
    usable();
    let mut lab = LabRun::new("quickstart", "p");
    lab.up();
    assert_eq!((fetch_as(&lab, "alice"), fetch_as(&lab, "bob")), (200, 0), "the lab's own policy");
    let grant = format!("bob=web.{}:1", lab.name);
    // Only a role that may change the policy can (seed 004 REQ8).
    for role in ["operator-keys", "operator-chains", "auditor"] {
        let out = lab.zsfc(&["policy", &lab.name, "--as", role, "--grant", &grant]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(&format!("role/{role} may not change the policy")),
            "{role}: {err}"
        );
    }
    assert_eq!(fetch_as(&lab, "bob"), 0, "the refused changes changed nothing");
    let out = lab.zsfc(&["policy", &lab.name, "--as", "operator-policy", "--grant", &grant]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!((fetch_as(&lab, "alice"), fetch_as(&lab, "bob")), (0, 200), "after the change");
    // A grant naming a chain that does not exist is refused; the policy stays.
    let out = lab.zsfc(&["policy", &lab.name, "--grant", &format!("alice=web.{}:99", lab.name)]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no chain with id 99"));
    assert_eq!(fetch_as(&lab, "bob"), 200);
    let rows = audit_rows(&lab.state_file("controller.db"));
    assert!(rows.contains(&format!("|policy|operator-policy|grants set to [bob->web.{}:1]", lab.name)), "{rows}");
    assert_eq!(rows.matches("change the policy from").count(), 3, "each refused role audited: {rows}");
    let report = lab.down();
    assert!(report.contains("not_allowed=3"), "the gateway counted bob twice and alice once: {report}");
}

/// The names of the SAD entries the controller has for `node` (operator API).
fn sad_names(lab: &LabRun, node: &str) -> Vec<String> {
    let op = (lab.state_file("pki/operator.pem"), lab.state_file("pki/operator.key"));
    let ca = lab.state_file("pki/ca.pem");
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ns("ctl"), "curl", "-s", "--max-time", "5", "--cacert", ca.to_str().unwrap()])
        .args(["--cert", op.0.to_str().unwrap(), "--key", op.1.to_str().unwrap()])
        .args(["--resolve", "controller:8444:127.0.0.1"])
        .arg(format!("https://controller:8444/restconf/data/zsfc:nodes/node={node}"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = v["ietf-i2nsf-ikeless:ipsec-ikeless"]["sad"]["sad-entry"].as_array().unwrap().clone();
    assert!(entries.iter().all(|e| e["ipsec-sa-config"]["esp-sa"]["encryption"].get("key").is_none()), "{v}");
    entries.iter().map(|e| e["name"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn a_restarted_node_gets_fresh_sas_and_its_peers_drop_the_old_ones() {
    usable();
    let mut lab = LabRun::new("keys", "r");
    lab.up();
    let (sent, received, ..) = stream(&lab, 1000, 1);
    assert_eq!(received, sent);
    let before = sad_names(&lab, "ingress");
    assert!(!before.is_empty());

    // The SF node dies and comes back with its certificate but without any SA.
    nix_kill(pid_of(&lab, "sf"));
    let mut sf = start_node_again(&lab, "sf");
    // Its first poll tells the controller it restarted; the rollout that follows gives every
    // node new SAs. A requested rekey queues behind it, so once it answers both are done.
    wait_for_restart(&lab, "sf", Duration::from_secs(20));
    assert!(lab.zsfc(&["rekey", &lab.name]).status.success());
    let (sent, received, lost, _) = stream(&lab, 1000, 2);
    assert!(received == sent && lost == 0, "after the restart: {received} of {sent}");
    let after = sad_names(&lab, "ingress");
    assert!(after.iter().all(|n| !before.contains(n)), "the ingress kept SAs of the old sf: {before:?} / {after:?}");
    lab.down();
    let _ = sf.wait();
}

/// Seed 004 REQ1: the control plane on a network and interfaces of its own. A rollout (a rekey)
/// and a page fetch run while both of the SF node's interfaces are captured: the controller's
/// traffic only on `ctl0`, the chain's only on `eth0`; and the controller cannot reach the domain
/// segment at all.
#[test]
fn control_traffic_stays_on_the_control_segment() {
    usable();
    let mut lab = LabRun::new("quickstart", "k");
    lab.up();
    let dir = lab.state.parent().unwrap().to_path_buf();
    let data = Capture::start(&lab.ns("sf"), "eth0", dir.join("data.pcapng"));
    let control = Capture::start(&lab.ns("sf"), "ctl0", dir.join("control.pcapng"));
    assert!(lab.zsfc(&["rekey", &lab.name]).status.success());
    // Six connections: six flows, to see the source ports differ between flows (RFC 7510 §3).
    for _ in 0..6 {
        assert_eq!(fetch_as(&lab, "alice"), 200);
    }
    let data =
        data.fields(&["tcp.port", "udp.port", "esp.spi", "_ws.malformed", "_ws.expert", "ip.src", "udp.srcport"]);
    let control = control.fields(&["tcp.port", "udp.port"]);
    assert!(data.iter().filter(|l| l.contains("4500")).count() > 4, "the page crossed the domain segment: {data:?}");
    // Issue 19: link ESP is UDP-encapsulated ESP (RFC 3948) that stock tshark decodes as such.
    let f = |l: &String, i: usize| l.split(';').nth(i).unwrap_or("").to_owned();
    assert!(
        data.iter()
            .filter(|l| l.contains("4500"))
            .all(|l| !f(l, 2).is_empty() && f(l, 3).is_empty() && f(l, 4).is_empty()),
        "link datagrams that tshark does not decode as ESP: {data:?}"
    );
    // Issue 19 point 5: data leaves from entropy ports of 49152-65535 (liveness probes, which
    // belong to no flow, from 4500), and one node's flows leave from several ports.
    let mut ports: std::collections::HashMap<String, std::collections::HashSet<u16>> = Default::default();
    for l in data.iter().filter(|l| l.contains("4500")) {
        let port: u16 = f(l, 6).parse().unwrap();
        assert!(port == 4500 || port >= 49152, "source port {port} outside the ephemeral range: {l}");
        if port != 4500 {
            ports.entry(f(l, 5)).or_default().insert(port);
        }
    }
    assert!(ports.values().any(|p| p.len() >= 2), "six flows left each node from one port: {ports:?}");
    assert!(!data.iter().any(|l| l.contains("8443")), "control traffic on the domain segment");
    assert!(control.iter().filter(|l| l.contains("8443")).count() > 10, "the rollout went over ctl0: {control:?}");
    assert!(!control.iter().any(|l| l.contains("4500") || l.contains("6635")), "data on the control segment");
    let ping = Command::new("ip")
        .args(["netns", "exec", &lab.ns("ctl"), "ping", "-c", "1", "-W", "1", "10.200.0.2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!ping.success(), "the controller reached the domain segment");
    lab.down();
}

/// SoftHSM's PKCS#11 module (Debian's `softhsm2`, installed by ./test.sh): a real PKCS#11
/// implementation, the same interface a smart card or an HSM offers.
fn softhsm_module() -> std::path::PathBuf {
    ["/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .expect("SoftHSM's PKCS#11 module (apt-get install softhsm2; ./test.sh does)")
}

/// A SoftHSM token labelled `label` (user PIN 4321) in `dir`, a token store of this test alone;
/// returns the configuration file that `SOFTHSM2_CONF` must name.
fn softhsm_token(dir: &std::path::Path, label: &str) -> std::path::PathBuf {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(&conf, format!("directories.tokendir = {}\nobjectstore.backend = file\n", tokens.display()))
        .unwrap();
    let init = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", label, "--pin", "4321", "--so-pin", "87654321"])
        .env("SOFTHSM2_CONF", &conf)
        .output()
        .unwrap();
    assert!(init.status.success(), "softhsm2-util: {}", String::from_utf8_lossy(&init.stderr));
    conf
}

/// Seed 004 REQ8, hardware tokens: `zsfc role-key` moves a role onto a key generated on a
/// PKCS#11 token; the controller then accepts the role only from that key. The role's old
/// certificate and key file (copied away first, as a thief would) are refused and audited; the
/// role acts through the token with its PIN only; only the full operator may bind.
#[test]
fn an_administrative_role_moved_to_a_hardware_token_acts_only_from_it() {
    usable();
    let mut lab = LabRun::new("quickstart", "h");
    let dir = lab.state.parent().unwrap().to_path_buf();
    let token = format!("zsfc-{}", lab.name);
    let conf = softhsm_token(&dir, &token);
    lab.up();
    let module = softhsm_module();
    let state = lab.state.to_str().unwrap().to_owned();
    let zsfc = |args: &[&str], pin: Option<&str>| {
        let mut c = Command::new(BIN);
        c.args(args).args(["--state-dir", &state]).env("SOFTHSM2_CONF", &conf).env_remove("ZSFC_PKCS11_PIN");
        if let Some(p) = pin {
            c.env("ZSFC_PKCS11_PIN", p);
        }
        let out = c.stdin(Stdio::null()).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    let bind = |role: &str, caller: &str| {
        let m = module.to_str().unwrap();
        zsfc(&["role-key", &lab.name, role, "--as", caller, "--pkcs11", m, "--token", &token], Some("4321"))
    };
    // The role's credentials as they were: what a thief of the key file would hold.
    let (old_cert, old_key) = (dir.join("old.pem"), dir.join("old.key"));
    std::fs::copy(lab.state_file("pki/operator-keys.pem"), &old_cert).unwrap();
    std::fs::copy(lab.state_file("pki/operator-keys.key"), &old_key).unwrap();
    let rekey_with_old = || {
        let (c, k) = (old_cert.to_str().unwrap(), old_key.to_str().unwrap());
        curl_mgmt(&lab, &["-X", "POST", "--cert", c, "--key", k], "/restconf/operations/zsfc:rekey")
    };
    assert_eq!(rekey_with_old(), 200, "before the binding the file key acts as the role");

    // Only the full operator binds roles; a refused binding leaves no key on the token.
    let (ok, text) = bind("auditor", "operator-keys");
    assert!(!ok && text.contains("role/operator-keys may not bind a role to a key"), "{text}");
    let (ok, text) = bind("operator-keys", "operator");
    assert!(ok, "{text}");
    assert!(text.contains("never extractable"), "{text}");
    assert!(!lab.state_file("pki/operator-keys.key").exists(), "the key file is gone");
    // The label of the key the refused binding made is free again: it was removed.
    let (ok, text) = bind("auditor", "operator");
    assert!(ok, "{text}");

    // The role acts from the token, with its PIN only.
    let (ok, text) = zsfc(&["rekey", &lab.name, "--as", "operator-keys"], Some("4321"));
    assert!(ok && text.contains("rekeyed"), "{text}");
    let (ok, text) = zsfc(&["rekey", &lab.name, "--as", "operator-keys"], None);
    assert!(!ok && text.contains("ZSFC_PKCS11_PIN"), "{text}");
    let (ok, text) = zsfc(&["rekey", &lab.name, "--as", "operator-keys"], Some("1111"));
    assert!(!ok && text.contains("wrong PIN"), "{text}");
    // The stolen file key: refused, though its certificate is still valid.
    assert_eq!(rekey_with_old(), 403);
    // The roles left on files are unchanged.
    assert!(lab.zsfc(&["chain", &lab.name, "--as", "operator-chains", "web-via-dpi", "dpi"]).status.success());
    // `zsfc status` reads the controller as the auditor (now on the token too): with its PIN.
    let (ok, text) = zsfc(&["status", &lab.name], Some("4321"));
    assert!(ok && text.contains("roles on hardware tokens: auditor operator-keys"), "{text}");
    let (ok, text) = zsfc(&["status", &lab.name], None);
    assert!(!ok && text.contains("controller  NOT ANSWERING") && text.contains("ZSFC_PKCS11_PIN"), "{text}");

    let op = (lab.state_file("pki/operator.pem"), lab.state_file("pki/operator.key"));
    let (c, k) = (op.0.to_str().unwrap(), op.1.to_str().unwrap());
    assert_eq!(curl_mgmt(&lab, &["--cert", c, "--key", k], "/restconf/data/zsfc:domain"), 200);
    let rows = audit_rows(&lab.state_file("controller.db"));
    assert!(rows.contains("|role-key|operator-keys|role bound to key"), "{rows}");
    assert!(rows.contains("|role-key|auditor|role bound to key"), "{rows}");
    assert_eq!(rows.matches("the role is bound to another key").count(), 1, "{rows}");
    assert_eq!(rows.matches("bind a role to a key from").count(), 1, "{rows}");
    lab.down();
}

/// Operator commands against a controller outside any lab (`--controller ADDRESS --creds DIR`,
/// the credentials `controller-init` wrote), here in a network namespace of this test: the
/// domain's name is checked against the controller's, and a role moved to a hardware token
/// signs there as it does in labs.
#[test]
fn operator_commands_reach_a_controller_outside_labs() {
    usable();
    let ns = format!("zsfc-t{}-host", std::process::id() % 100_000);
    let dir = std::env::temp_dir().join(&ns);
    std::fs::create_dir_all(&dir).unwrap();
    struct RemoveDir(std::path::PathBuf);
    impl Drop for RemoveDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _dir = RemoveDir(dir.clone());
    // Removed (before the directory) with every process in it, also when an assertion fails.
    let mut namespaces = zsfc_lab::Namespaces::new();
    namespaces.add(&ns).unwrap();
    let topology = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/inmemory-topology.toml");
    let (db, creds) = (dir.join("c.db"), dir.join("creds"));
    let init = Command::new(BIN)
        .args(["controller-init", "--name", "example", "--ack-timeout-ms", "100", "--topology"])
        .arg(&topology)
        .arg("--db")
        .arg(&db)
        .arg("--out")
        .arg(&creds)
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    // Stopped with the namespace.
    let controller = Command::new("ip")
        .args(["netns", "exec", &ns, BIN, "controller", "--listen", "127.0.0.1:8443", "--db"])
        .arg(&db)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    namespaces.adopt(controller);
    let conf = softhsm_token(&dir, "ops");
    let zsfc = |args: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, BIN])
            .args(args)
            .args(["--controller", "127.0.0.1:8443", "--creds", creds.to_str().unwrap()])
            .env("SOFTHSM2_CONF", &conf)
            .env("ZSFC_PKCS11_PIN", "4321")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    };
    // The controller takes a moment to listen; a refusal costs no rollout.
    let refused = "role/auditor may not change the policy";
    let t = Instant::now();
    let mut last = zsfc(&["policy", "example", "--as", "auditor"]);
    while !last.1.contains(refused) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(200));
        last = zsfc(&["policy", "example", "--as", "auditor"]);
    }
    assert!(!last.0 && last.1.contains(refused), "{}", last.1);
    let (ok, text) = zsfc(&["policy", "another", "--as", "operator-policy"]);
    assert!(!ok && text.contains("runs domain \"example\", not \"another\""), "{text}");
    // No node is enrolled: the rollout waits for none of them, names them, and succeeds.
    let (ok, text) = zsfc(&["policy", "example", "--as", "operator-policy"]);
    assert!(ok && text.contains("policy: 0 grants") && text.contains("not enrolled yet: egress, ingress"), "{text}");

    let module = softhsm_module();
    let (ok, text) =
        zsfc(&["role-key", "example", "operator-policy", "--pkcs11", module.to_str().unwrap(), "--token", "ops"]);
    assert!(ok, "{text}");
    assert!(creds.join("operator-policy.token").exists() && !creds.join("operator-policy.key").exists());
    let (ok, text) = zsfc(&["policy", "example", "--as", "operator-policy"]);
    assert!(ok, "from the token: {text}");
    // The operator itself moves onto the token, then binds the auditor from there: two keys of
    // one token in one process (the user is logged in once per token).
    let m = module.to_str().unwrap();
    let (ok, text) = zsfc(&["role-key", "example", "operator", "--pkcs11", m, "--token", "ops"]);
    assert!(ok, "{text}");
    let (ok, text) = zsfc(&["role-key", "example", "auditor", "--pkcs11", m, "--token", "ops"]);
    assert!(ok, "the operator on its token binds the auditor: {text}");
    let (ok, text) = zsfc(&["policy", "example", "--as", "auditor"]);
    assert!(!ok && text.contains(refused), "the auditor, from the token, is still only an auditor: {text}");
    // `zsfc domain` reads as the auditor (from its token now).
    let (ok, text) = zsfc(&["domain", "example"]);
    assert!(ok && text.contains("domain \"example\" version"), "{text}");
    assert!(text.contains("  node ingress ") && text.contains("  chain to-web ["), "{text}");
    assert!(text.contains("roles on hardware tokens: auditor operator operator-policy"), "{text}");
    let (ok, text) = zsfc(&["domain", "example", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    assert!(ok && v["zsfc:domain"]["nodes"].as_array().map(Vec::len) == Some(5), "{text}");

    // The operator's token is lost: on the controller's host, break glass — the binding goes,
    // new file credentials come, audited; the running controller accepts them at once.
    let out = Command::new(BIN)
        .args(["controller-recover", "operator", "--db"])
        .arg(&db)
        .arg("--out")
        .arg(&creds)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(creds.join("operator.key").exists() && !creds.join("operator.token").exists());
    let (ok, text) = zsfc(&["policy", "example", "--as", "operator"]);
    assert!(ok, "the recovered operator, from its new key file: {text}");
    let (ok, text) = zsfc(&["domain", "example"]);
    assert!(ok && text.contains("roles on hardware tokens: auditor operator-policy"), "{text}");
    let audit = Command::new("python3")
        .args(["-c", "import sqlite3,sys\nfor r in sqlite3.connect(sys.argv[1]).execute('SELECT subject, detail FROM audit'): print(*r)"])
        .arg(&db)
        .output()
        .unwrap();
    let audit = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit.contains("operator role recovered on the controller's host: its hardware-token binding removed"),
        "{audit}"
    );
    let verify = Command::new(BIN).args(["audit", "verify"]).arg(&db).output().unwrap();
    assert!(verify.status.success(), "the hash chain holds: {}", String::from_utf8_lossy(&verify.stdout));
}

/// Issue 17: identities are typed. A client certificate named like a node (`sf`) or like an
/// administrative role (`operator`) is a client's, not the node's or the role's: on the nodes'
/// interface it may not read node sf's SAD or poll its documents, on the management interface
/// it may not read the domain, and each refusal is audited. The real node and operator still
/// work.
#[test]
fn client_certificates_named_like_a_node_or_a_role_are_refused_by_the_controller() {
    usable();
    let mut lab = LabRun::new("quickstart", "id");
    lab.edit(
        r#"clients = [{ name = "alice" }, { name = "bob" }]"#,
        r#"clients = [{ name = "alice" }, { name = "bob" }, { name = "sf" }, { name = "operator" }]"#,
    );
    lab.up();
    let pki = |f: &str| lab.state_file(&format!("pki/{f}")).display().to_string();
    // curl with client `who`'s certificate from namespace `ns` to the controller at `at`
    // (PORT:ADDRESS).
    let call = |ns: &str, who: &str, at: &str, path: &str| -> u32 {
        let port = at.split(':').next().unwrap();
        let out = Command::new("ip")
            .args(["netns", "exec", &lab.ns(ns), "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(["--max-time", "5", "--cacert", &pki("ca.pem")])
            .args(["--cert", &pki(&format!("clients/{who}.pem")), "--key", &pki(&format!("clients/{who}.key"))])
            .args(["--resolve", &format!("controller:{at}")])
            .arg(format!("https://controller:{port}{path}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
    };
    let nodes = "8443:10.201.0.250";
    let sad = call("sf", "sf", nodes, "/restconf/data/zsfc:nodes/node=sf");
    let poll = call("sf", "sf", nodes, "/restconf/data/zsfc:nodes/node=sf/desired?after=0&boot=x&seal=00");
    let management = "8444:127.0.0.1";
    let domain = call("ctl", "operator", management, "/restconf/data/zsfc:domain");
    assert_eq!((sad, poll, domain), (403, 403, 403), "client sf's SAD read and poll, client operator's domain read");
    let rows = audit_rows(&lab.state_file("controller.db"));
    for want in ["client/sf|read a node", "client/sf|poll its state", "client/operator|read the domain"] {
        assert!(rows.contains(want), "audit log lacks {want:?}:\n{rows}");
    }
    // The real ones: the node sf converged (the lab is up), and the operator reads the domain.
    let out = lab.zsfc(&["domain", &lab.name]);
    assert!(out.status.success(), "zsfc domain: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fetch_as(&lab, "alice"), 200);
    lab.down();
}

/// Issue 18: SAs are renewed by time, not only when a packet is sealed past the soft lifetime.
/// A lab whose SAs live seconds (soft 4 s, hard 6 s) stays idle for more than three hard
/// lifetimes, then carries traffic at once: the page is served and nothing was dropped as
/// `sa_expired`.
#[test]
fn an_idle_domain_renews_its_sas_in_time_and_carries_traffic_after_idling() {
    usable();
    let mut lab = LabRun::new("quickstart", "idle");
    let text = std::fs::read_to_string(&lab.file).unwrap();
    std::fs::write(&lab.file, format!("{text}\n[sa.lifetime]\nsoft = {{ seconds = 4 }}\nhard = {{ seconds = 6 }}\n"))
        .unwrap();
    lab.up();
    assert_eq!(fetch_as(&lab, "alice"), 200);
    std::thread::sleep(Duration::from_secs(20));
    let (served, expired) = (fetch_as(&lab, "alice"), metric(&lab, "ingress", "zsfc_drops_total", &["sa_expired"]));
    let status = lab.zsfc(&["status", &lab.name]);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    lab.down();
    assert_eq!((served, expired), (200, 0), "after 20 s idle (hard lifetime 6 s):\n{status}");
    assert!(!status.contains("PAST THEIR SOFT LIFETIME"), "{status}");
    // Renewed by time while nothing was sent: a rollout every 3 s (3/4 of the soft lifetime).
    let rollouts: u64 = status.split("rollouts ").nth(1).and_then(|r| r.split(' ').next()?.parse().ok()).unwrap();
    assert!(rollouts >= 5, "{rollouts} rollouts in 20 s idle:\n{status}");
}

/// 1,000 connections from one source, each 3 bytes of a TLS record and then nothing.
const SLOW_CONNECTIONS: &str = "import socket,time,json\nsocks=[];failed=0\nfor i in range(1000):\n s=socket.socket();s.settimeout(2)\n try:\n  s.connect(('10.201.0.250',8443));s.send(b'\\x16\\x03\\x01');s.setblocking(False);socks.append(s)\n except Exception: failed+=1\ndef alive():\n n=0\n for s in socks:\n  try:\n   n+=len(s.recv(1))>0\n  except BlockingIOError: n+=1\n  except Exception: pass\n return n\ntime.sleep(1);a1=alive()\ntime.sleep(6);a7=alive()\nprint(json.dumps({'opened':len(socks),'failed':failed,'open_after_1s':a1,'open_after_7s':a7}))\n";

/// Issue 18: slowloris without credentials. A host on the control segment (a namespace of this
/// test, bridged into the lab's control segment) opens 1,000 connections to the nodes'
/// listener and sends each 3 bytes of a TLS record; the source keeps at most its share of open
/// connections (32), the others are closed at once, the held ones after the 5 s handshake
/// timeout, the refusals are one audit summary; meanwhile the nodes poll and a rekey completes
/// about as fast as without the flood.
#[test]
fn a_thousand_slow_connections_from_one_source_leave_polls_and_rekeys_on_time() {
    usable();
    let mut lab = LabRun::new("quickstart", "sl");
    lab.up();
    let atk = format!("zsl{}", std::process::id());
    let mut namespaces = zsfc_lab::Namespaces::new();
    namespaces.add(&atk).unwrap();
    let ip = |args: &[&str]| assert!(Command::new("ip").args(args).status().unwrap().success(), "ip {args:?}");
    let bridge = lab.ns("net");
    ip(&["link", "add", "eth0", "netns", &atk, "type", "veth", "peer", "name", "slow0", "netns", &bridge]);
    ip(&["-n", &bridge, "link", "set", "slow0", "master", "br1", "up"]);
    ip(&["-n", &atk, "addr", "add", "10.201.0.200/24", "dev", "eth0"]);
    ip(&["-n", &atk, "link", "set", "eth0", "up"]);
    let rekey = |lab: &LabRun| {
        let t = Instant::now();
        let out = lab.zsfc(&["rekey", &lab.name]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        t.elapsed()
    };
    let quiet = rekey(&lab);
    let flood = Command::new("ip")
        .args(["netns", "exec", &atk, "python3", "-c", SLOW_CONNECTIONS])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let loaded = rekey(&lab);
    let served = fetch_as(&lab, "alice");
    let out = flood.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("slow connections: {v}; rekey {quiet:?} without them, {loaded:?} during them");
    assert_eq!(v["opened"].as_u64().unwrap() + v["failed"].as_u64().unwrap(), 1000, "{v}");
    assert!(v["open_after_1s"].as_u64().unwrap() <= 32, "one source held more than its share: {v}");
    assert_eq!(v["open_after_7s"].as_u64(), Some(0), "slow handshakes outlived their timeout: {v}");
    assert_eq!(served, 200);
    assert!(loaded <= quiet + Duration::from_secs(3), "rekey {loaded:?} during the flood, {quiet:?} without");
    let audit = audit_rows(&lab.state_file("controller.db"));
    assert!(audit.contains("open from this source"), "no summary of the refusals:\n{audit}");
    assert!(audit.lines().filter(|l| l.contains("10.201.0.200")).count() < 20, "a row per refusal:\n{audit}");
}

/// Issue 20, honest rollouts: with the SF node killed, `zsfc rekey` names it, exits 1 and waits
/// for it once (one acknowledgement timeout, 5 s, not one per step); `zsfc domain` does not say
/// converged. Started again, the node rejoins, the next rekey is acknowledged by every node and
/// exits 0, and the chain carries traffic.
#[test]
fn a_rekey_with_a_node_down_names_it_and_exits_non_zero() {
    usable();
    let mut lab = LabRun::new("quickstart", "hr");
    lab.up();
    let pid = pid_of(&lab, "sf");
    nix_kill(pid);
    while alive(pid) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    let out = lab.zsfc(&["rekey", &lab.name]);
    let took = t.elapsed();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("NOT acknowledged by sf:"), "{stderr}");
    assert!(!stdout.contains("runs new SAs (version"), "{stdout}");
    assert!(took < Duration::from_secs(12), "the dead node was waited for at every step: {took:?}");
    let domain = String::from_utf8_lossy(&lab.zsfc(&["domain", &lab.name]).stdout).into_owned();
    assert!(!domain.contains("(converged)"), "{domain}");
    let mut sf = start_node_again(&lab, "sf");
    wait_for_restart(&lab, "sf", Duration::from_secs(30));
    let out = lab.zsfc(&["rekey", &lab.name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("every enrolled node runs new SAs"));
    // The rollout the restart asked for may run after this rekey (both wait for one lock).
    let t = Instant::now();
    let mut domain = String::new();
    while !domain.contains("(converged)") && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
        domain = String::from_utf8_lossy(&lab.zsfc(&["domain", &lab.name]).stdout).into_owned();
    }
    let served = fetch_as(&lab, "alice");
    lab.down();
    let _ = sf.wait();
    assert!(domain.contains("(converged)"), "{domain}");
    assert_eq!(served, 200);
}

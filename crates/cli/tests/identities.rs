//! Identities in a running lab (issue 17): certificates that expire, renewed by the nodes'
//! agents while traffic runs; a client whose certificate expired refused with a reason that
//! says so. Needs root (./test.sh).
#![expect(clippy::unwrap_used, reason = "tests: a failure should stop them loudly, with its place")]
mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use zsfc_controller::pki::Validity;

/// A web service through the gateway next to secure.toml's UDP stream.
const WEB: &str = r#"
[[services]]
name = "web"
node = "egress"
kind = "http"
port = 80

[[chains]]
name = "web"
service = "web"
clients = ["alice"]
sfs = ["count"]
"#;

fn validity(lab: &LabRun, rel: &str) -> Validity {
    let pem = std::fs::read_to_string(lab.state_file(rel)).unwrap();
    Validity::of_pem(&pem).unwrap()
}

#[test]
fn certificates_are_renewed_while_traffic_runs_and_an_expired_client_is_refused() {
    usable();
    let mut lab = LabRun::new("secure", "cert");
    let text = std::fs::read_to_string(&lab.file).unwrap();
    // Nodes' certificates live 9 s (renewed every ~6.6 s), clients' 25 s.
    let lab_text = format!("{text}\n{WEB}\n[certificates]\nnode_s = 9\nclient_s = 25\n");
    std::fs::write(&lab.file, lab_text).unwrap();
    lab.up();
    let nodes = ["ingress", "sf", "egress"];
    let first: Vec<Validity> = nodes.iter().map(|n| validity(&lab, &format!("{n}.id/node.pem"))).collect();
    let gateway_first = validity(&lab, "pki/gateway.pem");
    let client = validity(&lab, "pki/clients/alice.pem");
    // 25 s and the skew allowance (a tenth), to the second X.509 keeps.
    let life = client.not_after.duration_since(client.not_before).unwrap().as_secs();
    assert!((27..=28).contains(&life), "a client certificate of {life} s");
    assert_eq!(fetch_as(&lab, "alice"), 200);

    // 15 s of traffic cross two renewals of every certificate: nothing is lost.
    let (sent, received, lost, dup) = stream(&lab, 1000, 15);
    assert!(sent >= 14_000 && received == sent && lost == 0 && dup == 0, "{sent} {received} {lost} {dup}");
    for (n, old) in nodes.iter().zip(&first) {
        let now = validity(&lab, &format!("{n}.id/node.pem"));
        assert!(now.not_before > old.not_before + Duration::from_secs(6), "{n}'s certificate was not renewed");
        assert!(now.not_after > SystemTime::now(), "{n}'s certificate on disk has expired");
    }
    let gateway_now = validity(&lab, "pki/gateway.pem");
    assert!(gateway_now.not_before > gateway_first.not_before + Duration::from_secs(6), "gateway not renewed");
    // The nodes still reach the controller with their renewed certificates, and clients verify
    // the gateway's renewed one.
    let status = lab.zsfc(&["status", &lab.name]);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(status.contains("converged") && !status.contains("NOT converged"), "{status}");
    assert_eq!(fetch_as(&lab, "alice"), 200);

    // alice's certificate expires: refused as such, and counted.
    let wait = client.not_after.duration_since(SystemTime::now()).unwrap_or_default() + Duration::from_secs(1);
    std::thread::sleep(wait);
    assert_eq!(fetch_as(&lab, "alice"), 0, "an expired client certificate was served");
    let expired = metric(&lab, "ingress", "zsfc_gateway_total", &["outcome=\"refused_certificate_expired\""]);
    // The operator issues her a new one (a key made where it is written), within the domain's
    // client lifetime only.
    let longer = lab.zsfc(&["client-cert", &lab.name, "alice", "--lifetime-s", "26"]);
    assert!(!longer.status.success(), "a lifetime beyond the domain's was accepted");
    zsfc_ok(&lab, &["client-cert", &lab.name, "alice", "--lifetime-s", "20"]);
    let renewed = validity(&lab, "pki/clients/alice.pem");
    assert!(renewed.not_before > client.not_after - Duration::from_secs(5), "not a new certificate");
    assert_eq!(fetch_as(&lab, "alice"), 200, "with her new certificate");
    lab.down();
    assert_eq!(expired, 1, "the refusal's reason");
}

/// A client on one kept-alive HTTPS connection: `GET /index.html`, prints the status; then waits
/// up to ARGV[5] s for the server to close the connection, and prints `closed` if it did, `open`
/// if not.
const KEPT_ALIVE: &str = r#"
import socket, ssl, sys
host, ca, cert, key, wait = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
s = ctx.wrap_socket(socket.create_connection(("172.16.0.1", 443), timeout=10), server_hostname=host)
s.sendall(b"GET /index.html HTTP/1.1\r\nHost: " + host.encode() + b"\r\n\r\n")
data = b""
while b"\r\n\r\n" not in data:
    data += s.recv(65536)
head, body = data.split(b"\r\n\r\n", 1)
length = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
while len(body) < length:
    body += s.recv(65536)
print(head.split(b" ")[1].decode(), flush=True)
s.settimeout(float(wait))
try:
    print("closed" if s.recv(1) == b"" else "data")
except socket.timeout:
    print("open")
except (ssl.SSLError, OSError):
    print("closed")
"#;

/// `zsfc CMD LAB ARGS...` of a running lab; what it printed, after asserting it succeeded.
fn zsfc_ok(lab: &LabRun, args: &[&str]) -> String {
    let out = lab.zsfc(args);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "zsfc {args:?}:\n{text}");
    text
}

#[test]
fn a_revoked_client_is_refused_and_cut_off_on_an_open_connection() {
    usable();
    let mut lab = LabRun::new("quickstart", "rvc");
    lab.up();
    assert_eq!(fetch_as(&lab, "alice"), 200);
    // A kept-alive connection: one request answered, then idle while the revocation comes; the
    // gateway must close it (the client sees EOF without sending anything).
    let pki = |f: &str| lab.state_file(&format!("pki/{f}")).display().to_string();
    let host = format!("web.{}", lab.name);
    let client = Command::new("ip")
        .args(["netns", "exec", &lab.ns("c-alice"), "python3", "-c", KEPT_ALIVE, &host, &pki("ca.pem")])
        .args([&pki("clients/alice.pem"), &pki("clients/alice.key"), "8"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    zsfc_ok(&lab, &["revoke", &lab.name, "client", "alice"]);
    let out = client.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(said.lines().collect::<Vec<_>>(), ["200", "closed"], "the kept-alive connection:\n{said}");
    assert_eq!(fetch_as(&lab, "alice"), 0, "a revoked client was served");
    let revoked = metric(&lab, "ingress", "zsfc_gateway_total", &["outcome=\"refused_revoked\""]);
    let domain = zsfc_ok(&lab, &["domain", &lab.name]);
    // A certificate issued after the revocation is hers again (valid from after the cut-off).
    zsfc_ok(&lab, &["client-cert", &lab.name, "alice"]);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(fetch_as(&lab, "alice"), 200, "a certificate issued after the revocation");
    lab.down();
    assert_eq!(revoked, 2, "the open connection and the new one");
    assert!(domain.contains("revoked client/alice"), "{domain}");
}

#[test]
fn a_revoked_node_is_cut_off_and_rejoins_with_a_new_token() {
    usable();
    let mut lab = LabRun::new("keys", "rvn");
    lab.up();
    let (sent, received, ..) = stream(&lab, 1000, 1);
    assert_eq!(received, sent);
    // Revoked: its polls are refused and the rollout that follows rotates its SAs out.
    zsfc_ok(&lab, &["revoke", &lab.name, "node", "sf"]);
    let (sent, received, ..) = stream(&lab, 1000, 2);
    assert_eq!(received, 0, "{received} of {sent} crossed a revoked SF node");
    let domain = zsfc_ok(&lab, &["domain", &lab.name]);
    assert!(domain.contains("REVOKED"), "{domain}");
    let t = Instant::now();
    while !audit_rows(&lab.state_file("controller.db")).contains("|refused|node/sf|poll its state") {
        assert!(t.elapsed() < Duration::from_secs(30), "sf's polls were not refused");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Reinstalled: a new token, no identity, started again; it enrols and carries traffic.
    zsfc_ok(&lab, &["node-token", &lab.name, "sf"]);
    nix_kill(pid_of(&lab, "sf"));
    std::fs::remove_dir_all(lab.state_file("sf.id")).unwrap();
    let mut sf = start_node_again(&lab, "sf");
    wait_for_restart(&lab, "sf", Duration::from_secs(30));
    zsfc_ok(&lab, &["rekey", &lab.name]);
    let (sent, received, lost, _) = stream(&lab, 1000, 2);
    lab.down();
    let _ = sf.wait();
    assert!(received == sent && lost == 0, "after re-enrolment: {received} of {sent}");
}

/// Issue 17 point 3 with SF pools (examples/pools.toml, link protection off so that liveness
/// probes, which a revoked node still answers, cannot hide it): a revoked node's instances
/// leave every pool in the rollout that revokes it, and every new connection is served by the
/// SFs' instances on the other node.
#[test]
fn a_revoked_node_leaves_its_pools_and_flows_go_to_the_other_instances() {
    usable();
    let mut lab = LabRun::new("pools", "rvp");
    lab.edit("\nnodes = ", "\nlink_protection = false # the test's point: probes cannot tell\nnodes = ");
    lab.up();
    let before: Vec<u32> = (0..6).map(|_| fetch_as(&lab, "alice")).collect();
    zsfc_ok(&lab, &["revoke", &lab.name, "node", "sf2"]);
    let domain = zsfc_ok(&lab, &["domain", &lab.name]);
    let opened = forward_counters(&lab, "sf-fw")[2];
    let after: Vec<u32> = (0..12).map(|_| fetch_as(&lab, "alice")).collect();
    let opened_on_sf1 = forward_counters(&lab, "sf-fw")[2] - opened;
    lab.down();
    assert!(before.iter().all(|&c| c == 200), "{before:?}");
    for sf in ["fw", "dpi"] {
        assert!(domain.contains(&format!("instance {sf}@sf2")), "{domain}");
        let line = domain.lines().find(|l| l.contains(&format!("instance {sf}@sf2"))).unwrap();
        assert!(line.contains("OUT of the plan"), "{line}\n{domain}");
    }
    assert!(after.iter().all(|&c| c == 200), "connections after sf2 was revoked: {after:?}");
    assert_eq!(opened_on_sf1, 12, "every new connection opened at fw@sf1");
}

//! Identities in a running lab (issue 17): certificates that expire, renewed by the nodes'
//! agents while traffic runs; a client whose certificate expired refused with a reason that
//! says so. Needs root (./test.sh).
#![expect(clippy::unwrap_used, reason = "tests: a failure should stop them loudly, with its place")]
mod common;
use common::*;
use std::time::{Duration, SystemTime};
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
    lab.down();
    assert_eq!(expired, 1, "the refusal's reason");
}

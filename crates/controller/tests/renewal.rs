//! Certificate lifetimes and renewal over the controller's API (issue 17): a node renews its
//! own certificate with its current one, only the gateway node renews the gateway's, nobody
//! else renews anything, and an expired certificate no longer reaches the controller.
#![expect(clippy::unwrap_used, reason = "tests: a failure should stop them loudly, with its place")]
mod common;
use common::{T, domain, enrol_body, start_with, typed};
use std::time::{Duration, SystemTime};
use zsfc_controller::client::Client;
use zsfc_controller::pki::{Validity, new_csr, new_server_csr};
use zsfc_identity::{Identity, Kind};

fn renew_body(what: &str, csr: &str) -> Vec<u8> {
    serde_json::json!({"zsfc:input": {"for": what, "csr": csr}}).to_string().into_bytes()
}

fn cert_of(reply: &zsfc_controller::client::Reply) -> String {
    let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    v["zsfc:output"]["certificate"].as_str().unwrap().to_owned()
}

fn identity_of(pem: &str) -> Identity {
    let der: rustls_pki_types::CertificateDer<'static> =
        rustls_pki_types::pem::PemObject::from_pem_slice(pem.as_bytes()).unwrap();
    Identity::of_certificate(&der).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_renews_its_certificate_and_nobody_renews_another_identity() {
    let mut d = domain();
    d.topology.certificates.node_s = 60;
    d.gateway_nodes = vec!["ingress".into()];
    let (r, ca) = start_with(d).await;
    let anonymous = Client::new(&r.addr, "controller", &r.ca, None).unwrap();
    let mut nodes = std::collections::HashMap::new();
    for (node, token) in r.tokens.iter().filter(|(n, _)| n == "ingress" || n == "obs") {
        let (body, key) = enrol_body(node, token);
        let reply = anonymous.request("POST", "/restconf/operations/zsfc:enrol", Some(body), T).await.unwrap();
        assert_eq!(reply.status, 200, "{}", reply.message());
        let cert = cert_of(&reply);
        // Enrolment gives the domain's node lifetime (60 s here, plus the skew allowance).
        let v = Validity::of_pem(&cert).unwrap();
        assert_eq!(v.not_after.duration_since(v.not_before).unwrap().as_secs(), 66);
        nodes.insert(node.clone(), Client::new(&r.addr, "controller", &r.ca, Some((&cert, &key))).unwrap());
    }
    let obs = &nodes["obs"];
    // The node's own certificate: a new one for a new key, same identity, valid from now.
    let (csr, key) = new_csr("whatever-i-like").unwrap();
    let reply =
        obs.request("POST", "/restconf/operations/zsfc:renew", Some(renew_body("node", &csr)), T).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.message());
    let renewed = cert_of(&reply);
    assert_eq!(identity_of(&renewed), typed(Kind::Node, "obs"));
    // The renewed certificate works at once, in the same client.
    obs.renew(&renewed, &key).unwrap();
    let reply =
        obs.request("POST", "/restconf/operations/zsfc:renew", Some(renew_body("node", &csr)), T).await.unwrap();
    assert_eq!(reply.status, 200, "with the renewed certificate: {}", reply.message());
    // obs runs no gateway: it may not get the gateway's certificate.
    let (gw_csr, _) = new_server_csr("ingress", &["web.example".into()], &[]).unwrap();
    let reply =
        obs.request("POST", "/restconf/operations/zsfc:renew", Some(renew_body("gateway", &gw_csr)), T).await.unwrap();
    assert_eq!(reply.status, 403, "{}", reply.message());
    // The gateway node gets the gateway's server certificate with the names it asked for.
    let ingress = &nodes["ingress"];
    let reply = ingress
        .request("POST", "/restconf/operations/zsfc:renew", Some(renew_body("gateway", &gw_csr)), T)
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.message());
    assert_eq!(identity_of(&cert_of(&reply)), typed(Kind::Gateway, "ingress"));
    // The operator, a client and no certificate at all renew nothing.
    let day = Validity::from_now(Duration::from_secs(86_400));
    for (id, want) in [(typed(Kind::Role, "operator"), 403), (typed(Kind::Client, "obs"), 403)] {
        let (cert, key) = ca.issue(&id, &[], &[], day).unwrap();
        let c = Client::new(&r.addr, "controller", &r.ca, Some((&cert, &key))).unwrap();
        let reply =
            c.request("POST", "/restconf/operations/zsfc:renew", Some(renew_body("node", &csr)), T).await.unwrap();
        assert_eq!(reply.status, want, "{id}: {}", reply.message());
    }
    let reply =
        anonymous.request("POST", "/restconf/operations/zsfc:renew", Some(renew_body("node", &csr)), T).await.unwrap();
    assert_eq!(reply.status, 401);
    let db = zsfc_controller::audit::open_read_only(&r.db).unwrap();
    let mut q = db.prepare("SELECT kind || ' ' || subject || ' ' || detail FROM audit").unwrap();
    let rows: Vec<String> = q.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    let audit = rows.join("\n");
    assert!(audit.contains("renew node/obs certificate renewed"), "{audit}");
    assert!(audit.contains("renew gateway/ingress certificate renewed"), "{audit}");
    assert!(audit.contains("runs no gateway"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_node_certificate_no_longer_reaches_the_controller() {
    let (r, ca) = start_with(domain()).await;
    let now = SystemTime::now();
    let past = Validity { not_before: now - Duration::from_secs(7200), not_after: now - Duration::from_secs(3600) };
    let (cert, key) = ca.issue(&typed(Kind::Node, "obs"), &[], &[], past).unwrap();
    let c = Client::new(&r.addr, "controller", &r.ca, Some((&cert, &key))).unwrap();
    let (csr, _) = new_csr("obs").unwrap();
    let got = c.request("POST", "/restconf/operations/zsfc:renew", Some(renew_body("node", &csr)), T).await;
    assert!(got.is_err(), "an expired certificate got an answer: {:?}", got.map(|r| r.status));
    // The controller's own certificate is short-lived too: the node lifetime, renewed by itself.
    let server = peer_validity(&r.addr, &r.ca).await;
    let life = server.not_after.duration_since(server.not_before).unwrap();
    assert_eq!(life.as_secs(), 86_400 + 60);
}

/// The validity of the certificate the server at `addr` presents (verified against `ca`).
async fn peer_validity(addr: &str, ca: &str) -> Validity {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::pem::PemObject::from_pem_slice(ca.as_bytes()).unwrap()).unwrap();
    let cfg =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("controller").unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)).connect(name, tcp).await.unwrap();
    let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    Validity::of_certificate(&der).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_node_is_refused_until_it_enrols_again_with_a_new_token() {
    let mut d = domain();
    d.gateway_nodes = vec!["ingress".into()];
    // Nobody acknowledges here: rollouts go on after 50 ms per step.
    d.rekey = zsfc_controller::RekeySettings { period_s: 0, grace_ms: 0, ack_timeout_ms: 50 };
    let (r, ca) = start_with(d).await;
    let anonymous = Client::new(&r.addr, "controller", &r.ca, None).unwrap();
    let token = &r.tokens.iter().find(|(n, _)| n == "obs").unwrap().1;
    let (body, key) = enrol_body("obs", token);
    let reply = anonymous.request("POST", "/restconf/operations/zsfc:enrol", Some(body), T).await.unwrap();
    let obs = Client::new(&r.addr, "controller", &r.ca, Some((&cert_of(&reply), &key))).unwrap();
    let (csr, _) = new_csr("obs").unwrap();
    let renew = |c: &Client| {
        let c = c.clone();
        let body = renew_body("node", &csr);
        async move { c.request("POST", "/restconf/operations/zsfc:renew", Some(body), T).await.unwrap() }
    };
    assert_eq!(renew(&obs).await.status, 200);
    let day = Validity::from_now(Duration::from_secs(86_400));
    let as_role = |role: &str| {
        let (cert, key) = ca.issue(&typed(Kind::Role, role), &[], &[], day).unwrap();
        Client::new(&r.addr, "controller", &r.ca, Some((&cert, &key))).unwrap()
    };
    let (operator, keys) = (as_role("operator"), as_role("operator-keys"));
    let revoke = |kind: &str, name: &str| {
        serde_json::json!({"zsfc:input": {"kind": kind, "name": name}}).to_string().into_bytes()
    };
    // Only the full operator revokes.
    let reply = keys.request("POST", "/restconf/operations/zsfc:revoke", Some(revoke("node", "obs")), T).await.unwrap();
    assert_eq!(reply.status, 403, "{}", reply.message());
    let reply =
        operator.request("POST", "/restconf/operations/zsfc:revoke", Some(revoke("node", "obs")), T).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.message());
    let reply = renew(&obs).await;
    assert_eq!(reply.status, 403, "a revoked node renewed");
    assert!(reply.message().contains("revoked"), "{}", reply.message());
    let poll = "/restconf/data/zsfc:nodes/node=obs/desired?after=0&boot=b&seal=00";
    assert_eq!(obs.request("GET", poll, None, T).await.unwrap().status, 403, "a revoked node polled");
    let status = r.ctl.status();
    let node = status["zsfc:domain"]["nodes"].as_array().unwrap().iter().find(|n| n["name"] == "obs").unwrap();
    assert_eq!(node["revoked"], true, "{status}");
    // A new token: the node enrols again and its new certificate works; the old one stays out.
    let reply = operator
        .request(
            "POST",
            "/restconf/operations/zsfc:node-token",
            Some(br#"{"zsfc:input": {"node": "obs"}}"#.to_vec()),
            T,
        )
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.message());
    let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    let new_token = v["zsfc:output"]["token"].as_str().unwrap();
    assert_ne!(new_token, token);
    let (body, key) = enrol_body("obs", new_token);
    let reply = anonymous.request("POST", "/restconf/operations/zsfc:enrol", Some(body), T).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.message());
    let again = Client::new(&r.addr, "controller", &r.ca, Some((&cert_of(&reply), &key))).unwrap();
    // Valid from after the cut-off: wait for it, then the node is back.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(renew(&again).await.status, 200, "the re-enrolled node");
    assert_eq!(renew(&obs).await.status, 403, "the old certificate after re-enrolment");
    // A revoked client goes to the gateway's node in its next document.
    let reply =
        operator.request("POST", "/restconf/operations/zsfc:revoke", Some(revoke("client", "alice")), T).await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.message());
    let doc = r.ctl.node_state("ingress").unwrap();
    assert_eq!(doc.sfc.revoked.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["alice"]);
    assert!(r.ctl.node_state("node-a").unwrap().sfc.revoked.is_empty(), "only the gateway's node is told");
    let db = zsfc_controller::audit::open_read_only(&r.db).unwrap();
    let mut q = db.prepare("SELECT kind || ' ' || subject || ' ' || detail FROM audit").unwrap();
    let audit: Vec<String> = q.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    let audit = audit.join("\n");
    for want in
        ["revoke node/obs revoked by role/operator", "revoke node/obs new bootstrap token", "certificate is revoked"]
    {
        assert!(audit.contains(want), "audit lacks {want:?}:\n{audit}");
    }
}

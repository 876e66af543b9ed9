//! Enrolment and access control against a real controller: its HTTPS API on a loopback socket,
//! a real SQLite database, real certificates; the client is the one nodes use.
use std::time::Duration;
use zsfc_config::Topology;
use zsfc_controller::client::Client;
use zsfc_controller::sealed::PollKey;
use zsfc_controller::{Controller, DomainSpec, Role};
use zsfc_identity::{Identity, Kind};

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_enrols_its_node_once_and_every_refusal_is_audited() {
    let r = start().await;
    let anonymous = Client::new(&r.addr, "controller", &r.ca, None).unwrap();
    let (node, token) = r.tokens[0].clone();
    let enrol = |body: Vec<u8>| anonymous.request("POST", "/restconf/operations/zsfc:enrol", Some(body), T);

    // Wrong token, another node's token, an unknown node: refused.
    let (body, _) = enrol_body(&node, "deadbeef");
    assert_eq!(enrol(body).await.unwrap().status, 403);
    let (body, _) = enrol_body(&node, &r.tokens[1].1);
    assert_eq!(enrol(body).await.unwrap().status, 403);
    let (body, _) = enrol_body("intruder", &token);
    assert_eq!(enrol(body).await.unwrap().status, 403);
    // A malformed request gets a precise 400.
    let bad = enrol(b"{\"zsfc:input\":{\"node\":1}}".to_vec()).await.unwrap();
    assert_eq!(bad.status, 400);
    assert!(bad.message().contains("zsfc:input"), "{}", bad.message());

    // The right token: a certificate for the node's own key.
    let (body, key) = enrol_body(&node, &token);
    let ok = enrol(body).await.unwrap();
    assert_eq!(ok.status, 200, "{}", ok.message());
    let v: serde_json::Value = serde_json::from_slice(&ok.body).unwrap();
    let cert = v["zsfc:output"]["certificate"].as_str().unwrap().to_owned();
    // Used once: never again.
    let (body, _) = enrol_body(&node, &token);
    let again = enrol(body).await.unwrap();
    assert_eq!(again.status, 403);
    assert!(again.message().contains("already used"), "{}", again.message());

    // The node's certificate opens its own resources, not the operator's or another node's.
    let as_node = Client::new(&r.addr, "controller", &r.ca, Some((&cert, &key))).unwrap();
    let own = format!("/restconf/data/zsfc:nodes/node={node}/desired?after=0&boot=b1");
    let other = format!("/restconf/data/zsfc:nodes/node={}/desired?after=0&boot=b1", r.tokens[1].0);
    assert_eq!(as_node.request("GET", "/restconf/data/zsfc:domain", None, T).await.unwrap().status, 403);
    assert_eq!(as_node.request("GET", &other, None, T).await.unwrap().status, 403);
    assert_eq!(as_node.request("POST", "/restconf/operations/zsfc:rekey", None, T).await.unwrap().status, 403);
    // Without a certificate nothing but enrolment answers.
    assert_eq!(anonymous.request("GET", &own, None, T).await.unwrap().status, 401);
    // A poll must bring the key its reply is sealed to.
    let unsealed = as_node.request("GET", &own, None, T).await.unwrap();
    assert_eq!(unsealed.status, 400);
    assert!(unsealed.message().contains("seal="), "{}", unsealed.message());
    let bad_key = as_node.request("GET", &format!("{own}&seal=00ff"), None, T).await.unwrap();
    assert_eq!(bad_key.status, 400);
    assert!(bad_key.message().contains("64 hex digits"), "{}", bad_key.message());
    // Its first poll gets the state the controller rolls out for it (the domain's other nodes
    // never answer here, so the rollout goes on after their acknowledgement timeout), sealed:
    // nothing of the document on the wire or in the TLS buffers, opened with the poll's key.
    let seal = PollKey::new().unwrap();
    let sealed = format!("{own}&seal={}", seal.public_hex());
    let first = as_node.request("GET", &sealed, None, Duration::from_secs(30)).await.unwrap();
    assert_eq!(first.status, 200, "{}", first.message());
    assert!(!first.body.windows(9).any(|w| w == b"sad-entry"), "the document travels sealed");
    let plain = seal.open(&node, first.body).unwrap();
    let doc: zsfc_config::ikeless::NodeState = serde_json::from_slice(&plain).unwrap();
    assert!(doc.version >= 1);
    assert!(doc.ikeless.sad.entries.iter().all(|e| e.has_key()), "the first state carries the node's keys");

    let db = zsfc_controller::audit::open_read_only(&r.db).unwrap();
    let mut q = db.prepare("SELECT kind || ' ' || subject || ' ' || detail FROM audit").unwrap();
    let log: Vec<String> = q.query_map([], |row| row.get(0)).unwrap().map(Result::unwrap).collect();
    let text = log.join("\n");
    for want in ["wrong bootstrap token", "no such node", "already used", &format!("enrol {node} enrolled")] {
        assert!(text.contains(want), "audit log lacks {want:?}:\n{text}");
    }
    assert!(text.matches("not allowed for this identity").count() >= 3, "{text}");
    assert!(text.contains("without a client certificate"), "{text}");
    assert!(matches!(zsfc_controller::audit::verify(&db).unwrap(), zsfc_controller::audit::Verdict::Intact { .. }));
    drop(r.ctl);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_period_rekeys_the_domain_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let mut d = domain();
    // The SPI arithmetic below counts payload SAs only.
    (d.topology.link_protection, d.topology.sfc_integrity) = (false, false);
    // Nobody acknowledges here: each step waits 50 ms, a rollout takes well under the period.
    d.rekey = zsfc_controller::RekeySettings { period_s: 1, grace_ms: 0, ack_timeout_ms: 50 };
    Controller::init(&db, &d).unwrap();
    let ctl = Controller::open(&db).unwrap();
    tokio::spawn(ctl.clone().run_background());
    tokio::time::sleep(Duration::from_millis(3600)).await;
    let n = ctl.rollouts.load(std::sync::atomic::Ordering::Relaxed);
    assert!((2..=4).contains(&n), "{n} rollouts in 3.6 s with a 1 s period");
    // Every rollout took new SPIs (one more may be under way).
    let spi: u64 = ctl.status()["zsfc:domain"]["next-spi"].as_u64().unwrap();
    let per = d.topology.compile().unwrap().iter().map(|c| c.outbound_sas.len() as u64).sum::<u64>();
    assert!(spi == 0x1000 + n * per || spi == 0x1000 + (n + 1) * per, "next SPI {spi:#x} after {n} rollouts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_is_cut_before_tls_and_audited_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let mut d = domain();
    d.api =
        zsfc_controller::limit::ApiLimits { connections_per_s: 1, burst: 3, max_open: 100, max_open_per_source: 100 };
    let (_, ca) = Controller::init(&db, &d).unwrap();
    let ctl = Controller::open(&db).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(zsfc_controller::serve(ctl.clone(), listener, "controller"));
    let c = Client::new(&addr, "controller", ca.pem(), None).unwrap();
    let mut answered = 0;
    for _ in 0..20 {
        if c.request("GET", "/openapi.json", None, T).await.is_ok_and(|r| r.status == 200) {
            answered += 1;
        }
    }
    assert_eq!(answered, 3, "the burst, then nothing within the same second");
    let log = zsfc_controller::audit::open_read_only(&db).unwrap();
    let rows: Vec<String> = log
        .prepare("SELECT detail FROM audit WHERE kind = 'refused'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows, ["rate limit: refused 1 connections"], "one record for the flood, not 17");
    drop(ctl);
}

/// Seed 004 REQ8: each administrative role does its own part and nothing else; every role
/// reads; every refusal is audited under the role's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_administrative_role_may_do_its_own_part_only() {
    let mut d = domain();
    // The SPI arithmetic below counts payload SAs only.
    (d.topology.link_protection, d.topology.sfc_integrity) = (false, false);
    // Nobody acknowledges here: rollouts go on after 50 ms per step.
    d.rekey = zsfc_controller::RekeySettings { period_s: 0, grace_ms: 0, ack_timeout_ms: 50 };
    let (r, ca) = start_with(d).await;
    let chain = br#"{"zsfc:chain": {"sfs": ["firewall", "dpi", "counter", "nat"]}}"#.to_vec();
    let grants = br#"{"zsfc:grants": []}"#.to_vec();
    let actions: [(&str, &str, Option<Vec<u8>>); 4] = [
        ("GET", "/restconf/data/zsfc:domain", None),
        ("POST", "/restconf/operations/zsfc:rekey", None),
        ("PUT", "/restconf/data/zsfc:domain/grants", Some(grants)),
        ("PUT", "/restconf/data/zsfc:domain/chain=to-web", Some(chain)),
    ];
    let mut refusals = 0;
    for role in Role::ALL {
        let (cert, key) = ca.issue(&typed(Kind::Role, role.name()), &[], &[], common::hour()).unwrap();
        let client = Client::new(&r.addr, "controller", &r.ca, Some((&cert, &key))).unwrap();
        // read, rekey, change the policy, change a chain
        let allowed = match role {
            Role::Operator => [true, true, true, true],
            Role::Keys => [true, true, false, false],
            Role::Policy => [true, false, true, false],
            Role::Chains => [true, false, false, true],
            Role::Auditor => [true, false, false, false],
        };
        for ((method, path, body), may) in actions.iter().zip(allowed) {
            let r = client.request(method, path, body.clone(), Duration::from_secs(30)).await.unwrap();
            if may {
                assert_eq!(r.status, 200, "{} {method} {path}: {}", role.name(), r.message());
            } else {
                assert_eq!(r.status, 403, "{} {method} {path}", role.name());
                assert!(r.message().contains(role.name()), "{}", r.message());
                refusals += 1;
            }
        }
    }
    let audit = zsfc_controller::audit::open_read_only(&r.db).unwrap();
    let refused: i64 = audit
        .query_row("SELECT count(*) FROM audit WHERE detail LIKE '%not allowed for this identity%'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(refused, refusals);
    // A node may be called like a role (issue 17: the kinds of the identities keep them apart;
    // `a_client_named_like_a_node_or_a_role_acts_as_neither` shows it does not act as one).
    let text = include_str!("../../../examples/inmemory-topology.toml").replace("\"ingress\"", "\"auditor\"");
    let shared = DomainSpec { topology: Topology::from_toml(&text).unwrap(), ..domain() };
    assert!(shared.topology.nodes.iter().any(|n| n.name == "auditor"));
    Controller::init(&r.db.with_file_name("d.db"), &shared).unwrap();
}

/// A role bound to a key (`zsfc:bind-role`, what `zsfc role-key` asks for with a key made on a
/// hardware token) acts only with that key: the role's earlier certificate is refused, the new
/// one accepted; only the full operator binds, and a bad request is refused precisely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_bound_to_a_key_acts_only_with_that_key() {
    let mut d = domain();
    d.rekey = zsfc_controller::RekeySettings { period_s: 0, grace_ms: 0, ack_timeout_ms: 50 };
    let (r, ca) = start_with(d).await;
    let client = |cert: &str, key: &str| Client::new(&r.addr, "controller", &r.ca, Some((cert, key))).unwrap();
    let (op_cert, op_key) = ca.issue(&typed(Kind::Role, "operator"), &[], &[], common::hour()).unwrap();
    let operator = client(&op_cert, &op_key);
    let (old_cert, old_key) = ca.issue(&typed(Kind::Role, "operator-keys"), &[], &[], common::hour()).unwrap();
    let old = client(&old_cert, &old_key);
    let rekey = |c: Client| async move {
        c.request("POST", "/restconf/operations/zsfc:rekey", None, Duration::from_secs(30)).await.unwrap().status
    };
    assert_eq!(rekey(old.clone()).await, 200);

    // The new key: here a key pair in memory; `zsfc role-key` makes it on a token, which the
    // controller cannot tell (it binds whatever key signed the request).
    let (csr, new_key) = zsfc_controller::pki::new_csr("anything").unwrap();
    let bind = |c: &Client, role: &str, csr: &str| {
        let body = serde_json::json!({"zsfc:input": {"role": role, "csr": csr}}).to_string().into_bytes();
        let c = c.clone();
        async move { c.request("POST", "/restconf/operations/zsfc:bind-role", Some(body), T).await.unwrap() }
    };
    let refused = bind(&old, "operator-keys", &csr).await;
    assert_eq!(refused.status, 403, "only the full operator binds");
    assert_eq!(bind(&operator, "root", &csr).await.status, 400);
    assert_eq!(bind(&operator, "auditor", "not a csr").await.status, 400);
    let bound = bind(&operator, "operator-keys", &csr).await;
    assert_eq!(bound.status, 200, "{}", bound.message());
    let v: serde_json::Value = serde_json::from_slice(&bound.body).unwrap();
    let new_cert = v["zsfc:output"]["certificate"].as_str().unwrap().to_owned();

    let refused = old.request("POST", "/restconf/operations/zsfc:rekey", None, T).await.unwrap();
    assert_eq!(refused.status, 403);
    assert!(refused.message().contains("hardware token"), "{}", refused.message());
    // Reading is refused too: the old key no longer speaks for the role at all.
    let read = old.request("GET", "/restconf/data/zsfc:domain", None, T).await.unwrap();
    assert_eq!(read.status, 403);
    assert_eq!(rekey(client(&new_cert, &new_key)).await, 200, "the bound key acts as the role");
    let status = operator.request("GET", "/restconf/data/zsfc:domain", None, T).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
    assert_eq!(v["zsfc:domain"]["roles-on-tokens"], serde_json::json!(["operator-keys"]));
    // Other roles keep their files.
    let (aud_cert, aud_key) = ca.issue(&typed(Kind::Role, "auditor"), &[], &[], common::hour()).unwrap();
    let aud = client(&aud_cert, &aud_key);
    assert_eq!(aud.request("GET", "/restconf/data/zsfc:domain", None, T).await.unwrap().status, 200);

    let audit = zsfc_controller::audit::open_read_only(&r.db).unwrap();
    let count = |like: &str| -> i64 {
        audit.query_row("SELECT count(*) FROM audit WHERE detail LIKE ?1", [like], |r| r.get(0)).unwrap()
    };
    assert_eq!(count("%bound to another key%"), 2, "the old key's rekey and read");
    assert_eq!(count("bind a role to a key from%not allowed%"), 1);
    assert_eq!(count("role bound to key%"), 1);
}

/// Reports of SF drops: a node reports its SFs' drops by subscriber (audited, checked), and
/// only the gateway's node fetches them, by long poll, from where it left off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sf_drops_go_from_the_reporting_node_to_the_gateways_node_only() {
    let mut d = domain();
    d.gateway_nodes = vec!["ingress".into()];
    let (r, ca) = start_with(d).await;
    let node = |name: &str| {
        let (cert, key) = ca.issue(&typed(Kind::Node, name), &[], &[], common::hour()).unwrap();
        Client::new(&r.addr, "controller", &r.ca, Some((&cert, &key))).unwrap()
    };
    let (sf, gw) = (node("node-a"), node("ingress"));
    let report = |c: &Client, drops: serde_json::Value| {
        let body = serde_json::json!({"zsfc:input": {"drops": drops}}).to_string().into_bytes();
        let c = c.clone();
        async move { c.request("POST", "/restconf/operations/zsfc:sf-drops", Some(body), T).await.unwrap() }
    };
    let fetch = |c: &Client, after: u64| {
        let c = c.clone();
        let path = format!("/restconf/data/zsfc:nodes/node=ingress/sf-drops?after={after}");
        async move { c.request("GET", &path, None, T).await.unwrap() }
    };
    let one =
        serde_json::json!([{"sf": "dpi", "subscriber": "00112233aabbccdd", "reason": "sf_dpi_match", "count": 6}]);
    let bad = serde_json::json!([{"sf": "dpi", "subscriber": "alice", "reason": "sf_dpi_match", "count": 6}]);
    assert_eq!(report(&sf, bad).await.status, 400, "a subscriber id is 16 hex digits");
    // The gateway's node waits for a report: the poll answers when it comes.
    let waiting = tokio::spawn(fetch(&gw, 0));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(report(&sf, one).await.status, 200);
    let got = waiting.await.unwrap();
    assert_eq!(got.status, 200, "{}", got.message());
    let v: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
    let drops = &v["zsfc:sf-drops"]["drops"];
    assert_eq!((drops[0]["node"].as_str(), drops[0]["count"].as_u64()), (Some("node-a"), Some(6)), "{v}");
    let last = v["zsfc:sf-drops"]["last"].as_u64().unwrap();
    assert_eq!(last, 1);
    // Another node may not read them, nor ask as the gateway's node.
    assert_eq!(fetch(&sf, 0).await.status, 403);
    let other = sf.request("GET", "/restconf/data/zsfc:nodes/node=node-a/sf-drops?after=0", None, T).await.unwrap();
    assert_eq!(other.status, 404);
    let audit = zsfc_controller::audit::open_read_only(&r.db).unwrap();
    let n: i64 = audit
        .query_row(
            "SELECT count(*) FROM audit WHERE subject = 'node-a' AND detail = ?1",
            ["SF dpi dropped 6 packets of subscriber 00112233aabbccdd (sf_dpi_match)"],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
}

/// Seed 004 REQ1: with a listener per plane, nodes are served on theirs only and the
/// administrative roles on theirs only; each refusal is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_plane_has_a_listener_of_its_own() {
    use zsfc_controller::Plane;
    let (r, ca) = start_with(domain()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let management = listener.local_addr().unwrap().to_string();
    tokio::spawn(zsfc_controller::serve_plane(r.ctl.clone(), listener, "controller", Plane::Management));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let nodes = listener.local_addr().unwrap().to_string();
    tokio::spawn(zsfc_controller::serve_plane(r.ctl.clone(), listener, "controller", Plane::Nodes));
    let at = |addr: &str, name: &str| {
        let kind = if Role::of(name).is_some() { Kind::Role } else { Kind::Node };
        let (cert, key) = ca.issue(&typed(kind, name), &[], &[], common::hour()).unwrap();
        Client::new(addr, "controller", &r.ca, Some((&cert, &key))).unwrap()
    };
    let domain = "/restconf/data/zsfc:domain";
    let status = |c: Client, path: &'static str| async move { c.request("GET", path, None, T).await.unwrap() };
    let ack = |c: Client| async move {
        let body = br#"{"zsfc:input": {"node": "ingress", "version": 0}}"#.to_vec();
        c.request("POST", "/restconf/operations/zsfc:ack", Some(body), T).await.unwrap()
    };
    assert_eq!(status(at(&management, "auditor"), domain).await.status, 200);
    let refused = status(at(&nodes, "auditor"), domain).await;
    assert_eq!(refused.status, 403);
    assert!(refused.message().contains("management interface"), "{}", refused.message());
    assert_eq!(ack(at(&nodes, "ingress")).await.status, 200);
    let refused = ack(at(&management, "ingress")).await;
    assert_eq!(refused.status, 403);
    assert!(refused.message().contains("nodes' interface"), "{}", refused.message());
    // Enrolment (no certificate) belongs to the nodes' interface too.
    let anonymous = Client::new(&management, "controller", &r.ca, None).unwrap();
    let (body, _) = enrol_body(&r.tokens[0].0, &r.tokens[0].1);
    assert_eq!(anonymous.request("POST", "/restconf/operations/zsfc:enrol", Some(body), T).await.unwrap().status, 403);
    // The listener for everything (as without `--management-listen`) serves both.
    assert_eq!(status(at(&r.addr, "auditor"), domain).await.status, 200);
    assert_eq!(ack(at(&r.addr, "ingress")).await.status, 200);
    let audit = zsfc_controller::audit::open_read_only(&r.db).unwrap();
    let n: i64 = audit
        .query_row("SELECT count(*) FROM audit WHERE detail LIKE '%use the %interface'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
}

/// Issue 17: kinds keep identities apart. A client certificate named like a node may not read
/// or poll that node's state, one named like a role holds no role; the node and the role
/// themselves may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_named_like_a_node_or_a_role_acts_as_neither() {
    let (r, ca) = start_with(domain()).await;
    let with = |id: Identity| {
        let (cert, key) = ca.issue(&id, &[], &[], common::hour()).unwrap();
        Client::new(&r.addr, "controller", &r.ca, Some((&cert, &key))).unwrap()
    };
    let get = |c: Client, path: String| async move { c.request("GET", &path, None, T).await.unwrap() };
    let node = r.tokens[0].0.clone();
    let sad = format!("/restconf/data/zsfc:nodes/node={node}");
    assert_ne!(get(with(typed(Kind::Node, &node)), sad.clone()).await.status, 403);
    let refused = get(with(typed(Kind::Client, &node)), sad.clone()).await;
    assert_eq!(refused.status, 403, "{}", refused.message());
    assert!(refused.message().contains(&format!("client/{node} may not")), "{}", refused.message());
    let poll = format!("{sad}/desired?after=0&boot=b&seal={}", "00".repeat(32));
    assert_eq!(get(with(typed(Kind::Client, &node)), poll).await.status, 403);
    let domain = "/restconf/data/zsfc:domain".to_owned();
    assert_eq!(get(with(typed(Kind::Role, "operator")), domain.clone()).await.status, 200);
    assert_eq!(get(with(typed(Kind::Client, "operator")), domain.clone()).await.status, 403);
    // Another domain's identity (same CA here, as a CA shared by mistake would be) is refused.
    let foreign = Identity::new("elsewhere", Kind::Role, "operator").unwrap();
    assert_eq!(get(with(foreign), domain).await.status, 403);
    let audit = zsfc_controller::audit::open_read_only(&r.db).unwrap();
    let refusals: Vec<String> = audit
        .prepare("SELECT subject || ' ' || detail FROM audit WHERE kind = 'refused'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for want in [format!("client/{node} read a node"), "client/operator read the domain".to_owned()] {
        assert!(refusals.iter().any(|x| x.starts_with(&want)), "no audit row {want:?} in {refusals:?}");
    }
    assert!(refusals.iter().any(|x| x.starts_with("spiffe://elsewhere/role/operator")), "{refusals:?}");
}

/// A domain stored before there could be several gateways (`gateway_node`, one name) reads as
/// one gateway; several are kept in order; and a gateway must be a node of the domain.
#[test]
fn a_stored_domain_names_one_gateway_or_several() {
    let mut v = serde_json::to_value(domain()).unwrap();
    v["gateway_node"] = "ingress".into();
    let d: DomainSpec = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(d.gateway_nodes, ["ingress"]);
    let mut both = v.clone();
    both.as_object_mut().unwrap().remove("gateway_node");
    both["gateway_nodes"] = serde_json::json!(["ingress", "egress"]);
    let d: DomainSpec = serde_json::from_value(both).unwrap();
    assert_eq!(d.gateway_nodes, ["ingress", "egress"]);
    assert_eq!(serde_json::to_value(&d).unwrap()["gateway_nodes"], serde_json::json!(["ingress", "egress"]));
    let dir = std::env::temp_dir().join(format!("zsfc-gw-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let wrong = DomainSpec { gateway_nodes: vec!["nosuch".into()], ..domain() };
    let e = Controller::init(&dir.join("c.db"), &wrong).map(|_| ()).unwrap_err().to_string();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(e.contains("gateway_nodes[0]"), "{e}");
}

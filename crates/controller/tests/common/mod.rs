//! What the controller's API tests share: a controller of a test domain on loopback, typed
//! identities of that domain, enrolment bodies.
#![allow(dead_code)] // each test binary uses its own part
#![expect(
    clippy::unwrap_used,
    reason = "helpers of tests and benchmarks: a failure should stop them loudly, with its place"
)]
use std::sync::Arc;
use std::time::Duration;
use zsfc_config::Topology;
use zsfc_controller::{Controller, DomainSpec};
use zsfc_identity::{Identity, Kind};

pub const T: Duration = Duration::from_secs(10);

/// An identity of the test domain.
pub fn typed(kind: Kind, name: &str) -> Identity {
    Identity::new("enrol", kind, name).unwrap()
}

/// A validity of an hour from now, for certificates a test issues itself.
pub fn hour() -> zsfc_controller::pki::Validity {
    zsfc_controller::pki::Validity::from_now(Duration::from_secs(3600))
}

pub fn domain() -> DomainSpec {
    let text = include_str!("../../../../examples/inmemory-topology.toml");
    DomainSpec {
        name: "enrol".into(),
        topology: Topology::from_toml(text).unwrap(),
        gateway_nodes: Vec::new(),
        grants: Vec::new(),
        rekey: Default::default(),
        api: Default::default(),
        revoked: Vec::new(),
    }
}

pub struct Running {
    pub _dir: tempfile::TempDir,
    pub db: std::path::PathBuf,
    pub ctl: Arc<Controller>,
    pub addr: String,
    pub ca: String,
    pub tokens: Vec<(String, String)>,
}

pub async fn start() -> Running {
    start_with(domain()).await.0
}

/// A controller of domain `d` serving on loopback, and its CA (to issue more certificates).
pub async fn start_with(d: DomainSpec) -> (Running, zsfc_controller::pki::Ca) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let (init, domain_ca) = Controller::init(&db, &d).unwrap();
    let ca = domain_ca.pem().to_owned();
    let tokens = init.tokens.iter().map(|(n, t)| (n.clone(), t.to_string())).collect();
    let ctl = Controller::open(&db).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(zsfc_controller::serve(ctl.clone(), listener, "controller"));
    tokio::spawn(ctl.clone().run_background());
    (Running { _dir: dir, db, ctl, addr, ca, tokens }, domain_ca)
}

pub fn enrol_body(node: &str, token: &str) -> (Vec<u8>, String) {
    let (csr, key) = zsfc_controller::pki::new_csr(node).unwrap();
    (
        serde_json::json!({"zsfc:input": {"node": node, "token": token, "csr": csr}}).to_string().into_bytes(),
        key.to_string(),
    )
}

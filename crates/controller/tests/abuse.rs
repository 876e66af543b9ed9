//! Issue 18: the control plane against a caller who abuses it — a node poisoning the
//! controller's view and the audit log, bodies too large, garbage handshakes, connections that
//! complete TLS and then say nothing (slowloris). A real controller on loopback, real TLS.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers of tests and benchmarks: a failure should stop them loudly, with its place"
)]
mod common;
use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zsfc_controller::client::Client;
use zsfc_identity::Kind;

fn audit_rows(r: &Running, sql_where: &str) -> Vec<String> {
    let db = zsfc_controller::audit::open_read_only(&r.db).unwrap();
    let mut q = db.prepare(&format!("SELECT subject || ' ' || detail FROM audit WHERE {sql_where}")).unwrap();
    q.query_map([], |row| row.get(0)).unwrap().map(Result::unwrap).collect()
}

/// An acknowledgement of a version the node was never pushed is refused (it would show the
/// domain converged on a state the node never had), and an error text of 100 KB becomes an
/// audit record of at most about half a KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cannot_acknowledge_what_it_was_never_pushed_or_flood_the_audit_log() {
    let (r, ca) = start_with(domain()).await;
    let node = r.tokens[0].0.clone();
    let (cert, key) = ca.issue(&typed(Kind::Node, &node), &[], &[], common::hour()).unwrap();
    let c = Client::new(&r.addr, "controller", &r.ca, Some((&cert, &key))).unwrap();
    let ack = |version: u64, error: Option<String>| {
        let body = serde_json::json!({"zsfc:input": {"node": node, "version": version, "error": error}});
        let c = c.clone();
        async move {
            c.request("POST", "/restconf/operations/zsfc:ack", Some(body.to_string().into_bytes()), T).await.unwrap()
        }
    };
    let refused = ack(1_000_000_000_000, None).await;
    assert_eq!(refused.status, 400, "{}", refused.message());
    assert!(refused.message().contains("never pushed"), "{}", refused.message());
    let status = r.ctl.status();
    let acked = status["zsfc:domain"]["nodes"].as_array().unwrap().iter().find(|n| n["name"] == node.as_str()).unwrap()
        ["acked-version"]
        .as_u64()
        .unwrap();
    assert!(acked < 1_000_000_000_000, "{status}");
    assert_eq!(ack(0, Some("x".repeat(100_000))).await.status, 200);
    let rows = audit_rows(&r, "detail LIKE '%refused by the node%'");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(
        rows[0].len() < 800 && rows[0].contains("100000 bytes in all"),
        "{} bytes: {}",
        rows[0].len(),
        &rows[0][..100]
    );
    assert_eq!(audit_rows(&r, "detail LIKE '%never pushed%'").len(), 1);
}

/// A TLS connection to the controller without a client certificate.
async fn anonymous_tls(r: &Running) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls_pki_types::CertificateDer::from_pem_slice(r.ca.as_bytes()).unwrap()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(&r.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("controller").unwrap();
    tls.connect(name, tcp).await.expect("the handshake itself succeeds")
}

/// A body larger than the limit is answered 413: 3 MiB sent at once, and 200 MB announced by a
/// caller that waits for `100 Continue` (as curl does) — it gets the 413 instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_answered_413() {
    let (r, ca) = start_with(domain()).await;
    let (cert, key) = ca.issue(&typed(Kind::Role, "operator"), &[], &[], common::hour()).unwrap();
    let c = Client::new(&r.addr, "controller", &r.ca, Some((&cert, &key))).unwrap();
    let big = vec![b' '; 3 << 20];
    let reply = c.request("PUT", "/restconf/data/zsfc:domain/grants", Some(big), T).await.unwrap();
    assert_eq!(reply.status, 413, "{}", reply.message());
    let mut s = anonymous_tls(&r).await;
    let head = "PUT /restconf/data/zsfc:domain/grants HTTP/1.1\r\nHost: controller\r\n\
                Content-Length: 200000000\r\nExpect: 100-continue\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 64];
    let n = tokio::time::timeout(T, s.read(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
}

/// 300 connections that are not TLS are one or two audit rows, not 300.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_handshakes_are_audited_as_a_summary() {
    let r = start().await;
    for _ in 0..300 {
        let mut s = tokio::net::TcpStream::connect(&r.addr).await.unwrap();
        let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n").await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rows = audit_rows(&r, "detail LIKE '%TLS handshake%'");
    assert!((1..=3).contains(&rows.len()), "{} rows, the first: {:?}", rows.len(), &rows[..rows.len().min(3)]);
}

/// A caller that completes the TLS handshake without a certificate and then sends nothing (or
/// half a request line) is cut off within seconds, not held open for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_says_nothing_after_the_handshake_is_closed() {
    let r = start().await;
    for half in [&b""[..], b"GET /restconf/data/zsfc:domain HTTP/1.1\r\nHost: contr"] {
        let mut s = anonymous_tls(&r).await;
        s.write_all(half).await.unwrap();
        let t = Instant::now();
        let mut buf = [0u8; 512];
        let closed = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "{:?}: still open after 15 s", String::from_utf8_lossy(half));
        assert!(t.elapsed() < Duration::from_secs(8), "closed only after {:?}", t.elapsed());
    }
}

//! A node's counters as Prometheus metrics (prometheus-client), served over HTTP (axum) at
//! `GET /metrics` on the node's `metrics` address. The packet loop publishes the engine's and
//! the drivers' counters once a second (absolute values stored into the metrics' atomics: no
//! lock, no allocation per packet); the gateway's counters are read when scraped.
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use zsfc_dataplane::Node;
use zsfc_io::IoStats;

type Labels = Vec<(&'static str, String)>;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metric families one node exports.
#[derive(Debug, Clone, Default)]
pub(crate) struct Metrics {
    packets: Family<Labels, Counter>,
    drops: Family<Labels, Counter>,
    sf: Family<Labels, Counter>,
    cached: Family<Labels, Gauge>,
    gateway: Family<Labels, Counter>,
    sas: Family<Labels, Counter>,
    peer_up: Family<Labels, Gauge>,
    peer_silent: Family<Labels, Gauge>,
    peer_downs: Family<Labels, Counter>,
    circuit_up: Family<Labels, Gauge>,
    pinned: Gauge,
    /// Peer names by id (the metrics' `peer` label).
    peer_names: Arc<Vec<(u32, String)>>,
}

/// The registry of node `node`: one set of families per worker lane (labelled `lane` when there
/// are several).
pub(crate) fn registry(node: &str, lanes: &[Metrics]) -> Registry {
    let mut r = Registry::with_prefix_and_labels("zsfc", [("node".into(), node.to_owned().into())].into_iter());
    if let [only] = lanes {
        only.register(&mut r);
    } else {
        for (k, m) in lanes.iter().enumerate() {
            m.register(r.sub_registry_with_label(("lane".into(), k.to_string().into())));
        }
    }
    r
}

impl Metrics {
    /// The families of a node whose peers are `peer_names` (by id).
    pub(crate) fn new(peer_names: Vec<(u32, String)>) -> Self {
        Self { peer_names: Arc::new(peer_names), ..Self::default() }
    }

    fn register(&self, r: &mut Registry) {
        r.register("packets", "Packets by where they went (driver and engine counters)", self.packets.clone());
        r.register("drops", "Packets dropped by the engine, by reason", self.drops.clone());
        r.register("sf", "Counters of each SF and its caching proxy", self.sf.clone());
        r.register("proxy_cached", "Packets inside each SF now (proxy cache entries)", self.cached.clone());
        r.register(
            "gateway",
            "Gateway connections: accepted, served, refused by reason; blocks begun; packets SFs dropped for a served client",
            self.gateway.clone(),
        );
        r.register(
            "sas",
            "SAs whose key was erased at the hard lifetime, and retired inbound SAs removed once quiet",
            self.sas.clone(),
        );
        r.register(
            "peer_up",
            "Liveness of each peer: 1 while its probes arrive (RFC 5880 session up)",
            self.peer_up.clone(),
        );
        r.register(
            "peer_silent_ms",
            "Milliseconds since the last liveness probe from each peer (-1: never)",
            self.peer_silent.clone(),
        );
        r.register("peer_downs", "How often each peer's liveness session went down", self.peer_downs.clone());
        r.register(
            "sf_circuit_up",
            "Each external SF's attachment circuit: 1 while its probes come back, 0 when they stopped, -1 not yet known",
            self.circuit_up.clone(),
        );
        r.register("flows_pinned", "Flows pinned to their SF pool instances", self.pinned.clone());
    }

    fn set(family: &Family<Labels, Counter>, labels: Labels, v: u64) {
        family.get_or_create(&labels).inner().store(v, Ordering::Relaxed);
    }

    /// Publishes the current counters (called once a second by the packet loop).
    pub(crate) fn publish(&self, io: &IoStats, node: &Node) {
        let s = node.stats();
        for (what, v) in [
            ("udp_rx", io.udp_rx),
            ("udp_tx", io.udp_tx),
            ("udp_unknown_source", io.udp_unknown_source),
            ("eth_rx", io.eth_rx),
            ("eth_tx", io.eth_tx),
            ("eth_other", io.eth_other),
            ("eth_ring_errors", io.eth_ring_errors),
            ("tun_rx", io.tun_rx),
            ("tun_tx", io.tun_tx),
            ("sf_rx", io.sf_rx),
            ("sf_tx", io.sf_tx),
            ("undeliverable", io.undeliverable),
            ("classified", s.classified),
            ("forwarded", s.forwarded),
            ("delivered", s.delivered),
            ("mss_clamped", s.mss_clamped),
            ("probes_tx", s.probes_tx),
            ("probes_rx", s.probes_rx),
            ("probes_ignored", s.probes_ignored),
            ("circuit_probes_tx", s.circuit_probes_tx),
            ("circuit_probes_rx", s.circuit_probes_rx),
            ("flows_moved", s.flows_moved),
            ("pins_refused", s.pins_refused),
            ("icmp_too_big", s.icmp_too_big),
        ] {
            Self::set(&self.packets, vec![("what", what.to_owned())], v);
        }
        let at = node.housekept_at();
        for p in node.liveness() {
            let name = self
                .peer_names
                .iter()
                .find(|(id, _)| *id == p.peer.0)
                .map_or_else(|| p.peer.0.to_string(), |n| n.1.clone());
            let l = vec![("peer", name)];
            self.peer_up.get_or_create(&l).set(i64::from(p.up));
            let silent = p.last_seen.map_or(-1, |t| at.saturating_since(t).as_millis() as i64);
            self.peer_silent.get_or_create(&l).set(silent);
            Self::set(&self.peer_downs, l, p.downs);
        }
        for c in node.circuits() {
            let name = node.sf_report(c.sf).map_or_else(|| c.sf.0.to_string(), |r| r.name);
            self.circuit_up.get_or_create(&vec![("sf", name)]).set(c.up.map_or(-1, i64::from));
        }
        self.pinned.set(node.pinned_flows() as i64);
        for (what, v) in [("erased", s.sas_erased), ("retired", s.sas_retired)] {
            Self::set(&self.sas, vec![("what", what.to_owned())], v);
        }
        // Every drop by its reason, the engine's and the drivers' alike.
        for (r, n) in node.drops().nonzero().chain(io.drops().into_iter().filter(|d| d.1 > 0)) {
            Self::set(&self.drops, vec![("reason", r.name().to_owned())], n);
        }
        for id in node.sf_ids() {
            let Some(r) = node.sf_report(id) else { continue };
            let p = &r.proxy;
            let proxy = [
                ("proxy_rx_success", p.rx_success),
                ("proxy_rx_ignored", p.rx_ignored),
                ("proxy_rx_collision", p.rx_collision),
                ("proxy_tx_success", p.tx_success),
                ("proxy_tx_ignored", p.tx_ignored),
                ("proxy_tx_not_cached", p.tx_not_cached),
                ("proxy_evicted", p.evicted),
                ("proxy_expired", p.expired),
                ("proxy_sf_dropped", p.sf_dropped),
            ];
            for (k, v) in proxy.into_iter().chain(r.counters.iter().copied()) {
                Self::set(&self.sf, vec![("sf", r.name.clone()), ("counter", k.to_owned())], v);
            }
            self.cached.get_or_create(&vec![("sf", r.name.clone())]).set(r.cached as i64);
        }
    }

    pub(crate) fn publish_gateway(&self, g: &zsfc_gateway::GatewayStats) {
        Self::set(&self.gateway, vec![("outcome", "accepted".into())], g.accepted.load(Ordering::Relaxed));
        Self::set(&self.gateway, vec![("outcome", "served".into())], g.served.load(Ordering::Relaxed));
        Self::set(&self.gateway, vec![("outcome", "blocks".into())], g.blocks.load(Ordering::Relaxed));
        Self::set(&self.gateway, vec![("outcome", "sf_drops".into())], g.sf_drops.load(Ordering::Relaxed));
        for r in zsfc_gateway::ClientRefusal::ALL {
            Self::set(&self.gateway, vec![("outcome", format!("refused_{}", r.name()))], g.refused(r));
        }
    }
}

/// Serves `GET /metrics` on `listen` from a thread of its own.
pub(crate) fn serve(
    listen: SocketAddr,
    registry: Registry,
    metrics: Metrics,
    gateway: Option<Arc<zsfc_gateway::GatewayStats>>,
) -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(listen).map_err(|e| anyhow::anyhow!("metrics on {listen}: {e}"))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let registry = Arc::new(registry);
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let (registry, metrics, gateway) = (registry.clone(), metrics.clone(), gateway.clone());
                    async move {
                        if let Some(g) = &gateway {
                            metrics.publish_gateway(g);
                        }
                        let mut body = String::new();
                        match encode(&mut body, &registry) {
                            Ok(()) => ([(CONTENT_TYPE, OPENMETRICS)], body).into_response(),
                            Err(_) => {
                                (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "encoding failed").into_response()
                            }
                        }
                    }
                }),
            );
            let _ = axum::serve(listener, app).await;
        });
    })?;
    Ok(local)
}

//! What the node's engines raise, reported to the controller: SA events (`sadb-expire` at the
//! soft lifetime, `sadb-bad-spi`), SF drops naming a subscriber, and liveness (the peers'
//! sessions, the external SFs' attachment circuits).
use std::collections::HashMap;
use std::sync::mpsc::Receiver;
use std::time::Duration;
use zsfc_config::ikeless::sa_name;
use zsfc_controller::client::Client;
use zsfc_dataplane::{DropReason, Event};

/// Most subscribers one report of SF drops names; more within one period are not reported.
const MAX_SF_DROP_SUBSCRIBERS: usize = 256;
/// How often SF drops are reported (they are summed per subscriber, SF and reason meanwhile).
const SF_DROP_PERIOD: Duration = Duration::from_millis(200);

/// How often the agent repeats its peers' and circuits' liveness to the controller when
/// nothing changed (the controller forgets a report after 10 s).
const LIVENESS_REFRESH: Duration = Duration::from_secs(2);

/// Forwards the engines' events: one `sadb-expire` per SA, one `sadb-bad-spi` per SPI and 10
/// seconds, the SF drops of each period, summed per subscriber, and the liveness of the peers
/// and of the external SFs' circuits on every change and every [`LIVENESS_REFRESH`]. Events
/// come with the lane whose engine raised them.
pub(crate) fn report_events(
    client: &Client,
    name: &str,
    events: &Receiver<(usize, Event)>,
    sf_names: &[String],
    peer_names: &[(u32, String)],
) {
    let mut bad_spi_seen: HashMap<u32, std::time::Instant> = HashMap::new();
    let mut expired_seen = std::collections::HashSet::new();
    let mut drops: HashMap<(u64, u32, DropReason), u32> = HashMap::new();
    let mut since = std::time::Instant::now();
    // Each peer's session per lane (every lane probes each peer on its own): the peer is up
    // while a lane's session is, down when every lane's is (its node is gone, not one path).
    let mut peers: std::collections::BTreeMap<(u32, usize), (bool, u64)> = Default::default();
    // Each external SF's circuit per lane: every lane hands its own flows to its own circuit,
    // so the node is usable for the SF only while every lane's circuit returns probes.
    let mut circuits: std::collections::BTreeMap<(u32, usize), (bool, u64)> = Default::default();
    let (mut peers_changed, mut peers_sent) = (false, std::time::Instant::now());
    loop {
        let anything = !peers.is_empty() || !circuits.is_empty();
        if anything && (peers_changed || peers_sent.elapsed() >= LIVENESS_REFRESH) {
            let list = peer_reports(&peers, peer_names);
            let body = serde_json::json!({"zsfc:input": {"peers": list, "sfs": circuit_reports(&circuits, sf_names)}});
            let path = "/restconf/operations/zsfc:liveness";
            if let Err(e) = client.blocking("POST", path, Some(body.to_string().into_bytes()), Duration::from_secs(5)) {
                tracing::warn!("agent {name:?}: reporting liveness: {e:#}");
            }
            (peers_changed, peers_sent) = (false, std::time::Instant::now());
        }
        if !drops.is_empty() && since.elapsed() >= SF_DROP_PERIOD {
            let list: Vec<zsfc_controller::SfDrops> = drops
                .drain()
                .map(|((subscriber, sf, reason), count)| zsfc_controller::SfDrops {
                    seq: 0,
                    node: String::new(),
                    sf: sf_names.get(sf as usize).cloned().unwrap_or_else(|| format!("sf{sf}")),
                    subscriber: format!("{subscriber:016x}"),
                    reason: reason.name().to_owned(),
                    count,
                })
                .collect();
            let body = serde_json::json!({"zsfc:input": {"drops": list}});
            let path = "/restconf/operations/zsfc:sf-drops";
            if let Err(e) = client.blocking("POST", path, Some(body.to_string().into_bytes()), Duration::from_secs(5)) {
                tracing::warn!("agent {name:?}: reporting SF drops: {e:#}");
            }
        }
        let e = match events.recv_timeout(SF_DROP_PERIOD) {
            Ok(e) => e,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let (lane, e) = e;
        let (path, body) = match e {
            Event::CircuitChanged { sf, up, unix_ms } => {
                let what = sf_names.get(sf.0 as usize).map_or("?", String::as_str);
                let state = if up { "returns probes" } else { "DOES NOT return probes: unusable" };
                tracing::info!("zsfc node {name:?}: external SF {what} (lane {lane}) {state}");
                circuits.insert((sf.0, lane), (up, unix_ms));
                peers_changed = true;
                continue;
            }
            Event::PeerChanged { peer, up, unix_ms } => {
                let who = peer_names.iter().find(|p| p.0 == peer.0).map_or("?", |p| p.1.as_str());
                tracing::info!("zsfc node {name:?}: peer {who} is {} (liveness)", if up { "up" } else { "DOWN" });
                peers.insert((peer.0, lane), (up, unix_ms));
                peers_changed = true;
                continue;
            }
            Event::SfDrop { subscriber, sf, reason } => {
                if drops.is_empty() {
                    since = std::time::Instant::now();
                }
                if drops.len() < MAX_SF_DROP_SUBSCRIBERS || drops.contains_key(&(subscriber, sf.0, reason)) {
                    *drops.entry((subscriber, sf.0, reason)).or_default() += 1;
                }
                continue;
            }
            Event::RekeyWanted { spi, .. } => {
                let sa = sa_name(zsfc_config::configured_spi(spi));
                if !expired_seen.insert(sa.clone()) {
                    continue;
                }
                (
                    "/restconf/operations/ietf-i2nsf-ikeless:sadb-expire",
                    serde_json::json!({"ietf-i2nsf-ikeless:input": {"ipsec-sa-name": sa, "soft-lifetime-expire": true}}),
                )
            }
            Event::BadSpi { spi } => {
                let now = std::time::Instant::now();
                if bad_spi_seen.get(&spi).is_some_and(|t| now.duration_since(*t) < Duration::from_secs(10)) {
                    continue;
                }
                bad_spi_seen.insert(spi, now);
                (
                    "/restconf/operations/ietf-i2nsf-ikeless:sadb-bad-spi",
                    serde_json::json!({"ietf-i2nsf-ikeless:input": {"spi": spi}}),
                )
            }
        };
        if let Err(e) = client.blocking("POST", path, Some(body.to_string().into_bytes()), Duration::from_secs(5)) {
            tracing::warn!("agent {name:?}: reporting {e:#}");
        }
    }
}

/// One report per peer: up while any lane's session is, since the latest change.
fn peer_reports(
    peers: &std::collections::BTreeMap<(u32, usize), (bool, u64)>,
    peer_names: &[(u32, String)],
) -> Vec<zsfc_controller::PeerReport> {
    let mut out: Vec<(u32, zsfc_controller::PeerReport)> = Vec::new();
    for (&(id, _), &(up, since)) in peers {
        let Some((_, name)) = peer_names.iter().find(|p| p.0 == id) else { continue };
        match out.last_mut() {
            Some((last, r)) if *last == id => {
                r.up |= up;
                r.since_unix_ms = r.since_unix_ms.max(since);
            }
            _ => out.push((id, zsfc_controller::PeerReport { peer: name.clone(), up, since_unix_ms: since })),
        }
    }
    out.into_iter().map(|(_, r)| r).collect()
}

/// One report per external SF: up while every lane's circuit is, since the latest change.
fn circuit_reports(
    circuits: &std::collections::BTreeMap<(u32, usize), (bool, u64)>,
    sf_names: &[String],
) -> Vec<zsfc_controller::CircuitReport> {
    let mut out: Vec<zsfc_controller::CircuitReport> = Vec::new();
    for (&(sf, _), &(up, since)) in circuits {
        let name = sf_names.get(sf as usize).cloned().unwrap_or_else(|| format!("sf{sf}"));
        match out.last_mut() {
            Some(r) if r.sf == name => {
                r.up &= up;
                r.since_unix_ms = r.since_unix_ms.max(since);
            }
            _ => out.push(zsfc_controller::CircuitReport { sf: name, up, since_unix_ms: since }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// With several lanes a peer is down only when every lane's session is, and an external
    /// SF is usable only while every lane's circuit is.
    #[test]
    fn lanes_are_summed_up_per_peer_and_per_sf() {
        let names = [(1, "sf1".to_owned()), (2, "sf2".to_owned())];
        let peers =
            BTreeMap::from([((1, 0), (false, 10)), ((1, 1), (true, 20)), ((2, 0), (false, 5)), ((2, 1), (false, 7))]);
        let r = peer_reports(&peers, &names);
        let got: Vec<(&str, bool, u64)> = r.iter().map(|p| (p.peer.as_str(), p.up, p.since_unix_ms)).collect();
        assert_eq!(got, [("sf1", true, 20), ("sf2", false, 7)]);
        let sfs = ["fw".to_owned()];
        let circuits = BTreeMap::from([((0, 0), (true, 3)), ((0, 1), (false, 9))]);
        let c = circuit_reports(&circuits, &sfs);
        assert_eq!((c.len(), c[0].sf.as_str(), c[0].up, c[0].since_unix_ms), (1, "fw", false, 9));
    }
}

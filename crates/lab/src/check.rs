//! Checking a lab's expected outcomes (`zsfc check`, `zsfc run`): each client's request made
//! for real (curl over mutual TLS, a UDP datagram), and the evidence that an SF blocked what it
//! should (the engines' drop counters, the external SFs' iptables counters) or that the gateway
//! refused for the expected reason (its log).
use crate::build::site_files;
use crate::plan::{CertChoice, Lab, LabPlan, Outcome, ServiceKind};
use crate::shell::in_ns;
use crate::state::State;
use anyhow::{Context, bail};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a client waits for an answer before a request counts as blocked.
const BLOCK_TIMEOUT_S: u32 = 4;

/// One checked outcome.
#[derive(Debug)]
pub struct Checked {
    pub what: String,
    pub want: String,
    pub got: String,
    pub ok: bool,
}

/// The samples of `metric` in a metrics text, keyed by the value of `label` (one entry per
/// sample: a node with several lanes has one per lane).
pub fn metric_values(text: &str, metric: &str, label: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter_map(|l| {
            let (labels, v) = l.rsplit_once(' ')?;
            let key = labels.split(&format!("{label}=\"")).nth(1)?.split('"').next()?;
            Some((key.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// Engine drop reasons that are an SF's decision to block traffic.
const BLOCKING_DROPS: [&str; 3] = ["sf_dpi_match", "sf_firewall_deny", "sf_rate_limited"];

/// Packets SFs have blocked in the whole domain so far: the engines' blocking drops (from every
/// node's metrics) and the packets matched by DROP or REJECT rules in external SFs' iptables.
fn blocked_by_sfs(plan: &LabPlan) -> u64 {
    let url = format!("http://{}/metrics", crate::METRICS_LISTEN);
    let engines: u64 = plan
        .nodes
        .iter()
        .filter_map(|n| in_ns(&n.ns, &["curl", "-s", "--max-time", "2", &url]).ok())
        .flat_map(|text| metric_values(&text, "zsfc_drops_total", "reason"))
        .filter(|(reason, _)| BLOCKING_DROPS.contains(&reason.as_str()))
        .map(|(_, v)| v)
        .sum();
    let externals: u64 = plan
        .external_sfs
        .iter()
        .filter_map(|sf| in_ns(&sf.ns, &["iptables", "-nvxL"]).ok())
        .map(|t| dropped_by_rules(&t))
        .sum();
    engines + externals
}

/// Packets the border of the ingress node (`build::close_border`) dropped so far: its DROP rules'
/// counters in the raw and filter tables.
pub fn border_drops(gw_ns: &str) -> Option<u64> {
    let filter = in_ns(gw_ns, &["iptables", "-nvxL"]).ok()?;
    let raw = in_ns(gw_ns, &["iptables", "-t", "raw", "-nvxL"]).ok()?;
    Some(dropped_by_rules(&filter) + dropped_by_rules(&raw))
}

/// Packets matched by DROP or REJECT rules in `iptables -nvxL` output.
fn dropped_by_rules(listing: &str) -> u64 {
    listing
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 2 && matches!(f[2], "DROP" | "REJECT")).then(|| f[0].parse::<u64>().ok()).flatten()
        })
        .sum()
}

/// Brings about every expected outcome of `lab` (`expect[]`) and says what happened.
pub fn run_checks(lab: &Lab, plan: &LabPlan, state: &State) -> anyhow::Result<Vec<Checked>> {
    let gw_log = state.log(&plan.nodes[plan.gateway.node].name);
    let refusals = |reason: &str| {
        std::fs::read_to_string(&gw_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("gateway: refused ") && l.contains(&format!("reason={reason}")))
            .count()
    };
    let mut out = Vec::new();
    for e in &lab.expect {
        let client = plan.clients.iter().find(|c| c.name == e.client).context("client")?;
        let service = plan.services.iter().find(|s| s.name == e.service).context("service")?;
        let cert = match e.certificate {
            CertChoice::Own => " with its certificate",
            CertChoice::None => " without a certificate",
            CertChoice::Outsider => " with another CA's certificate",
        };
        let what = format!("{}{cert}: {} {}", e.client, e.service, e.request);
        let want = match (e.outcome, &e.reason) {
            (Outcome::Refused, Some(r)) => format!("refused ({r})"),
            (o, _) => format!("{o:?}").to_lowercase(),
        };
        let before = e.reason.as_deref().map(&refusals);
        let blocked_before = (e.outcome == Outcome::Blocked).then(|| blocked_by_sfs(plan));
        let (mut got, outcome) = match service.kind {
            ServiceKind::Http => fetch_page(plan, &state.pki(), client, service, &e.request, e.certificate)?,
            ServiceKind::UdpEcho => udp_request(client, service, &e.request)?,
            ServiceKind::Iperf3 => bail!("expect[]: an iperf3 service is for benchmarks, not for expected outcomes"),
        };
        let mut ok = outcome == Some(e.outcome);
        if let (Some(Outcome::Blocked), Some(n)) = (outcome, blocked_before) {
            // No answer is not enough: an SF must have dropped it (the counters are published
            // once a second).
            let t = Instant::now();
            while blocked_by_sfs(plan) <= n && t.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(200));
            }
            let by = blocked_by_sfs(plan).saturating_sub(n);
            got =
                if by > 0 { format!("{got}, {by} pkt dropped by SFs") } else { format!("{got}, but no SF dropped it") };
            ok &= by > 0;
        }
        if let (Some(r), Some(n)) = (e.reason.as_deref(), before) {
            // The gateway logs after it decides; give it a moment.
            let t = Instant::now();
            while refusals(r) <= n && t.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(50));
            }
            ok &= refusals(r) > n;
        }
        out.push(Checked { what, want, got, ok });
    }
    Ok(out)
}

/// Fetches over mutual TLS with curl in the client's namespace. `/` fetches the whole page.
pub fn fetch_page(
    plan: &LabPlan,
    pki: &Path,
    client: &crate::PlannedClient,
    service: &crate::PlannedService,
    request: &str,
    cert: CertChoice,
) -> anyhow::Result<(String, Option<Outcome>)> {
    let host = &service.server_name;
    let resolve = format!("{host}:{}:{}", plan.gateway.port, plan.gateway.address);
    let (paths, want_bytes): (Vec<String>, Option<u64>) = if request == "/" {
        let files = site_files(service.files, service.bytes);
        (files.iter().map(|(n, _)| format!("/{n}")).collect(), Some(service.bytes))
    } else {
        (vec![request.to_owned()], None)
    };
    let urls: Vec<String> = paths.iter().map(|p| format!("https://{host}:{}{p}", plan.gateway.port)).collect();
    let ca = pki.join("ca.pem");
    let dir = match cert {
        CertChoice::Own => Some(pki.join("clients")),
        CertChoice::Outsider => Some(pki.join("outsider")),
        CertChoice::None => None,
    };
    let cert_files = dir.map(|d| (d.join(format!("{}.pem", client.name)), d.join(format!("{}.key", client.name))));
    let max_time = BLOCK_TIMEOUT_S.to_string();
    let mut args: Vec<String> = ["netns", "exec", &client.ns, "curl", "-s", "--max-time", &max_time, "--cacert"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    args.push(ca.display().to_string());
    if let Some((c, k)) = &cert_files {
        args.extend(["--cert".into(), c.display().to_string(), "--key".into(), k.display().to_string()]);
    }
    args.extend(["--resolve".into(), resolve, "-w".into(), "%{http_code} %{size_download}\\n".into()]);
    // One connection per file, as a browser's parallel fetches are: each file is a flow of its
    // own (spread over worker lanes), and the service's keep-alive is exercised elsewhere.
    args.extend(["-H".into(), "Connection: close".into()]);
    for u in &urls {
        args.extend(["-o".into(), "/dev/null".into(), u.clone()]);
    }
    let t = Instant::now();
    let out = Command::new("ip").args(&args).stdin(Stdio::null()).output().context("running curl")?;
    let secs = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut ok_files = 0;
    let mut bytes = 0u64;
    for l in stdout.lines() {
        let mut f = l.split_whitespace();
        if f.next() == Some("200") {
            ok_files += 1;
            bytes += f.next().and_then(|b| b.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    let code = out.status.code().unwrap_or(-1);
    let served = code == 0 && ok_files == urls.len() && want_bytes.is_none_or(|w| w == bytes);
    Ok(match (served, code) {
        (true, _) => (format!("{ok_files} files, {bytes} B in {secs:.2} s"), Some(Outcome::Served)),
        (false, 0) => (format!("answered, but: {}", stdout.trim().replace('\n', ", ")), None),
        // curl 28: the operation timed out (the session stood, no answer came).
        (false, 28) => (format!("no answer in {BLOCK_TIMEOUT_S} s"), Some(Outcome::Blocked)),
        (false, c) => (format!("refused by the gateway (curl {c})"), Some(Outcome::Refused)),
    })
}

/// Sends one datagram from the client's namespace and waits for the echo.
fn udp_request(
    client: &crate::PlannedClient,
    service: &crate::PlannedService,
    request: &str,
) -> anyhow::Result<(String, Option<Outcome>)> {
    const SEND: &str = "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(float(sys.argv[4]))\ns.sendto(sys.argv[3].encode(),(sys.argv[1],int(sys.argv[2])))\ntry:\n print(s.recv(65535).decode())\nexcept socket.timeout:\n print('<timeout>')\n";
    let out = in_ns(
        &client.ns,
        &[
            "python3",
            "-c",
            SEND,
            &service.address.to_string(),
            &service.port.to_string(),
            request,
            &BLOCK_TIMEOUT_S.to_string(),
        ],
    )?;
    let answer = out.trim();
    Ok(if answer == format!("re:{request}") {
        (format!("echo {answer:?}"), Some(Outcome::Served))
    } else {
        (format!("no echo ({answer})"), Some(Outcome::Blocked))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_evidence_is_read_from_metrics_and_iptables_counters() {
        let metrics = "# TYPE zsfc_drops counter\nzsfc_drops_total{node=\"sf\",reason=\"sf_dpi_match\"} 6\n\
                       zsfc_drops_total{node=\"sf\",reason=\"esp_auth\"} 2\nzsfc_packets_total{what=\"udp_rx\"} 9\n";
        let drops = metric_values(metrics, "zsfc_drops_total", "reason");
        assert_eq!(drops, vec![("sf_dpi_match".to_owned(), 6), ("esp_auth".to_owned(), 2)]);
        let listing = "Chain INPUT (policy ACCEPT 0 packets, 0 bytes)\n    pkts      bytes target     prot opt in     out     source               destination\n\
                       Chain FORWARD (policy ACCEPT 120 packets, 9000 bytes)\n    pkts      bytes target     prot opt in     out     source               destination\n\
                       \x20      6      400 DROP       0    --  *      *       0.0.0.0/0            0.0.0.0/0            STRING match  \"test\"\n\
                       \x20      2      100 REJECT     17   --  *      *       0.0.0.0/0            0.0.0.0/0            reject-with icmp-port-unreachable\n\
                       \x20     50     4000 ACCEPT     0    --  *      *       0.0.0.0/0            0.0.0.0/0\n";
        assert_eq!(dropped_by_rules(listing), 8);
    }
}

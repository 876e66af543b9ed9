//! Real processes in network namespaces: three `zsfc node` processes (ingress, an SF node with a
//! DPI SF, egress) on one L2 segment, MPLS-in-UDP between them, TUN devices on the ingress and
//! egress; a real UDP client and echo server use the kernel's own stacks. Needs root, `ip` and
//! /dev/net/tun. Every namespace and process is removed at the end, also on failure.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers of tests and benchmarks: a failure should stop them loudly, with its place"
)]
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use zsfc_config::{NodeConfig, Topology};
#[path = "common/memory.rs"]
mod memory;
use memory::find_in_memory;

/// Namespaces and processes of one test; dropped → everything is killed and deleted (the
/// namespaces through zsfc-lab's guard, with whatever runs in them).
struct Lab {
    prefix: String,
    namespaces: zsfc_lab::Namespaces,
    children: Vec<Child>,
    dir: std::path::PathBuf,
}

impl Lab {
    fn new() -> Self {
        let prefix = format!("zt{}", std::process::id());
        let dir = std::env::temp_dir().join(format!("zsfc-netns-{prefix}"));
        std::fs::create_dir_all(&dir).unwrap();
        Self { prefix, namespaces: zsfc_lab::Namespaces::new(), children: Vec::new(), dir }
    }

    fn ns(&mut self, name: &str) -> String {
        let n = format!("{}-{name}", self.prefix);
        self.namespaces.add(&n).unwrap();
        n
    }

    fn spawn(&mut self, ns: &str, args: &[&str], stdout: Stdio) -> usize {
        let c = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        self.children.push(c);
        self.children.len() - 1
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.namespaces.remove_all();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("the ip command (iproute2)");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sigterm(c: &Child) {
    let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
}

const TOPOLOGY: &str = r#"
version = 1
# Inner MTU 1200: what fits a 1500-byte veth with payload ESP, link ESP and the protected NSH.
nodes = [
  { name = "ingress", address = "192.168.77.1", local = { tun = "zsfc0", addresses = ["10.1.0.1/24"], mtu = 1200 } },
  { name = "sf", address = "192.168.77.2" },
  { name = "egress", address = "192.168.77.3", local = { tun = "zsfc0", addresses = ["10.9.0.1/24"], mtu = 1200 } },
]
endpoints = [{ name = "service", node = "egress" }, { name = "clients", node = "ingress" }]
sfs = [{ name = "dpi", node = "sf", intrusive = true, function = { kind = "dpi", patterns = ["test"] } }]
[[chains]]
name = "to-service"
classifier = "ingress"
sfs = ["dpi"]
to = "service"
rules = [{ src = "10.1.0.0/24", dst = "10.9.0.0/24", protocol = "udp" }, { src = "10.1.0.0/24", dst = "10.9.0.0/24", protocol = "tcp" }]
[[chains]]
name = "back"
classifier = "egress"
to = "clients"
rules = [{ src = "10.9.0.0/24", dst = "10.1.0.0/24", protocol = "udp" }, { src = "10.9.0.0/24", dst = "10.1.0.0/24", protocol = "tcp" }]
"#;

const ECHO: &str = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('10.9.0.1',7007))\nwhile True:\n d,a=s.recvfrom(2048)\n s.sendto(b're:'+d,a)\n";

const CLIENT: &str = "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('10.1.0.1',0))\ns.settimeout(1.5)\nfor m in sys.argv[1:]:\n s.sendto(m.encode(),('10.9.0.1',7007))\n try:\n  print(s.recv(2048).decode())\n except socket.timeout:\n  print('timeout')\n";

/// Fetches each path from the HTTP server and prints its length or the failure.
const FETCH: &str = "import sys,urllib.request\nfor p in sys.argv[1:]:\n try:\n  print(len(urllib.request.urlopen('http://10.9.0.1:8080/'+p, timeout=3).read()))\n except Exception as e:\n  print('failed')\n";

fn usable() -> bool {
    let root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    root && std::path::Path::new("/dev/net/tun").exists()
}

#[test]
fn udp_through_a_dpi_chain_between_node_processes() {
    assert!(usable(), "this test needs root and /dev/net/tun (CI machines have both)");
    let mut lab = Lab::new();
    let (nss, nodes) = start_domain(&mut lab, TOPOLOGY);
    let egress = nss[2].clone();
    lab.spawn(&egress, &["python3", "-c", ECHO], Stdio::null());
    // A web page of 1.2 MB: real kernel TCP at both ends, through the chain.
    let www = lab.dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let page: Vec<u8> = (0..1_200_000u32).map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789"[(i % 36) as usize]).collect();
    std::fs::write(www.join("page.bin"), &page).unwrap();
    std::fs::write(www.join("test.html"), b"never served").unwrap();
    let server = ["python3", "-m", "http.server", "8080", "--bind", "10.9.0.1", "--directory", www.to_str().unwrap()];
    lab.spawn(&egress, &server, Stdio::null());
    std::thread::sleep(Duration::from_millis(500));

    let client = ["netns", "exec", &nss[0], "python3", "-c", CLIENT, "hello", "a test payload", "bye"];
    let replies = String::from_utf8_lossy(&Command::new("ip").args(client).output().unwrap().stdout).to_string();
    let fetch = ["netns", "exec", &nss[0], "python3", "-c", FETCH, "page.bin", "test.html"];
    let fetched = String::from_utf8_lossy(&Command::new("ip").args(fetch).output().unwrap().stdout).to_string();

    let reports = stop(&mut lab, &nodes);
    assert_eq!(
        replies.lines().collect::<Vec<_>>(),
        vec!["re:hello", "timeout", "re:bye"],
        "client saw:\n{replies}\nreports:\n{reports:#?}"
    );
    assert_eq!(
        fetched.lines().collect::<Vec<_>>(),
        vec!["1200000", "failed"],
        "HTTP through the chain:\n{fetched}\nreports:\n{reports:#?}"
    );
    // The UDP "test" datagram and the "GET /test.html" segment (and its retransmissions).
    let matched: u64 = reports[1]
        .split("matched=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(matched >= 2, "the SF node DPI matched the test payloads:\n{reports:#?}\n{fetched}");
    assert!(reports[1].contains("drop sf_dpi_match"), "{}", reports[1]);
}

/// One namespace per node of `topology` on a bridge, the nodes started from their compiled
/// files, the first and last node's TUN devices up with routes to each other's side. Returns the
/// namespaces and the nodes' child indices.
fn start_domain(lab: &mut Lab, topology: &str) -> (Vec<String>, Vec<usize>) {
    start_domain_with(lab, topology, |_| {})
}

/// [`start_domain`] with each node file changed by `edit` first.
fn start_domain_with(lab: &mut Lab, topology: &str, edit: impl Fn(&mut NodeConfig)) -> (Vec<String>, Vec<usize>) {
    let mut cfgs: Vec<NodeConfig> = Topology::from_toml(topology).unwrap().compile().unwrap();
    cfgs.iter_mut().for_each(edit);
    let br = lab.ns("br");
    ip(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", &br, "link", "set", "br0", "up"]);
    let mut nss = Vec::new();
    for (i, cfg) in cfgs.iter().enumerate() {
        let ns = lab.ns(&cfg.name);
        let port = format!("p{i}");
        let addr = cfg.transport.as_ref().and_then(|t| t.listen.clone()).unwrap();
        let addr = addr.split(':').next().unwrap();
        ip(&["link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port, "netns", &br]);
        ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &br, "link", "set", &port, "master", "br0"]);
        ip(&["-n", &br, "link", "set", &port, "up"]);
        nss.push(ns);
    }
    let bin = env!("CARGO_BIN_EXE_zsfc");
    let mut nodes = Vec::new();
    for (i, cfg) in cfgs.iter().enumerate() {
        let path = lab.dir.join(format!("{}.toml", cfg.name));
        std::fs::write(&path, cfg.to_toml().unwrap()).unwrap();
        let ns = nss[i].clone();
        nodes.push(lab.spawn(&ns, &[bin, "node", "--config", path.to_str().unwrap()], Stdio::piped()));
    }
    let last = nss.len() - 1;
    for i in [0, last] {
        let ns = nss[i].clone();
        wait_for("the TUN device", || {
            Command::new("ip").args(["-n", &ns, "link", "show", "zsfc0"]).output().is_ok_and(|o| o.status.success())
        });
        ip(&["-n", &ns, "link", "set", "zsfc0", "up"]);
    }
    ip(&["-n", &nss[0], "route", "add", "10.9.0.0/24", "dev", "zsfc0"]);
    ip(&["-n", &nss[last], "route", "add", "10.1.0.0/24", "dev", "zsfc0"]);
    (nss, nodes)
}

/// SIGTERM to every node; their final reports (stdout and stderr).
fn stop(lab: &mut Lab, nodes: &[usize]) -> Vec<String> {
    for &n in nodes {
        sigterm(&lab.children[n]);
    }
    let mut reports = Vec::new();
    for &n in nodes {
        let c = &mut lab.children[n];
        let t = Instant::now();
        while c.try_wait().unwrap().is_none() {
            assert!(t.elapsed() < Duration::from_secs(5), "a node ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut s = String::new();
        use std::io::Read;
        c.stdout.take().unwrap().read_to_string(&mut s).unwrap();
        c.stderr.take().unwrap().read_to_string(&mut s).unwrap();
        reports.push(s);
    }
    reports
}

fn dropped(report: &str, reason: &str) -> u64 {
    let prefix = format!("drop {reason} ");
    report.lines().filter_map(|l| l.strip_prefix(&prefix)).filter_map(|n| n.trim().parse::<u64>().ok()).sum()
}

/// ingress → sfa [firewall] → sfb [counter] → egress with SFC integrity (and a tenant id), from
/// static files. Without link protection: the attacker plays a compromised sfa, which would
/// hold sfa's link keys too, and `zsfc attack` does not seal link ESP; what is tested is that
/// the chain key alone does not let it skip an SF or rewrite metadata.
const INTEGRITY: &str = r#"
version = 1
link_protection = false
sfc_integrity = true
nodes = [
  { name = "ingress", address = "192.168.78.1", local = { tun = "zsfc0", addresses = ["10.1.0.1/24"], mtu = 1200 } },
  { name = "sfa", address = "192.168.78.2" },
  { name = "sfb", address = "192.168.78.3" },
  { name = "egress", address = "192.168.78.4", local = { tun = "zsfc0", addresses = ["10.9.0.1/24"], mtu = 1200 } },
]
endpoints = [{ name = "service", node = "egress" }, { name = "clients", node = "ingress" }]
sfs = [
  { name = "fw", node = "sfa", intrusive = false, function = { kind = "firewall", default = "allow" } },
  { name = "count", node = "sfb", intrusive = false, function = { kind = "counter" } },
]
[[chains]]
name = "to-service"
classifier = "ingress"
sfs = ["fw", "count"]
to = "service"
rules = [{ src = "10.1.0.0/24", dst = "10.9.0.0/24", protocol = "udp" }]
nsh = { context = [{ type = 5, value = "0000002a", hex = true }] }
"#;

/// Sends `n` UDP datagrams to 10.9.0.1:7007, 200 per second.
const SENDER: &str = "import socket,sys,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('10.1.0.1',0))\nfor i in range(int(sys.argv[1])):\n s.sendto(b'datagram %d' % i,('10.9.0.1',7007))\n time.sleep(0.005)\n";

#[test]
fn a_compromised_sf_node_that_skips_the_next_sf_or_rewrites_metadata_fails_at_the_egress() {
    assert!(usable(), "this test needs root and /dev/net/tun (CI machines have both)");
    let mut lab = Lab::new();
    let (nss, nodes) = start_domain(&mut lab, INTEGRITY);
    // sfa is compromised: an attacker on its host taps its link (one datagram per frame) and
    // holds its node file, chain keys included.
    ip(&["-n", &nss[1], "link", "set", "eth0", "gso_max_segs", "1"]);
    let stolen = lab.dir.join("sfa.toml");
    let sender = lab.spawn(&nss[0], &["python3", "-c", SENDER, "1200"], Stdio::null());
    std::thread::sleep(Duration::from_millis(500));
    let bin = env!("CARGO_BIN_EXE_zsfc");
    let attack = |mode: &str, extra: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", &nss[1], bin, "attack", "--dev", "eth0", "--to", "192.168.78.3", "--mode", mode])
            .args(["--capture", "50"])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "zsfc attack: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["sent"].as_u64().unwrap()
    };
    // Without the chain key the changed label stack fails the MAC; with it, the MAC is right
    // but the counter's share is missing from the proof of transit. A tenant id rewritten with
    // the key passes sfb's MAC check; the PktID the classifier derived from it gives it away at
    // the egress.
    let stolen = ["--stolen-config", stolen.to_str().unwrap()];
    assert_eq!(attack("skip", &[]), 50);
    assert_eq!(attack("skip", &stolen), 50);
    assert_eq!(attack("meta", &stolen), 50);
    let t = Instant::now();
    while lab.children[sender].try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(30), "the sender did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let reports = stop(&mut lab, &nodes);
    let egress = &reports[3];
    assert_eq!(dropped(egress, "sfc_mac_failed"), 50, "skipped without the key:\n{egress}");
    assert_eq!(dropped(egress, "pot_failed"), 50, "skipped with the key:\n{egress}");
    assert_eq!(dropped(egress, "sfc_origin_failed"), 50, "tenant id rewritten with the key:\n{egress}");
    assert_eq!(dropped(&reports[2], "sfc_mac_failed"), 0, "sfb saw valid MACs only:\n{}", reports[2]);
    // The honest datagrams all arrived (the stream's own packets are not touched).
    assert!(egress.contains(" delivered 1200\n"), "{egress}");
}

/// Issue 18: the inner packet's header is covered end to end by the payload SA (tunnel mode,
/// RFC 4301 §5.2). An attacker in the middle of sfa's link to sfb (sfa's neighbour entry for sfb
/// points at the attacker: ARP spoofing) passes 50 packets on with their inner addresses
/// rewritten (checksum-neutral: destination +1, source -1); then a compromised sfa that holds
/// its node file does the same (with link protection sealing link ESP again under its key).
/// Without link protection all are dropped at the egress (`inner_header_mismatch`); with it the
/// on-link attacker's at sfb (`link_auth_failed`) and the compromised node's at the egress.
/// None is delivered; the honest datagrams sent after each attack all are.
#[test]
fn a_rewritten_inner_destination_is_dropped_with_and_without_link_protection() {
    assert!(usable(), "this test needs root and /dev/net/tun (CI machines have both)");
    for link_protection in [false, true] {
        let topology = INTEGRITY.replace("link_protection = false", &format!("link_protection = {link_protection}"));
        let mut lab = Lab::new();
        let (nss, nodes) = start_domain(&mut lab, &topology);
        ip(&["-n", &nss[1], "link", "set", "eth0", "gso_max_segs", "1"]);
        let sfb_mac = String::from_utf8(
            Command::new("ip").args(["-n", &nss[2], "-br", "link", "show", "eth0"]).output().unwrap().stdout,
        )
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_owned();
        let stolen = lab.dir.join("sfa.toml");
        let bin = env!("CARGO_BIN_EXE_zsfc");
        let send = |lab: &mut Lab, n: &str| {
            let sender = lab.spawn(&nss[0], &["python3", "-c", SENDER, n], Stdio::null());
            let t = Instant::now();
            while lab.children[sender].try_wait().unwrap().is_none() {
                assert!(t.elapsed() < Duration::from_secs(30), "the sender did not finish");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        for extra in [vec![], vec!["--stolen-config".to_owned(), stolen.to_str().unwrap().to_owned()]] {
            // sfa's frames for sfb now go to the attacker's MAC, which passes them on rewritten.
            ip(&["-n", &nss[1], "neigh", "replace", "192.168.78.3", "lladdr", "02:00:00:00:ad:ad", "dev", "eth0"]);
            let attacker = Command::new("ip")
                .args(["netns", "exec", &nss[1], bin, "attack", "--dev", "eth0", "--to", "192.168.78.3"])
                .args(["--mode", "rewrite", "--capture", "50", "--via-mac", &sfb_mac])
                .args(&extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(500));
            send(&mut lab, "50");
            let out = attacker.wait_with_output().unwrap();
            assert!(out.status.success(), "zsfc attack: {}", String::from_utf8_lossy(&out.stderr));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["sent"].as_u64(), Some(50), "{v}");
            ip(&["-n", &nss[1], "neigh", "replace", "192.168.78.3", "lladdr", &sfb_mac, "dev", "eth0"]);
            send(&mut lab, "100");
        }
        std::thread::sleep(Duration::from_millis(500));
        let reports = stop(&mut lab, &nodes);
        let (sfb, egress) = (&reports[2], &reports[3]);
        let (at_sfb, at_egress) = if link_protection { (50, 50) } else { (0, 100) };
        assert_eq!(dropped(sfb, "link_auth_failed"), at_sfb, "link protection {link_protection}, sfb:\n{sfb}");
        assert_eq!(
            dropped(egress, "inner_header_mismatch"),
            at_egress,
            "link protection {link_protection}, egress:\n{egress}"
        );
        assert!(egress.contains(" delivered 200\n"), "link protection {link_protection}: {egress}");
    }
}

/// Issue 5's forward secrecy seen from outside the process: once the SAs' hard lifetime has
/// passed, no copy of their keys — binary or as the hex of the node file — is left anywhere in
/// a node's memory (read through /proc/PID/mem; each key is first found there while it lives).
#[test]
fn an_sas_key_is_gone_from_the_node_process_after_its_hard_lifetime() {
    const LIFETIME: Duration = Duration::from_secs(10);
    assert!(usable(), "this test needs root and /dev/net/tun (CI machines have both)");
    let mut lab = Lab::new();
    let (nss, nodes) = start_domain_with(&mut lab, TOPOLOGY, |cfg| {
        for sa in cfg.outbound_sas.iter_mut().map(|o| &mut o.sa).chain(cfg.inbound_sas.iter_mut().map(|i| &mut i.sa)) {
            sa.lifetime.hard.seconds = Some(LIFETIME.as_secs());
        }
    });
    let started = Instant::now();
    // Each node's keys as they are in its file: both halves of each key, binary and hex.
    let names = ["ingress", "sf", "egress"];
    let keys: Vec<Vec<Vec<u8>>> = names
        .iter()
        .map(|n| {
            let text = std::fs::read_to_string(lab.dir.join(format!("{n}.toml"))).unwrap();
            let cfg = NodeConfig::from_toml(&text).unwrap();
            let sas = cfg.outbound_sas.iter().map(|o| &o.sa).chain(cfg.inbound_sas.iter().map(|i| &i.sa));
            sas.flat_map(|sa| {
                let k = sa.keymat.0[..32].to_vec();
                let h = hex::encode(&k).into_bytes();
                [k[..16].to_vec(), k[16..].to_vec(), h[..32].to_vec(), h[32..].to_vec()]
            })
            .collect()
        })
        .collect();
    assert!(keys.iter().all(|k| !k.is_empty()), "every node holds an SA");
    // The keys at work: UDP through the chain and back.
    lab.spawn(&nss[2], &["python3", "-c", ECHO], Stdio::null());
    std::thread::sleep(Duration::from_millis(300));
    let out =
        Command::new("ip").args(["netns", "exec", &nss[0], "python3", "-c", CLIENT, "one", "two"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "re:one\nre:two\n");
    let pids: Vec<u32> = nodes.iter().map(|&n| lab.children[n].id()).collect();
    for ((pid, k), n) in pids.iter().zip(&keys).zip(names) {
        assert!(find_in_memory(*pid, k) > 0, "{n}: the scan finds the key while the SA lives");
    }
    assert!(started.elapsed() < LIFETIME, "the first scans ended within the lifetime");
    // Past the hard lifetime (and the node's once-a-second housekeeping): gone.
    let deadline = started + LIFETIME + Duration::from_secs(5);
    let left = |i: usize| find_in_memory(pids[i], &keys[i]);
    while Instant::now() < deadline && (0..3).any(|i| left(i) > 0) {
        std::thread::sleep(Duration::from_millis(250));
    }
    for (i, n) in names.iter().enumerate() {
        assert_eq!(left(i), 0, "{n}: key bytes left in memory {:?} after the hard lifetime", started.elapsed());
    }
    stop(&mut lab, &nodes);
}

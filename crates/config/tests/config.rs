//! Node configurations from TOML: a three-node domain built only from its files carries
//! traffic; every kind of mistake is refused with the field named.
use zsfc_config::{FieldError, NodeConfig};
use zsfc_dataplane::{DropReason, Instant};
use zsfc_sim::packets::{self, Flow};
use zsfc_sim::{ClientSide, FakeEchoService, Sim, SimNode};

// Test keys (key ‖ salt, 36 bytes each); never use fixed keys outside tests.
const K1: &str = "1111111111111111111111111111111111111111111111111111111111111111aaaaaaaa";
const K2: &str = "2222222222222222222222222222222222222222222222222222222222222222bbbbbbbb";
const K3: &str = "3333333333333333333333333333333333333333333333333333333333333333cccccccc";

fn ingress() -> String {
    format!(
        r#"
version = 1
name = "ingress"

[[peers]]
id = 1
name = "sf-node"
address = "192.0.2.11:6635"

[[peers]]
id = 2
name = "egress"

[[labels]]
label = 1001
peer = 1

[[labels]]
label = 1002
peer = 1

[[labels]]
label = 999
peer = 2

[[labels]]
label = 900
deliver = true

[[outbound_sas]]
index = 0
sa = {{ spi = 4096, algorithm = "aes-256-gcm", keymat = "{K1}", lifetime = {{ soft = {{ seconds = 3000 }}, hard = {{ seconds = 3600 }} }} }}

[[inbound_sas]]
sa = {{ spi = 8192, algorithm = "aes-256-gcm", keymat = "{K3}" }}

[[chains]]
id = 1
labels = [1001, 1002, 999]
sa = 0
nsh = {{ si = 255, context = [{{ type = 4, value = "client-1" }}] }}

[[rules]]
src = "10.1.0.0/24"
dst = "10.9.0.1"
protocol = "tcp"
dst_ports = [80, 80]
chain = 1
"#
    )
}

fn sf_node() -> String {
    format!(
        r#"
version = 1
name = "sf-node"
peers = [{{ id = 0, name = "ingress" }}, {{ id = 2, name = "egress" }}]
labels = [{{ label = 999, peer = 2 }}, {{ label = 900, peer = 0 }}]

[[sfs]]
label = 1001
name = "dpi"
intrusive = true
function = {{ kind = "dpi", patterns = ["test", "attack"] }}

[[sfs]]
label = 1002
name = "counter"
intrusive = false
function = {{ kind = "counter" }}
cache_capacity = 1024

[[outbound_sas]]
index = 0
sa = {{ spi = 4097, algorithm = "aes-256-gcm", keymat = "{K2}" }}

[[inbound_sas]]
sa = {{ spi = 4096, algorithm = "aes-256-gcm", keymat = "{K1}" }}
reseal = 0
"#
    )
}

fn egress() -> String {
    format!(
        r#"
version = 1
name = "egress"
peers = [{{ id = 0, name = "ingress" }}, {{ id = 1, name = "sf-node" }}]
labels = [{{ label = 999, deliver = true }}, {{ label = 900, peer = 0 }}, {{ label = 1001, peer = 1 }}]
outbound_sas = [{{ index = 0, sa = {{ spi = 8192, algorithm = "aes-256-gcm", keymat = "{K3}" }} }}]
inbound_sas = [{{ sa = {{ spi = 4097, algorithm = "aes-256-gcm", keymat = "{K2}" }} }}]
chains = [{{ id = 2, labels = [900], sa = 0 }}]
rules = [{{ src = "10.9.0.1", dst = "10.1.0.0/24", chain = 2 }}, {{ src = "0.0.0.0/0", dst = "0.0.0.0/0", deny = true }}]
"#
    )
}

fn build(text: &str) -> Result<zsfc_dataplane::Node, FieldError> {
    NodeConfig::from_toml(text)?.build(Instant::from_secs(1))
}

#[test]
fn a_domain_built_from_its_files_carries_traffic() {
    let nodes = [("ingress", ingress()), ("sf-node", sf_node()), ("egress", egress())]
        .into_iter()
        .enumerate()
        .map(|(i, (name, text))| SimNode {
            name: name.into(),
            node: build(&text).unwrap(),
            local: if i == 2 { Box::new(FakeEchoService::default()) } else { Box::new(ClientSide::default()) },
            external: Default::default(),
        })
        .collect();
    let mut sim = Sim::new(nodes);
    let flow = Flow::tcp("10.1.0.7", 40000, "10.9.0.1", 80);
    for i in 0..10u32 {
        let payload = if i % 4 == 1 { format!("GET /test/{i}") } else { format!("GET /ok/{i}") };
        sim.send_local(0, sim.now, &packets::build(&flow, i, payload.as_bytes()));
    }
    sim.send_local(0, sim.now, &packets::build(&Flow::tcp("10.1.0.7", 40000, "10.9.0.1", 22), 99, b"ssh"));
    sim.run(100_000);
    let svc = sim.local::<FakeEchoService>(2).unwrap();
    assert_eq!(svc.received.len(), 7);
    assert!(svc.received.iter().all(|p| p.flow == flow && !p.payload.windows(4).any(|w| w == b"test")));
    assert_eq!(sim.local::<ClientSide>(0).unwrap().received.len(), 7);
    assert_eq!(sim.dropped(DropReason::SfDpiMatch), 3);
    assert_eq!(sim.dropped(DropReason::NoMatchingRule), 1, "port 22 is not in any rule");
    let counter = sim.nodes[1].node.sf_report(zsfc_dataplane::SfId(1)).unwrap();
    assert_eq!(
        counter.counters.iter().find(|(k, _)| *k == "esp").map(|c| c.1),
        Some(7),
        "non-intrusive counter saw ESP only"
    );
}

#[test]
fn round_trips_through_toml_and_never_prints_keys() {
    for text in [ingress(), sf_node(), egress()] {
        let cfg = NodeConfig::from_toml(&text).unwrap();
        let again = NodeConfig::from_toml(&cfg.to_toml().unwrap()).unwrap();
        assert_eq!(again, cfg);
        let dbg = format!("{cfg:?}");
        for k in [K1, K2, K3] {
            assert!(!dbg.contains(&k[..16]), "key material in Debug output");
        }
        assert!(dbg.contains("<redacted>"));
    }
}

#[test]
fn refuses_mistakes_naming_the_field() {
    let cases: Vec<(String, &str)> = vec![
        (ingress().replace("version = 1", "version = 2"), "version: 2 is not supported"),
        (
            ingress().replace("name = \"ingress\"", "name = \"ingress\"\nsettings = { tcp_mss_clamp = 100 }"),
            "settings.tcp_mss_clamp: below 536",
        ),
        (ingress().replace("name = \"ingress\"", "name = \"ingress\"\ncolour = \"blue\""), "unknown field `colour`"),
        (
            ingress().replace(&format!("keymat = \"{K1}\""), "keymat = \"abcd\""),
            "outbound_sas[0].sa.keymat: key material must be 36 bytes",
        ),
        (ingress().replace(&format!("keymat = \"{K1}\""), "keymat = \"xyz\""), "key material must be hex"),
        (ingress().replace("spi = 4096", "spi = 7"), "outbound_sas[0].sa.spi: 7 is reserved"),
        (ingress().replace("chain = 1", "chain = 7"), "rules[0].chain: no chain with id 7"),
        (ingress().replace("src = \"10.1.0.0/24\"", "src = \"10.1.0.0/33\""), "rules[0].src: prefix length 33"),
        (
            ingress().replace("dst_ports = [80, 80]", "dst_ports = [81, 80]"),
            "rules[0].dst_ports: range 81..=80 is empty",
        ),
        (ingress().replace("label = 1001\npeer = 1", "label = 1001\npeer = 9"), "labels[0].peer: no peer with id 9"),
        (
            ingress().replace("label = 900\ndeliver = true", "label = 900"),
            "labels[3]: give exactly one of `peer` and `deliver = true`",
        ),
        (
            ingress().replace("labels = [1001, 1002, 999]", "labels = [3, 999]"),
            "chains[0]: chain 1: labels: label 3: must be in 16..=",
        ),
        (
            ingress().replace("labels = [1001, 1002, 999]\nsa = 0", "labels = [1001, 999]\nsa = 4"),
            "chains[0]: chain 1: sa: outbound SA 4 is not installed",
        ),
        (
            ingress().replace("value = \"client-1\"", &format!("value = \"{}\"", "x".repeat(200))),
            "chains[0].nsh.context[0]: value is 200 bytes",
        ),
        (ingress().replace("protocol = \"tcp\"", "protocol = \"sctp\""), "protocol"),
        (sf_node().replace("patterns = [\"test\", \"attack\"]", "patterns = []"), "sfs[0].function.patterns:"),
        (sf_node().replace("function = { kind = \"counter\" }", ""), "sfs[1].function: missing"),
        (sf_node().replace("kind = \"counter\"", "kind = \"teleport\""), "unknown variant `teleport`"),
        (sf_node().replace("reseal = 0", "reseal = 5"), "inbound_sas[0].reseal: no outbound SA with index 5"),
        (
            sf_node().replace("label = 1002\nname", "label = 1001\nname"),
            "sfs[1]: sf counter: label 1001 is already bound",
        ),
        (
            sf_node().replace("{ label = 999, peer = 2 }", "{ label = 1001, peer = 2 }"),
            "labels[0].label: 1001 is the label of an SF",
        ),
        (duplicate_inbound_spi(), "inbound_sas[1].sa.spi: sa spi 0x1001: an inbound SA with this SPI is installed"),
        (
            ingress().replace("name = \"ingress\"", "name = \"ingress\"\nsettings = { lanes = 0 }"),
            "settings.lanes: 0 is outside 1..=16",
        ),
        (
            ingress().replace("name = \"ingress\"", "name = \"ingress\"\nsettings = { lanes = 17 }"),
            "settings.lanes: 17 is outside",
        ),
        (
            sf_node()
                .replace("name = \"sf-node\"\n", "name = \"sf-node\"\nsettings = { lanes = 2 }\n")
                .replace("function = { kind = \"counter\" }", "function = { kind = \"nat\", v4 = \"192.0.2.1\" }"),
            "sfs[1]: a NAT keeps one translation table: it needs settings.lanes = 1",
        ),
    ];
    for (text, want) in cases {
        let err = build(&text).err().unwrap_or_else(|| panic!("accepted; wanted an error containing {want:?}"));
        assert!(err.to_string().contains(want), "wanted {want:?}, got: {err}");
    }
}

fn duplicate_inbound_spi() -> String {
    let one = format!("{{ sa = {{ spi = 4097, algorithm = \"aes-256-gcm\", keymat = \"{K2}\" }} }}");
    egress().replace(&format!("inbound_sas = [{one}]"), &format!("inbound_sas = [{one}, {one}]"))
}

#[test]
fn logger_and_nat_functions_build_from_config() {
    let dir = std::env::temp_dir().join(format!("zsfc-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("log.pcap");
    let text = format!(
        r#"
version = 1
name = "n"
[[sfs]]
label = 100
name = "log"
intrusive = false
function = {{ kind = "logger", pcap = "{}" }}
[[sfs]]
label = 101
name = "nat"
intrusive = true
function = {{ kind = "nat", v4 = "192.0.2.1" }}
[[sfs]]
label = 102
name = "slow"
intrusive = true
function = {{ kind = "delay", delay_us = 500 }}
[[sfs]]
label = 103
name = "limit"
intrusive = true
function = {{ kind = "rate_limiter", rate_bytes_per_s = 1000000, burst_bytes = 100 }}
"#,
        pcap.display()
    );
    let err = build(&text).unwrap_err().to_string();
    assert!(err.starts_with("sfs[3].function.burst_bytes: 100 is below"), "{err}");
    let fixed = NodeConfig::from_toml(&text.replace("burst_bytes = 100", "burst_bytes = 3000")).unwrap();
    fixed.check().unwrap();
    assert!(std::fs::metadata(&pcap).is_err(), "check creates no file");
    let node = build(&text.replace("burst_bytes = 100", "burst_bytes = 3000")).unwrap();
    assert_eq!(node.sf_ids().count(), 4);
    assert!(std::fs::metadata(&pcap).is_ok());
    let missing = text.replace(&pcap.display().to_string(), "/nonexistent/dir/x.pcap");
    assert!(build(&missing).unwrap_err().to_string().starts_with("sfs[0].function.pcap: cannot create"));
    assert!(
        NodeConfig::from_toml(&missing)
            .unwrap()
            .check()
            .unwrap_err()
            .to_string()
            .contains("no directory /nonexistent/dir")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The ingress with a transport, a gateway and (on the SF node) an external SF with its circuit.
fn with_process_settings(node: &str) -> String {
    let transport = "\n[transport]\nlisten = \"192.0.2.1:6635\"\n";
    match node {
        "ingress" => format!(
            "{}{transport}{}",
            ingress(),
            r#"
[gateway]
listen = "172.16.0.1:443"
ca = "ca.pem"
cert = "gw.pem"
key = "gw.key"
inner_source = "10.1.0.1"
services = [{ name = "web.example", address = "10.9.0.1:80" }]
grants = [{ identity = "alice", service = "web.example", chain = 1 }]
"#
        ),
        _ => format!(
            "{}{transport}",
            sf_node().replace(
                "function = { kind = \"counter\" }",
                "external = true\nattachment = { to_sf = \"ac0-in\", from_sf = \"ac0-out\" }"
            )
        ),
    }
}

/// A local side (TUN) with an IPv4 and an IPv6 address and the MTU `mtu`.
fn local(mtu: &str) -> String {
    format!("\n[local]\ntun = \"zsfc0\"\nmtu = {mtu}\naddresses = [\"10.1.0.1/24\", \"fd01::1/64\"]\n")
}

#[test]
fn process_settings_are_parsed_and_mistakes_name_the_field() {
    let ing = NodeConfig::from_toml(&with_process_settings("ingress")).unwrap().io_settings().unwrap();
    let gw = ing.gateway.unwrap();
    assert_eq!(gw.services, vec![("web.example".to_owned(), "10.9.0.1:80".parse().unwrap())]);
    assert_eq!(gw.grants, vec![("alice".to_owned(), "web.example".to_owned(), 1, None)]);
    assert_eq!(gw.blocking, zsfc_config::GatewayBlocking { after_refusals: 100, within_s: 60, block_s: 300 });
    let off = with_process_settings("ingress")
        .replace("inner_source", "blocking = { after_refusals = 0, block_s = 0 }\ninner_source");
    assert_eq!(NodeConfig::from_toml(&off).unwrap().io_settings().unwrap().gateway.unwrap().blocking.after_refusals, 0);
    let sf = NodeConfig::from_toml(&with_process_settings("sf")).unwrap().io_settings().unwrap();
    assert_eq!(sf.attachments.len(), 1);
    assert_eq!((sf.attachments[0].to_sf.as_str(), sf.attachments[0].mtu), ("ac0-in", 1500));
    // The same node over Ethernet: peers known by MAC.
    let eth = with_process_settings("ingress")
        .replace("listen = \"192.0.2.1:6635\"", "ethernet = \"eth0\"")
        .replace("address = \"192.0.2.11:6635\"", "mac = \"02:00:5a:00:00:0b\"");
    let eth = NodeConfig::from_toml(&eth).unwrap().io_settings().unwrap();
    assert_eq!(eth.ethernet.as_deref(), Some("eth0"));
    assert_eq!(eth.peers[0].1, zsfc_config::PeerLink::Ethernet([2, 0, 0x5a, 0, 0, 11]));

    let cases: Vec<(String, &str)> = vec![
        (with_process_settings("ingress").replace("chain = 1 }", "chain = 4 }"), "gateway.grants[0].chain: no chain 4"),
        (
            with_process_settings("ingress").replace("service = \"web.example\"", "service = \"mail\""),
            "gateway.grants[0].service: no service named \"mail\"",
        ),
        (with_process_settings("ingress").replace("10.9.0.1:80", "10.9.0.1"), "gateway.services[0].address"),
        (with_process_settings("ingress").replace("\"172.16.0.1:443\"", "\"gw\""), "gateway.listen"),
        (with_process_settings("ingress").replace("\"10.1.0.1\"", "\"ten\""), "gateway.inner_source"),
        (
            with_process_settings("ingress").replace("inner_source", "blocking = { within_s = 0 }\ninner_source"),
            "gateway.blocking.within_s: must be at least 1",
        ),
        (with_process_settings("sf").replace("\"ac0-out\"", "\"ac0-in\""), "sfs[1].attachment.from_sf: must differ"),
        (
            with_process_settings("ingress").replace("listen = \"192.0.2.1:6635\"", "ethernet = \"eth0\""),
            "peers[0].address: MPLS-in-UDP needs `transport.listen`",
        ),
        (
            with_process_settings("ingress")
                .replace("listen = \"192.0.2.1:6635\"", "ethernet = \"eth0\"")
                .replace("address = \"192.0.2.11:6635\"", "mac = \"02:00:00:00:00:zz\""),
            "peers[0].mac: \"02:00:00:00:00:zz\" is not aa:bb:cc:dd:ee:ff",
        ),
        (with_process_settings("sf").replace("listen = \"192.0.2.1:6635\"", ""), "transport: give `listen`"),
        (
            with_process_settings("sf")
                .replace("listen = \"192.0.2.1:6635\"", "listen = \"192.0.2.1:6635\"\nring = \"blocks\""),
            "transport.ring: a receive ring is for an Ethernet link",
        ),
        (
            with_process_settings("sf")
                .replace("listen = \"192.0.2.1:6635\"", "listen = \"192.0.2.1:6635\"\nring = \"v3\""),
            "unknown variant `v3`, expected `frames` or `blocks`",
        ),
        (with_process_settings("sf").replace("\"ac0-out\"", "\"a-much-too-long-name\""), "sfs[1].attachment.from_sf"),
        (
            with_process_settings("sf").replace("\nattachment = { to_sf = \"ac0-in\", from_sf = \"ac0-out\" }", ""),
            "sfs[1].attachment: missing",
        ),
        // The port says what the datagrams are (RFC 7510 for MPLS, RFC 3948 for link ESP).
        (
            with_process_settings("ingress").replace("192.0.2.1:6635", "192.0.2.1:4500"),
            "transport.listen: port 4500 is UDP-encapsulated ESP (RFC 3948), but link protection is off",
        ),
        (
            with_process_settings("ingress").replace("192.0.2.11:6635", "192.0.2.11:4500"),
            "peers[0].address: port 4500 is UDP-encapsulated ESP",
        ),
        (
            with_process_settings("ingress")
                .replace("name = \"ingress\"", "name = \"ingress\"\nsettings = { link_auth = true }"),
            "transport.listen: port 6635 is MPLS-in-UDP (RFC 7510), but link protection is on",
        ),
        (
            format!("{}{}", with_process_settings("ingress"), local("1278")),
            "local.addresses[1]: IPv6 needs an MTU of at least 1280 and local.mtu is 1278",
        ),
        (
            format!(
                "{}{}routes = [\"10.9.0.0/24\", \"10.8.0.1/24\"]\n",
                with_process_settings("ingress"),
                local("1280")
            ),
            "local.routes[1]: \"10.8.0.1/24\" has host bits set (a route names a network)",
        ),
        (
            format!("{}{}routes = [\"10.9.0.0\"]\n", with_process_settings("ingress"), local("1280")),
            "local.routes[0]: \"10.9.0.0\" is not ADDRESS/LENGTH",
        ),
        (
            format!(
                "{}{}routes = [\"fd09::/64\"]\n",
                with_process_settings("ingress"),
                local("1278").replace(", \"fd01::1/64\"", "")
            ),
            "local.routes[0]: an IPv6 route needs an MTU of at least 1280, not 1278",
        ),
        // Issue 19 point 6: the inner MTU plus the encapsulation must fit the links' MTU.
        (
            format!("{}{}", with_process_settings("ingress"), local("1500")),
            "local.mtu: 1500 plus the encapsulation (89 bytes: 3 labels, payload ESP) exceeds the 1472 bytes a \
             datagram may carry on links of MTU 1500 (transport.mtu): at most 1383",
        ),
        (
            with_process_settings("sf")
                .replace("listen = \"192.0.2.1:6635\"", "listen = \"192.0.2.1:6635\"\nmtu = 500"),
            "transport.mtu: 500 is below 576",
        ),
    ];
    // Links of a larger MTU take a larger inner one.
    let jumbo = format!("{}{}", with_process_settings("ingress"), local("1500"))
        .replace("listen = \"192.0.2.1:6635\"", "listen = \"192.0.2.1:6635\"\nmtu = 9000");
    assert_eq!(NodeConfig::from_toml(&jumbo).unwrap().io_settings().unwrap().tun.unwrap().mtu, 1500);
    // Link protection on 4500 everywhere is fine.
    let esp = with_process_settings("ingress")
        .replace("name = \"ingress\"", "name = \"ingress\"\nsettings = { link_auth = true }")
        .replace(":6635", ":4500");
    assert_eq!(NodeConfig::from_toml(&esp).unwrap().io_settings().unwrap().peers.len(), 1);
    // At 1280 the same addresses are fine.
    let ok = format!("{}{}", with_process_settings("ingress"), local("1280"));
    assert_eq!(NodeConfig::from_toml(&ok).unwrap().io_settings().unwrap().tun.unwrap().addresses.len(), 2);
    // Routes into the domain through the device, as the node installs them.
    let routed = format!("{ok}routes = [\"10.9.0.0/24\", \"fd09::/64\", \"0.0.0.0/0\"]\n");
    let tun = NodeConfig::from_toml(&routed).unwrap().io_settings().unwrap().tun.unwrap();
    let want: Vec<(std::net::IpAddr, u8)> =
        vec![("10.9.0.0".parse().unwrap(), 24), ("fd09::".parse().unwrap(), 64), ("0.0.0.0".parse().unwrap(), 0)];
    assert_eq!(tun.routes, want);
    for (text, want) in cases {
        let err = NodeConfig::from_toml(&text)
            .and_then(|c| c.io_settings())
            .err()
            .unwrap_or_else(|| panic!("accepted; wanted an error containing {want:?}"));
        assert!(err.to_string().contains(want), "wanted {want:?}, got: {err}");
    }
}

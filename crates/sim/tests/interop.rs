//! Interop: Wireshark's dissectors (tshark) decode what zsfc puts on the wire — the label
//! stack on Ethernet (0x8847) and in MPLS-in-UDP (RFC 7510, port 6635), the IPv4 header and
//! the ESP header below it. Needs tshark (`./test.sh` installs it).
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "helpers of tests and benchmarks: a failure should stop them loudly, with its place"
)]
use pcap_file::DataLink;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use std::process::Command;
use zsfc_sim::packets::{self, Flow};
use zsfc_sim::scenario::{self, FORWARD_HOPS, INGRESS};
use zsfc_wire::{ethernet, ipv4, mpls, udp};

fn first_labelled_packet() -> Vec<u8> {
    let mut sim = scenario::six_sf_chain(Box::new(std::io::sink()), false).unwrap();
    sim.capture = true;
    sim.send_local(
        INGRESS,
        sim.now,
        &packets::build(&Flow::tcp("10.1.0.5", 40000, scenario::SERVICE_V4, 80), 1, b"GET /"),
    );
    sim.run(10_000);
    sim.captured.iter().find(|c| c.from == INGRESS).expect("a packet left the ingress").bytes.clone()
}

fn over_ethernet(labelled: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; ethernet::HEADER_LEN];
    ethernet::Repr { dst: [2, 0, 0, 0, 0, 2], src: [2, 0, 0, 0, 0, 1], ethertype: ethernet::ethertype::MPLS }
        .emit(&mut f)
        .unwrap();
    f.extend_from_slice(labelled);
    f
}

fn over_udp(labelled: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 28 + labelled.len()];
    p[28..].copy_from_slice(labelled);
    udp::Repr { src_port: mpls::in_udp::entropy_port(7), dst_port: mpls::in_udp::PORT }
        .emit(&mut p[20..], labelled.len(), None)
        .unwrap();
    let r = ipv4::Repr::new([192, 168, 0, 1], [192, 168, 0, 2], 17, (8 + labelled.len()) as u16);
    r.emit(&mut p).unwrap();
    p
}

fn tshark_fields(link: DataLink, frame: &[u8], fields: &[&str]) -> String {
    let path = std::env::temp_dir().join(format!("zsfc-interop-{}-{:?}.pcap", std::process::id(), link));
    {
        let file = std::fs::File::create(&path).unwrap();
        let mut w = PcapWriter::with_header(file, PcapHeader { datalink: link, ..Default::default() }).unwrap();
        w.write_packet(&PcapPacket::new(core::time::Duration::ZERO, frame.len() as u32, frame)).unwrap();
    }
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(&path).args(["-T", "fields", "-E", "separator=;", "-E", "aggregator=,"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark is needed for this test: apt-get install tshark (./test.sh does)");
    let _ = std::fs::remove_file(&path);
    assert!(out.status.success(), "tshark failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn expected_labels() -> String {
    let mut l: Vec<String> = FORWARD_HOPS.iter().map(u32::to_string).collect();
    l.push(scenario::DELIVER_EGRESS.to_string());
    l.join(",")
}

#[test]
fn tshark_decodes_labels_ip_and_esp_on_ethernet() {
    let pkt = first_labelled_packet();
    let got = tshark_fields(
        DataLink::ETHERNET,
        &over_ethernet(&pkt),
        &["mpls.label", "ip.src", "ip.dst", "ip.proto", "esp.spi", "esp.sequence"],
    );
    assert_eq!(got, format!("{};10.1.0.5;10.9.0.1;50;0x00001000;1", expected_labels()));
}

#[test]
fn tshark_decodes_mpls_in_udp() {
    let pkt = first_labelled_packet();
    let got = tshark_fields(DataLink::RAW, &over_udp(&pkt), &["udp.dstport", "mpls.label", "esp.spi"]);
    assert_eq!(got, format!("6635;{};0x00001000", expected_labels()));
}

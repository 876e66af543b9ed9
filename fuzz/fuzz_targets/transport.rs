#![no_main]
use libfuzzer_sys::fuzz_target;
use zsfc_wire::{icmp, tcp, udp};

// TCP, UDP and ICMP/ICMPv6 headers.
fuzz_target!(|data: &[u8]| {
    if let Ok(s) = tcp::Segment::new_checked(data) {
        let _ = (s.options(), s.payload(), s.verify_checksum(0), tcp::Repr::parse(&s));
    }
    if let Ok(d) = udp::Datagram::new_checked(data) {
        let _ = (d.payload(), d.verify_checksum(0), udp::Repr::parse(&d));
    }
    if let Ok(m) = icmp::Message::new_checked(data) {
        let _ = (m.payload(), m.verify_checksum(0), icmp::Repr::parse(&m));
    }
});

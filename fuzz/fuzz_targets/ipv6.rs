#![no_main]
use libfuzzer_sys::fuzz_target;
use zsfc_wire::ipv6::{self, Packet};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::new_checked(data) {
        if let Ok(w) = p.walk() {
            assert!(w.upper_offset >= ipv6::HEADER_LEN && w.esp_offset <= w.upper_offset);
            assert!(w.upper_offset <= ipv6::HEADER_LEN + usize::from(p.payload_len()));
        }
        let _ = ipv6::Repr::parse(&p);
    }
    let _ = ipv6::walk(data);
});

#![no_main]
use libfuzzer_sys::fuzz_target;
use zsfc_wire::ipv4::{Packet, Repr};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::new_checked(data) {
        let _ = (p.options(), p.payload(), p.verify_checksum(), p.frag_offset());
        let r = Repr::parse(&p);
        let mut out = vec![0u8; 20];
        let _ = r.emit(&mut out);
    }
});

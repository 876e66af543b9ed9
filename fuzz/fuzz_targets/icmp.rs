#![no_main]
use libfuzzer_sys::fuzz_target;
use zsfc_wire::icmp::{Message, Repr};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::new_checked(data) {
        let _ = (m.payload(), m.verify_checksum(0));
        let r = Repr::parse(&m);
        let mut out = vec![0u8; 8];
        r.emit(&mut out, 0).unwrap();
        assert_eq!(Repr::parse(&Message::new_checked(&out[..]).unwrap()), r);
    }
});

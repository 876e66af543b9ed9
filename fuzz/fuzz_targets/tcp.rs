#![no_main]
use libfuzzer_sys::fuzz_target;
use zsfc_wire::tcp::{Repr, Segment};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = Segment::new_checked(data) {
        assert!(s.header_len() >= 20 && s.header_len() <= data.len());
        let _ = (s.options(), s.payload(), s.verify_checksum(0));
        let r = Repr::parse(&s);
        let mut out = vec![0u8; 20];
        r.emit(&mut out, None).unwrap();
        assert_eq!(Repr::parse(&Segment::new_checked(&out[..]).unwrap()), r);
    }
});

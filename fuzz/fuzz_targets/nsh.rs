#![no_main]
use libfuzzer_sys::fuzz_target;
use zsfc_wire::nsh::{Header, Repr};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Header::new_checked(data) {
        let n: usize = h.tlvs().map(|t| t.wire_len()).sum();
        if h.md_type() == 2 {
            assert_eq!(n, h.context().len());
        }
        let r = Repr::parse(&h);
        let mut out = vec![0u8; r.wire_len()];
        if r.emit(&mut out).is_ok() {
            assert_eq!(Repr::parse(&Header::new_checked(&out[..]).unwrap()), r);
        }
    }
});

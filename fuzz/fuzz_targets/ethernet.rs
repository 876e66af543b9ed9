#![no_main]
use libfuzzer_sys::fuzz_target;
use zsfc_wire::ethernet::{Frame, Repr};

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = Frame::new_checked(data) {
        let r = Repr::parse(&f);
        let mut out = [0u8; 14];
        r.emit(&mut out).unwrap();
        assert_eq!(&out[..], &data[..14]);
        let _ = f.payload();
    }
});

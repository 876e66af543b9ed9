#![no_main]
use libfuzzer_sys::fuzz_target;
use zsfc_wire::udp::{Datagram, Repr};

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = Datagram::new_checked(data) {
        assert_eq!(d.payload().len() + 8, usize::from(d.len()));
        let _ = d.verify_checksum(0);
        let r = Repr::parse(&d);
        let mut out = vec![0u8; 8];
        r.emit(&mut out, 0, None).unwrap();
        assert_eq!(Repr::parse(&Datagram::new_checked(&out[..]).unwrap()), r);
    }
});

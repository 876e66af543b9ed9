#![no_main]
use libfuzzer_sys::fuzz_target;
use zsfc_wire::esp;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = esp::Packet::new_checked(data) {
        let _ = (p.spi(), p.seq(), p.iv(), p.ciphertext(), p.icv());
    }
    if let Ok((len, _)) = esp::parse_trailer(data) {
        assert!(len + 2 <= data.len());
    }
});

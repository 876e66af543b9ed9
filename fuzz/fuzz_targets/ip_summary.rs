#![no_main]
use libfuzzer_sys::fuzz_target;
use zsfc_wire::ip;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = ip::parse(data) {
        assert!(s.l4_offset <= s.total_len && s.total_len <= data.len());
        assert!(s.esp_offset <= s.l4_offset && s.esp_nh_field < s.esp_offset);
    }
});

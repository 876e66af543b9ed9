#![no_main]
use libfuzzer_sys::fuzz_target;
use zsfc_esp::{Algorithm, InboundSa, Instant, SaConfig, SaKey};
use zsfc_wire::PacketBuf;

// Arbitrary bytes into an inbound SA (SPI forced to match half the time): never a panic, and a
// random packet never authenticates.
fuzz_target!(|data: &[u8]| {
    let cfg = SaConfig::new(0x1000, SaKey::new(Algorithm::Aes128Gcm, &[7u8; 20]).unwrap());
    let mut rx = InboundSa::new(&cfg, Instant::ZERO).unwrap();
    let mut b = PacketBuf::from_slice(data);
    assert!(rx.open(Instant::ZERO, &mut b).is_err());
    let _ = zsfc_esp::spi_of(data);
});

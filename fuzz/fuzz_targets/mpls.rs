#![no_main]
use libfuzzer_sys::fuzz_target;
use zsfc_wire::mpls;

fuzz_target!(|data: &[u8]| {
    let max = usize::from(data.first().copied().unwrap_or(16) % 20);
    if let Ok(d) = mpls::stack_depth(data, max) {
        assert!(d >= 1 && d <= max && d * 4 <= data.len());
        let es: Vec<_> = mpls::entries(&data[..d * 4]).collect();
        assert!(es.last().unwrap().bos());
        assert!(es[..d - 1].iter().all(|e| !e.bos()));
        for e in es {
            assert_eq!(mpls::Lse::new(e.label(), e.tc(), e.bos(), e.ttl()), e);
        }
    }
    let _ = mpls::in_udp::check(data, max);
});

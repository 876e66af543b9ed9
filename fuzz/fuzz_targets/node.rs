#![no_main]
use libfuzzer_sys::fuzz_target;
use std::cell::RefCell;
use zsfc_dataplane::{PacketBuf, SfId};

thread_local! {
    static SIM: RefCell<zsfc_sim::Sim> = RefCell::new(zsfc_sim::scenario::six_sf_chain(Box::new(std::io::sink()), true).unwrap());
}

// The engine's packet entry points with arbitrary bytes: the first byte picks node and door.
fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    SIM.with(|s| {
        let mut sim = s.borrow_mut();
        let now = sim.now;
        let i = usize::from(sel % 5);
        let node = &mut sim.nodes[i].node;
        let buf = PacketBuf::from_slice(rest);
        let _ = match sel / 5 % 3 {
            0 => node.handle_from_domain(now, buf),
            1 => node.handle_local(now, buf),
            _ => node.handle_from_sf(now, SfId(u32::from(sel) % 2), buf),
        };
        while node.poll_output(now).is_some() {}
    });
});

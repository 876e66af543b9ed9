//! What the topology tests share: a compiled domain run in memory.
use zsfc_config::NodeConfig;
use zsfc_dataplane::Instant;
use zsfc_sim::{ClientSide, FakeEchoService, Sim, SimNode};

/// The compiled nodes in a simulation: the node named `egress` serves (an echo service), every
/// other node's local side is a client.
pub fn sim_of(cfgs: &[NodeConfig]) -> Sim {
    let nodes = cfgs
        .iter()
        .map(|c| SimNode {
            name: c.name.clone(),
            // The simulation has no clock of its own to probe peers with: no liveness.
            node: {
                let mut c = c.clone();
                c.settings.liveness.interval_ms = 0;
                c.build(Instant::from_secs(1)).unwrap()
            },
            local: if c.name == "egress" {
                Box::new(FakeEchoService::default())
            } else {
                Box::new(ClientSide::default())
            },
            external: Default::default(),
        })
        .collect();
    Sim::new(nodes)
}

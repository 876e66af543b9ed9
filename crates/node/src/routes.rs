//! The routes into the domain through the node's TUN device (`[local] routes`): installed by the
//! node itself, each time it creates the device, so that a node that is restarted (by hand, by
//! systemd, by `zsfc restart`) is reachable again without anyone re-adding them. The device
//! lives and dies with the process; so do its routes.
use anyhow::Context;
use std::net::IpAddr;

/// Adds (or replaces) a route for each prefix through device `dev`, in the main table, over
/// rtnetlink. `dev` must exist and be up (the I/O drivers create it so).
pub fn install(dev: &str, routes: &[(IpAddr, u8)]) -> anyhow::Result<()> {
    if routes.is_empty() {
        return Ok(());
    }
    let index = nix::net::if_::if_nametoindex(dev).with_context(|| format!("device {dev}"))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().context("a netlink runtime")?;
    rt.block_on(async {
        let (connection, handle, _) = rtnetlink::new_connection().context("a netlink socket")?;
        let driver = tokio::spawn(connection);
        for &(prefix, len) in routes {
            let msg = match prefix {
                IpAddr::V4(a) => rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                    .destination_prefix(a, len)
                    .output_interface(index)
                    .build(),
                IpAddr::V6(a) => rtnetlink::RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                    .destination_prefix(a, len)
                    .output_interface(index)
                    .build(),
            };
            // Replace: a route left from before (another process made it) is taken over.
            handle
                .route()
                .add(msg)
                .replace()
                .execute()
                .await
                .with_context(|| format!("route {prefix}/{len} dev {dev}"))?;
        }
        driver.abort();
        Ok(())
    })
}

//! SF drops reported by nodes, kept for the gateway's node to fetch (seed 004 REQ11).
use super::{ApiError, Controller, SF_DROPS_KEPT, SfDrops};
use crate::audit::Kind;
use std::time::Duration;

impl Controller {
    /// Records SF drops reported by `node` (audited) for the gateway to fetch.
    pub fn report_sf_drops(&self, node: &str, drops: Vec<SfDrops>) -> Result<(), ApiError> {
        for d in &drops {
            let hex_ok = d.subscriber.len() == 16 && d.subscriber.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex_ok || d.count == 0 || d.sf.is_empty() || d.reason.is_empty() {
                return Err(ApiError::new(400, "invalid-value", format!("drops: {d:?} is not a report of SF drops")));
            }
        }
        {
            let mut q = self.sf_drops.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for mut d in drops {
                q.0 += 1;
                (d.seq, d.node) = (q.0, node.to_owned());
                let detail =
                    format!("SF {} dropped {} packets of subscriber {} ({})", d.sf, d.count, d.subscriber, d.reason);
                self.audit(Kind::Notification, node, &detail);
                if q.1.len() == SF_DROPS_KEPT {
                    q.1.pop_front();
                }
                q.1.push_back(d);
            }
        }
        self.sf_drops_added.notify_waiters();
        Ok(())
    }

    /// The reports after `after`, waiting up to `wait` for one; and the number of the last.
    pub async fn sf_drops_after(&self, after: u64, wait: Duration) -> (u64, Vec<SfDrops>) {
        let collect = || {
            let q = self.sf_drops.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (q.0, q.1.iter().filter(|d| d.seq > after).cloned().collect::<Vec<_>>())
        };
        let woken = self.sf_drops_added.notified();
        let now = collect();
        if !now.1.is_empty() || now.0 < after {
            return now;
        }
        let _ = tokio::time::timeout(wait, woken).await;
        collect()
    }
}

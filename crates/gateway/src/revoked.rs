//! Revoked clients (issue 17): the controller pushes the revoked client identities to the
//! gateway's node with a cut-off each; a certificate of such a client issued at or before its
//! cut-off is refused right after the handshake (`revoked`), and a connection open when the
//! revocation arrives is closed (also counted as `revoked`).
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

#[derive(Debug)]
pub(crate) struct Revocations {
    /// (client name, cut-off in Unix seconds).
    list: RwLock<Arc<Vec<(String, u64)>>>,
    changed: watch::Sender<u64>,
}

impl Revocations {
    pub(crate) fn new() -> Self {
        Self { list: RwLock::new(Arc::new(Vec::new())), changed: watch::channel(0).0 }
    }

    /// Replaces the list; every open connection looks at it again.
    pub(crate) fn set(&self, list: Vec<(String, u64)>) {
        *self.list.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(list);
        self.changed.send_modify(|generation| *generation += 1);
    }

    /// Whether a certificate of client `identity` valid from `not_before` is revoked (one whose
    /// notBefore cannot be read is, when its identity is listed).
    pub(crate) fn is_revoked(&self, identity: &str, not_before: Option<u64>) -> bool {
        let list = self.list.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        list.iter().any(|(name, before)| name == identity && not_before.is_none_or(|nb| nb <= *before))
    }

    /// A watch taken before the check at admission, so that no change between the two is missed.
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Returns once `identity`'s certificate is revoked; never, otherwise.
    pub(crate) async fn until_revoked(
        &self,
        mut changes: watch::Receiver<u64>,
        identity: &str,
        not_before: Option<u64>,
    ) {
        loop {
            if self.is_revoked(identity, not_before) {
                return;
            }
            if changes.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_revocation_reaches_an_open_connection_and_spares_later_certificates() {
        let r = Arc::new(Revocations::new());
        let changes = r.watch();
        assert!(!r.is_revoked("alice", Some(100)));
        let open = tokio::spawn({
            let r = r.clone();
            async move { r.until_revoked(changes, "alice", Some(100)).await }
        });
        r.set(vec![("bob".into(), 500)]);
        tokio::task::yield_now().await;
        assert!(!open.is_finished(), "bob's revocation does not end alice's connection");
        r.set(vec![("bob".into(), 500), ("alice".into(), 100)]);
        tokio::time::timeout(std::time::Duration::from_secs(1), open).await.unwrap().unwrap();
        // A certificate issued after the cut-off (a new one) is not revoked.
        assert!(r.is_revoked("alice", Some(100)) && r.is_revoked("alice", None));
        assert!(!r.is_revoked("alice", Some(101)));
    }
}

//! Private files (keys, node configurations, tokens): created readable by the owner only; the
//! administrative roles' credentials.
use anyhow::Context;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `data` to `path`, readable by the owner only.
pub(crate) fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(data).with_context(|| format!("writing {}", path.display()))
}

/// One client certificate per administrative role (`ROLE.pem`, `ROLE.key` in `dir`), each
/// limited to what its role may do (`zsfc_controller::Role`); hand each person only theirs.
pub(crate) fn issue_roles(ca: &zsfc_controller::pki::Ca, dir: &Path) -> anyhow::Result<()> {
    for role in zsfc_controller::Role::ALL {
        let (cert, key) = ca.issue(role.name(), false, &[], &[])?;
        std::fs::write(dir.join(format!("{}.pem", role.name())), cert)?;
        write_private(&dir.join(format!("{}.key", role.name())), key.as_bytes())?;
    }
    Ok(())
}

//! Where a lab keeps its files: `ROOT/NAME/` holds its lab file, PKI, node files, tokens,
//! logs, pid files, the controller's database and the list of namespaces it created.
use std::path::{Path, PathBuf};

/// The paths of one lab's state.
#[derive(Debug, Clone)]
pub struct State {
    pub dir: PathBuf,
}

impl State {
    /// The state of lab `name` under `root`, as an absolute path (node processes get it).
    pub fn new(root: &Path, name: &str) -> Self {
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        Self { dir: root.join(name) }
    }
    pub fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }
    pub fn log(&self, who: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{who}.log"))
    }
    pub fn controller_db(&self) -> PathBuf {
        self.dir.join("controller.db")
    }
    pub fn lab_file(&self) -> PathBuf {
        self.dir.join("lab.toml")
    }
    /// The namespaces the lab created, one per line, each written once it exists: what `down`
    /// removes, and nothing else.
    pub fn namespaces_file(&self) -> PathBuf {
        self.dir.join("namespaces")
    }
}

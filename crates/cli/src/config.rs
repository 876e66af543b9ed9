//! `zsfc config`: node configuration files.
use anyhow::Context;
use zsfc_config::NodeConfig;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Check node configuration files as a node would load them (without side effects).
    Check {
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
}

/// Ok(true) when every file is valid; each problem is printed as FILE: FIELD: WHY.
pub(crate) fn run(c: &Command) -> anyhow::Result<bool> {
    let Command::Check { files } = c;
    let mut ok = true;
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        match NodeConfig::from_toml(&text).and_then(|cfg| cfg.check().map(|()| cfg)) {
            Ok(cfg) => println!(
                "{}: ok: node {:?}: {} peers, {} labels, {} SFs, {} outbound and {} inbound SAs, {} chains, {} rules",
                f.display(),
                cfg.name,
                cfg.peers.len(),
                cfg.labels.len(),
                cfg.sfs.len(),
                cfg.outbound_sas.len(),
                cfg.inbound_sas.len(),
                cfg.chains.len(),
                cfg.rules.len()
            ),
            Err(e) => {
                ok = false;
                eprintln!("{}: {e}", f.display());
            }
        }
    }
    Ok(ok)
}

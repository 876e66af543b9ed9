//! `zsfc config`: node configuration files.
use anyhow::Context;
use zsfc_config::{NodeConfig, Topology};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Check node configuration files as a node would load them (without side effects).
    Check {
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
    /// Compile a domain topology into one node configuration per node (fresh keys; files are
    /// written readable by their owner only, since they hold key material).
    Compile {
        topology: std::path::PathBuf,
        /// Directory for NODE.toml files (created if missing).
        #[arg(long)]
        out: std::path::PathBuf,
        /// The controller's `host:port`: write files for a controller-run domain instead (no
        /// keys, labels, chains, rules or grants; a `[controller]` section).
        #[arg(long)]
        controller: Option<String>,
        /// With `--controller`: the domain CA's PEM file as the nodes will find it.
        #[arg(long, default_value = "/etc/zsfc/ca.pem")]
        ca: String,
    },
}

/// Ok(true) when every file is valid; each problem is printed as FILE: FIELD: WHY.
pub(crate) fn run(c: &Command) -> anyhow::Result<bool> {
    match c {
        Command::Check { files } => check(files),
        Command::Compile { topology, out, controller, ca } => compile(topology, out, controller.as_deref(), ca),
    }
}

fn compile(
    topology: &std::path::Path,
    out: &std::path::Path,
    controller: Option<&str>,
    ca: &str,
) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(topology).with_context(|| format!("reading {}", topology.display()))?;
    let cfgs = match Topology::from_toml(&text).and_then(|t| t.compile()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", topology.display());
            return Ok(false);
        }
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for cfg in &cfgs {
        let path = out.join(format!("{}.toml", cfg.name));
        let cfg = match controller {
            None => cfg.clone(),
            Some(address) => cfg.for_controller(zsfc_config::ControllerConfig {
                address: address.to_owned(),
                server_name: "controller".into(),
                ca: ca.to_owned(),
                identity_dir: format!("/var/lib/zsfc/{}", cfg.name),
                bootstrap: format!("/etc/zsfc/{}.token", cfg.name),
            }),
        };
        let body = zeroize::Zeroizing::new(cfg.to_toml()?);
        zsfc_controller::pki::write_private(&path, body.as_bytes())?;
        println!(
            "{}: node {:?}, {} SFs, {} chains, {} SAs",
            path.display(),
            cfg.name,
            cfg.sfs.len(),
            cfg.chains.len(),
            cfg.outbound_sas.len() + cfg.inbound_sas.len()
        );
    }
    Ok(true)
}

fn check(files: &[std::path::PathBuf]) -> anyhow::Result<bool> {
    let mut ok = true;
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        // A node file with a transport is also checked as a node process would read it.
        let checked = NodeConfig::from_toml(&text).and_then(|cfg| {
            cfg.check()?;
            if cfg.transport.is_some() {
                cfg.io_settings()?;
            }
            Ok(cfg)
        });
        match checked {
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

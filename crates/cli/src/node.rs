//! `zsfc node`: one node process (the runtime is `zsfc_node`'s).

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The node's configuration file.
    #[arg(long)]
    pub(crate) config: std::path::PathBuf,
    /// Written once every device exists and the gateway (if any) listens: the node is ready.
    #[arg(long)]
    pub(crate) ready_file: Option<std::path::PathBuf>,
    /// Log lines as text or as JSON objects (time, level, target, message).
    #[arg(long, value_enum, default_value_t, env = "ZSFC_LOG_FORMAT")]
    pub(crate) log_format: crate::logging::LogFormat,
}

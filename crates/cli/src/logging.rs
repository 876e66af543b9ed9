//! The log of `zsfc node` and `zsfc controller` (issue 16 point 5): the libraries' `tracing`
//! events on stderr, as text (the default) or as one JSON object per line (`--log-format json`,
//! or `ZSFC_LOG_FORMAT=json` in the environment, which lab nodes inherit from `zsfc up`), each
//! with its time (UTC), level and target. `RUST_LOG` filters them (default `info`). No event
//! carries key material, nonces or payload bytes (`interop::..._read_zsfc_esp...` looks for
//! every SA key of a lab in its logs).

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the process's subscriber (once; a second call changes nothing).
pub(crate) fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).with_target(true);
    let _ = match format {
        LogFormat::Text => b.try_init(),
        LogFormat::Json => b.json().try_init(),
    };
}

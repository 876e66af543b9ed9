//! `zsfc`: the one binary of zsfc.
#![forbid(unsafe_code)]

mod config;
mod demo;
mod node;

use clap::{Parser, Subcommand};

/// Secure service function chaining for zero-trust networks.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the six-SF reference chain in memory and report what happened to the traffic.
    Demo(demo::Args),
    /// Run one node: its data plane over MPLS-in-UDP and its TUN local side, until SIGTERM.
    Node(node::Args),
    /// Work with node configuration files.
    #[command(subcommand)]
    Config(config::Command),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(a) => demo::run(&a),
        Command::Config(c) => config::run(&c),
        Command::Node(a) => node::run(&a),
    };
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("zsfc: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

//! `zsfc`: the one binary of zsfc.
#![forbid(unsafe_code)]

mod attack;
mod bench;
mod bench_failover;
mod bench_keys;
mod config;
mod control;
mod demo;
mod logging;
mod node;
mod traffic;
mod up;

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
    /// Build a whole domain in network namespaces from a lab file, start it and wait until ready.
    Up(up::UpArgs),
    /// Stop and remove everything a lab created (also after a crash).
    Down(up::DownArgs),
    /// Stop one node of a running lab (if it still runs) and start it again with its identity;
    /// waits until the domain runs the controller's state again.
    Restart(up::RestartArgs),
    /// Check a running lab's expected outcomes by sending traffic as its clients.
    Check(up::CheckArgs),
    /// Up, check, down: exits 0 only if every expected outcome happened.
    Run(up::UpArgs),
    /// Every node's live counters in a running lab (from its metrics endpoint).
    Status(up::CheckArgs),
    /// Run a domain's controller (`zsfc up` starts one per lab).
    Controller(control::ControllerArgs),
    /// Create a domain's controller database, CA, operator credentials and bootstrap tokens.
    ControllerInit(control::InitArgs),
    /// Break glass on the controller's host: unbind a role from its lost hardware token and
    /// issue it new file credentials (audited).
    ControllerRecover(control::RecoverArgs),
    /// The controller's view of the domain: nodes, versions, chains, grants, roles on tokens
    /// (reads as the auditor by default).
    Domain(control::DomainArgs),
    /// Rekey the whole domain now, make-before-break (a lab's, or any with --controller).
    Rekey(control::LabArgs),
    /// Set the SFs of a chain (add, remove, reorder) in a running lab or, with --controller, any domain.
    Chain(control::ChainArgs),
    /// Replace the gateway policy of a running lab or, with --controller, any domain.
    Policy(control::PolicyArgs),
    /// Move an administrative role onto a key generated on a PKCS#11 hardware token (PIN in
    /// ZSFC_PKCS11_PIN); the controller then refuses the role's other keys.
    RoleKey(control::RoleKeyArgs),
    /// Revoke a node, client or gateway identity at once (operator only, audited): refused by
    /// the controller and the gateway, open client connections closed, a node's SAs rotated out.
    Revoke(control::RevokeArgs),
    /// Issue a node a new single-use bootstrap token (a reinstalled host); its old certificates
    /// are revoked in the same step.
    NodeToken(control::NodeTokenArgs),
    /// Issue a client certificate (operator only, audited): a key made here, signed by the
    /// domain CA for spiffe://DOMAIN/client/NAME, valid as long as asked (at most the domain's
    /// client lifetime, 30 days by default).
    ClientCert(control::ClientCertArgs),
    /// Send a paced, numbered UDP stream between two namespaces and count what arrived.
    Traffic(traffic::TrafficArgs),
    /// Attack a link of a running domain (capture, then replay, forge, strip or flood) to see
    /// it refused: a tool of the security tests.
    Attack(attack::AttackArgs),
    /// Work with the controller's audit log.
    #[command(subcommand)]
    Audit(control::AuditCommand),
    /// Measure: goodput through chains, page load times.
    #[command(subcommand)]
    Bench(bench::Command),
}

/// A printing command whose reader went away (`zsfc status | head`) ends quietly, as any Unix
/// tool does, instead of panicking on the broken pipe: `println!`'s panic on EPIPE ends the
/// process with 141 (what a shell reports for SIGPIPE), silently. SIGPIPE itself stays ignored, as
/// Rust sets it: TLS sockets are written with `writev`, which cannot ask for `MSG_NOSIGNAL`, so
/// with the default action a controller closing a connection first would kill the command
/// (seen: `zsfc bench keying` killed by SIGPIPE after its last rollout).
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload.downcast_ref::<String>().map(String::as_str).or(payload.downcast_ref::<&str>().copied());
        if msg.is_some_and(|m| m.starts_with("failed printing to stdout") && m.contains("Broken pipe")) {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    quiet_on_closed_stdout();
    let result = match cli.command {
        Command::Demo(a) => demo::run(&a),
        Command::Config(c) => config::run(&c),
        Command::Node(a) => {
            logging::init(a.log_format);
            zsfc_node::run(&zsfc_node::Options { config: a.config, ready_file: a.ready_file })
        }
        Command::Up(a) => up::up(&a),
        Command::Down(a) => up::down(&a),
        Command::Restart(a) => up::restart(&a),
        Command::Check(a) => up::check(&a),
        Command::Run(a) => up::run(&a),
        Command::Status(a) => up::status(&a),
        Command::Bench(c) => bench::run(&c),
        Command::Controller(a) => {
            logging::init(a.log_format);
            control::controller(&a)
        }
        Command::ControllerInit(a) => control::init(&a),
        Command::ControllerRecover(a) => control::recover(&a),
        Command::Domain(a) => control::domain(&a),
        Command::Rekey(a) => control::rekey(&a),
        Command::Chain(a) => control::chain(&a),
        Command::Policy(a) => control::policy(&a),
        Command::RoleKey(a) => control::role_key(&a),
        Command::Revoke(a) => control::revoke(&a),
        Command::NodeToken(a) => control::node_token(&a),
        Command::ClientCert(a) => control::client_cert(&a),
        Command::Audit(c) => control::audit(&c),
        Command::Traffic(a) => traffic::run(&a),
        Command::Attack(a) => attack::run(&a),
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

#[cfg(test)]
mod tests {
    /// clap's own checks of every subcommand's arguments (unique names, valid defaults), which
    /// otherwise run only when that subcommand is first parsed.
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}

//! The `zsfc` command itself, without namespaces.
use std::process::{Command, Stdio};

/// Issue 18: a printing command whose reader closes early (`zsfc demo | head -1`) ends quietly,
/// never with a panic on the broken pipe.
#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_zsfc"))
        .args(["demo", "--packets", "400"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before anything was read: every write meets a broken pipe.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

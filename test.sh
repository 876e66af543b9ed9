#!/usr/bin/env bash
# Every check CI runs: formatting, lints, all tests, and a short run of every fuzz target.
# FUZZ_SECONDS sets the run per fuzz target (default 10).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
# The interop tests decode zsfc's packets with Wireshark's dissectors.
if ! command -v tshark >/dev/null 2>&1; then
  echo "installing tshark (apt-get)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq tshark >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq tshark >/dev/null; }
fi
# The hardware-token test signs with SoftHSM, a PKCS#11 module (as a smart card or HSM would).
if ! command -v softhsm2-util >/dev/null 2>&1; then
  echo "installing softhsm2 (apt-get)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq softhsm2 >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq softhsm2 >/dev/null; }
fi
# The ESP interop test reads and writes zsfc's ESP with scapy and Python's cryptography
# (Debian's, for /usr/bin/python3).
if ! /usr/bin/python3 -c 'import scapy.layers.ipsec, cryptography' >/dev/null 2>&1; then
  echo "installing python3-scapy python3-cryptography (apt-get)..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq python3-scapy python3-cryptography >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq python3-scapy python3-cryptography >/dev/null; }
fi
step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "release build (the flood test measures it)"
cargo build --release --locked -q -p zsfc-cli
step "tests"
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
step "fuzz smoke (${FUZZ_SECONDS:-10}s per target)"
scripts/fuzz.sh "${FUZZ_SECONDS:-10}"
step "in-memory demo (zsfc demo)"
cargo run --release --locked -q -p zsfc-cli -- demo --packets 40 --pcap target/demo.pcap >/dev/null
step "main job (zsfc run examples/quickstart.toml)"
target/release/zsfc run examples/quickstart.toml --state-dir target/labs
echo "all checks passed"

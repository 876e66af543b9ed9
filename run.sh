#!/usr/bin/env bash
# The main job: build zsfc, bring the quickstart domain up in network namespaces (mutual-TLS
# gateway, a DPI SF, an egress with a web server), send traffic as its clients with their
# certificates, show what happened, tear everything down. Exits 0 only if every expected outcome
# happened. Another lab: ./run.sh examples/seed-testbed.toml
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
cargo build --release --locked -p zsfc-cli
exec target/release/zsfc run "${1:-examples/quickstart.toml}"

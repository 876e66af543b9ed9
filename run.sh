#!/usr/bin/env bash
# The main job: build zsfc and run the secure chain with traffic through it.
# Today this is the in-memory reference chain (six SFs, real packets, fake clock); the network-
# namespace testbed replaces it when the node processes exist (issue 3).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup.sh
cargo build --release --locked -p zsfc-cli
exec target/release/zsfc demo "$@"

#!/usr/bin/env bash
# Runs every fuzz target for $1 seconds (default 15) on the stable toolchain (no sanitizer;
# Rust's own bounds checks turn memory errors into panics, which libFuzzer reports as crashes),
# with debug assertions on, so that an integer overflow is a crash too.
# Installs cargo-fuzz when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-15}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version '^0.13'
log=$(mktemp)
trap 'rm -f "$log"' EXIT
total=0
for t in $(cargo fuzz list); do
  mkdir -p "fuzz/corpus/$t"
  if ! cargo fuzz run --sanitizer none --release --debug-assertions "$t" "fuzz/corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz target $t FAILED (artifacts in fuzz/artifacts/$t)"
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  total=$((total + ${runs:-0}))
  printf '%-22s %12s executions, no crash\n' "$t" "${runs:-?}"
done
printf '%-22s %12s executions in all\n' "total" "$total"

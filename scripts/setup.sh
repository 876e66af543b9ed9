# Sourced by run.sh and test.sh: installs what building zsfc needs on a fresh Debian machine.
need() { command -v "$1" >/dev/null 2>&1; }
if ! need cc || ! need make; then
  echo "installing build tools (apt-get)..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential >/dev/null
fi
if ! need cargo; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "installing the Rust toolchain (rustup)..."
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
# What the namespace labs use: iproute2 (ip), iptables (external SFs), curl (clients with
# certificates), python3 (the web and echo services), iperf3 (benchmarks), procps (sysctl, kill),
# systemd-analyze (the shipped unit file is verified).
missing=""
for p in ip:iproute2 sysctl:procps iptables:iptables curl:curl python3:python3 iperf3:iperf3 systemd-analyze:systemd; do
  need "${p%%:*}" || missing="$missing ${p#*:}"
done
if [ -n "$missing" ]; then
  echo "installing$missing (apt-get)..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

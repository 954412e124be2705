#!/usr/bin/env bash
# One command from a fresh clone: install the peers, build release, run every scenario against
# the echo backend directly, Sluice, nginx, HAProxy and Caddy, and write benchmarks/RESULTS.md.
# Loopback only; bounded in time (about 15 minutes on 2 cores, plus the release build).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for tool in nginx haproxy caddy openssl wrk; do command -v "$tool" > /dev/null || missing+=("$tool"); done
# Build dependencies: libxcrypt (htpasswd hashes) and zlib (permessage-deflate).
[ -e /usr/include/crypt.h ] || missing+=(libcrypt-dev)
[ -e /usr/include/zlib.h ] || missing+=(zlib1g-dev)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" > /dev/null
  # The Debian packages start system services; the comparison starts its own instances.
  for service in nginx haproxy caddy; do systemctl stop "$service" 2> /dev/null || service "$service" stop 2> /dev/null || true; done
fi
# The production build (README): no exclusivity checks in the packages Sluice is built on either.
swift build -c release -Xswiftc -enforce-exclusivity=unchecked --product sluice
swift build -c release -Xswiftc -enforce-exclusivity=unchecked --product sluice-bench
exec python3 benchmarks/compare.py "$@"

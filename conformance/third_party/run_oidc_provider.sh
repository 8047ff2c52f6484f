#!/usr/bin/env bash
# Install (npm ci) and start panva/oidc-provider on a loopback port, for the conformance suite.
# Usage: conformance/third_party/run_oidc_provider.sh [PORT]   (default 3000; REQUIRE_DPOP_NONCE=1 optional)
# Then:  python -m conformance --issuer http://127.0.0.1:PORT --insecure-http-loopback \
#          --registration-token conformance-iat \
#          --client-id conformance-cc --client-secret conformance-cc-secret-0123456789abcdef
set -euo pipefail
here="$(cd "$(dirname "$0")/oidc-provider" && pwd)"
cd "$here"
if [ ! -d node_modules/oidc-provider ]; then
  npm ci --no-audit --no-fund
fi
export PORT="${1:-${PORT:-3000}}"
exec node server.mjs

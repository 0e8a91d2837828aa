#!/usr/bin/env bash
# Screenshots of the UI after the demo has indexed its sample data (docs/ui-*.png).
# Needs Debian's chromium; installs it when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v chromium >/dev/null || { apt-get update -q && apt-get install -y -q chromium; }
port=${PORT:-3222}
export FES_DEMO_DIR=${FES_DEMO_DIR:-$(mktemp -d)/demo}
.venv/bin/fes demo --port "$port" > "$FES_DEMO_DIR.log" 2>&1 &
demo=$!
trap 'kill -TERM $demo; wait $demo' EXIT
until grep -q "Press Ctrl-C" "$FES_DEMO_DIR.log" 2>/dev/null; do sleep 2; done
sleep 60  # the sensor's first runs
shot() {
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$(mktemp -d)" --window-size=1600,1000 --virtual-time-budget=20000 \
    --screenshot="docs/$1.png" "http://127.0.0.1:$port/$2" 2>/dev/null
}
shot ui-asset-graph "asset-groups"
shot ui-partitions "assets/entity_lookup/entity_driver_id?view=partitions"
shot ui-checks "assets/entity_lookup/entity_driver_id?view=checks"
shot ui-runs "runs"

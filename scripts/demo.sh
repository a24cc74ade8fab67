#!/usr/bin/env bash
# The main job on the embedded default (no cloud account, no internet): start the local AWS server, set up the
# stack's AWS side, show it, prove a second setup changes nothing, tear it down, stop the server.
# Exit 0 only if every step worked and nothing of the stack is left. Later issues grow this into the full run.
source "$(dirname "$0")/lib/venv.sh"
ensure_venv
cd "$ROOT"

STATE_DIR="${HYBRID_STATE_DIR:-$ROOT/.hybrid/demo}"
STACK="${HYBRID_STACK:-demo-$(date +%H%M%S)}"
h() { hybrid --state-dir "$STATE_DIR" --stack "$STACK" "$@"; }

cleanup() {
  local status=$?
  if [ $status -ne 0 ]; then
    echo "==> demo failed (exit $status): tearing down what it started"
    h aws down >/dev/null 2>&1 || true
  fi
  h emulator stop >/dev/null 2>&1 || true
  exit $status
}
trap cleanup EXIT

echo "==> starting the local AWS server"
h emulator start
echo "==> setting up stack $STACK"
h aws up
echo "==> a second setup changes nothing"
plan="$(h aws plan)"; echo "$plan"
[ "$plan" = "no changes" ] || { echo "error: second plan was not empty" >&2; exit 1; }
echo "==> status"
h aws status
echo "==> tearing down"
h aws down
if h aws status --json >/dev/null 2>&1; then
  echo "error: resources of stack $STACK are still there" >&2; exit 1
fi
leftover="$(h aws status --json | python -c 'import json,sys; print(sum(r["state"] not in ("missing", "0 live") for r in json.load(sys.stdin)["resources"]))' || true)"
[ "$leftover" = "0" ] || { echo "error: $leftover resource(s) of stack $STACK left behind" >&2; exit 1; }
echo "==> demo passed: stack $STACK was set up, checked and removed; nothing is left"

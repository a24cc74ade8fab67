#!/usr/bin/env bash
# The test command: creates or reuses .venv, installs everything, runs the whole test suite.
# Extra arguments go to pytest, e.g.  scripts/test.sh -k sqs -x
source "$(dirname "$0")/lib/venv.sh"
ensure_venv
cd "$ROOT"
echo "==> running tests"
exec "$VENV/bin/python" -m pytest "$@"

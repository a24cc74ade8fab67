#!/usr/bin/env bash
# The main job on the embedded default (no cloud account, no internet):
#   start the local stack (local AWS server, stack, autoscaler, web tier), build 100 sample images from real photos,
#   send them as 100 concurrent requests from 0 workers, then again from the cache, write a report folder with a
#   timeline picture, and tear everything down.
# Exit 0 only if every answer was right and the fleet came back to zero. Extra arguments go to `hybrid demo`,
# e.g. scripts/demo.sh --count 40
source "$(dirname "$0")/lib/venv.sh"
ensure_venv
cd "$ROOT"
exec hybrid demo "$@"

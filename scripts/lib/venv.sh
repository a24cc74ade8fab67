# Sourced by scripts/*.sh: creates or reuses .venv (Python 3.11) and installs the project with every extra
# (dev pulls in operator, app, worker and web: everything development and the tests use; an image installs only
# its tier's extra, see images/README.md).
# Reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$ROOT/.venv"
export AWS_EC2_METADATA_DISABLED=true   # never ask 169.254.169.254 for credentials off AWS
export PIP_DISABLE_PIP_VERSION_CHECK=1

find_python() {
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
      command -v "$candidate"; return 0
    fi
  done
  echo "error: Python 3.11 is required (python3.11 not found on PATH)" >&2
  return 1
}

ensure_venv() {
  local stamp="$VENV/.hybrid-installed" want
  want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    "$(find_python)" -m venv "$VENV"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "==> installing hybrid and its dependencies into $VENV (torch comes from local disk; about a minute)"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT[dev,operator,app,worker,web]"
    echo "$want" > "$stamp"
  fi
  # The web tier's front: Debian's nginx package, downloaded and unpacked into .venv/nginx (no root, no system
  # service; see hybrid/core/nginx.py). Once.
  if [ ! -x "$VENV/nginx/usr/sbin/nginx" ]; then
    echo "==> unpacking Debian's nginx into $VENV/nginx (the web tier's front)"
    "$VENV/bin/python" -m hybrid.core.nginx install >/dev/null
  fi
  export PATH="$VENV/bin:$PATH"
}

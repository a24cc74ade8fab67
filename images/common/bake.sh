#!/bin/bash
# hybrid image bake: runs once on the builder instance (cloud-init runcmd), as root.
# Input (environment, set by the rendered user data): HYBRID_ROLE (app-tier | web-tier), HYBRID_REQUIREMENT (what
# pip installs: the hybrid package, with the [app] extra on the app tier), HYBRID_UNITS (units to enable).
# Reports on the serial console, which `hybrid image bake` polls: "HYBRID-BAKE-READY <role>" when done, or
# "HYBRID-BAKE-FAILED <role> ..." on the first failing step. The units are enabled, not started: they start
# on instances launched from the image, once user data has delivered /etc/hybrid/settings.json.
set -euo pipefail
report() { echo "$*" | tee /dev/console || echo "$*"; }
trap 'report "HYBRID-BAKE-FAILED ${HYBRID_ROLE:-?} at line ${LINENO}: ${BASH_COMMAND}"' ERR

: "${HYBRID_ROLE:?}" "${HYBRID_REQUIREMENT:?}" "${HYBRID_UNITS:?}"
id hybrid >/dev/null 2>&1 || useradd --system --home-dir /var/lib/hybrid --create-home --shell /usr/sbin/nologin hybrid
install -d -m 0755 -o root -g root /etc/hybrid /opt/hybrid
install -d -m 0750 -o hybrid -g hybrid /var/lib/hybrid

python3 -m venv /opt/hybrid/.venv
/opt/hybrid/.venv/bin/pip install --no-cache-dir --upgrade pip
/opt/hybrid/.venv/bin/pip install --no-cache-dir "${HYBRID_REQUIREMENT}"
/opt/hybrid/.venv/bin/hybrid --help >/dev/null

if [ "${HYBRID_ROLE}" = "app-tier" ]; then
    # Export the ONNX model into the worker's cache now, so instances start serving without importing torch.
    runuser -u hybrid -- env HOME=/var/lib/hybrid /opt/hybrid/.venv/bin/hybrid models prepare
fi

# The image carries no settings and no credentials: each instance gets its own at boot.
rm -f /etc/hybrid/settings.json /etc/hybrid/hybrid.toml /etc/hybrid/aws-credentials
systemctl daemon-reload
# shellcheck disable=SC2086 # a space-separated list of unit names
systemctl enable ${HYBRID_UNITS}
report "HYBRID-BAKE-READY ${HYBRID_ROLE}"

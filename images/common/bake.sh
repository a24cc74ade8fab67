#!/bin/bash
# hybrid image bake: runs once on the builder instance (cloud-init runcmd), as root.
# Input (environment, set by the rendered user data): HYBRID_ROLE (app-tier | web-tier), HYBRID_EXTRA (the pip extra
# of the role: worker | web), HYBRID_UNITS (units to enable); and the file /root/hybrid-wheelhouse.json (mode 0600:
# the wheelhouse's presigned URL and SHA-256), which this script reads with Python and deletes. The URL is never
# printed: it lets anyone who has it read the tar until it expires.
# No package index and no apt: everything installed comes from the wheelhouse tar (wheels for this Python, pip's own
# wheel, on the web tier Debian's nginx package, on the app tier the ONNX model), so the builder needs no network but
# that URL.
# Reports on the serial console, which `hybrid image bake` polls: "HYBRID-BAKE-READY <role>" when done, or
# "HYBRID-BAKE-FAILED <role> ..." on the first failing step. The units are enabled, not started: they start
# on instances launched from the image, once user data has delivered /etc/hybrid/settings.json.
set -euo pipefail
report() { echo "$*" | tee /dev/console || echo "$*"; }
trap 'report "HYBRID-BAKE-FAILED ${HYBRID_ROLE:-?} at line ${LINENO}: ${BASH_COMMAND}"' ERR

: "${HYBRID_ROLE:?}" "${HYBRID_EXTRA:?}" "${HYBRID_UNITS:?}"
SOURCE=/root/hybrid-wheelhouse.json
VENV=/opt/hybrid/.venv
MODELS=/var/lib/hybrid/.cache/hybrid/models   # the worker's model cache (HOME=/var/lib/hybrid)
WORK="$(mktemp -d /var/tmp/hybrid-bake.XXXXXX)"
HOUSE="$WORK/wheelhouse"
report "hybrid bake ${HYBRID_ROLE}: fetching the wheelhouse"

# The base image has python3 but no curl: urllib fetches the tar; the checksum is checked while it streams.
python3 - "$SOURCE" "$WORK/wheelhouse.tar" <<'PY'
import hashlib, json, sys, urllib.error, urllib.request

def why(exc):  # never the URL: urllib's messages for these carry the status or the socket error only
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return type(exc).__name__

with open(sys.argv[1]) as file:
    spec = json.load(file)
digest, size = hashlib.sha256(), 0
try:
    with urllib.request.urlopen(spec["url"], timeout=120) as reply, open(sys.argv[2], "wb") as out:
        for block in iter(lambda: reply.read(1 << 20), b""):
            out.write(block)
            digest.update(block)
            size += len(block)
except Exception as exc:
    sys.exit(f"wheelhouse download failed: {why(exc)}")
if digest.hexdigest() != spec["sha256"]:
    sys.exit(f"wheelhouse checksum mismatch: got sha256 {digest.hexdigest()}, expected {spec['sha256']}")
print(f"wheelhouse: {size / 2**20:.1f} MiB, sha256 {digest.hexdigest()} verified")
PY
rm -f "$SOURCE"
tar -xf "$WORK/wheelhouse.tar" -C "$WORK"
rm -f "$WORK/wheelhouse.tar"

id hybrid >/dev/null 2>&1 || useradd --system --home-dir /var/lib/hybrid --create-home --shell /usr/sbin/nologin hybrid
install -d -m 0755 -o root -g root /etc/hybrid /opt/hybrid
install -d -m 0750 -o hybrid -g hybrid /var/lib/hybrid

# A venv without pip (the base has no ensurepip); pip runs from its own wheel, offline, from the wheelhouse only.
# pip compiles the bytecode as it installs (root writes it once, so a TCG machine does not compile at each start).
report "hybrid bake ${HYBRID_ROLE}: installing hybrid[${HYBRID_EXTRA}]"
python3 -m venv --without-pip "$VENV"
PIP_WHEEL="$(echo "$HOUSE"/wheels/pip-*.whl)"
"$VENV/bin/python" "$PIP_WHEEL/pip" install --no-index --find-links "$HOUSE/wheels" --no-cache-dir \
    --disable-pip-version-check --quiet "hybrid[${HYBRID_EXTRA}]"
"$VENV/bin/hybrid" --help >/dev/null

if [ -d "$HOUSE/debs" ]; then
    # The web tier's front: Debian's nginx package unpacked into the environment (where hybrid.core.nginx looks),
    # not installed: dpkg -i would also start a system nginx on port 80. Running it once proves its libraries are here.
    report "hybrid bake ${HYBRID_ROLE}: unpacking nginx"
    for deb in "$HOUSE"/debs/*.deb; do dpkg -x "$deb" "$VENV/nginx"; done
    "$VENV/nginx/usr/sbin/nginx" -v
fi

if [ -d "$HOUSE/models" ]; then
    # The ONNX export made on the operator's machine, where the worker's model cache looks; loading it once here
    # proves the worker starts on ONNX Runtime alone (no torch on the image).
    install -d -m 0755 -o hybrid -g hybrid /var/lib/hybrid/.cache /var/lib/hybrid/.cache/hybrid "$MODELS"
    cp -R "$HOUSE/models/." "$MODELS/"
    chown -R hybrid:hybrid "$MODELS"
    runuser -u hybrid -- env HOME=/var/lib/hybrid "$VENV/bin/hybrid" models prepare
fi

# The image carries no settings and no credentials: each instance gets its own at boot.
rm -f /etc/hybrid/settings.json /etc/hybrid/hybrid.toml /etc/hybrid/aws-credentials
systemctl daemon-reload
# shellcheck disable=SC2086 # a space-separated list of unit names
systemctl enable ${HYBRID_UNITS}

# What one machine must not share with the next: the wheelhouse, SSH host keys (cloud-init makes new ones on each
# new instance), cloud-init's state and logs (user data included), the machine id (systemd makes one at first boot).
rm -rf "$WORK"
rm -f /etc/ssh/ssh_host_*
cloud-init clean --logs
truncate -s 0 /etc/machine-id
sync
# A deleted file keeps its bytes in the freed blocks, and fstrim cannot unmap a 4 KiB block that shares a 64 KiB
# qcow2 cluster with live data: the first baked disks still held the builder's user data (the presigned URL) and its
# SSH host key there. So free space is overwritten with zeros first (dd stops when the disk is full), then the
# freed blocks are unmapped, so the image's disk holds only what is in use. ext4 keeps some clusters back from every
# writer, root included (reserved_clusters, up to 4096): the small free fragments between live files, where those
# leftovers were, so that reserve is lifted while dd runs. oflag=direct: zeros in the page cache when the file is
# removed would never be written.
reserve="/sys/fs/ext4/$(basename "$(findmnt -n -o SOURCE /)")/reserved_clusters"
kept="$(cat "$reserve" 2>/dev/null || true)"
[ -z "$kept" ] || echo 0 > "$reserve"
dd if=/dev/zero of=/var/tmp/hybrid-zero bs=4M oflag=direct status=none 2>/dev/null || true
dd if=/dev/zero of=/var/tmp/hybrid-zero-tail bs=4K oflag=direct status=none 2>/dev/null || true
sync
rm -f /var/tmp/hybrid-zero /var/tmp/hybrid-zero-tail
sync
[ -z "$kept" ] || echo "$kept" > "$reserve"
sync
fstrim -av || echo "fstrim: this disk does not support discard"
report "HYBRID-BAKE-READY ${HYBRID_ROLE}"

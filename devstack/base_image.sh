#!/usr/bin/env bash
# base_image.sh build|path|probe -- the fixture's base image: Debian 12 with a kernel, cloud-init, openssh-server and
# Python 3, built from Debian packages with mmdebstrap (nothing else is downloaded), cached by recipe.
#
#   build [--cache DIR]   builds the image unless DIR (default /var/lib/minicloud/images) already holds this recipe's
#                         build; prints the folder. Cold: about a minute; cached: instant.
#   path  [--cache DIR]   prints the folder of this recipe's build, exit 1 when it is not built.
#   probe ACCEL SECONDS   boots the image's kernel and initrd under QEMU with ACCEL (kvm or tcg) until its user space
#                         prints, or SECONDS pass; exit 0 when user space was reached. Prints the time or the reason.
#
# The folder holds disk.qcow2 (one ext4 file system, no partition table, label "root"), vmlinuz and initrd.img (booted
# directly: Glance's kernel_id / ramdisk_id), recipe (the digest's input) and manifest (the installed packages).
# Cloud-init reads its metadata from a config drive only (datasource ConfigDrive): no VM of the fixture asks
# 169.254.169.254.
set -euo pipefail

SUITE=bookworm
SIZE=2G
PACKAGES="systemd-sysv,udev,linux-image-cloud-amd64,python3,openssh-server,cloud-init,ifupdown,isc-dhcp-client,iproute2,e2fsprogs,sudo,netbase"
SOURCES=/etc/apt/sources.list.d/debian.sources   # this machine's own Debian mirror
CACHE=/var/lib/minicloud/images

# What goes into the image besides the packages: written by mmdebstrap's customize hook.
CLOUD_CFG='datasource_list: [ ConfigDrive, None ]
datasource:
  ConfigDrive:
    dsmode: local
# Under software emulation a 3072-bit RSA host key takes 10 s or more: one ed25519 key
ssh_genkeytypes: [ ed25519 ]
# minbase has no locales package: keep the C.UTF-8 built in
locale: false
'
FSTAB='LABEL=root / ext4 errors=remount-ro 0 1
'
INTERFACES='source /etc/network/interfaces.d/*
auto lo
iface lo inet loopback
'

recipe() {      # the build's whole input: a change to any line is a new image
    printf 'suite=%s\nsize=%s\npackages=%s\n' "$SUITE" "$SIZE" "$PACKAGES"
    printf -- '--- cloud.cfg.d/90-minicloud.cfg\n%s--- fstab\n%s--- interfaces\n%s' "$CLOUD_CFG" "$FSTAB" "$INTERFACES"
    declare -f customize
}
digest() { recipe | sha256sum | cut -c1-16; }

customize() {   # customize ROOT: runs after the packages are installed, before the file system is made
    local root=$1
    printf '%s' "$CLOUD_CFG" > "$root/etc/cloud/cloud.cfg.d/90-minicloud.cfg"
    printf '%s' "$FSTAB" > "$root/etc/fstab"
    mkdir -p "$root/etc/network/interfaces.d"
    printf '%s' "$INTERFACES" > "$root/etc/network/interfaces"
    echo debian > "$root/etc/hostname"
    rm -f "$root"/etc/ssh/ssh_host_*                 # cloud-init makes each server its own host keys
    : > "$root/etc/machine-id"                       # and systemd its own machine id
    rm -f "$root/var/lib/dbus/machine-id"
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log
}

folder() { echo "$CACHE/debian-12-base-$(digest)"; }

build() {
    local out; out=$(folder)
    if [ -f "$out/disk.qcow2" ]; then echo "$out"; return 0; fi
    command -v mmdebstrap >/dev/null || { echo "mmdebstrap not installed (apt-get install mmdebstrap)" >&2; exit 1; }
    mkdir -p "$CACHE"
    local work; work=$(mktemp -d "$CACHE/.build.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    local t0; t0=$(date +%s)
    { declare -p CLOUD_CFG FSTAB INTERFACES; declare -f customize; echo 'customize "$1"'; } > "$work/customize.sh"
    mmdebstrap --quiet --variant=minbase --include="$PACKAGES" \
        --customize-hook="bash $work/customize.sh \"\$1\"" \
        "$SUITE" "$work/root" "$SOURCES" >"$work/mmdebstrap.log" 2>&1 \
        || { tail -n 30 "$work/mmdebstrap.log" >&2; echo "mmdebstrap failed" >&2; exit 1; }
    cp "$work"/root/boot/vmlinuz-* "$work/vmlinuz"
    cp "$work"/root/boot/initrd.img-* "$work/initrd.img"
    chroot "$work/root" dpkg-query -W -f '${Package} ${Version}\n' > "$work/manifest"
    mkfs.ext4 -q -L root -d "$work/root" "$work/disk.raw" "$SIZE" >/dev/null
    qemu-img convert -O qcow2 "$work/disk.raw" "$work/disk.qcow2"
    recipe > "$work/recipe"
    rm -rf "$work/root" "$work/disk.raw" "$work/mmdebstrap.log" "$work/customize.sh"
    chmod 755 "$work"; mv "$work" "$out"
    trap - EXIT
    local old; for old in "$CACHE"/debian-12-base-*; do [ "$old" = "$out" ] || rm -rf "$old"; done  # older recipes
    echo "built $out in $(( $(date +%s) - t0 )) s ($(du -sh "$out/disk.qcow2" | cut -f1) qcow2)" >&2
    echo "$out"
}

probe() {       # probe ACCEL SECONDS
    local accel=$1 seconds=$2 out; out=$(folder)
    [ -f "$out/vmlinuz" ] || { echo "no base image built yet ($out)"; return 1; }
    local log; log=$(mktemp)
    local t0; t0=$(date +%s%3N)
    local cpu=(); [ "$accel" = kvm ] && cpu=(-cpu host)
    # User space's first words: initramfs-tools' /init prints "Loading, please wait..." before anything else.
    ( timeout "$seconds" qemu-system-x86_64 -accel "$accel" "${cpu[@]}" -m 256 -smp 1 -nographic -no-reboot \
        -nic none -kernel "$out/vmlinuz" -initrd "$out/initrd.img" \
        -append "console=ttyS0 panic=-1 break=top" </dev/null >"$log" 2>&1 ) 2>/dev/null &
    local qemu=$! reached=""
    while kill -0 "$qemu" 2>/dev/null; do
        if grep -q "Loading, please wait" "$log"; then reached=yes; break; fi
        sleep 0.2
    done
    pkill -P "$qemu" 2>/dev/null || true; { wait "$qemu" || true; } 2>/dev/null
    if [ -n "$reached" ]; then
        local ms=$(( $(date +%s%3N) - t0 ))
        printf 'user space reached in %d.%d s\n' $((ms / 1000)) $((ms % 1000 / 100))
        rm -f "$log"; return 0
    fi
    local last; last=$(tr -d '\r' <"$log" | grep -v '^\s*$' | tail -n 1 | cut -c1-100 || true)
    local ms=$(( $(date +%s%3N) - t0 ))
    printf 'no user space after %d.%d s (deadline %s s; last output: %s)\n' $((ms / 1000)) $((ms % 1000 / 100)) \
        "$seconds" "${last:-none}"
    rm -f "$log"; return 1
}

main() {
    local cmd=${1:-}; shift || true
    if [ "${1:-}" = --cache ]; then CACHE=$2; shift 2; fi
    case $cmd in
        build) build ;;
        path) local out; out=$(folder); [ -f "$out/disk.qcow2" ] && echo "$out" ;;
        probe) probe "$@" 2>/dev/null ;;   # (bash reports the killed QEMU job on stderr)
        recipe) recipe ;;
        *) echo "usage: $0 build|path [--cache DIR] | probe kvm|tcg SECONDS | recipe" >&2; exit 2 ;;
    esac
}
main "$@"

#!/usr/bin/env bash
# minicloud.sh up|down|status|install -- a single-node OpenStack (Debian 12 packages, release Zed) on 127.0.0.1.
# Keystone, Glance, Placement, Nova (fake compute driver), Neutron (ML2 + a tiny binding driver, no agents), Horizon.
# Every listener binds to 127.0.0.1. No systemd: daemons start from their init scripts or directly.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG=/var/log/minicloud
RUN=/run/minicloud
STATE=/var/lib/minicloud
PASSWORD="${MINICLOUD_PASSWORD:-minicloud-secret}"        # admin, service users, DB, RabbitMQ (loopback only)
MEMBER_PASSWORD="${MINICLOUD_MEMBER_PASSWORD:-hybrid-secret}"
HOST=127.0.0.1
PY=/usr/bin/python3                                          # Debian's python: sees python3-nova etc.
PACKAGES="mariadb-server python3-pymysql rabbitmq-server memcached python3-memcache keystone glance-api
 placement-api nova-api nova-conductor nova-scheduler neutron-server openstack-dashboard
 openstack-dashboard-apache crudini qemu-utils python3-keystoneclient python3-openstackclient iproute2 curl"
T0=$(date +%s)

mkdir -p "$LOG" "$RUN" "$STATE"

say()  { printf '%s [+%3ss] %s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - T0 ))" "$*"; }
die()  { say "FAILED: $1"; shift; local f; for f in "$@"; do [ -f "$f" ] && { echo "--- last lines of $f"; tail -n 30 "$f"; }; done; exit 1; }
ini()  { crudini --set "$@"; }                               # ini FILE SECTION KEY VALUE

# ---------------------------------------------------------------------------------------------------- install
install_packages() {
    if [ -f "$STATE/installed" ]; then return 0; fi
    say "installing packages (apt-get update once, then ~290 MB download)"
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d
    local p sel=""
    for p in keystone glance-common glance-api nova-common nova-api placement-common placement-api \
             neutron-common neutron-server openstack-dashboard; do
        sel+="$p $p/configure_db boolean false
$p $p/register-endpoint boolean false
$p $p/configure_rabbit boolean false
$p $p/configure_ksat boolean false
"
    done
    sel+="keystone keystone/create-admin-tenant boolean false
openstack-dashboard-apache horizon/activate_vhost boolean true
openstack-dashboard-apache horizon/use_ssl boolean false
openstack-dashboard horizon/activate_vhost boolean true
openstack-dashboard horizon/use_ssl boolean false
"
    printf '%s' "$sel" | debconf-set-selections
    export DEBIAN_FRONTEND=noninteractive
    if [ ! -f "$STATE/apt-updated" ]; then
        apt-get update -q >"$LOG/apt.log" 2>&1 || die "apt-get update" "$LOG/apt.log"
        touch "$STATE/apt-updated"
    fi
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold $PACKAGES >>"$LOG/apt.log" 2>&1 \
        || { rm -f /usr/sbin/policy-rc.d; die "apt-get install" "$LOG/apt.log"; }
    rm -f /usr/sbin/policy-rc.d
    touch "$STATE/installed"
    say "packages installed"
}

#!/usr/bin/env bash
# minicloud.sh up|down|status|exec|install -- a single-node OpenStack (Debian 12 packages, release Zed) on 127.0.0.1.
# Keystone, Glance, Placement, Nova, Neutron, Horizon. Every API listener binds to 127.0.0.1. No systemd: daemons
# start from their init scripts or directly.
#
# Compute (MINICLOUD_COMPUTE):
#   libvirt (the default)  Nova's libvirt driver boots real virtual machines: virt_type kvm where a probe boot under
#                          KVM reaches user space in time, else qemu (TCG). Neutron ML2 with linuxbridge, a DHCP agent,
#                          an L3 agent (router with SNAT, floating IPs as DNAT in its namespace), iptables security
#                          groups, config drives for metadata. The base image (devstack/base_image.sh) is registered
#                          in Glance as debian-12-base.
#   fake                   Nova's fake driver and a binding-only ML2 driver: servers go ACTIVE without a VM, nothing
#                          is routable. For quick API tests.
#
# Containment: the external network's host side lives in the namespace minicloud-ext (172.24.4.1/24, DevStack's own
# floating range), which the fixture creates; the root namespace has no address in the fixture's ranges and only an
# `unreachable` route to them, and nothing routes off the machine. Reach a floating IP only from there:
# `minicloud.sh exec -- CMD [ARGS]`.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LOG=/var/log/minicloud
RUN=/run/minicloud
STATE=/var/lib/minicloud
PASSWORD="${MINICLOUD_PASSWORD:-minicloud-secret}"        # admin, service users, DB, RabbitMQ (loopback only)
MEMBER_PASSWORD="${MINICLOUD_MEMBER_PASSWORD:-hybrid-secret}"
HOST=127.0.0.1
PY=/usr/bin/python3                                          # Debian's python: sees python3-nova etc.
COMPUTE="${MINICLOUD_COMPUTE:-$(cat /run/minicloud/compute 2>/dev/null || echo libvirt)}"   # the running mode, else libvirt
EXT_NS=minicloud-ext                                         # the external network's host side
FLOATING_RANGE=172.24.4.0/24                                 # the external network (DevStack's default range)
EXT_GATEWAY=172.24.4.1/24
FIXTURE_RANGES="$FLOATING_RANGE 10.0.0.0/24"                 # floating and private: never reachable from the root ns
EXT_ROOT_END=mcext-br                                        # veth end in the root namespace: physnet1, no address
EXT_NS_END=mcext-gw                                          # veth end in minicloud-ext: the gateway address
PROBE_SECONDS=30                                             # a KVM boot must reach user space within this
PACKAGES="mariadb-server python3-pymysql rabbitmq-server memcached python3-memcache keystone glance-api
 placement-api nova-api nova-conductor nova-scheduler neutron-server openstack-dashboard
 openstack-dashboard-apache crudini qemu-utils python3-keystoneclient python3-openstackclient iproute2 curl
 python3-nova libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu qemu-system-x86 python3-libvirt
 genisoimage neutron-linuxbridge-agent neutron-dhcp-agent neutron-l3-agent dnsmasq-base iptables ebtables conntrack
 sudo mmdebstrap iputils-ping socat"
T0=$(date +%s)
DID=""                                                       # what this `up` had to do: packages base-image databases

mkdir -p "$LOG" "$RUN" "$STATE"

say()  { printf '%s [+%3ss] %s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - T0 ))" "$*"; }
die()  { say "FAILED: $1"; shift; local f; for f in "$@"; do [ -f "$f" ] && { echo "--- last lines of $f"; tail -n 30 "$f"; }; done; exit 1; }
ini()  { crudini --set "$@"; }                               # ini FILE SECTION KEY VALUE

# ---------------------------------------------------------------------------------------------------- install
install_packages() {
    if [ -f "$STATE/installed" ]; then return 0; fi
    DID+=" packages"
    say "installing packages (apt-get update once, then about 180-300 MB to download, 1 GB installed)"
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
    apt-get install -y -q --no-install-recommends -o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-confmiss $PACKAGES >>"$LOG/apt.log" 2>&1 \
        || { rm -f /usr/sbin/policy-rc.d; die "apt-get install" "$LOG/apt.log"; }
    rm -f /usr/sbin/policy-rc.d
    touch "$STATE/installed"
    say "packages installed"
}

# ---------------------------------------------------------------------------------------------------- configure
DB="mysql+pymysql://openstack:${PASSWORD}@127.0.0.1"
RABBIT="rabbit://openstack:${PASSWORD}@127.0.0.1:5672/"
KS="http://${HOST}:5000"

authtoken() {   # authtoken FILE SECTION USER
    local f=$1 s=$2 u=$3
    ini "$f" "$s" www_authenticate_uri "$KS"
    ini "$f" "$s" auth_url "$KS"
    ini "$f" "$s" memcached_servers 127.0.0.1:11211
    ini "$f" "$s" auth_type password
    ini "$f" "$s" project_domain_name Default
    ini "$f" "$s" user_domain_name Default
    ini "$f" "$s" project_name service
    ini "$f" "$s" username "$u"
    ini "$f" "$s" password "$PASSWORD"
    ini "$f" "$s" region_name RegionOne
}

mkuwsgi() {     # mkuwsgi NAME DEBIAN_INI PORT PROCESSES THREADS [PYARGV]
    local name=$1 src=$2 port=$3 procs=$4 threads=$5 pyargv=${6:-}
    local out=/etc/minicloud/$name-uwsgi.ini
    grep -v -E '^\s*(processes|threads|logto|http-socket|socket|add-header|apparmor-profile|plugins|pyargv|listen)\s*=' "$src" > "$out"
    cat >> "$out" <<INI
plugins = python3
http-socket = ${HOST}:${port}
processes = ${procs}
threads = ${threads}
listen = 64
logto = ${LOG}/${name}.log
add-header = Connection: close
INI
    [ -n "$pyargv" ] && echo "pyargv = $pyargv" >> "$out"
    return 0
}

config_hash() {
    { cat "$HERE/minicloud.sh" "$HERE/ml2/minicloud_ml2.py" "$HERE/nova_compute.py"; echo "$COMPUTE $(virt_type)"; } \
        | sha256sum | cut -c1-16
}

configure() {
    local h; h=$(config_hash)
    if [ "$(cat "$STATE/configured" 2>/dev/null)" = "$h" ]; then return 0; fi
    say "configuring (config hash $h)"
    mkdir -p /etc/minicloud
    # --- infrastructure: MariaDB (Debian binds 127.0.0.1), RabbitMQ, memcached
    cat > /etc/mysql/mariadb.conf.d/99-minicloud.cnf <<CNF
[mysqld]
bind-address = 127.0.0.1
max_connections = 500
innodb_buffer_pool_size = 128M
innodb_flush_log_at_trx_commit = 2
CNF
    cat > /etc/rabbitmq/rabbitmq-env.conf <<ENV
NODENAME=rabbit@localhost
NODE_IP_ADDRESS=127.0.0.1
NODE_PORT=5672
ERL_EPMD_ADDRESS=127.0.0.1
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
ENV
    sed -i -e 's/^-l .*/-l 127.0.0.1/' -e 's/^-m .*/-m 64/' /etc/memcached.conf
    grep -q '^-U 0' /etc/memcached.conf || echo '-U 0' >> /etc/memcached.conf

    # --- keystone
    local f=/etc/keystone/keystone.conf
    ini $f database connection "$DB/keystone"
    ini $f token provider fernet
    ini $f cache enabled true
    ini $f cache backend oslo_cache.memcache_pool
    ini $f cache memcache_servers 127.0.0.1:11211
    crudini --del $f DEFAULT log_file; crudini --del $f DEFAULT log_dir
    mkuwsgi keystone /etc/keystone/keystone-uwsgi.ini 5000 2 4

    # --- glance (eventlet daemon)
    f=/etc/glance/glance-api.conf
    ini $f DEFAULT bind_host $HOST
    ini $f DEFAULT bind_port 9292
    ini $f DEFAULT workers 1
    ini $f DEFAULT enabled_backends "fs:file"
    ini $f glance_store default_backend fs
    ini $f fs filesystem_store_datadir /var/lib/glance/images/
    ini $f os_glance_staging_store filesystem_store_datadir /var/lib/glance/staging/
    ini $f os_glance_tasks_store filesystem_store_datadir /var/lib/glance/tasks_work_dir/
    ini $f database connection "$DB/glance"
    ini $f paste_deploy flavor keystone
    authtoken $f keystone_authtoken glance
    mkdir -p /var/lib/glance/images /var/lib/glance/staging /var/lib/glance/tasks_work_dir
    chown -R glance:glance /var/lib/glance

    # --- placement
    f=/etc/placement/placement.conf
    ini $f placement_database connection "$DB/placement"
    ini $f api auth_strategy keystone
    authtoken $f keystone_authtoken placement
    mkuwsgi placement /etc/placement/placement-api-uwsgi.ini 8778 1 4

    # --- nova (controller side)
    f=/etc/nova/nova.conf
    ini $f DEFAULT transport_url "$RABBIT"
    ini $f DEFAULT my_ip $HOST
    ini $f DEFAULT host minicloud
    ini $f DEFAULT enabled_apis osapi_compute
    ini $f DEFAULT osapi_compute_workers 1
    ini $f api_database connection "$DB/nova_api"
    ini $f database connection "$DB/nova"
    ini $f api auth_strategy keystone
    authtoken $f keystone_authtoken nova
    authtoken $f placement placement
    authtoken $f neutron neutron
    crudini --del $f placement memcached_servers; crudini --del $f placement www_authenticate_uri
    crudini --del $f neutron memcached_servers; crudini --del $f neutron www_authenticate_uri
    crudini --del $f neutron service_metadata_proxy
    ini $f glance api_servers "http://${HOST}:9292"
    ini $f conductor workers 1
    ini $f scheduler workers 1
    ini $f scheduler discover_hosts_in_cells_interval -1
    ini $f vnc enabled false
    ini $f cinder os_region_name RegionOne
    ini $f oslo_concurrency lock_path /var/lock/nova
    ini $f oslo_messaging_notifications driver noop
    crudini --del $f service_user
    mkuwsgi nova-api /etc/nova/nova-api-uwsgi.ini 8774 2 1
    # nova-compute: its own config, no database access (as on a real compute node)
    grep -q . /etc/minicloud/nova-compute.conf 2>/dev/null && rm -f /etc/minicloud/nova-compute.conf
    f=/etc/minicloud/nova-compute.conf
    touch $f
    ini $f DEFAULT transport_url "$RABBIT"
    ini $f DEFAULT host minicloud
    ini $f DEFAULT my_ip $HOST
    ini $f DEFAULT state_path /var/lib/nova
    ini $f DEFAULT instances_path /var/lib/nova/instances
    if [ "$COMPUTE" = fake ]; then
        ini $f DEFAULT compute_driver fake.FakeDriver
    else
        ini $f DEFAULT compute_driver libvirt.LibvirtDriver
        ini $f libvirt virt_type "$(virt_type)"
        if [ "$(virt_type)" = kvm ]; then
            ini $f libvirt cpu_mode host-passthrough
        else   # TCG's default CPU is qemu64 (x86-64 v1): NumPy's wheels need v2 (SSE4.2, POPCNT) and die on it
            ini $f libvirt cpu_mode custom
            ini $f libvirt cpu_models Nehalem
        fi
        ini $f DEFAULT force_config_drive true              # metadata by config drive: no metadata service
        ini $f DEFAULT config_drive_format iso9660
        ini $f DEFAULT reserved_host_memory_mb 2048
        ini $f DEFAULT resume_guests_state_on_host_boot false
        ini $f workarounds disable_rootwrap true             # nova-compute runs as root: sudo is the root helper
    fi
    authtoken $f placement placement
    authtoken $f neutron neutron
    crudini --del $f placement memcached_servers; crudini --del $f placement www_authenticate_uri
    crudini --del $f neutron memcached_servers; crudini --del $f neutron www_authenticate_uri
    ini $f glance api_servers "http://${HOST}:9292"
    ini $f vnc enabled false
    ini $f oslo_concurrency lock_path /var/lock/nova
    ini $f oslo_messaging_notifications driver noop
    chown root:nova $f; chmod 640 $f
    mkdir -p /var/lib/nova/instances /var/lock/nova; chown -R nova:nova /var/lib/nova /var/lock/nova
    chmod 755 /var/lib/nova /var/lib/nova/instances             # QEMU (user libvirt-qemu) opens the disks there

    # --- neutron: ML2 (linuxbridge and agents; or, with fake compute, the minicloud binding driver and no agents)
    f=/etc/neutron/neutron.conf
    ini $f DEFAULT bind_host $HOST
    ini $f DEFAULT host minicloud                                # the agents' host: nova-compute's, for port binding
    ini $f DEFAULT core_plugin ml2
    ini $f DEFAULT service_plugins router
    ini $f DEFAULT transport_url "$RABBIT"
    ini $f DEFAULT auth_strategy keystone
    ini $f DEFAULT api_workers 1
    ini $f DEFAULT rpc_workers 1
    ini $f DEFAULT rpc_state_report_workers 1
    ini $f DEFAULT notify_nova_on_port_status_changes true
    ini $f DEFAULT notify_nova_on_port_data_changes true
    ini $f database connection "$DB/neutron"
    authtoken $f keystone_authtoken neutron
    authtoken $f nova nova
    crudini --del $f nova memcached_servers; crudini --del $f nova www_authenticate_uri
    ini $f oslo_concurrency lock_path /var/lib/neutron/lock
    ini $f oslo_messaging_notifications driver noop
    ini $f agent root_helper sudo                                # the agents run as root
    ini $f experimental linuxbridge true                         # Zed calls the linuxbridge driver experimental
    crudini --del $f agent root_helper_daemon
    f=/etc/neutron/plugins/ml2/ml2_conf.ini
    ini $f ml2 type_drivers flat,local                           # one node: tenant networks are local bridges
    ini $f ml2 tenant_network_types local
    ini $f ml2 mechanism_drivers "$( [ "$COMPUTE" = fake ] && echo minicloud || echo linuxbridge )"
    ini $f ml2 extension_drivers port_security
    ini $f ml2_type_flat flat_networks physnet1
    ini $f securitygroup enable_security_group true
    ini $f securitygroup enable_ipset false
    configure_agents
    # Neutron is eventlet-based: uwsgi threads make it fail with "cannot switch to a different thread" and leave
    # requests unanswered until every thread is stuck. One thread per process, two processes.
    mkuwsgi neutron-api /etc/neutron/neutron-api-uwsgi.ini 9696 2 1 \
        "--config-file=/etc/neutron/neutron.conf --config-file=/etc/neutron/plugins/ml2/ml2_conf.ini"
    mkdir -p /var/lib/neutron/lock /var/lib/neutron/tmp; chown -R neutron:neutron /var/lib/neutron
    install_ml2_driver
    install -D -m 755 "$HERE/nova_compute.py" /usr/local/lib/minicloud/nova_compute.py

    # --- horizon under apache2 + mod_wsgi, on 127.0.0.1:80 only
    sed -i -e 's/^Listen 80$/Listen 127.0.0.1:80/' /etc/apache2/ports.conf
    printf 'ServerName 127.0.0.1\nRedirectMatch ^/horizon/?$ /\n' > /etc/apache2/conf-available/minicloud.conf
    a2enconf -q minicloud >/dev/null
    f=/etc/openstack-dashboard/local_settings.py
    sed -i '/^# BEGIN minicloud/,/^# END minicloud/d' $f
    cat >> $f <<PYSET
# BEGIN minicloud
OPENSTACK_HOST = "127.0.0.1"
OPENSTACK_KEYSTONE_URL = "http://127.0.0.1:5000/v3"
OPENSTACK_KEYSTONE_DEFAULT_ROLE = "member"
ALLOWED_HOSTS = ['127.0.0.1', 'localhost', 'vm']
SESSION_ENGINE = 'django.contrib.sessions.backends.signed_cookies'
# END minicloud
PYSET
    for n in keystone glance placement nova-api nova-conductor nova-scheduler nova-compute neutron-api neutron-rpc \
             neutron-linuxbridge neutron-dhcp neutron-l3 libvirtd; do
        touch "$LOG/$n.log"
    done
    chown keystone "$LOG/keystone.log"; chown glance "$LOG/glance.log"; chown placement "$LOG/placement.log"
    chown nova "$LOG"/nova-*.log; chown neutron "$LOG"/neutron-*.log
    echo "$h" > "$STATE/configured"
    say "configured"
}

configure_agents() {    # linuxbridge (the security groups' iptables too), DHCP and L3 agents
    local f=/etc/neutron/plugins/ml2/linuxbridge_agent.ini
    [ -f $f ] || cp $f.dpkg-new $f 2>/dev/null || touch $f
    ini $f linux_bridge physical_interface_mappings "physnet1:$EXT_ROOT_END"
    ini $f vxlan enable_vxlan false
    ini $f securitygroup enable_security_group true
    ini $f securitygroup firewall_driver iptables
    ini $f agent polling_interval 1
    f=/etc/neutron/dhcp_agent.ini
    [ -f $f ] || cp $f.dpkg-new $f 2>/dev/null || touch $f
    ini $f DEFAULT interface_driver linuxbridge
    ini $f DEFAULT enable_isolated_metadata false
    ini $f DEFAULT force_metadata false
    ini $f DEFAULT dnsmasq_local_resolv false                    # dnsmasq forwards no query off the machine
    f=/etc/neutron/l3_agent.ini
    [ -f $f ] || cp $f.dpkg-new $f 2>/dev/null || touch $f
    ini $f DEFAULT interface_driver linuxbridge
    ini $f DEFAULT agent_mode legacy
    ini $f DEFAULT enable_metadata_proxy false                   # config drives instead
    f=/etc/neutron/rootwrap.conf
    [ -f $f ] || cp $f.dpkg-new $f 2>/dev/null || true
    for f in /etc/neutron/dnsmasq-neutron.conf; do [ -f $f ] || cp $f.dpkg-new $f 2>/dev/null || touch $f; done
}

install_ml2_driver() {
    local sp=/usr/lib/python3/dist-packages di
    install -m 644 "$HERE/ml2/minicloud_ml2.py" $sp/minicloud_ml2.py
    di=$sp/minicloud_ml2-0.1.dist-info
    mkdir -p $di
    printf 'Metadata-Version: 2.1\nName: minicloud-ml2\nVersion: 0.1\nSummary: ML2 binding driver for the minicloud fixture\n' > $di/METADATA
    printf '[neutron.ml2.mechanism_drivers]\nminicloud = minicloud_ml2:MiniCloudMechanismDriver\n' > $di/entry_points.txt
    printf 'minicloud_ml2.py,,\nminicloud_ml2-0.1.dist-info/METADATA,,\nminicloud_ml2-0.1.dist-info/entry_points.txt,,\nminicloud_ml2-0.1.dist-info/RECORD,,\n' > $di/RECORD
    echo minicloud > $di/INSTALLER
    rm -rf /root/.cache/python-entrypoints /var/lib/neutron/.cache/python-entrypoints 2>/dev/null
}

# ---------------------------------------------------------------------------------------------------- daemons
UWSGI=/usr/bin/uwsgi_python311
OS_SERVICES="keystone glance placement nova-api nova-conductor nova-scheduler nova-compute neutron-api neutron-rpc"
AGENTS="neutron-linuxbridge neutron-dhcp neutron-l3"
[ "$COMPUTE" = fake ] || OS_SERVICES+=" $AGENTS"
declare -A PORT=([keystone]=5000 [glance]=9292 [placement]=8778 [nova-api]=8774 [neutron-api]=9696
                 [mariadb]=3306 [rabbitmq]=5672 [memcached]=11211 [horizon]=80)
declare -A URL=([keystone]="http://$HOST:5000/v3" [glance]="http://$HOST:9292/" [placement]="http://$HOST:8778/"
                [nova-api]="http://$HOST:8774/" [neutron-api]="http://$HOST:9696/"
                [horizon]="http://$HOST/auth/login/")

svc_start_args() {   # prints: USER CHDIR then the command
    local n=$1
    case $n in
        keystone)       echo "root /var/lib/keystone $UWSGI --ini /etc/minicloud/keystone-uwsgi.ini" ;;
        placement)      echo "root /var/lib/placement $UWSGI --ini /etc/minicloud/placement-uwsgi.ini" ;;
        nova-api)       echo "root /var/lib/nova $UWSGI --ini /etc/minicloud/nova-api-uwsgi.ini" ;;
        neutron-api)    echo "root /var/lib/neutron $UWSGI --ini /etc/minicloud/neutron-api-uwsgi.ini" ;;
        glance)         echo "glance /var/lib/glance /usr/bin/glance-api --config-file=/etc/glance/glance-api.conf --log-file=$LOG/glance.log" ;;
        nova-conductor) echo "nova /var/lib/nova /usr/bin/nova-conductor --config-file=/etc/nova/nova.conf --log-file=$LOG/nova-conductor.log" ;;
        nova-scheduler) echo "nova /var/lib/nova /usr/bin/nova-scheduler --config-file=/etc/nova/nova.conf --log-file=$LOG/nova-scheduler.log" ;;
        nova-compute)   echo "$( [ "$COMPUTE" = fake ] && echo nova || echo root ) /var/lib/nova $PY /usr/local/lib/minicloud/nova_compute.py --config-file=/etc/minicloud/nova-compute.conf --log-file=$LOG/nova-compute.log" ;;
        neutron-rpc)    echo "neutron /var/lib/neutron /usr/bin/neutron-rpc-server --config-file=/etc/neutron/neutron.conf --config-file=/etc/neutron/plugins/ml2/ml2_conf.ini --log-file=$LOG/neutron-rpc.log" ;;
        neutron-linuxbridge) echo "root /var/lib/neutron /usr/bin/neutron-linuxbridge-agent --config-file=/etc/neutron/neutron.conf --config-file=/etc/neutron/plugins/ml2/linuxbridge_agent.ini --log-file=$LOG/neutron-linuxbridge.log" ;;
        neutron-dhcp)   echo "root /var/lib/neutron /usr/bin/neutron-dhcp-agent --config-file=/etc/neutron/neutron.conf --config-file=/etc/neutron/dhcp_agent.ini --log-file=$LOG/neutron-dhcp.log" ;;
        neutron-l3)     echo "root /var/lib/neutron /usr/bin/neutron-l3-agent --config-file=/etc/neutron/neutron.conf --config-file=/etc/neutron/l3_agent.ini --log-file=$LOG/neutron-l3.log" ;;
    esac
}

svc_pid() { local p; p=$(cat "$RUN/$1.pid" 2>/dev/null) && [ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"; }
listening() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }
http_ok() {     # http_ok URL -> 0 when it answers 2xx/3xx
    local c; c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$1" 2>/dev/null)
    [[ "$c" =~ ^[23] ]]
}
wait_for() {    # wait_for SECONDS LOGFILE DESCRIPTION CMD...
    local t=$1 logf=$2 what=$3; shift 3
    local end=$(( $(date +%s) + t ))
    until "$@"; do
        [ "$(date +%s)" -ge "$end" ] && die "timed out after ${t}s waiting for $what" "$logf"
        sleep 0.5
    done
}

start_svc() {
    local n=$1
    if svc_pid "$n" >/dev/null; then return 0; fi
    local user dir cmd
    read -r user dir cmd <<<"$(svc_start_args "$n")"
    local chuid=()
    [ "$user" != root ] && chuid=(--chuid "$user:$user")
    # shellcheck disable=SC2086
    start-stop-daemon --start --background --make-pidfile --pidfile "$RUN/$n.pid" --chdir "$dir" \
        "${chuid[@]}" --output "$LOG/$n.log" --startas ${cmd%% *} -- ${cmd#* } \
        || die "could not start $n" "$LOG/$n.log"
    say "started $n (pid $(cat "$RUN/$n.pid"))"
}

stop_svc() {    # TERM the whole session (start-stop-daemon --background makes each daemon a session leader)
    local n=$1 p
    p=$(svc_pid "$n") || { rm -f "$RUN/$n.pid"; return 0; }
    kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null
    local i
    for i in $(seq 1 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$p" 2>/dev/null
    rm -f "$RUN/$n.pid"
    say "stopped $n"
}

start_infra() {
    if ! mysqladmin ping >/dev/null 2>&1; then
        /etc/init.d/mariadb start >"$LOG/mariadb.log" 2>&1 || die "mariadb start" "$LOG/mariadb.log" /var/log/mysql/error.log
        say "started mariadb"
    fi
    if ! listening 11211; then
        /etc/init.d/memcached start >"$LOG/memcached.log" 2>&1 || die "memcached start" "$LOG/memcached.log"
        say "started memcached"
    fi
    if ! listening 5672; then
        /etc/init.d/rabbitmq-server start >"$LOG/rabbitmq.log" 2>&1 \
            || die "rabbitmq start" "$LOG/rabbitmq.log" /var/log/rabbitmq/rabbit@localhost.log
        wait_for 60 /var/log/rabbitmq/rabbit@localhost.log "rabbitmq on 5672" listening 5672
        say "started rabbitmq"
    fi
}

as() { local u=$1; shift; runuser -u "$u" -- "$@"; }

init_databases() {
    [ -f "$STATE/db-done" ] && return 0
    DID+=" databases"
    say "creating databases, RabbitMQ user, schemas (in parallel)"
    local sql="" d
    for d in keystone glance placement nova_api nova nova_cell0 neutron; do sql+="CREATE DATABASE IF NOT EXISTS $d;"; done
    sql+="CREATE USER IF NOT EXISTS 'openstack'@'localhost' IDENTIFIED BY '$PASSWORD';"
    sql+="CREATE USER IF NOT EXISTS 'openstack'@'127.0.0.1' IDENTIFIED BY '$PASSWORD';"
    sql+="GRANT ALL PRIVILEGES ON *.* TO 'openstack'@'localhost'; GRANT ALL PRIVILEGES ON *.* TO 'openstack'@'127.0.0.1';"
    mysql -u root -e "$sql" >"$LOG/dbsync.log" 2>&1 || die "create databases" "$LOG/dbsync.log"
    ( rabbitmqctl add_user openstack "$PASSWORD" >/dev/null 2>&1 || rabbitmqctl change_password openstack "$PASSWORD"
      rabbitmqctl set_permissions openstack '.*' '.*' '.*' ) >"$LOG/rabbit-user.log" 2>&1 &
    local pids=()
    ( as keystone keystone-manage db_sync &&
      keystone-manage fernet_setup --keystone-user keystone --keystone-group keystone &&
      keystone-manage credential_setup --keystone-user keystone --keystone-group keystone &&
      as keystone keystone-manage bootstrap --bootstrap-password "$PASSWORD" \
        --bootstrap-admin-url "$KS/v3/" --bootstrap-internal-url "$KS/v3/" --bootstrap-public-url "$KS/v3/" \
        --bootstrap-region-id RegionOne ) >"$LOG/dbsync-keystone.log" 2>&1 & pids+=($!)
    as glance glance-manage db_sync >"$LOG/dbsync-glance.log" 2>&1 & pids+=($!)
    as placement placement-manage db sync >"$LOG/dbsync-placement.log" 2>&1 & pids+=($!)
    ( as nova nova-manage api_db sync &&
      as nova nova-manage cell_v2 map_cell0 --database_connection "$DB/nova_cell0" &&
      { as nova nova-manage cell_v2 list_cells | grep -q ' cell1 ' || as nova nova-manage cell_v2 create_cell --name=cell1 --verbose; } &&
      as nova nova-manage db sync ) >"$LOG/dbsync-nova.log" 2>&1 & pids+=($!)
    as neutron neutron-db-manage --config-file /etc/neutron/neutron.conf \
        --config-file /etc/neutron/plugins/ml2/ml2_conf.ini upgrade head >"$LOG/dbsync-neutron.log" 2>&1 & pids+=($!)
    local p n=0 names=(keystone glance placement nova neutron)
    for p in "${pids[@]}"; do
        wait "$p" || die "database sync of ${names[$n]}" "$LOG/dbsync-${names[$n]}.log"
        n=$((n+1))
    done
    wait
    touch "$STATE/db-done"
    say "databases ready"
}

compute_discovered() {
    [ "$(mysql -N -u root -e "SELECT count(*) FROM nova_api.host_mappings WHERE host='minicloud'" 2>/dev/null)" = 1 ]
}
compute_registered() {
    [ "$(mysql -N -u root -e "SELECT count(*) FROM nova.compute_nodes WHERE deleted=0 AND host='minicloud'" 2>/dev/null)" -ge 1 ]
}

# ---------------------------------------------------------------------------------------------------- compute
virt_type() {   # kvm or qemu (libvirt compute, from the probe), none (fake compute)
    [ "$COMPUTE" = fake ] && { echo none; return; }
    head -n 1 "$STATE/hypervisor" 2>/dev/null || echo qemu
}

choose_hypervisor() {   # once per machine: kvm where a probe boot under KVM reaches user space in time, else qemu
    [ "$COMPUTE" = fake ] && return 0
    local why
    if [ -n "${MINICLOUD_VIRT_TYPE:-}" ]; then
        printf '%s\nset by MINICLOUD_VIRT_TYPE\n' "$MINICLOUD_VIRT_TYPE" > "$STATE/hypervisor"
    elif [ -f "$STATE/hypervisor" ]; then
        return 0
    elif [ ! -c /dev/kvm ]; then
        printf 'qemu\nno /dev/kvm: QEMU software emulation (TCG)\n' > "$STATE/hypervisor"
    elif why=$(bash "$HERE/base_image.sh" probe kvm "$PROBE_SECONDS"); then
        printf 'kvm\na probe boot under KVM: %s\n' "$why" > "$STATE/hypervisor"
    else
        local modules; modules=$(ls /sys/module | grep '^kvm' | tr '\n' ' ')
        printf 'qemu\na probe boot under KVM (modules: %s): %s; so QEMU software emulation (TCG)\n' \
            "${modules% }" "$why" > "$STATE/hypervisor"
    fi
    say "hypervisor: $(sed -n 1p "$STATE/hypervisor") ($(sed -n 2p "$STATE/hypervisor"))"
}

hypervisor_line() {
    if [ "$COMPUTE" = fake ]; then echo "compute: fake (Nova's fake driver: servers boot no VM)"; return; fi
    if [ -f "$STATE/hypervisor" ]; then
        echo "compute: libvirt, virt_type $(sed -n 1p "$STATE/hypervisor"): $(sed -n 2p "$STATE/hypervisor")"
    else
        echo "compute: libvirt, hypervisor not chosen yet (minicloud.sh up probes it)"
    fi
}

build_base_image() {
    [ "$COMPUTE" = fake ] && return 0
    local out
    if out=$(bash "$HERE/base_image.sh" path); then BASE_IMAGE=$out; return 0; fi
    DID+=" base-image"
    say "building the base image (mmdebstrap: Debian packages only, about a minute)"
    BASE_IMAGE=$(bash "$HERE/base_image.sh" build 2>"$LOG/base-image.log") || die "base image" "$LOG/base-image.log"
    say "$(tail -n 1 "$LOG/base-image.log")"
}

start_libvirt() {
    [ "$COMPUTE" = fake ] && return 0
    rm -f /etc/libvirt/qemu/networks/autostart/default.xml     # its bridge would take 192.168.122.1 in the root ns
    crudini --set /etc/libvirt/libvirtd.conf '' log_outputs "\"3:file:$LOG/libvirtd.log\""   # top-level key
    pgrep -x virtlogd >/dev/null || { virtlogd -d || die "virtlogd start"; }
    if ! pgrep -x libvirtd >/dev/null; then
        libvirtd -d || die "libvirtd start" "$LOG/libvirtd.log"
        say "started libvirtd and virtlogd"
    fi
    wait_for 30 "$LOG/libvirtd.log" "libvirtd" libvirt_answers
}

libvirt_answers() { virsh -q -c qemu:///system version >/dev/null 2>&1; }

stop_libvirt() {
    local p
    for p in libvirtd virtlogd; do pkill -x "$p" && say "stopped $p"; done
    for p in 1 2 3 4 5 6 7 8; do pgrep -x libvirtd >/dev/null || pgrep -x virtlogd >/dev/null || break; sleep 0.25; done
    pkill -KILL -x libvirtd 2>/dev/null; pkill -KILL -x virtlogd 2>/dev/null
    return 0
}

# ---------------------------------------------------------------------------------------------------- containment
ensure_external_namespace() {   # the external network's host side, in a namespace of the fixture's own
    [ "$COMPUTE" = fake ] && return 0
    local clash; clash=$(range_clashes)
    [ -z "$clash" ] || die "the fixture's address ranges clash with this machine's: $clash"
    [ -e "/run/netns/$EXT_NS" ] || ip netns add "$EXT_NS" || die "ip netns add $EXT_NS"
    ip -n "$EXT_NS" link set lo up
    if ! ip link show "$EXT_ROOT_END" >/dev/null 2>&1; then
        ip link add "$EXT_ROOT_END" type veth peer name "$EXT_NS_END" netns "$EXT_NS" || die "veth $EXT_ROOT_END"
    fi
    sysctl -qw "net.ipv6.conf.$EXT_ROOT_END.disable_ipv6=1"
    ip link set "$EXT_ROOT_END" up
    ip netns exec "$EXT_NS" sysctl -qw net.ipv4.ip_forward=0 "net.ipv6.conf.all.disable_ipv6=1"
    ip -n "$EXT_NS" addr replace "$EXT_GATEWAY" dev "$EXT_NS_END"
    ip -n "$EXT_NS" link set "$EXT_NS_END" up
    # Without these, a packet for a floating IP sent from the root namespace (a command run outside `exec`) would
    # follow the default route off the machine; `unreachable` refuses it locally (EHOSTUNREACH), and routes nowhere.
    local range; for range in $FIXTURE_RANGES; do ip route replace unreachable "$range"; done
}

range_clashes() {       # a fixture range that holds this machine's networks or its package mirrors' addresses
    local hosts; hosts=$(grep -hoE '^(URIs:|deb) +https?://[^/ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/* \
        2>/dev/null | sed -E 's#.*://##' | sort -u)
    # shellcheck disable=SC2086
    $PY - "$FIXTURE_RANGES" "$(ip -4 -o addr show | awk '$2 != "lo" {print $4}' | tr '\n' ' ')" \
        "$(for h in $hosts; do getent ahostsv4 "$h" | awk -v h="$h" 'NR==1 {print h "=" $1}'; done | tr '\n' ' ')" <<'PY'
import ipaddress, sys
ranges = [ipaddress.ip_network(r) for r in sys.argv[1].split()]
for item in sys.argv[2].split():                      # this machine's networks
    net = ipaddress.ip_interface(item).network
    for r in ranges:
        if r.overlaps(net):
            print(f"{r} overlaps this machine's network {net}")
for item in sys.argv[3].split():                      # host=address of each package mirror
    host, _, address = item.partition("=")
    for r in ranges:
        if ipaddress.ip_address(address) in r:
            print(f"{r} holds {address}, the address of the package mirror {host}")
PY
}

containment_problems() {        # prints one line per breach of the containment rule
    local nets='^(172\.24\.4\.|10\.0\.0\.)'
    ip -4 -o addr show | awk '{print $2, $4}' | grep -E " ${nets#^}" | sed 's/^/root namespace has address: /'
    ip -4 route show | grep -v '^unreachable ' | awk '{print $1}' | grep -E "$nets" \
        | sed 's/^/root namespace has route: /'
    local range unreachable; unreachable=$(ip -4 route show type unreachable)   # (grep -q on a pipe: SIGPIPE)
    for range in $FIXTURE_RANGES; do
        grep -q "^unreachable $range" <<<"$unreachable" \
            || echo "root namespace lacks the unreachable route for $range (its packets would leave the machine)"
    done
    if [ -e "/run/netns/$EXT_NS" ]; then
        ip netns exec "$EXT_NS" ip -4 route show | grep -E '^default' | sed "s/^/$EXT_NS has a route off: /"
        [ "$(ip netns exec "$EXT_NS" sysctl -n net.ipv4.ip_forward)" = 0 ] || echo "$EXT_NS forwards IPv4"
    fi
    return 0
}

leftovers() {   # prints one line per thing of the fixture's data plane that is still there
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^(qrouter-|qdhcp-|$EXT_NS\$)" | sed 's/^/namespace /'
    ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^(brq|tap|mcext-)' | sed 's/^/link /'
    ip -4 route show type unreachable | grep -E '^unreachable (172\.24\.4\.0|10\.0\.0\.0)/24' | sed 's/^/route /'
    local n
    n=$(iptables-save 2>/dev/null | grep -c neutron); [ "$n" -gt 0 ] && echo "iptables: $n neutron lines"
    n=$(ip6tables-save 2>/dev/null | grep -c neutron); [ "$n" -gt 0 ] && echo "ip6tables: $n neutron lines"
    n=$(ebtables -t nat -L 2>/dev/null | grep -c neutron); [ "$n" -gt 0 ] && echo "ebtables: $n neutron lines"
    pgrep -a -f 'qemu-system|dnsmasq.*neutron|privsep-helper|haproxy.*neutron' | sed 's/^/process /' | cut -c1-120
    { pgrep -a -x libvirtd; pgrep -a -x virtlogd; } | sed 's/^/process /'
    return 0
}

remove_neutron_rules() {        # iptables and ebtables rules the agents wrote in the root namespace
    local t cmd
    for cmd in iptables ip6tables; do
        for t in filter raw nat mangle; do
            [[ "$("$cmd-save" -t $t 2>/dev/null)" == *neutron* ]] || continue
            "$cmd-save" -t $t | grep -v neutron | "$cmd-restore" -T $t 2>/dev/null \
                || "$cmd-save" -t $t | grep -v neutron | "$cmd-restore"
        done
    done
    local rule chain
    ebtables -t nat -L PREROUTING 2>/dev/null | grep -- '-j neutron' | while read -r rule; do
        # shellcheck disable=SC2086
        ebtables -t nat -D PREROUTING $rule
    done
    for chain in $(ebtables -t nat -L 2>/dev/null | awk '/^Bridge chain: neutron/ {sub(",", "", $3); print $3}'); do
        ebtables -t nat -F "$chain"; ebtables -t nat -X "$chain"
    done
    return 0
}

clean_dataplane() {     # after the agents and nova-compute stopped: domains, processes, namespaces, links, rules
    local d ns l
    if pgrep -x libvirtd >/dev/null; then
        for d in $(virsh -q -c qemu:///system list --all --name 2>/dev/null | grep '^instance-'); do
            virsh -q -c qemu:///system destroy "$d" >/dev/null 2>&1
            virsh -q -c qemu:///system undefine --nvram "$d" >/dev/null 2>&1 \
                || virsh -q -c qemu:///system undefine "$d" >/dev/null 2>&1
            say "removed libvirt domain $d"
        done
    fi
    pkill -KILL -f 'qemu-system-x86_64 .*-name guest=instance-' 2>/dev/null
    stop_libvirt
    pkill -KILL -f 'dnsmasq.*neutron|haproxy.*neutron|privsep-helper' 2>/dev/null
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^(qrouter-|qdhcp-|$EXT_NS\$)"); do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
        ip netns delete "$ns" && say "removed namespace $ns"
    done
    for l in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E '^(brq|tap|mcext-)'); do
        ip link delete "$l" 2>/dev/null && say "removed link $l"
    done
    remove_neutron_rules
    local range; for range in $FIXTURE_RANGES; do ip route del unreachable "$range" 2>/dev/null; done
    return 0
}

router_answers() {      # router1's external address answers a ping from the external namespace
    local ip; ip=$(cat "$RUN/router-gateway" 2>/dev/null)
    if [ -z "$ip" ]; then
        ip=$($PY "$HERE/dataplane.py" router-gateway 2>>"$LOG/base-image-glance.log") || return 1
        echo "$ip" > "$RUN/router-gateway"
    fi
    ip netns exec "$EXT_NS" ping -c 1 -W 1 "$ip" >/dev/null 2>&1
}

openstack_env() {
    export MC_PASSWORD="$PASSWORD" MC_MEMBER_PASSWORD="$MEMBER_PASSWORD" MC_HOST="$HOST" MC_FLOATING_RANGE="$FLOATING_RANGE"
}

# ---------------------------------------------------------------------------------------------------- commands
cmd_up() {
    say "minicloud up ($COMPUTE compute)"
    local running; running=$(cat "$RUN/compute" 2>/dev/null)
    if [ -n "$running" ] && [ "$running" != "$COMPUTE" ] && svc_pid nova-compute >/dev/null; then
        die "minicloud runs with $running compute; run \`minicloud.sh down\` first to switch to $COMPUTE"
    fi
    install_packages
    build_base_image
    choose_hypervisor
    configure
    echo "$COMPUTE" > "$RUN/compute"
    start_infra
    ensure_external_namespace
    start_libvirt
    init_databases
    start_svc keystone
    wait_for 60 "$LOG/keystone.log" "keystone API" http_ok "${URL[keystone]}"
    openstack_env
    if [ ! -f "$STATE/keystone-done" ]; then
        $PY "$HERE/bootstrap_keystone.py" >"$LOG/bootstrap-keystone.log" 2>&1 \
            || die "keystone users/endpoints" "$LOG/bootstrap-keystone.log"
        touch "$STATE/keystone-done"; say "keystone: service users, endpoints, project hybrid created"
    fi
    local n
    for n in glance placement nova-api nova-conductor nova-scheduler neutron-api neutron-rpc; do start_svc "$n"; done
    if ! svc_pid horizon >/dev/null && ! listening 80; then
        /etc/init.d/apache2 start >"$LOG/horizon.log" 2>&1 || die "apache2 start" "$LOG/horizon.log"
        say "started apache2 (horizon)"
    fi
    for n in placement nova-api; do wait_for 90 "$LOG/$n.log" "$n API" http_ok "${URL[$n]}"; done
    start_svc nova-compute
    if [ "$COMPUTE" != fake ]; then for n in $AGENTS; do start_svc "$n"; done; fi
    for n in glance neutron-api horizon; do
        local lf="$LOG/$n.log"; [ $n = horizon ] && lf=/var/log/openstack-dashboard/error.log
        wait_for 90 "$lf" "$n" http_ok "${URL[$n]}"
    done
    if ! compute_discovered; then
        wait_for 90 "$LOG/nova-compute.log" "nova-compute to register" compute_registered
        as nova nova-manage cell_v2 discover_hosts --verbose >"$LOG/discover-hosts.log" 2>&1 \
            || die "discover_hosts" "$LOG/discover-hosts.log"
        compute_discovered || die "compute host not mapped" "$LOG/discover-hosts.log" "$LOG/nova-compute.log"
        say "compute host mapped to cell1"
    fi
    if [ ! -f "$STATE/resources-done" ]; then
        $PY "$HERE/bootstrap_resources.py" >"$LOG/bootstrap-resources.log" 2>&1 \
            || die "networks/flavors/clouds.yaml" "$LOG/bootstrap-resources.log"
        touch "$STATE/resources-done"; say "networks public/private, router1, flavors, clouds.yaml written"
    fi
    if [ "$COMPUTE" != fake ]; then
        $PY "$HERE/dataplane.py" register-image "$BASE_IMAGE" >"$LOG/base-image-glance.log" 2>&1 \
            || die "base image in Glance" "$LOG/base-image-glance.log"
        say "$(tail -n 1 "$LOG/base-image-glance.log")"
        wait_for 120 "$LOG/neutron-l3.log" "router1's gateway to answer in $EXT_NS" router_answers
        say "router1 answers at $(cat "$RUN/router-gateway") from $EXT_NS"
    fi
    echo "$(date -Is) seconds=$(( $(date +%s) - T0 )) compute=$COMPUTE virt_type=$(virt_type) did=${DID# }" \
        >> "$STATE/bring-ups"                                    # benchmarks/bench_openstack.py reports these
    say "minicloud is up: clouds hybrid-local (member) and hybrid-local-admin; Horizon http://$HOST/ (admin / \$MINICLOUD_PASSWORD)"
}

stop_all_svcs() {   # TERM every OpenStack daemon's session at once, wait up to 15 s, then KILL what is left
    local n p pids=() names=()
    for n in "$@"; do
        p=$(svc_pid "$n") || { rm -f "$RUN/$n.pid"; continue; }
        kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null
        pids+=("$p"); names+=("$n")
    done
    [ ${#pids[@]} -eq 0 ] && return 0
    local i alive
    for i in $(seq 1 60); do
        alive=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break; sleep 0.25
    done
    for p in "${pids[@]}"; do kill -KILL -- "-$p" 2>/dev/null; done
    for n in "${names[@]}"; do rm -f "$RUN/$n.pid"; done
    say "stopped ${names[*]}"
}

cmd_down() {
    say "minicloud down"
    if listening 80 || pgrep -x apache2 >/dev/null; then
        ( /etc/init.d/apache2 stop >>"$LOG/horizon.log" 2>&1; say "stopped apache2" ) &
    fi
    stop_all_svcs nova-compute $AGENTS neutron-rpc neutron-api nova-scheduler nova-conductor nova-api placement glance \
        keystone
    wait
    clean_dataplane
    rm -f "$RUN/compute" "$RUN/router-gateway"
    if listening 5672 || pgrep -f beam.smp >/dev/null; then
        /etc/init.d/rabbitmq-server stop >>"$LOG/rabbitmq.log" 2>&1; say "stopped rabbitmq"
    fi
    epmd -kill >/dev/null 2>&1 || true
    if listening 11211; then /etc/init.d/memcached stop >>"$LOG/memcached.log" 2>&1; say "stopped memcached"; fi
    if mysqladmin ping >/dev/null 2>&1; then /etc/init.d/mariadb stop >>"$LOG/mariadb.log" 2>&1; say "stopped mariadb"; fi
    local i left
    for i in 1 2 3 4 5 6; do left=$(ours_listening); [ -z "$left" ] && break; sleep 0.5; done
    if [ -n "$left" ]; then say "FAILED: still listening:"; echo "$left"; exit 1; fi
    left=$(leftovers)
    if [ -n "$left" ]; then say "FAILED: left behind:"; echo "$left"; exit 1; fi
    say "minicloud is down (nothing of it listens; no domain, namespace, bridge, tap or neutron rule is left)"
}

OUR_PROCS='mariadbd|mysqld|beam.smp|epmd|memcached|apache2|uwsgi|uwsgi_python311|python3|glance-api|nova-|neutron-'
ours_listening() { ss -Hltunp 2>/dev/null | grep -E "\"($OUR_PROCS)" ; }

cmd_status() {
    local rc=0 n p port ok
    printf '%-19s %-8s %-6s %s\n' SERVICE PID PORT STATE
    row() { printf '%-19s %-8s %-6s %s\n' "$1" "${2:--}" "${3:--}" "$4"; [ "$4" = ok ] || [ "$4" = running ] || rc=1; }
    p=$(pgrep -xo mariadbd); row mariadb "$p" 3306 "$(mysqladmin ping >/dev/null 2>&1 && echo ok || echo down)"
    p=$(pgrep -fo beam.smp); row rabbitmq "$p" 5672 "$(listening 5672 && echo ok || echo down)"
    p=$(pgrep -xo memcached); row memcached "$p" 11211 "$(listening 11211 && echo ok || echo down)"
    for n in $OS_SERVICES; do
        p=$(svc_pid "$n"); port=${PORT[$n]:-}
        if [ -z "$p" ]; then ok=down
        elif [ -n "${URL[$n]:-}" ]; then http_ok "${URL[$n]}" && ok=ok || ok="not answering ${URL[$n]}"
        else ok=running; fi
        row "$n" "$p" "$port" "$ok"
    done
    p=$(pgrep -xo apache2); row horizon "$p" 80 "$(http_ok "${URL[horizon]}" && echo ok || echo "not answering ${URL[horizon]}")"
    if [ "$COMPUTE" != fake ]; then
        p=$(pgrep -xo libvirtd); row libvirtd "$p" - "$(virsh -q -c qemu:///system version >/dev/null 2>&1 && echo ok || echo down)"
    fi
    hypervisor_line
    if [ "$COMPUTE" != fake ]; then
        local domains; domains=$(virsh -q -c qemu:///system list --name 2>/dev/null | grep -c '^instance-')
        echo "libvirt domains running: $domains"
        if [ -e "/run/netns/$EXT_NS" ]; then
            echo "external side: namespace $EXT_NS, $(ip -n "$EXT_NS" -4 -o addr show dev "$EXT_NS_END" | awk '{print $4}') (reach floating IPs with: $0 exec -- CMD)"
        else
            echo "external side: namespace $EXT_NS missing"; rc=1
        fi
        local breach; breach=$(containment_problems)
        if [ -n "$breach" ]; then echo "CONTAINMENT: $breach"; rc=1; else echo "containment: in the root namespace $FIXTURE_RANGES have no address and only an unreachable route; nothing routes off"; fi
    fi
    echo "listeners (ss -ltnp):"
    ss -Hltnp | awk '{print "  " $4, $6}' | sort
    local bad; bad=$(ours_listening | awk '{print $5}' | grep -v -E '^(127\.[0-9.]+|\[::1\]|\[::ffff:127\.[0-9.]+\]):' || true)
    if [ -n "$bad" ]; then echo "NOT LOOPBACK: $bad"; rc=1; else echo "all minicloud listeners are on 127.0.0.1"; fi
    echo "processes: $(ps -eo args --no-headers | grep -c -E '^(/usr/sbin/mariadbd|/usr/lib/erlang/erts[^ ]*/bin/(beam.smp|epmd|erl_child_setup|inet_gethost)|erl_child_setup|inet_gethost|/usr/bin/memcached|/usr/sbin/apache2|(/usr/bin/)?uwsgi_python311|/usr/bin/python3 /usr/bin/(glance|nova|neutron)-|/usr/bin/python3 /usr/local/lib/minicloud/|glance-api|nova-|neutron-|epmd)'), RSS $(ps -eo rss,args --no-headers | grep -E 'mariadbd|beam.smp|epmd|memcached|apache2|uwsgi_python|glance-api|nova-|neutron-|nova_compute|erl_child|inet_gethost' | grep -v grep | awk '{s+=$1} END {printf "%d", s/1024}') MB"
    return $rc
}

cmd_exec() {    # exec -- CMD [ARGS]: CMD in the external namespace, with this environment; its exit code
    [ "${1:-}" = -- ] && shift
    [ $# -gt 0 ] || { echo "usage: $0 exec -- CMD [ARGS]" >&2; exit 2; }
    if [ ! -e "/run/netns/$EXT_NS" ]; then
        echo "minicloud.sh exec: namespace $EXT_NS does not exist: run \`minicloud.sh up\` (libvirt compute) first" >&2
        exit 125
    fi
    exec ip netns exec "$EXT_NS" "$@"
}

main() {
    case "${1:-}" in
        up) cmd_up ;;
        down) cmd_down ;;
        status) cmd_status ;;
        exec) shift; cmd_exec "$@" ;;
        install) install_packages ;;
        *) echo "usage: $0 up|down|status|install, or $0 exec -- CMD [ARGS] (runs CMD in the fixture's external namespace)" >&2; exit 2 ;;
    esac
}
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi

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

config_hash() { cat "$HERE/minicloud.sh" "$HERE/ml2/minicloud_ml2.py" "$HERE/nova_compute.py" | sha256sum | cut -c1-16; }

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
    ini $f DEFAULT compute_driver fake.FakeDriver
    ini $f DEFAULT instances_path /var/lib/nova/instances
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

    # --- neutron: ML2 with the minicloud binding driver, router plugin, no agents
    f=/etc/neutron/neutron.conf
    ini $f DEFAULT bind_host $HOST
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
    f=/etc/neutron/plugins/ml2/ml2_conf.ini
    ini $f ml2 type_drivers flat,vxlan
    ini $f ml2 tenant_network_types vxlan
    ini $f ml2 mechanism_drivers minicloud
    ini $f ml2 extension_drivers port_security
    ini $f ml2_type_flat flat_networks physnet1
    ini $f ml2_type_vxlan vni_ranges 1:1000
    ini $f securitygroup enable_security_group true
    ini $f securitygroup enable_ipset false
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
    for n in keystone glance placement nova-api nova-conductor nova-scheduler nova-compute neutron-api neutron-rpc; do
        touch "$LOG/$n.log"
    done
    chown keystone "$LOG/keystone.log"; chown glance "$LOG/glance.log"; chown placement "$LOG/placement.log"
    chown nova "$LOG"/nova-*.log; chown neutron "$LOG"/neutron-*.log
    echo "$h" > "$STATE/configured"
    say "configured"
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
        nova-compute)   echo "nova /var/lib/nova $PY /usr/local/lib/minicloud/nova_compute.py --config-file=/etc/minicloud/nova-compute.conf --log-file=$LOG/nova-compute.log" ;;
        neutron-rpc)    echo "neutron /var/lib/neutron /usr/bin/neutron-rpc-server --config-file=/etc/neutron/neutron.conf --config-file=/etc/neutron/plugins/ml2/ml2_conf.ini --log-file=$LOG/neutron-rpc.log" ;;
    esac
}

svc_pid() { local p; p=$(cat "$RUN/$1.pid" 2>/dev/null) && [ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"; }
listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
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

openstack_env() { export MC_PASSWORD="$PASSWORD" MC_MEMBER_PASSWORD="$MEMBER_PASSWORD" MC_HOST="$HOST"; }

# ---------------------------------------------------------------------------------------------------- commands
cmd_up() {
    say "minicloud up"
    install_packages
    configure
    start_infra
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
    stop_all_svcs nova-compute neutron-rpc neutron-api nova-scheduler nova-conductor nova-api placement glance keystone
    wait
    if listening 5672 || pgrep -f beam.smp >/dev/null; then
        /etc/init.d/rabbitmq-server stop >>"$LOG/rabbitmq.log" 2>&1; say "stopped rabbitmq"
    fi
    epmd -kill >/dev/null 2>&1 || true
    if listening 11211; then /etc/init.d/memcached stop >>"$LOG/memcached.log" 2>&1; say "stopped memcached"; fi
    if mysqladmin ping >/dev/null 2>&1; then /etc/init.d/mariadb stop >>"$LOG/mariadb.log" 2>&1; say "stopped mariadb"; fi
    local i left
    for i in 1 2 3 4 5 6; do left=$(ours_listening); [ -z "$left" ] && break; sleep 0.5; done
    if [ -n "$left" ]; then say "FAILED: still listening:"; echo "$left"; exit 1; fi
    say "minicloud is down (nothing of it listens)"
}

OUR_PROCS='mariadbd|mysqld|beam.smp|epmd|memcached|apache2|uwsgi|uwsgi_python311|python3|glance-api|nova-|neutron-'
ours_listening() { ss -Hltunp 2>/dev/null | grep -E "\"($OUR_PROCS)" ; }

cmd_status() {
    local rc=0 n p port ok
    printf '%-15s %-8s %-6s %s\n' SERVICE PID PORT STATE
    row() { printf '%-15s %-8s %-6s %s\n' "$1" "${2:--}" "${3:--}" "$4"; [ "$4" = ok ] || [ "$4" = running ] || rc=1; }
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
    echo "listeners (ss -ltnp):"
    ss -Hltnp | awk '{print "  " $4, $6}' | sort
    local bad; bad=$(ours_listening | awk '{print $5}' | grep -v -E '^(127\.[0-9.]+|\[::1\]|\[::ffff:127\.[0-9.]+\]):' || true)
    if [ -n "$bad" ]; then echo "NOT LOOPBACK: $bad"; rc=1; else echo "all minicloud listeners are on 127.0.0.1"; fi
    echo "processes: $(ps -eo args --no-headers | grep -c -E '^(/usr/sbin/mariadbd|/usr/lib/erlang/erts[^ ]*/bin/(beam.smp|epmd|erl_child_setup|inet_gethost)|erl_child_setup|inet_gethost|/usr/bin/memcached|/usr/sbin/apache2|(/usr/bin/)?uwsgi_python311|/usr/bin/python3 /usr/bin/(glance|nova|neutron)-|/usr/bin/python3 /usr/local/lib/minicloud/|glance-api|nova-|neutron-|epmd)'), RSS $(ps -eo rss,args --no-headers | grep -E 'mariadbd|beam.smp|epmd|memcached|apache2|uwsgi_python|glance-api|nova-|neutron-|nova_compute|erl_child|inet_gethost' | grep -v grep | awk '{s+=$1} END {printf "%d", s/1024}') MB"
    return $rc
}

main() {
    case "${1:-}" in
        up) cmd_up ;;
        down) cmd_down ;;
        status) cmd_status ;;
        install) install_packages ;;
        *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
    esac
}
if [ "${BASH_SOURCE[0]}" = "$0" ]; then main "$@"; fi

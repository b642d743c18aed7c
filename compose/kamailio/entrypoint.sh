#!/bin/sh
# Runs the Callyard SIP edge: writes the dispatcher list from FREESWITCH_NODES and
# ASTERISK_NODES, turns the KAMAILIO_* variables below into `-A` defines for kamailio.cfg
# and runs kamailio in the foreground, logging to stderr. Extra arguments go to kamailio.
#
#   FREESWITCH_NODES / ASTERISK_NODES   engine nodes, "host[:port]" comma-separated
#   KAMAILIO_LISTEN_IP (0.0.0.0)        KAMAILIO_SIP_PORT (5060)   UDP and TCP
#   KAMAILIO_ADVERTISE                  "addr[:port]" phones reach the edge at (published port)
#   KAMAILIO_INTERNAL_PORT              when set, engines are reached from a second socket on
#   KAMAILIO_INTERNAL_IP (`hostname -i`)  this address, so each side sees a Record-Route it can
#                                       reach (double Record-Route); needed with KAMAILIO_ADVERTISE
#   KAMAILIO_DEFAULT_ENGINE (freeswitch) engine for numbers no other rule matches
#   KAMAILIO_FREESWITCH_PREFIX (*1)     KAMAILIO_ASTERISK_PREFIX (*2)   stripped prefixes
#   KAMAILIO_FREESWITCH_NUMBERS         KAMAILIO_ASTERISK_NUMBERS       regexes (optional)
#   KAMAILIO_ALGORITHM (4)              4 round-robin, 10 call-load (KAMAILIO_MAX_LOAD)
#   KAMAILIO_PING_INTERVAL (10)         KAMAILIO_PROBING_THRESHOLD (2)
#   KAMAILIO_INACTIVE_THRESHOLD (1)     KAMAILIO_INVITE_TIMEOUT_MS (3000)
#   KAMAILIO_PIKE_UNIT (2)              KAMAILIO_PIKE_DENSITY (30)   KAMAILIO_BAN_SECONDS (300)
#   KAMAILIO_AGENT_PASSWORD             when set, REGISTER needs this digest password
#   KAMAILIO_NATPING_INTERVAL (30)      OPTIONS pings to phones registered from behind NAT
#   KAMAILIO_CHILDREN (4)               KAMAILIO_LOG_LEVEL (2)
#   KAMAILIO_CTL (unix:/run/kamailio/kamailio_ctl)   kamcmd socket
#   KAMAILIO_DISPATCHER_LIST            where the list is written (/tmp/dispatcher.list)
#   KAMAILIO_BIN (kamailio)             KAMAILIO_CFG (kamailio.cfg beside this script)
set -eu

die() {
    echo "kamailio entrypoint: $*" >&2
    exit 2
}

# is_uint VALUE: true for a non-empty run of digits
is_uint() {
    case "$1" in
        '' | *[!0-9]*) return 1 ;;
        *) return 0 ;;
    esac
}

# need_uint NAME VALUE
need_uint() {
    is_uint "$2" || die "$1 must be a whole number, got '$2'"
}

# nodes_to_list SETID VARNAME VALUE: print dispatcher lines for "host[:port],..."
nodes_to_list() {
    set_id=$1
    var=$2
    value=$(printf '%s' "$3" | tr ',' ' ')
    for node in $value; do
        host=${node%:*}
        port=${node##*:}
        if [ "$host" = "$node" ]; then
            port=5060
        fi
        case "$host" in
            '' | *[!A-Za-z0-9.-]*) die "$var: bad host in '$node' (expected host[:port])" ;;
        esac
        is_uint "$port" && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] ||
            die "$var: bad port in '$node' (expected host[:port])"
        echo "$set_id sip:$host:$port 0 0 duid=$host:$port;maxload=$max_load$node_socket"
    done
}

here=$(cd "$(dirname "$0")" && pwd)
cfg=${KAMAILIO_CFG:-$here/kamailio.cfg}
list=${KAMAILIO_DISPATCHER_LIST:-/tmp/dispatcher.list}
listen_ip=${KAMAILIO_LISTEN_IP:-0.0.0.0}
sip_port=${KAMAILIO_SIP_PORT:-5060}
algorithm=${KAMAILIO_ALGORITHM:-4}
max_load=${KAMAILIO_MAX_LOAD:-0}

need_uint KAMAILIO_SIP_PORT "$sip_port"
need_uint KAMAILIO_MAX_LOAD "$max_load"
case "$algorithm" in
    4 | 10) ;;
    *) die "KAMAILIO_ALGORITHM must be 4 (round-robin) or 10 (call-load), got '$algorithm'" ;;
esac
case "${KAMAILIO_DEFAULT_ENGINE:-freeswitch}" in
    freeswitch) default_set=1 ;;
    asterisk) default_set=2 ;;
    *) die "KAMAILIO_DEFAULT_ENGINE must be freeswitch or asterisk, got '$KAMAILIO_DEFAULT_ENGINE'" ;;
esac
[ -n "${FREESWITCH_NODES:-}${ASTERISK_NODES:-}" ] ||
    die "set FREESWITCH_NODES and/or ASTERISK_NODES (host[:port], comma-separated)"

set -- -DD -E -f "$cfg" \
    -A "DISPATCHER_LIST=\"$list\"" \
    -A "DEFAULT_SET=$default_set" \
    -A "DS_ALG=$algorithm" \
    "$@"

advertise=""
if [ -n "${KAMAILIO_ADVERTISE:-}" ]; then
    advertise="/$KAMAILIO_ADVERTISE"
fi
node_socket=""
if [ -n "${KAMAILIO_INTERNAL_PORT:-}" ]; then
    need_uint KAMAILIO_INTERNAL_PORT "$KAMAILIO_INTERNAL_PORT"
    internal_ip=${KAMAILIO_INTERNAL_IP:-$(hostname -i 2>/dev/null | cut -d' ' -f1)}
    [ -n "$internal_ip" ] || die "set KAMAILIO_INTERNAL_IP (could not read this host's address)"
    internal="$internal_ip:$KAMAILIO_INTERNAL_PORT"
    set -- "$@" -l "udp:$internal" -l "tcp:$internal"
    node_socket=";socket=udp:$internal"
    set -- "$@" -A "INTERNAL_SOCKET=\"udp:$internal\""
fi
# after the internal sockets: kamailio applies an -l advertise to the -l options that follow
set -- "$@" -l "udp:$listen_ip:$sip_port$advertise" -l "tcp:$listen_ip:$sip_port$advertise"

# NAME VARIABLE: numeric defines
for pair in \
    DS_PING_INTERVAL:KAMAILIO_PING_INTERVAL \
    DS_PROBING_THRESHOLD:KAMAILIO_PROBING_THRESHOLD \
    DS_INACTIVE_THRESHOLD:KAMAILIO_INACTIVE_THRESHOLD \
    INVITE_TIMEOUT:KAMAILIO_INVITE_TIMEOUT_MS \
    PIKE_UNIT:KAMAILIO_PIKE_UNIT \
    PIKE_DENSITY:KAMAILIO_PIKE_DENSITY \
    BAN_SECONDS:KAMAILIO_BAN_SECONDS \
    NATPING_INTERVAL:KAMAILIO_NATPING_INTERVAL \
    CHILDREN:KAMAILIO_CHILDREN \
    LOG_LEVEL:KAMAILIO_LOG_LEVEL; do
    name=${pair%%:*}
    var=${pair#*:}
    eval "value=\${$var:-}"
    if [ -n "$value" ]; then
        need_uint "$var" "$value"
        set -- "$@" -A "$name=$value"
    fi
done

# NAME VARIABLE: string defines (a double quote would end the string early)
for pair in \
    FREESWITCH_PREFIX:KAMAILIO_FREESWITCH_PREFIX \
    ASTERISK_PREFIX:KAMAILIO_ASTERISK_PREFIX \
    FREESWITCH_NUMBERS:KAMAILIO_FREESWITCH_NUMBERS \
    ASTERISK_NUMBERS:KAMAILIO_ASTERISK_NUMBERS \
    AGENT_PASSWORD:KAMAILIO_AGENT_PASSWORD \
    CTL_SOCKET:KAMAILIO_CTL; do
    name=${pair%%:*}
    var=${pair#*:}
    eval "value=\${$var:-}"
    if [ -n "$value" ]; then
        case "$value" in
            *'"'* | *'\'*) die "$var must not contain a double quote or a backslash" ;;
        esac
        set -- "$@" -A "$name=\"$value\""
    fi
done
if [ "$algorithm" = 10 ]; then
    set -- "$@" -A WITH_CALL_LOAD
fi

# Every value is valid: only now replace the list.
freeswitch_lines=$(nodes_to_list 1 FREESWITCH_NODES "${FREESWITCH_NODES:-}") || exit 2
asterisk_lines=$(nodes_to_list 2 ASTERISK_NODES "${ASTERISK_NODES:-}") || exit 2
printf '%s\n' "# generated from FREESWITCH_NODES / ASTERISK_NODES by entrypoint.sh" \
    "# setid destination flags priority attributes" \
    "$freeswitch_lines" "$asterisk_lines" | grep -v '^$' >"$list.tmp"
mv "$list.tmp" "$list"

echo "kamailio entrypoint: dispatcher list $list:" >&2
grep -v '^#' "$list" >&2 || true
exec "${KAMAILIO_BIN:-kamailio}" "$@"

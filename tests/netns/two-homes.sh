#!/bin/sh
# An "internet" with a central on it, and two home networks, each behind its
# own NAT router, with a device in each: the places of SPEC §6.4 (issue 16),
# on one machine, in network namespaces with nftables. Addresses are only
# inside these namespaces.
#
#   two-homes.sh up [TAG] [cone|symmetric|no-udp]   create the namespaces
#   two-homes.sh down [TAG]                          remove them
#
#   namespace          address        role
#   fh-wan[-TAG]       (a bridge)     the internet segment
#   fh-central[-TAG]   10.214.0.10    the central, reachable by all
#   fh-nat1[-TAG]      10.214.0.1     home 1's router (LAN 10.214.1.1)
#   fh-nat2[-TAG]      10.214.0.2     home 2's router (LAN 10.214.2.1)
#   fh-a[-TAG]         10.214.1.2     a device in home 1
#   fh-b[-TAG]         10.214.2.2     a device in home 2
#
# The routers masquerade what leaves a home and let in only the answers to
# it (conntrack): nobody outside can open a connection to a device. Like
# most home routers they drop, without answering, what comes to their own
# outside address unasked: a router answering a hole-punching SYN with a
# reset would close the hole its own device was opening.
#   cone       (default) masquerade keeps a flow's source port when it can,
#              so a hole punched towards one peer works for another:
#              endpoint-independent mapping, as most home routers do.
#   symmetric  masquerade with random ports: every destination sees another
#              port, so hole punching fails and only a relay works.
#   no-udp     as cone, but the routers drop UDP (QUIC) both ways.
#
# Needs root, ip netns and nft. Exits 77 when namespaces cannot be made.
# Run a command in one of them:  ip netns exec fh-a-TAG ferry --home a serve
set -eu

usage() {
    echo "usage: $0 up [TAG] [cone|symmetric|no-udp] | down [TAG]" >&2
    exit 2
}

[ $# -ge 1 ] || usage
action=$1
tag=${2:-}
mode=${3:-cone}
case $tag in
    *[!a-z0-9]*) echo "$0: TAG may only use a-z and 0-9" >&2; exit 2 ;;
esac
if [ ${#tag} -gt 8 ]; then
    echo "$0: TAG is at most 8 characters (interface names are at most 15)" >&2
    exit 2
fi
case $mode in
    cone|symmetric|no-udp) ;;
    *) usage ;;
esac
s=${tag:+-$tag}
wan=fh-wan$s
central=fh-central$s
nat1=fh-nat1$s
nat2=fh-nat2$s
a=fh-a$s
b=fh-b$s
all="$a $b $nat1 $nat2 $central $wan"

remove() {
    for ns in $all; do
        ip netns del "$ns" 2>/dev/null || true
    done
}

# link NS_A IF_A NS_B IF_B: a veth pair between two namespaces, both ends up.
link() {
    ip link add "$2" netns "$1" type veth peer name "$4" netns "$3"
    ip -n "$1" link set "$2" up
    ip -n "$3" link set "$4" up
}

# router NS LAN_IF: forwarding, masquerade out of `wan0`, only answers in.
router() {
    ip netns exec "$1" sysctl -qw net.ipv4.ip_forward=1
    case $mode in
        symmetric) masquerade="masquerade random" ;;
        *) masquerade="masquerade" ;;
    esac
    udp=""
    [ "$mode" = no-udp ] && udp="meta l4proto udp drop"
    ip netns exec "$1" nft -f - <<EOF
table ip home {
    chain forward {
        type filter hook forward priority filter; policy drop;
        $udp
        iifname "$2" oifname "wan0" accept
        iifname "wan0" oifname "$2" ct state established,related accept
    }
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "wan0" ct state established,related accept
        iifname "wan0" drop
    }
    chain postrouting {
        type nat hook postrouting priority srcnat;
        oifname "wan0" $masquerade
    }
}
EOF
}

case $action in
up)
    if ! ip netns add "$wan" 2>/dev/null; then
        if ip netns list | grep -q "^$wan\b"; then
            echo "$0: $wan already exists: run \`$0 down $tag\` first" >&2
            exit 1
        fi
        echo "$0: cannot create network namespaces here (needs root and ip netns)" >&2
        exit 77
    fi
    command -v nft >/dev/null 2>&1 || { remove; echo "$0: needs nft (apt-get install nftables)" >&2; exit 77; }
    trap remove EXIT
    for ns in $central $nat1 $nat2 $a $b; do
        ip netns add "$ns"
    done
    for ns in $all; do
        ip -n "$ns" link set lo up
    done
    # The internet: a bridge the central and both routers plug into.
    ip -n "$wan" link add br0 type bridge
    ip -n "$wan" link set br0 up
    link "$wan" pc "$central" wan0
    link "$wan" p1 "$nat1" wan0
    link "$wan" p2 "$nat2" wan0
    for port in pc p1 p2; do
        ip -n "$wan" link set "$port" master br0
    done
    ip -n "$central" addr add 10.214.0.10/24 dev wan0
    ip -n "$nat1" addr add 10.214.0.1/24 dev wan0
    ip -n "$nat2" addr add 10.214.0.2/24 dev wan0
    # The homes.
    link "$nat1" lan0 "$a" eth0
    link "$nat2" lan0 "$b" eth0
    ip -n "$nat1" addr add 10.214.1.1/24 dev lan0
    ip -n "$nat2" addr add 10.214.2.1/24 dev lan0
    ip -n "$a" addr add 10.214.1.2/24 dev eth0
    ip -n "$b" addr add 10.214.2.2/24 dev eth0
    ip -n "$a" route add default via 10.214.1.1
    ip -n "$b" route add default via 10.214.2.1
    router "$nat1" lan0
    router "$nat2" lan0
    trap - EXIT
    echo "$central 10.214.0.10"
    echo "$a 10.214.1.2 (behind $nat1, $mode)"
    echo "$b 10.214.2.2 (behind $nat2, $mode)"
    ;;
down)
    remove
    ;;
*)
    usage
    ;;
esac

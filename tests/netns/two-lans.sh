#!/bin/sh
# Two network namespaces joined by a veth pair: two hosts on one LAN, on one
# machine. ferry's LAN discovery (mDNS) ignores loopback, so two nodes on
# 127.0.0.1 never find each other; in these namespaces they do. Used by
# docs/guide.md (section 3) and by the mDNS test in tests/tests/e2e.rs.
#
#   two-lans.sh up [TAG]     create ferry-a[-TAG] (10.213.0.1/24) and ferry-b[-TAG] (10.213.0.2/24)
#   two-lans.sh down [TAG]   remove them (and their link)
#
# Needs root (ip netns). Exits 77 when this machine does not allow creating
# network namespaces. Then run a command in one of them:
#   ip netns exec ferry-a ferry --home a serve
set -eu

usage() {
    echo "usage: $0 up|down [TAG]" >&2
    exit 2
}

[ $# -ge 1 ] || usage
action=$1
tag=${2:-}
case $tag in
    *[!a-z0-9]*) echo "$0: TAG may only use a-z and 0-9" >&2; exit 2 ;;
esac
if [ ${#tag} -gt 12 ]; then
    echo "$0: TAG is at most 12 characters (interface names are at most 15)" >&2
    exit 2
fi
suffix=${tag:+-$tag}
a=ferry-a$suffix
b=ferry-b$suffix
veth_a=fva$tag
veth_b=fvb$tag

case $action in
up)
    if ! ip netns add "$a" 2>/dev/null; then
        if ip netns list | grep -qx "$a\( .*\)\?"; then
            echo "$0: $a already exists: run \`$0 down $tag\` first" >&2
            exit 1
        fi
        echo "$0: cannot create network namespaces here (needs root and ip netns)" >&2
        exit 77
    fi
    # From here on, a failed step removes what was made.
    trap 'ip netns del "$a" 2>/dev/null; ip netns del "$b" 2>/dev/null' EXIT
    ip netns add "$b"
    ip link add "$veth_a" type veth peer name "$veth_b"
    ip link set "$veth_a" netns "$a"
    ip link set "$veth_b" netns "$b"
    ip -n "$a" addr add 10.213.0.1/24 dev "$veth_a"
    ip -n "$b" addr add 10.213.0.2/24 dev "$veth_b"
    ip -n "$a" link set "$veth_a" up multicast on
    ip -n "$b" link set "$veth_b" up multicast on
    ip -n "$a" link set lo up
    ip -n "$b" link set lo up
    trap - EXIT
    echo "$a 10.213.0.1"
    echo "$b 10.213.0.2"
    ;;
down)
    # Deleting a namespace deletes the veth end inside it, and so the pair.
    ip netns del "$a" 2>/dev/null || true
    ip netns del "$b" 2>/dev/null || true
    ;;
*)
    usage
    ;;
esac

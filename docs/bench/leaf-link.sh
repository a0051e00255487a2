#!/bin/sh
# A server of a leaf node pair for `courier-bench compare`, written as a configuration file
# (nats-server takes leaf nodes only from one):
#   leaf-link.sh <server binary> leaf <client port> <hub's leaf port>   the leaf, dialing the hub
#   leaf-link.sh <server binary> hub  <client port> <leaf port>         the hub, accepting it
set -eu
bin=$1 mode=$2 port=$3 leaf_port=$4
conf=${TMPDIR:-/tmp}/courier-bench-$mode-$port.conf
case $mode in
  leaf) printf 'listen: 127.0.0.1:%s\nleafnodes { remotes [ { url: "nats-leaf://127.0.0.1:%s" } ] }\n' "$port" "$leaf_port" >"$conf" ;;
  hub) printf 'listen: 127.0.0.1:%s\nleafnodes { listen: 127.0.0.1:%s }\n' "$port" "$leaf_port" >"$conf" ;;
  *) echo "mode is leaf or hub" >&2; exit 2 ;;
esac
exec "$bin" -c "$conf"

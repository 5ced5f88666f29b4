#!/usr/bin/env bash
# Start or stop a private Docker engine for CI and the container tests.
#
#   scripts/dockerd.sh start    start dockerd on its own socket and data dir (no-op if it answers)
#   scripts/dockerd.sh stop     stop it (containers inside it stop with it)
#   scripts/dockerd.sh env      print `export DOCKER_HOST=...` for eval
#   scripts/dockerd.sh status   exit 0 when the engine answers
#
# Everything lives under $POSE_DOCKER_DIR (default /tmp/pose-docker): socket, data root, exec root,
# pid file and log. A private engine never touches a system engine that may run beside it, and
# a unix socket path must stay under 108 bytes, hence /tmp and not the repo tree.
# Extra dockerd flags: $POSE_DOCKERD_FLAGS (e.g. "--iptables=false").
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/stop_pidfile.sh"

dir=${POSE_DOCKER_DIR:-/tmp/pose-docker}
socket=$dir/docker.sock
pidfile=$dir/docker.pid
log=$dir/dockerd.log
host=unix://$socket

engine_answers() {
    # curl is not in every CI image; the docker CLI is (docker.io ships it).
    DOCKER_HOST=$host timeout 5 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

wait_for_engine() {  # $1 = pid of dockerd
    for _ in $(seq 1 60); do
        engine_answers && return 0
        kill -0 "$1" 2>/dev/null || return 1
        sleep 1
    done
    return 1
}

launch() {  # extra dockerd flags as arguments
    mkdir -p "$dir"
    # setsid: the engine must outlive the shell that started it (make docker-up) and must not
    # get the terminal's Ctrl-C, which the container tests send to `pose` on purpose.
    setsid dockerd --host "$host" --data-root "$dir/data" --exec-root "$dir/exec" \
        --pidfile "$pidfile" ${POSE_DOCKERD_FLAGS:-} "$@" >>"$log" 2>&1 </dev/null &
    wait_for_engine $!
}

start() {
    if engine_answers; then
        echo "dockerd already answers on $host"
        return 0
    fi
    command -v dockerd >/dev/null || { echo "error: dockerd not found; install it: apt-get install -y docker.io" >&2; exit 2; }
    if launch; then
        echo "dockerd started on $host (log: $log)"
        return 0
    fi
    # overlay2 cannot stack on an overlay filesystem (dockerd inside a container); vfs always
    # works, only slower and larger.
    echo "dockerd did not come up with its default storage driver; retrying with vfs" >&2
    stop >/dev/null
    if launch --storage-driver=vfs; then
        echo "dockerd started on $host with the vfs storage driver (log: $log)"
        return 0
    fi
    echo "error: dockerd did not start; last lines of $log:" >&2
    tail -n 20 "$log" >&2
    stop >/dev/null
    exit 1
}

stop() {
    # dockerd stops its containers (10 s grace each) and containerd before it exits.
    stop_pidfile "$pidfile" 60
    rm -f "$socket"
    echo "dockerd stopped ($host)"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    env) echo "export DOCKER_HOST=$host" ;;
    status) engine_answers ;;
    *) echo "usage: $0 start|stop|env|status" >&2; exit 2 ;;
esac

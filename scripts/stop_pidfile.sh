# Sourced by scripts/dockerd.sh and scripts/slurm.sh: how both stop a daemon they started.
#
# stop_pidfile FILE GRACE_S: send SIGTERM to the process FILE names, SIGKILL if it is still there
# after GRACE_S seconds (checked every half second), then remove FILE. Nothing to do without FILE.
stop_pidfile() {
    [[ -f $1 ]] || return 0
    local pid
    pid=$(cat "$1")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 $(($2 * 2))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -f "$1"
}

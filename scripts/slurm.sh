#!/usr/bin/env bash
# Start or stop a private 2-node Slurm cluster on this machine, for CI and the Slurm tests.
#
#   scripts/slurm.sh start    munged + slurmctld + two slurmd (-N n1, -N n2); no-op if it answers
#   scripts/slurm.sh stop     stop them (running jobs die with the daemons)
#   scripts/slurm.sh env      print `export SLURM_CONF=...` for eval
#   scripts/slurm.sh status   exit 0 when both nodes are idle or allocated
#
# A real Slurm (Debian's slurm-wlm), not a mock: the two nodes are two slurmd processes on one
# host (NodeAddr=127.0.0.1, one port each), so `srun -N2` starts one task on each and
# SLURM_NODEID is 0 and 1, as on a cluster. Everything lives under $POSE_SLURM_DIR (default
# /tmp/pose-slurm): config, munge key and socket, state, spool, pid files and logs, so a system
# Slurm or munge beside it is never touched. Clients find it through SLURM_CONF (see `env`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/stop_pidfile.sh"

dir=${POSE_SLURM_DIR:-/tmp/pose-slurm}
# slurmctld listens on this port, the nodes on the next two: a second cluster (CI beside a
# developer's) needs another base.
port=${POSE_SLURM_PORT:-17000}
conf=$dir/slurm.conf
munge_socket=$dir/munge/munge.socket
host=$(hostname)
export SLURM_CONF=$conf

cluster_answers() {
    [[ -f $conf ]] || return 1
    local states
    states=$(timeout 10 sinfo -h -N -o '%t' 2>/dev/null) || return 1
    [[ $(grep -cE '^(idle|alloc|mix)' <<<"$states") == 2 ]]
}

write_config() {
    local cpus
    cpus=$(nproc)
    mkdir -p "$dir"/{munge,state,spool,log,run}
    cat >"$conf" <<EOF
# Written by scripts/slurm.sh: a private 2-node cluster on one host.
ClusterName=pose
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$munge_socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
# No cgroups in a container: track processes by their parent chain.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# Both nodes share this host's CPUs: trust the configured counts.
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
# Finished jobs stay visible to scontrol this long (pose reads their exit code from it).
MinJobAge=600
# scancel: SIGTERM, then SIGKILL after this many seconds.
KillWait=15
SchedulerParameters=defer_batch=0
NodeName=n[1-2] NodeHostname=$host NodeAddr=127.0.0.1 Port=$((port + 1))-$((port + 2)) CPUs=$cpus RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=n[1-2] Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    if [[ ! -f $dir/munge/munge.key ]]; then
        dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
        chmod 600 "$dir/munge/munge.key"
    fi
    chmod 700 "$dir/munge"
    munged --force --socket="$munge_socket" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/run/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munge.seed"
}

start() {
    if cluster_answers; then
        echo "Slurm already answers (SLURM_CONF=$conf)"
        return 0
    fi
    for tool in munged slurmctld slurmd sbatch; do
        command -v "$tool" >/dev/null || { echo "error: $tool not found; install it: apt-get install -y slurm-wlm munge" >&2; exit 2; }
    done
    stop >/dev/null 2>&1 || true
    write_config
    start_munge
    # setsid: the daemons outlive the shell that started them and never get its Ctrl-C.
    setsid slurmctld -f "$conf" -i </dev/null >>"$dir/log/slurmctld.out" 2>&1
    for node in n1 n2; do
        setsid slurmd -f "$conf" -N "$node" </dev/null >>"$dir/log/slurmd-$node.out" 2>&1
    done
    for _ in $(seq 1 60); do
        if cluster_answers; then
            echo "Slurm started: 2 nodes (n1, n2) on $host; use it with: export SLURM_CONF=$conf"
            return 0
        fi
        sleep 1
    done
    echo "error: the Slurm nodes did not come up; sinfo says:" >&2
    sinfo -N >&2 || true
    tail -n 20 "$dir/log/slurmctld.log" >&2 || true
    stop >/dev/null
    exit 1
}

stop() {
    for node in n1 n2; do stop_pidfile "$dir/run/slurmd-$node.pid" 15; done
    stop_pidfile "$dir/run/slurmctld.pid" 15
    stop_pidfile "$dir/run/munged.pid" 15
    # Job state of this throwaway cluster goes with it: the next start is a fresh cluster.
    rm -rf "$dir/state" "$dir/spool"
    echo "Slurm stopped ($dir)"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    env) echo "export SLURM_CONF=$conf" ;;
    status) cluster_answers ;;
    *) echo "usage: $0 start|stop|env|status" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the sweep tests and for trying `--executor slurm`
# before a real cluster: Debian's Slurm 22.05 (slurmctld, slurmd, slurm-client, munge), its
# config and state in one folder, munged first, then slurmctld, then slurmd (about 20 s).
#
#   bash scripts/slurm_local.sh up      # install (apt, once) and start; prints SLURM_CONF=...
#   bash scripts/slurm_local.sh down    # stop the daemons
#   bash scripts/slurm_local.sh status  # exit 0 when the cluster answers
#
# Then `export SLURM_CONF=/tmp/wndqn-slurm/slurm.conf` (or the folder in WNDQN_SLURM_DIR) and use
# sbatch/squeue/scontrol as on any cluster. Needs root (the daemons run as root here, with
# ProctrackType=proctrack/linuxproc and TaskPlugin=task/none, which need no cgroups).
set -euo pipefail
STATE=${WNDQN_SLURM_DIR:-/tmp/wndqn-slurm}
CONF=$STATE/slurm.conf
export SLURM_CONF=$CONF
log() { printf '\033[1;34m[slurm]\033[0m %s\n' "$*" >&2; }

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "slurm_local.sh: the local cluster's daemons need root (they run as root here)" >&2
        exit 3
    fi
}

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        return
    fi
    log "installing slurmctld, slurmd, slurm-client and munge (apt)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
}

answers() {
    timeout 5 sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'
}

start_munge() {
    if [ -S /run/munge/munge.socket.2 ] && pgrep -x munged >/dev/null; then
        return
    fi
    mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
    [ -s /etc/munge/munge.key ] || mungekey -c -k /etc/munge/munge.key
    chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
    chmod 0700 /etc/munge
    chmod 0400 /etc/munge/munge.key
    chmod 0755 /run/munge
    su -s /bin/sh munge -c munged
}

write_conf() {
    local host cpus mem
    host=$(hostname)
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    mkdir -p "$STATE"/{spool,state,log,run}
    cat > "$CONF" <<EOF
ClusterName=wndqn
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
KillWait=30
MinJobAge=600
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

up() {
    need_root
    install
    if answers; then
        echo "SLURM_CONF=$CONF"
        return
    fi
    log "starting a one-node cluster in $STATE"
    start_munge
    write_conf
    pkill -x slurmctld 2>/dev/null || true
    pkill -x slurmd 2>/dev/null || true
    sleep 0.5
    slurmctld -f "$CONF"
    slurmd -f "$CONF"
    for _ in $(seq 1 60); do
        if answers; then
            echo "SLURM_CONF=$CONF"
            return
        fi
        sleep 0.5
    done
    echo "slurm_local.sh: the cluster did not come up; see $STATE/log/" >&2
    tail -n 20 "$STATE"/log/*.log >&2 || true
    exit 1
}

down() {
    pkill -x slurmd 2>/dev/null || true
    pkill -x slurmctld 2>/dev/null || true
    log "stopped"
}

case "${1:-up}" in
    up) up ;;
    down) down ;;
    status) answers ;;
    *) echo "usage: slurm_local.sh up|down|status" >&2; exit 2 ;;
esac

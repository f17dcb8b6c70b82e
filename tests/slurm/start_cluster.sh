#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine (for tests/test_slurm.py).
# Installs Debian's slurmctld, slurmd, slurm-client and munge when missing (needs root),
# configures one node named after this host with its CPUs and memory, starts munged,
# slurmctld and slurmd, and waits until the node is idle. Prints "ready" on success.
set -euo pipefail
STATE=${1:-/tmp/quadrun-slurm}
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
        || ! command -v munged >/dev/null; then
    [ "$(id -u)" = 0 ] || { echo "cannot install SLURM: not root"; exit 3; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null 2>&1 \
        || { echo "cannot install SLURM: apt-get failed"; exit 3; }
fi
host=$(hostname -s)
cpus=$(nproc)
mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p "$STATE"/{ctld,d,log} /etc/slurm /run/munge /var/log/munge /var/lib/munge /etc/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
chmod 400 /etc/munge/munge.key
pgrep -x munged >/dev/null || su -s /bin/sh munge -c munged 2>/dev/null || munged --force
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=quadrun-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
# daemons left running by an earlier test session keep that session's state folder, which
# may be gone by now (an I/O error at every sbatch): restart them with this configuration
running=$(scontrol show config 2>/dev/null | awk '/^StateSaveLocation/ {print $3}' || true)
if pgrep -x slurmctld >/dev/null && { [ -z "$running" ] || [ "$running" != "$STATE/ctld" ]; }; then
    pkill -x slurmd || true
    pkill -x slurmctld || true
    for _ in $(seq 20); do pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || break; sleep 0.5; done
fi
pgrep -x slurmctld >/dev/null || slurmctld -c
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
    if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then echo ready; exit 0; fi
    scontrol update nodename="$host" state=resume >/dev/null 2>&1 || true
    sleep 1
done
echo "SLURM did not become ready:"; sinfo 2>&1 | head -5; tail -5 "$STATE"/log/*.log
exit 4

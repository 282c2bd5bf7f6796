#!/usr/bin/env bash
# Start a single-node SLURM cluster (Debian bookworm, Slurm 22.05) as root, without systemd, for the
# `slurm` tests. Idempotent: a running, idle node is left as it is. Prints how long the start took.
# Exit 0 with the node idle; non-zero (and a message) when no cluster can be started here.
set -euo pipefail
start=$(date +%s)
[ "$(id -u)" = 0 ] || { echo "start_slurm: needs root" >&2; exit 1; }

if sinfo -h -o %T 2>/dev/null | grep -qx idle; then
  echo "start_slurm: node already idle"; exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

host=$(hostname -s)
cpus=$(nproc)
# RealMemory a little below what slurmd detects, or the node is drained as "low RealMemory"
detected=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
memory=$(( detected > 1024 ? detected - 512 : detected ))

install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key

mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=mtlbench
SlurmctldHost=${host}
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# keep finished jobs visible to squeue (there is no accounting database to ask)
MinJobAge=600
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
NodeName=${host} CPUs=${cpus} RealMemory=${memory} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF
# slurmd initialises a cgroup plugin at start-up even with task/none; v1 works without systemd
echo "CgroupPlugin=cgroup/v1" > /etc/slurm/cgroup.conf

service munge start >/dev/null 2>&1 || munged
service slurmctld start >/dev/null 2>&1 || slurmctld
service slurmd start >/dev/null 2>&1 || slurmd

for _ in $(seq 60); do
  state=$(sinfo -h -o %T 2>/dev/null || true)
  if [ "$state" = idle ]; then
    echo "start_slurm: node ${host} idle after $(( $(date +%s) - start )) s"
    exit 0
  fi
  if [ "$state" = "down" ] || [ "$state" = "drained" ]; then
    scontrol update nodename="${host}" state=resume >/dev/null 2>&1 || true
  fi
  sleep 1
done
echo "start_slurm: node did not become idle (state: ${state:-none}); see /var/log/slurm" >&2
exit 1

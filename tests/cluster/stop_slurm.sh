#!/usr/bin/env bash
# Stop the single-node cluster started by start_slurm.sh.
service slurmd stop >/dev/null 2>&1 || pkill -x slurmd || true
service slurmctld stop >/dev/null 2>&1 || pkill -x slurmctld || true
service munge stop >/dev/null 2>&1 || pkill -x munged || true
echo "stop_slurm: daemons stopped"

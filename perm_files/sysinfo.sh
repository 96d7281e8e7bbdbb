#!/usr/bin/env bash
# Print facts about the host this job runs on: kernel, CPUs, load, memory and the disk of the cwd.
set -euo pipefail

echo "host:    $(hostname)"
echo "kernel:  $(uname -srm)"
echo "cpus:    $(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc)"
if [[ -r /proc/loadavg ]]; then
    read -r one five fifteen _ < /proc/loadavg
    echo "load:    ${one} ${five} ${fifteen}"
else
    echo "load:    $(uptime | sed 's/.*load averages*: //')"
fi
if [[ -r /proc/meminfo ]]; then
    awk '/^MemTotal:/ {t=$2} /^MemAvailable:/ {a=$2} END {printf "memory:  %d MiB available of %d MiB\n", a/1024, t/1024}' /proc/meminfo
fi
echo "cwd:     $(pwd)"
df -hP . | awk 'NR == 2 {print "disk:    " $4 " free of " $2 " (" $5 " used) on " $6}'

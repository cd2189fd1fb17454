#!/usr/bin/env bash
# Start a real single-node Slurm cluster on this machine for painters' tests.
#
#   .ci/slurm_up.sh      install (apt, once), configure, start, wait until idle
#   .ci/slurm_down.sh    stop the daemons by PID
#
# The node is this machine (short hostname, 127.0.0.1) with its real CPU
# topology, its memory less a reserve for the OS, and one fake GPU (gres on
# /dev/null). Partition `debug` (default). No slurmdbd: use the snakemake
# plugin's `squeue` status command. Needs root (apt, /etc/slurm, daemons).
#
# State, logs and PID files: $PAINTERS_SLURM_DIR (default /tmp/painters-slurm):
#   munged.pid slurmctld.pid slurmd.pid  log/{slurmctld,slurmd,jobcomp}.log
# Idempotent: a second call with the daemons alive only re-checks the node.
# Every step is bounded with `timeout -k`.
set -euo pipefail

RUN=${PAINTERS_SLURM_DIR:-/tmp/painters-slurm}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CONF=/etc/slurm/slurm.conf
T="timeout -k 5"

log() { echo "slurm_up: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

[[ $(id -u) == 0 ]] || die "must run as root (apt-get, /etc/slurm, daemons)"

# --- 1. packages (idempotent) -------------------------------------------------
pkgs=(slurmctld slurmd slurm-client munge)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $T 300 apt-get update -qq >/dev/null || die "apt-get update failed"
    $T 600 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
fi

# --- 2. already up? ------------------------------------------------------------
node_state() { $T 10 sinfo -h -N -o '%T' 2>/dev/null | head -1; }
if alive "$RUN/munged.pid" && alive "$RUN/slurmctld.pid" && alive "$RUN/slurmd.pid"; then
    state=$(node_state || true)
    if [[ $state == idle* || $state == mix* || $state == alloc* ]]; then
        echo "slurm up (already running): node $(hostname -s) $state; $(sinfo -h -o '%P %c CPUs %m MB %G' | head -1); pids in $RUN"
        exit 0
    fi
    log "daemons alive but node is '${state:-?}': restarting"
fi
"$HERE/slurm_down.sh" >/dev/null 2>&1 || true

# --- 3. configuration ------------------------------------------------------------
HOST=$(hostname -s)
# real topology (CPUs, sockets, cores, threads) as slurmd itself detects it
TOPOLOGY=$($T 20 slurmd -C | head -1 | tr ' ' '\n' \
    | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=' | tr '\n' ' ')
[[ $TOPOLOGY == *CPUs=* ]] || die "could not read the CPU topology from 'slurmd -C'"
# real memory less a reserve for the OS and the daemons: max(1 GiB, 1/8)
mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
reserve=$((mem_mb / 8 > 1024 ? mem_mb / 8 : 1024))
REALMEM=$((mem_mb - reserve))
((REALMEM > 512)) || die "too little memory: ${mem_mb} MB"

mkdir -p "$RUN/state" "$RUN/spool" "$RUN/log" /etc/slurm
sed -e "s|@HOST@|$HOST|g" -e "s|@RUN@|$RUN|g" -e "s|@TOPOLOGY@|$TOPOLOGY|g" \
    -e "s|@REALMEM@|$REALMEM|g" "$HERE/slurm/slurm.conf.in" > "$CONF.tmp"
mv "$CONF.tmp" "$CONF"
cp "$HERE/slurm/gres.conf" /etc/slurm/gres.conf
# no cgroup plugins are configured; an empty cgroup.conf silences a warning
[[ -e /etc/slurm/cgroup.conf ]] || echo "CgroupPlugin=autodetect" > /etc/slurm/cgroup.conf

# --- 4. munge ----------------------------------------------------------------------
if [[ ! -s /etc/munge/munge.key ]]; then
    $T 30 mungekey --create --force 2>/dev/null \
        || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
install -d -o munge -g munge -m 755 /run/munge
install -d -o munge -g munge -m 700 /var/log/munge /var/lib/munge
$T 30 runuser -u munge -- munged --force </dev/null >/dev/null 2>&1 || die "munged did not start (see /var/log/munge/munged.log)"
cp /run/munge/munged.pid "$RUN/munged.pid"
$T 10 bash -c 'until munge -n </dev/null | unmunge >/dev/null 2>&1; do sleep 0.2; done' \
    || die "munge does not answer"

# --- 5. slurm daemons ----------------------------------------------------------------
# -c: a cold start, no jobs recovered from an earlier run
$T 60 slurmctld -c </dev/null >/dev/null 2>&1 || die "slurmctld did not start: $(tail -5 "$RUN/log/slurmctld.log" 2>/dev/null)"
$T 10 bash -c "until [[ -s '$RUN/slurmctld.pid' ]]; do sleep 0.2; done" || die "no slurmctld.pid"
$T 60 slurmd -N "$HOST" </dev/null >/dev/null 2>&1 || die "slurmd did not start: $(tail -5 "$RUN/log/slurmd.log" 2>/dev/null)"
$T 10 bash -c "until [[ -s '$RUN/slurmd.pid' ]]; do sleep 0.2; done" || die "no slurmd.pid"

# --- 6. wait until the node is idle -------------------------------------------------
state=""
for _ in $(seq 120); do
    state=$(node_state || true)
    [[ $state == idle* ]] && break
    # ReturnToService=2 brings a registered node back; resume it if it came up down
    [[ $state == down* || $state == drain* ]] && $T 10 scontrol update nodename="$HOST" state=resume 2>/dev/null || true
    sleep 0.5
done
if [[ $state != idle* ]]; then
    log "node state '${state:-none}' after 60 s"
    tail -5 "$RUN/log/slurmctld.log" "$RUN/log/slurmd.log" >&2 || true
    exit 1
fi
echo "slurm up: node $HOST idle; $(sinfo -h -o '%P %c CPUs %m MB %G' | head -1); Slurm $(sinfo -V | awk '{print $2}'); pids and logs in $RUN"

#!/usr/bin/env bash
# Stop the single-node Slurm cluster started by .ci/slurm_up.sh, by PID.
# Safe to call twice, and when nothing was started. Logs stay in $RUN/log.
set -uo pipefail

RUN=${PAINTERS_SLURM_DIR:-/tmp/painters-slurm}

stop() {  # stop NAME: TERM the PID in $RUN/NAME.pid, wait up to 10 s, then KILL
    local pidfile="$RUN/$1.pid" pid
    [[ -s $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null
            echo "slurm_down: $1 ($pid) killed"
        else
            echo "slurm_down: $1 ($pid) stopped"
        fi
    fi
    rm -f "$pidfile"
}

# slurmd first (it ends running job steps), then the controller, then munge
stop slurmd
stop slurmctld
stop munged
exit 0

#!/usr/bin/env bash
# Runs one part of `make test` and records how long it took:
#   Tests/timed.sh TIMES_FILE LABEL command [args...]
# prints `make test: LABEL took N s` after the command and appends `LABEL N` to TIMES_FILE;
# `Tests/timed.sh TIMES_FILE --summary` prints the table of every part so far and the total.
# The command's exit status is passed on, so a failing part still fails make test.
set -uo pipefail
times=$1; shift
if [ "$1" = --summary ]; then
  [ -f "$times" ] || { echo "timed.sh: no timings in $times" >&2; exit 1; }
  awk '{ printf "  %-22s %6d s\n", $1, $2; total += $2 } END { printf "  %-22s %6d s\n", "total", total }' "$times"
  exit 0
fi
label=$1; shift
echo "make test: $label: $*"
start=$(date +%s)
"$@"
status=$?
elapsed=$(( $(date +%s) - start ))
mkdir -p "$(dirname "$times")"
echo "$label $elapsed" >> "$times"
echo "make test: $label took $elapsed s$([ $status = 0 ] || echo " (failed, exit $status)")"
exit $status

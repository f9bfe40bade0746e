#!/usr/bin/env bash
# User-space instructions and cycles per SIP parse, from the criterion
# bench `sip_messages`: a uprobe counts calls of `codeb_sip::parse_datagram`
# while `perf stat` counts the bench process's instructions, so the figure
# is per parse whatever criterion's iteration count. Instruction counts do
# not move when other processes share the cores (wall-clock times do),
# which makes this the figure to compare builds by on a busy machine.
# Cycles are printed too, but the uprobe's trap per call inflates them.
#
#   benches/parse_instructions.sh [bench filter] [seconds]
#   (default filter '^parse INVITE$', 3 seconds)
#
# Needs root (uprobes in /sys/kernel/tracing) and perf. BENCH=path runs a
# bench binary built elsewhere instead of building this tree's.
set -euo pipefail
cd "$(dirname "$0")/.."
FILTER=${1:-'^parse INVITE$'}
SECS=${2:-3}
if [ -z "${BENCH:-}" ]; then
  BENCH=$(cargo bench -p codeb-benches --bench sip_messages --no-run 2>&1 |
    sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)
fi
[ -x "$BENCH" ] || { echo "no bench binary: $BENCH" >&2; exit 1; }
T=/sys/kernel/tracing
sym=$(nm "$BENCH" | awk '/codeb_sip5parse14parse_datagram/ && !s {s = $1} END {print s}')
[ -n "$sym" ] || { echo "parse_datagram not found in $BENCH" >&2; exit 1; }
# The uprobe wants a file offset: the symbol's address less its
# executable segment's address, plus that segment's offset.
read -r off vaddr < <(readelf -lW "$BENCH" | awk '$1 == "LOAD" && / E / && !s {s = $2 " " $3} END {print s}')
probe=codeb_parse_$$
echo "p:$probe $BENCH:$(printf '0x%x' $((0x$sym - vaddr + off)))" >>$T/uprobe_events
trap 'echo "-:$probe" >>$T/uprobe_events' EXIT
out=$(mktemp)
perf stat -x, -e instructions:u,cycles:u,uprobes:$probe \
  "$BENCH" --bench --profile-time "$SECS" "$FILTER" 2>"$out" >/dev/null
awk -F, '{v[$3] = $1}
  END {
    for (k in v) if (k ~ /uprobes/) n = v[k]
    if (n == 0) { print "no parses counted"; exit 1 }
    printf "parses=%d instructions/parse=%.0f cycles/parse=%.0f\n", n, v["instructions:u"] / n, v["cycles:u"] / n
  }' "$out"
rm -f "$out"

#!/usr/bin/env bash
# Calls per second through the switch: SIPp uac -> codeb-switch -> SIPp uas
# (all on loopback, sharing this machine's cores), at each rate given, with
# the SIPp buffer flags from ../shared/reference/performance.md. Then the
# memory an established, idle call costs: hold N calls open and compare the
# switch's RSS.
#
#   benches/sipp_cps.sh [rates...]      (default: 1000 2000 3000 4000 5000)
#
# Prints, per rate: calls attempted/succeeded/failed, the achieved rate and
# the switch's CPU (utime+stime from /proc/PID/stat over the run).
set -euo pipefail
cd "$(dirname "$0")/.."
RATES=${*:-1000 2000 3000 4000 5000}
SECS=${SECS:-15}
cargo build --release -p codeb-switch >&2
DIR=$(mktemp -d /tmp/codeb-cps.XXXXXX)
UAS_PORT=15090
SW_PORT=15060
X="-buff_size 4194304 -max_recv_loops 10000 -max_sched_loops 10000"
cat > "$DIR/switch.toml" <<TOML
[[trunks]]
id = "tr_0000000000000001"
host = "127.0.0.1"
inbound = ["127.0.0.0/8"]
options_interval = 0
max_concurrent_calls = 0
calls_per_second = 0

[[users]]
name = "uas"
contact = "sip:uas@127.0.0.1:$UAS_PORT"

[[routes]]
did = "*"
user = "uas"
TOML
CODEB_SIP_ADDR=127.0.0.1:$SW_PORT CODEB_DATA_DIR=$DIR CODEB_RTP_PORTS=20000-59999 CODEB_LOG=warn \
    CODEB_SWITCH_METRICS_ADDR=127.0.0.1:19091 target/release/codeb-switch 2>"$DIR/switch.log" &
SW=$!
timeout 3600 sipp -sn uas -i 127.0.0.1 -p $UAS_PORT -nostdin $X >/dev/null 2>&1 &
UAS=$!
trap 'kill $SW $UAS 2>/dev/null; rm -rf "$DIR"' EXIT
sleep 1
cpu() { awk '{print $14+$15}' /proc/$SW/stat; }
for r in $RATES; do
    n=$((r * SECS))
    before=$(cpu)
    start=$(date +%s.%N)
    timeout $((SECS * 4 + 30)) sipp -sn uac 127.0.0.1:$SW_PORT -i 127.0.0.1 -p 15071 -nostdin $X \
        -r "$r" -m "$n" -trace_stat -stf "$DIR/stat.csv" -fd 1 >/dev/null 2>&1 || true
    end=$(date +%s.%N)
    after=$(cpu)
    line=$(tail -1 "$DIR/stat.csv"); head=$(head -1 "$DIR/stat.csv")
    col() { echo "$head" | tr ';' '\n' | grep -nx "$1" | cut -d: -f1; }
    ok=$(echo "$line" | cut -d';' -f"$(col 'SuccessfulCall(C)')")
    failed=$(echo "$line" | cut -d';' -f"$(col 'FailedCall(C)')")
    secs=$(echo "$end - $start" | bc)
    cpu_s=$(echo "($after - $before) / 100" | bc -l)
    printf 'rate %5d/s  calls %6d  ok %6d  failed %5d  achieved %7.0f/s  switch CPU %5.1f s (%3.0f%% of a core)\n' \
        "$r" "$n" "$ok" "$failed" "$(echo "$ok / $secs" | bc -l)" "$cpu_s" "$(echo "100 * $cpu_s / $secs" | bc -l)"
    rm -f "$DIR/stat.csv"
    sleep 3
done
# Memory per established idle call.
HOLD=${HOLD:-5000}
rss() { awk '/VmRSS/{print $2}' /proc/$SW/status; }
before=$(rss)
timeout 120 sipp -sn uac 127.0.0.1:$SW_PORT -i 127.0.0.1 -p 15072 -nostdin $X -r 1000 -m "$HOLD" -d 60000 >/dev/null 2>&1 &
HOLDER=$!
sleep $((HOLD / 1000 + 8))
during=$(rss)
active=$(curl -s 127.0.0.1:19091/metrics | awk '/^codeb_sip_dialogs /{print $2}')
kill $HOLDER 2>/dev/null || true
printf 'idle calls held %s (dialogs %s): RSS %d KiB -> %d KiB, %.1f KiB per call (two dialogs)\n' \
    "$HOLD" "$active" "$before" "$during" "$(echo "($during - $before) / ($active / 2)" | bc -l)"

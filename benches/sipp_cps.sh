#!/usr/bin/env bash
# Calls per second through the switch: SIPp uac -> codeb-switch -> SIPp uas
# (all on loopback, sharing this machine's cores), at each rate given, with
# the SIPp buffer flags from ../shared/reference/performance.md. Then the
# memory an established, idle call costs: hold N calls open and compare the
# switch's RSS.
#
#   benches/sipp_cps.sh [rates...]      (default: 1000 2000 3000 4000 5000)
#
# Prints, per rate: calls attempted/succeeded/failed, the achieved rate,
# the CPU of the switch (and of its SIP core, SIP transport and media
# threads) and of each SIPp (utime+stime from /proc/PID/stat over the run,
# in % of one core), the UDP datagrams the kernel dropped for
# full receive buffers during the run (RcvbufErrors in /proc/net/snmp, all
# sockets of the machine) and the 1-minute load average before the line.
#
# Settings (environment): PORT_BASE (default 15000: the switch listens on
# PORT_BASE+60, metrics on PORT_BASE+4091), SECS (seconds of calls per rate, default 15),
# HOLD (idle calls held for the memory figure, default 5000; 0 skips it),
# SWITCH_ENV (extra VAR=value settings for the switch), NO_BUILD=1 (use the
# switch as built); the switch is taken from $CARGO_TARGET_DIR/release
# (default target/).
set -euo pipefail
cd "$(dirname "$0")/.."
RATES=${*:-1000 2000 3000 4000 5000}
SECS=${SECS:-15}
BIN=${CARGO_TARGET_DIR:-target}/release
[ -n "${NO_BUILD:-}" ] || cargo build --release -p codeb-switch >&2
DIR=$(mktemp -d /tmp/codeb-cps.XXXXXX)
# Ports: the switch's SIP and metrics ports, and SIPp's (another benchmark
# running at the same time needs a different PORT_BASE).
PORT_BASE=${PORT_BASE:-15000}
SW_PORT=$((PORT_BASE + 60))
UAS_PORT=$((PORT_BASE + 90))
UAC_PORT=$((PORT_BASE + 71))
HOLD_PORT=$((PORT_BASE + 72))
METRICS_PORT=$((PORT_BASE + 4091))
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
# shellcheck disable=SC2086 # SWITCH_ENV is a list of words
env CODEB_SIP_ADDR=127.0.0.1:$SW_PORT CODEB_DATA_DIR=$DIR CODEB_RTP_PORTS=20000-59999 CODEB_LOG=warn \
    CODEB_SWITCH_METRICS_ADDR=127.0.0.1:$METRICS_PORT ${SWITCH_ENV:-} "$BIN/codeb-switch" 2>"$DIR/switch.log" &
SW=$!
timeout 3600 sipp -sn uas -i 127.0.0.1 -p $UAS_PORT -nostdin $X >/dev/null 2>&1 &
UAS=$!
trap 'kill $SW $UAS 2>/dev/null; rm -rf "$DIR"' EXIT
sleep 1
UAS_SIPP=$(pgrep -P $UAS)
cpu() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# CPU ticks of the switch's SIP core (its main thread), its SIP transport
# thread and its media workers together.
threads_cpu() {
    local core=0 wire=0 media=0 t name v
    for t in /proc/$SW/task/*; do
        name=$(cat "$t/comm" 2>/dev/null) || continue
        v=$(awk '{print $14+$15}' "$t/stat" 2>/dev/null) || continue
        case $name in
        codeb-switch) core=$((core + v)) ;;
        sip-transport) wire=$((wire + v)) ;;
        media-*) media=$((media + v)) ;;
        esac
    done
    echo "$core $wire $media"
}
rcvbuf_errors() { awk '/^Udp:/ && !h {for (i = 1; i <= NF; i++) c[$i] = i; h = 1; next}
    /^Udp:/ {print $c["RcvbufErrors"]; exit}' /proc/net/snmp; }
for r in $RATES; do
    n=$((r * SECS))
    load=$(cut -d' ' -f1 /proc/loadavg)
    before=$(cpu $SW)
    read -r core_before wire_before media_before < <(threads_cpu)
    uas_before=$(cpu "$UAS_SIPP")
    drops_before=$(rcvbuf_errors)
    start=$(date +%s.%N)
    timeout $((SECS * 4 + 30)) sipp -sn uac 127.0.0.1:$SW_PORT -i 127.0.0.1 -p $UAC_PORT -nostdin $X \
        -r "$r" -m "$n" -trace_stat -stf "$DIR/stat.csv" -fd 1 >/dev/null 2>&1 &
    UAC=$!
    # SIPp itself is the child of `timeout`; its CPU is read while it runs.
    uac_cpu=0
    while kill -0 $UAC 2>/dev/null; do
        child=$(pgrep -P $UAC || true)
        [ -z "$child" ] || uac_cpu=$(cpu "$child")
        sleep 0.2
    done
    wait $UAC || true
    end=$(date +%s.%N)
    after=$(cpu $SW)
    read -r core_after wire_after media_after < <(threads_cpu)
    uas_after=$(cpu "$UAS_SIPP")
    drops=$(($(rcvbuf_errors) - drops_before))
    line=$(tail -1 "$DIR/stat.csv"); head=$(head -1 "$DIR/stat.csv")
    col() { echo "$head" | tr ';' '\n' | grep -nx "$1" | cut -d: -f1; }
    ok=$(echo "$line" | cut -d';' -f"$(col 'SuccessfulCall(C)')")
    failed=$(echo "$line" | cut -d';' -f"$(col 'FailedCall(C)')")
    secs=$(echo "$end - $start" | bc)
    cpu_s=$(echo "($after - $before) / 100" | bc -l)
    pct() { echo "($1) / $secs" | bc -l; }
    printf 'rate %5d/s  calls %6d  ok %6d  failed %5d  achieved %7.0f/s  switch CPU %5.1f s (%3.0f%% of a core: SIP core %3.0f%%, transport %3.0f%%, media %3.0f%%)  uac %3.0f%%  uas %3.0f%%  UDP rcvbuf drops %d  load %s\n' \
        "$r" "$n" "$ok" "$failed" "$(echo "$ok / $secs" | bc -l)" "$cpu_s" "$(pct "100 * $cpu_s")" \
        "$(pct "$core_after - $core_before")" "$(pct "$wire_after - $wire_before")" \
        "$(pct "$media_after - $media_before")" \
        "$(pct "$uac_cpu")" "$(pct "$uas_after - $uas_before")" "$drops" "$load"
    rm -f "$DIR/stat.csv"
    sleep 3
done
# Memory per established idle call.
HOLD=${HOLD:-5000}
[ "$HOLD" -gt 0 ] || exit 0
rss() { awk '/VmRSS/{print $2}' /proc/$SW/status; }
before=$(rss)
timeout 120 sipp -sn uac 127.0.0.1:$SW_PORT -i 127.0.0.1 -p $HOLD_PORT -nostdin $X -r 1000 -m "$HOLD" -d 60000 >/dev/null 2>&1 &
HOLDER=$!
sleep $((HOLD / 1000 + 8))
during=$(rss)
active=$(curl -s 127.0.0.1:$METRICS_PORT/metrics | awk '/^codeb_sip_dialogs /{print $2}')
kill $HOLDER 2>/dev/null || true
printf 'idle calls held %s (dialogs %s): RSS %d KiB -> %d KiB, %.1f KiB per call (two dialogs)\n' \
    "$HOLD" "$active" "$before" "$during" "$(echo "($during - $before) / ($active / 2)" | bc -l)"

#!/usr/bin/env bash
# The switch's media relay beside rtpengine, same load, same run: N real
# calls through a release codeb-switch (SIP from rtp-load, which is both
# caller and callee), then the same N through rtpengine (ng protocol), for
# each N given; rtp-load prints both lines and the ratio of calls per core.
#
#   benches/relay_vs_rtpengine.sh [calls...]   (default: 500 1000 1500 2000 2500 3000)
#
# Settings (environment): SECS (measured window per line, default 10),
# RELAY_CPU (the core both relays are pinned to, default 0), GEN_CPU (the
# generator's core, default 1), NO_BUILD=1 (use the binaries as built);
# the binaries are taken from $CARGO_TARGET_DIR/release (default target/).
#
# RELAY_QUOTA=<percent> caps each relay at that share of its core, the
# same cap for both (benches/cpu_cap.sh: root and cgroup v1). One
# generator core cannot drive a relay to the knee of a whole core
# (benches/README.md), so this finds each relay's knee at a fraction of one
# instead: calls per core is then N over the CPU the relay used, as
# without the cap; the latency columns of such a run measure the cap.
#
# The switch runs one media worker (CODEB_WORKERS=1) so its CPU is one
# media core's, from the config written below: a trunk for loopback, one
# user whose fixed contact is rtp-load's callee socket, and every DID
# routed to it. RTP ports: the switch 10000-23999, rtpengine 24000-39999,
# the generator's two sockets on even ports from 40000 (every leg has its
# own address 127.x.y.z on them), so none takes another's; the switch's
# range holds 3,500 calls (two RTP/RTCP pairs each), rtpengine's 4,000.
# rtpengine runs userspace with one thread
# (../shared/reference/performance.md) and --delete-delay=0, so a line's
# ports are free for the next. The switch inherits the environment, so
# its own settings can be set for a run (e.g. CODEB_RTP_STEER=on).
#
# FLOOD=<pps> also runs rtp-flood on the generator's core, from 3 s into
# the run for SECS + 20 s: a stranger spraying that many datagrams a second
# at the switch's first four RTP ports (10000-10006: the first calls'
# legs), to see what a flood at some calls' ports costs the others (the
# switch's CODEB_RTP_FLOOD_PPS, from the environment, decides whether the
# flooded ports are paused). FLOOD_FROM=<IPv4> sends it from that source
# (default 127.0.0.1, the calls' own IP; another loopback address, e.g.
# 127.0.0.9, is a stranger the switch's kernel source filter can turn
# away).
#
# TARGET=switch runs the switch alone (no rtpengine). PER_PACKET=1 (with
# one N) also prints the media worker's CPU per relayed datagram: `perf
# stat -e task-clock,sock:sock_send_length` on its media-0 thread for 5 s
# from 7 s into the run (inside the measured window from SECS=8 on):
# beyond the knee under RELAY_QUOTA the worker is never idle, so that is
# its cost per packet whatever else the machine does.
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=${*:-500 1000 1500 2000 2500 3000}
SECS=${SECS:-10}
RELAY_CPU=${RELAY_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
BIN=${CARGO_TARGET_DIR:-target}/release
[ -n "${NO_BUILD:-}" ] || cargo build --release -p codeb-switch -p codeb-benches --bins >&2
DIR=$(mktemp -d /tmp/codeb-relay.XXXXXX)
SW_PORT=15060
UAS_PORT=15090
NG=127.0.0.1:22222
cat >"$DIR/switch.toml" <<TOML
[[trunks]]
id = "tr_0000000000000001"
host = "127.0.0.1"
inbound = ["127.0.0.0/8"]
options_interval = 0
max_concurrent_calls = 0
calls_per_second = 0

[[users]]
name = "bench"
contact = "sip:bench@127.0.0.1:$UAS_PORT"

[[routes]]
did = "*"
user = "bench"
TOML
# Four sockets per call on each relay (the generator has two in all): the
# hard limit caps N at about (ulimit -Hn) / 4 per relay.
ulimit -n "$(ulimit -Hn)"
CODEB_SIP_ADDR=127.0.0.1:$SW_PORT CODEB_DATA_DIR=$DIR CODEB_RTP_PORTS=10000-23999 \
    CODEB_WORKERS=1 CODEB_LOG=warn CODEB_SWITCH_METRICS_ADDR=127.0.0.1:19091 \
    CODEB_SWITCH_GRPC_ADDR=127.0.0.1:15051 \
    taskset -c "$RELAY_CPU" "$BIN/codeb-switch" 2>"$DIR/switch.log" &
SW=$!
TARGET=${TARGET:-both}
RE=
RE_ARGS=()
if [ "$TARGET" = both ]; then
    taskset -c "$RELAY_CPU" rtpengine --config-file=none --table=-1 --interface=127.0.0.1 \
        --listen-ng=$NG --foreground --log-stderr --log-level=4 \
        --port-min=24000 --port-max=39999 --num-threads=1 --delete-delay=0 2>"$DIR/rtpengine.log" &
    RE=$!
    RE_ARGS=(--ng $NG --rtpengine-pid $RE)
fi
. benches/cpu_cap.sh
trap 'kill $SW $RE 2>/dev/null; wait $SW $RE 2>/dev/null; cpu_cap_cleanup; rm -rf "$DIR"' EXIT
if [ -n "${RELAY_QUOTA:-}" ]; then
    cpu_cap switch "$RELAY_QUOTA" $SW
    [ -z "$RE" ] || cpu_cap rtpengine "$RELAY_QUOTA" $RE
fi
sleep 2
if [ -n "${PER_PACKET:-}" ]; then
    (
        sleep 7
        for t in /proc/$SW/task/*; do
            [ "$(cat "$t/comm")" != media-0 ] || TID=${t##*/}
        done
        perf stat -x, -e task-clock,sock:sock_send_length -t "$TID" -- sleep 5 \
            2>"$DIR/per-packet" >/dev/null
    ) &
    PP=$!
fi
if [ -n "${FLOOD:-}" ]; then
    (
        sleep 3
        taskset -c "$GEN_CPU" "$BIN/rtp-flood" --pps "$FLOOD" --seconds $((SECS + 20)) \
            --from "${FLOOD_FROM:-127.0.0.1}" \
            --to 127.0.0.1:10000,127.0.0.1:10002,127.0.0.1:10004,127.0.0.1:10006
    ) &
    FL=$!
fi
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
taskset -c "$GEN_CPU" "$BIN/rtp-load" --target "$TARGET" \
    --sip 127.0.0.1:$SW_PORT --uas 127.0.0.1:$UAS_PORT "${RE_ARGS[@]}" --switch-pid $SW \
    --calls "$(echo "$CALLS" | tr ' ' ',')" --seconds "$SECS"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -z "${FL:-}" ] || wait "$FL"
if [ -n "${PER_PACKET:-}" ]; then
    wait $PP
    awk -F, '/task-clock/ { cpu = $1 } /sock_send_length/ { sent = $1 }
        END { printf "media-0: %.0f ms CPU, %d datagrams sent in 5 s: %.3f us per relayed packet\n",
              cpu, sent, cpu * 1000 / sent }' "$DIR/per-packet"
fi

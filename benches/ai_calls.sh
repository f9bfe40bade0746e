#!/usr/bin/env bash
# Concurrent AI calls through one switch: a release codeb-switch with one
# media worker, and ai-load (benches/src/bin/ai-load.rs), which places the
# calls over gRPC, answers them as the carrier, talks on every call and
# runs the voice-AI simulator in its own process; for each N given it
# prints the switch's CPU per call and the latency the switch adds on the
# AI path both ways.
#
#   benches/ai_calls.sh [calls...]      (default: 100 250 500 1000)
#
# Settings (environment): SECS (measured window per line, default 20),
# SWITCH_CPU (the switch's core, default 0), GEN_CPU (ai-load's core,
# default 1), RATE (calls placed per second, default 100), AI_THREADS (the
# switch's voice-AI runtime threads, CODEB_AI_THREADS; default 1, as the
# switch has one core), NO_BUILD=1 (use the binaries as built); the
# binaries are taken from $CARGO_TARGET_DIR/release (default target/).
# SWITCH_QUOTA=<percent> caps the switch at that share of its core
# (benches/cpu_cap.sh), to find its knee when one generator core cannot
# drive a whole one; the latency columns then include the cap's waits.
# MEDIA_QUOTA=<percent> caps only the media worker thread (the AI tap's
# side of the calls: RTP, codec, resampling, pacing), to find the tapped
# calls one media core carries.
# PERIOD_MS=<ms> (1500-60000, default 4000): how often each caller speaks
# its 600 ms burst; shorter is a caller who talks more.
# TLS=1: the simulator serves wss:// with a certificate made for the run
# (openssl) by a private CA, which the switch trusts through
# CODEB_AI_CA_FILE: the switch
# then pays for TLS on every session, as against a real vendor.
# VENDOR=openai: the calls' personas ask for openai/gpt-realtime and
# ai-load runs the OpenAI Realtime simulator instead (G.711 µ-law both
# ways at 8 kHz: no resampling); default gemini.
# The switch inherits the environment, so its own settings can be set
# for a run too (e.g. CODEB_RTP_STEER=on, CODEB_RTP_COALESCE_US=2000).
#
# The switch's config: one trunk, the default for every tenant, whose host
# is ai-load's callee socket; CODEB_GEMINI_URL and CODEB_OPENAI_URL point
# at the simulator.
set -euo pipefail
cd "$(dirname "$0")/.."
CALLS=${*:-100 250 500 1000}
SECS=${SECS:-20}
SWITCH_CPU=${SWITCH_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
RATE=${RATE:-100}
AI_THREADS=${AI_THREADS:-1}
BIN=${CARGO_TARGET_DIR:-target}/release
[ -n "${NO_BUILD:-}" ] || cargo build --release -p codeb-switch -p codeb-benches --bins >&2
DIR=$(mktemp -d /tmp/codeb-ai-load.XXXXXX)
SW_PORT=15061
GRPC=127.0.0.1:15052
UAS_PORT=15091
SIM=127.0.0.1:19410
cat >"$DIR/switch.toml" <<TOML
[[trunks]]
id = "tr_00000000000000a1"
host = "127.0.0.1"
port = $UAS_PORT
default = true
options_interval = 0
max_concurrent_calls = 0
calls_per_second = 0
TOML
ulimit -n "$(ulimit -Hn)"
SCHEME=ws
TLS_ARGS=()
if [ -n "${TLS:-}" ]; then
    # A private CA, and the simulator's certificate signed by it.
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
    openssl req -x509 "${ec[@]}" -days 1 -subj /CN=codeb-ai-load-ca \
        -keyout "$DIR/ca-key.pem" -out "$DIR/ca.pem" 2>/dev/null
    openssl req "${ec[@]}" -subj /CN=codeb-ai-load \
        -keyout "$DIR/sim-key.pem" -out "$DIR/sim.csr" 2>/dev/null
    printf 'subjectAltName=IP:%s\nbasicConstraints=CA:FALSE\n' "${SIM%:*}" >"$DIR/sim.ext"
    openssl x509 -req -in "$DIR/sim.csr" -CA "$DIR/ca.pem" -CAkey "$DIR/ca-key.pem" \
        -days 1 -extfile "$DIR/sim.ext" -out "$DIR/sim-cert.pem" 2>/dev/null
    SCHEME=wss
    TLS_ARGS=(--tls-cert "$DIR/sim-cert.pem" --tls-key "$DIR/sim-key.pem")
    export CODEB_AI_CA_FILE=$DIR/ca.pem
fi
CODEB_SIP_ADDR=127.0.0.1:$SW_PORT CODEB_DATA_DIR=$DIR CODEB_RTP_PORTS=10000-23999 \
    CODEB_WORKERS=1 CODEB_AI_THREADS=$AI_THREADS CODEB_LOG=warn CODEB_SWITCH_METRICS_ADDR=127.0.0.1:19092 \
    CODEB_SWITCH_GRPC_ADDR=$GRPC CODEB_GEMINI_URL=$SCHEME://$SIM CODEB_GEMINI_API_KEY=sim-key \
    CODEB_OPENAI_URL=$SCHEME://$SIM CODEB_OPENAI_API_KEY=sim-key \
    taskset -c "$SWITCH_CPU" "$BIN/codeb-switch" 2>"$DIR/switch.log" &
SW=$!
. benches/cpu_cap.sh
trap 'kill $SW 2>/dev/null; wait $SW 2>/dev/null; cpu_cap_cleanup; rm -rf "$DIR"' EXIT
[ -z "${SWITCH_QUOTA:-}" ] || cpu_cap switch "$SWITCH_QUOTA" $SW
# The switch is up once its gRPC link accepts (a busy machine took more
# than the 2 s this used to sleep).
for _ in $(seq 100); do
    (echo >"/dev/tcp/${GRPC%:*}/${GRPC#*:}") 2>/dev/null && break
    kill -0 $SW 2>/dev/null || { cat "$DIR/switch.log" >&2; exit 1; }
    sleep 0.1
done
if [ -n "${MEDIA_QUOTA:-}" ]; then
    for t in /proc/$SW/task/*; do
        [ "$(cat "$t/comm")" != media-0 ] || cpu_cap_thread media-0 "$MEDIA_QUOTA" "${t##*/}"
    done
fi
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
taskset -c "$GEN_CPU" "$BIN/ai-load" --grpc $GRPC --sip 127.0.0.1:$SW_PORT \
    --uas 127.0.0.1:$UAS_PORT --sim $SIM --pid $SW --rate "$RATE" \
    --calls "$(echo "$CALLS" | tr ' ' ',')" --seconds "$SECS" --period-ms "${PERIOD_MS:-4000}" \
    --vendor "${VENDOR:-gemini}" \
    "${TLS_ARGS[@]}"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "switch warnings: $(grep -c WARN "$DIR/switch.log" || true)"
grep -m 3 WARN "$DIR/switch.log" || true

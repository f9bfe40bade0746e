#!/usr/bin/env bash
# Webhook delivery benchmark against a release `codeb serve`:
#  1. throughput: 100 events x 1,000 subscriptions (100k deliveries) queued,
#     then drained into a local receiver; deliveries per second.
#  2. latency: one subscription, events recorded at 500/s for 20 s;
#     event -> receiver latency.
#
#   CODEB_BENCH_PG_URL=postgres://postgres@127.0.0.1:55432/postgres benches/webhooks.sh postgres
#   benches/webhooks.sh sqlite
#
# For postgres, CODEB_BENCH_PG_URL is an admin URL; a database
# codeb_wh_bench is dropped and recreated for each run.
#
# wh-load records the events itself, so the server hears of them the way it
# hears of another replica's: PostgreSQL NOTIFY. SQLite has no such signal
# between processes, so there the latency run measures the server's idle
# poll (1 s), not delivery; its throughput run is meaningful.
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:?sqlite or postgres}
cargo build --release -p codeb -p codeb-benches >&2
BIN=${CARGO_TARGET_DIR:-target}/release
fresh() {
    DIR=$(mktemp -d /tmp/codeb-wh-bench.XXXXXX)
    case $backend in
        sqlite) DB="sqlite://$DIR/codeb.db?mode=rwc" ;;
        postgres)
            ADMIN=${CODEB_BENCH_PG_URL:?set CODEB_BENCH_PG_URL}
            psql "$ADMIN" -qc 'DROP DATABASE IF EXISTS codeb_wh_bench' -c 'CREATE DATABASE codeb_wh_bench' >&2
            DB="${ADMIN%/*}/codeb_wh_bench" ;;
        *) echo "sqlite or postgres" >&2; exit 2 ;;
    esac
}
echo "== throughput ($backend)"
fresh
# With a PostgreSQL on this machine, also the CPU its backends spent
# serving the server (benches/pg-backend-cpu.py), per delivery.
pgcpu=
if [ "$backend" = postgres ] && command -v python3 >/dev/null && [ "$(uname)" = Linux ]; then
    benches/pg-backend-cpu.py codeb_wh_bench "$DIR/seeded" "$DIR/drained" >"$DIR/pgcpu" &
    pgcpu=$!
fi
$BIN/wh-load throughput --database-url "$DB" --data-dir "$DIR" --codeb $BIN/codeb \
    --subscriptions "${SUBSCRIPTIONS:-1000}" --events "${EVENTS:-100}" |
    while IFS= read -r line; do
        echo "$line"
        case $line in queued*) touch "$DIR/seeded" ;; esac
    done || status=$?
if [ -n "$pgcpu" ]; then
    touch "$DIR/drained"
    wait "$pgcpu"
    n=$(( ${SUBSCRIPTIONS:-1000} * ${EVENTS:-100} ))
    [ "${status:-0}" -ne 0 ] || awk -v s="$(cat "$DIR/pgcpu")" -v n="$n" \
        'BEGIN { printf "PG backends  %.1f CPU-s (%.0f µs per delivery; the server'"'"'s connections, if this PostgreSQL is local)\n", s, s / n * 1e6 }'
fi
rm -rf "$DIR"
[ "${status:-0}" -eq 0 ] || exit "$status"
echo
echo "== latency ($backend)"
fresh
$BIN/wh-load latency --database-url "$DB" --data-dir "$DIR" --codeb $BIN/codeb \
    --rate "${RATE:-500}" --seconds "${SECONDS_RUN:-20}"
rm -rf "$DIR"

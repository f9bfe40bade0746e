#!/usr/bin/env bash
# Control-plane list benchmark: 100k calls and 100k transcripts in one
# tenant, then GET /calls?limit=50 and GET /transcripts?q=… at full speed and
# at a fixed rate, against a release `codeb serve`.
#
#   benches/cp_lists.sh sqlite
#   CODEB_BENCH_PG_URL=postgres://postgres@127.0.0.1:55432/postgres benches/cp_lists.sh postgres
#
# Needs: curl, jq; for postgres an admin URL (a database codeb_bench is
# dropped and recreated). Seeding takes about a minute on SQLite.
#
# Settings (environment):
#   SECONDS_RUN=20   measured seconds per line (after 3 s of warm-up)
#   BIN=dir          use the codeb and cp-load already built in dir (no cargo
#                    build), e.g. to compare two builds
#   SEED_DB=file     SQLite only: copy this database (seeded by an earlier run
#                    and kept with KEEP_DB) instead of seeding a new one
#   KEEP_DB=file     SQLite only: keep a copy of the freshly seeded database here
#   ONLY=regex       run only the lines whose URL (and flags) match
#   PERF=1           also `perf stat` the server and cp-load for each line
#                    and print their CPU time, instructions and context
#                    switches per request (requests counted from the server's
#                    /metrics), which hold up better than req/s on a shared
#                    machine; "n/a" where the VM has no instruction counter
set -euo pipefail
. "$(dirname "$0")/cp_api_key.sh"
cd "$(dirname "$0")/.."
backend=${1:?sqlite or postgres}
SECONDS_RUN=${SECONDS_RUN:-20}
if [ -z "${BIN:-}" ]; then
    cargo build --release -p codeb -p codeb-benches >&2
    BIN=target/release
fi
DIR=$(mktemp -d /tmp/codeb-bench.XXXXXX)
PORT=${PORT:-18080}
case $backend in
    sqlite) DB="sqlite://$DIR/codeb.db?mode=rwc" ;;
    postgres)
        ADMIN=${CODEB_BENCH_PG_URL:?set CODEB_BENCH_PG_URL}
        psql "$ADMIN" -qc 'DROP DATABASE IF EXISTS codeb_bench' -c 'CREATE DATABASE codeb_bench' >&2
        DB="${ADMIN%/*}/codeb_bench" ;;
    *) echo "sqlite or postgres" >&2; exit 2 ;;
esac
if [ "$backend" = sqlite ] && [ -n "${SEED_DB:-}" ]; then
    echo "== copying the seeded database $SEED_DB"
    cp "$SEED_DB" "$DIR/codeb.db"
else
    echo "== seeding 100k calls + 100k transcripts ($backend)"
    $BIN/cp-load seed --database-url "$DB" --data-dir "$DIR" --tenant 127.0.0.1 2>&1 | grep -v '^  '
    if [ "$backend" = sqlite ] && [ -n "${KEEP_DB:-}" ]; then cp "$DIR/codeb.db" "$KEEP_DB"; fi
fi
CODEB_HTTP_ADDR=127.0.0.1:$PORT CODEB_DATA_DIR=$DIR CODEB_DATABASE_URL=$DB \
    CODEB_ADMIN_USER=bench CODEB_ADMIN_PASSWORD=bench-password CODEB_LOG=warn \
    $BIN/codeb serve >"$DIR/serve.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
CP_LOAD_TOKEN=$(cp_api_key http://127.0.0.1:$PORT)
export CP_LOAD_TOKEN
# Requests answered with 200 so far on the route of a URL.
answered() {
    local route=${1#http://*/}
    route=/${route%%\?*}
    curl -s -H "Authorization: Bearer $CP_LOAD_TOKEN" "http://127.0.0.1:$PORT/metrics" |
        awk -v r="$route" 'index($0, "codeb_http_requests_total{route=\"" r "\",method=\"GET\",status=\"200\"}") == 1 {print $2}'
}
run() {
    [[ "$*" =~ ${ONLY:-.} ]] || return 0
    echo
    if [ "${PERF:-}" != 1 ]; then
        $BIN/cp-load run --pid $PID --seconds "$SECONDS_RUN" "$@"
        return
    fi
    $BIN/cp-load run --pid $PID --seconds "$SECONDS_RUN" "$@" &
    local load=$! url=$2
    sleep 3.5 # the warm-up
    local n0 n1 gen
    n0=$(answered "$url")
    perf stat -x, -e task-clock,instructions,context-switches -p $load -o "$DIR/stat-load" -- sleep $((SECONDS_RUN - 2)) &
    gen=$!
    perf stat -x, -e task-clock,instructions,context-switches -p $PID -o "$DIR/stat" -- sleep $((SECONDS_RUN - 2))
    wait $gen
    n1=$(answered "$url")
    wait $load
    for who in server cp-load; do
        awk -F, -v n=$((n1 - n0)) -v who=$who '/task-clock/ {t=$1} /instructions/ {i=$1} /context-switches/ {c=$1}
            END {printf "perf stat    %-7s %d requests: %.1f us CPU, %s instructions, %.2f context switches per request\n",
                 who, n, t*1000/n, (i ~ /^[0-9]+$/ ? sprintf("%.0fk", i/n/1000) : "n/a"), c/n}' \
            "$DIR/$([ $who = server ] && echo stat || echo stat-load)"
    done
}
B=http://127.0.0.1:$PORT/api.ashx/v1
run --url "$B/calls?limit=50" --connections 32
run --url "$B/calls?limit=50" --connections 32 --rate 1000
run --url "$B/calls?limit=50&status=in-flight,scheduled" --connections 32
run --url "$B/transcripts?limit=50" --connections 32
run --url "$B/transcripts?limit=50" --connections 32 --rate 1000
# A selective search (a number fragment: ~100 matches) and a broad one
# (a word in one transcript in six: ~17k matches, all counted for `total`).
run --url "$B/transcripts?limit=50&q=1555123" --connections 32
run --url "$B/transcripts?limit=50&q=1555123" --connections 32 --rate 200
run --url "$B/transcripts?limit=50&q=renewal" --connections 32

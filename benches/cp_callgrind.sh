#!/usr/bin/env bash
# User-space instructions per request of the control plane, counted by
# callgrind: exact and repeatable where `perf stat -e instructions` is not
# available (a VM without a PMU) or too noisy. Starts `codeb serve` under
# valgrind on a copy of a seeded SQLite database, reads PATH 200 times to
# warm it (the row cache, the statement caches), zeroes the counters, reads
# it N more times over one keep-alive connection (curl), and divides the
# instructions of every thread of the server by N. The kernel's share (TCP,
# locks) is not in the count.
#
#   BIN=target/release SEED_DB=/tmp/seeded.db benches/cp_callgrind.sh '/api.ashx/v1/calls?limit=50' 2000
#
# BIN holds `codeb`; SEED_DB is a database seeded by cp_lists.sh (KEEP_DB=…),
# copied, not changed. Needs valgrind, curl and jq.
set -euo pipefail
. "$(dirname "$0")/cp_api_key.sh"
BIN=${BIN:?directory holding codeb}
SEED_DB=${SEED_DB:?a seeded SQLite database}
path=${1:?path and query, e.g. /api.ashx/v1/calls?limit=50}
n=${2:-2000}
PORT=${PORT:-18186}
dir=$(mktemp -d /tmp/codeb-callgrind.XXXXXX)
cp "$SEED_DB" "$dir/codeb.db"
CODEB_HTTP_ADDR=127.0.0.1:$PORT CODEB_DATA_DIR=$dir CODEB_DATABASE_URL="sqlite://$dir/codeb.db?mode=rwc" \
    CODEB_ADMIN_USER=bench CODEB_ADMIN_PASSWORD=bench-password CODEB_LOG=warn \
    valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" "$BIN/codeb" serve >"$dir/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 600); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.2; done
key=$(cp_api_key http://127.0.0.1:$PORT)
urls=()
for _ in $(seq "$n"); do urls+=("http://127.0.0.1:$PORT$path"); done
curl -sf -H "Authorization: Bearer $key" "${urls[@]:0:200}" >/dev/null
callgrind_control -z $pid >/dev/null 2>&1
curl -sf -H "Authorization: Bearer $key" "${urls[@]}" >/dev/null
callgrind_control -d $pid >/dev/null 2>&1
ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$dir"/cg.out.*)
echo "$path: $ir instructions for $n requests = $((ir / n)) per request (server, user space, callgrind)"

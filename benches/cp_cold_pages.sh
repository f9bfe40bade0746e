#!/usr/bin/env bash
# Server instructions per list page when the rows are new to the server's
# cache of rendered rows (store/row_cache.rs) and when they are not: 20
# distinct `GET /calls?limit=50&offset=…` pages (offsets 0–950) on one
# keep-alive connection, read four times: first (fresh process), second,
# after every row of those pages was rewritten by an UPDATE (new row
# versions: every row missing from the cache, in a warmed process), and
# again. `perf stat` counts the server's user and kernel instructions
# while each pass runs.
#
#   BIN=target/release SEED_DB=/tmp/seeded.db benches/cp_cold_pages.sh
#
# BIN holds `codeb`; SEED_DB is a SQLite database seeded by cp_lists.sh
# (KEEP_DB=…), migrated by that codeb or an older one (it is copied, not
# changed). Needs curl, jq, perf and the sqlite3 command.
set -euo pipefail
. "$(dirname "$0")/cp_api_key.sh"
BIN=${BIN:?directory holding codeb}
SEED_DB=${SEED_DB:?a seeded SQLite database}
PORT=${PORT:-18185}
dir=$(mktemp -d /tmp/codeb-cold.XXXXXX)
cp "$SEED_DB" "$dir/codeb.db"
CODEB_HTTP_ADDR=127.0.0.1:$PORT CODEB_DATA_DIR=$dir CODEB_DATABASE_URL="sqlite://$dir/codeb.db?mode=rwc" \
    CODEB_ADMIN_USER=bench CODEB_ADMIN_PASSWORD=bench-password CODEB_LOG=warn \
    "$BIN/codeb" serve >"$dir/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break; sleep 0.1; done
key=$(cp_api_key http://127.0.0.1:$PORT)
urls=()
for k in $(seq 0 19); do urls+=("http://127.0.0.1:$PORT/api.ashx/v1/calls?limit=50&offset=$((k * 50))"); done
# The connection and the key lookup warmed by one request outside the pages.
curl -s -o /dev/null -H "Authorization: Bearer $key" "http://127.0.0.1:$PORT/api.ashx/v1/calls?limit=1&offset=5000"
for pass in first second rewritten again; do
    if [ $pass = rewritten ]; then
        sqlite3 "$dir/codeb.db" "PRAGMA busy_timeout=5000; UPDATE calls SET duration_sec = duration_sec + 1
            WHERE call_id IN (SELECT call_id FROM calls ORDER BY created_at DESC, call_id DESC LIMIT 1000);" >/dev/null
    fi
    perf stat -x, -e instructions:u,instructions:k -p $pid -o "$dir/stat" -- \
        curl -s -H "Authorization: Bearer $key" "${urls[@]}" >/dev/null
    awk -F, -v p=$pass '/instructions:u/ {u=$1} /instructions:k/ {k=$1}
        END {printf "%-9s pass: %.0fk user + %.0fk kernel server instructions per page\n", p, u/20000, k/20000}' "$dir/stat"
done

#!/usr/bin/env bash
# `make demo`: nightly job on MovieLens-100k, then a real gRPC server on loopback,
# a few calls through the project's own client, and a clean shutdown.
set -euo pipefail
cd "$(dirname "$0")/.."
RECSYS=.venv/bin/recsys
free_port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT="${PORT:-$(free_port)}"
WORK="$(mktemp -d)"
printf '[serving]\nmetrics_port = %s\n[events]\nlog_dir = "%s/events"\n' "$(free_port)" "$WORK" > "$WORK/serve.toml"
METRICS_PORT="$(sed -n 's/^metrics_port = //p' "$WORK/serve.toml")"

echo "== nightly: fetch MovieLens-100k, train, evaluate, publish a bundle"
"$RECSYS" nightly || [ $? -eq 3 ]   # 3 = kept aside after a regression; the old bundle still serves

echo "== serve on 127.0.0.1:$PORT (one worker per core; JSON logs in $WORK/serve.log)"
"$RECSYS" serve --port "$PORT" --config "$WORK/serve.toml" 2> "$WORK/serve.log" &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
"$RECSYS" health --port "$PORT" --wait 60

echo "== recommendations for a known user (MovieLens user 196)"
"$RECSYS" recommend --port "$PORT" --user 196 -k 10
echo "== the same user, excluding two items and in another region"
"$RECSYS" recommend --port "$PORT" --user 196 -k 5 --exclude 50 181 --region intl
echo "== an unknown user: cold start from the tops, ranked by the cascade"
"$RECSYS" recommend --port "$PORT" --user new-visitor -k 5
echo "== items similar to item 50 (Star Wars)"
"$RECSYS" similar --port "$PORT" --item 50 -k 5
echo "== rank caller-given items for user 196"
"$RECSYS" rank --port "$PORT" --user 196 50 181 1 999999

echo "== user 196 buys the first item above: LogEvents, then that item is not offered again"
FIRST="$("$RECSYS" recommend --port "$PORT" --user 196 -k 1 | awk 'NR > 1 && $2 ~ /^[0-9]/ {print $2; exit}')"
echo "user_id,item_id,event_type,value,timestamp" > "$WORK/events.csv"
echo "196,$FIRST,purchase,1,$(date +%s)" >> "$WORK/events.csv"
"$RECSYS" log-events --port "$PORT" "$WORK/events.csv"
"$RECSYS" recommend --port "$PORT" --user 196 -k 5

echo "== a few Prometheus metrics (http://127.0.0.1:$METRICS_PORT/metrics)"
.venv/bin/python -c "import urllib.request, sys; print(''.join(l + '\n' for l in urllib.request.urlopen(sys.argv[1]).read().decode().splitlines() if l.startswith(('recsys_requests_total', 'recsys_bundle_info'))), end='')" "http://127.0.0.1:$METRICS_PORT/metrics"

echo "== shutting down (SIGTERM drains in-flight calls)"
kill -TERM "$SERVER"
wait "$SERVER"
trap - EXIT
echo "== the server's last log lines"
tail -n 2 "$WORK/serve.log"
echo "demo finished"

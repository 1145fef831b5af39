#!/usr/bin/env bash
# `make demo`: nightly job on MovieLens-100k, then a real gRPC server on loopback,
# a few calls through the project's own client, and a clean shutdown.
set -euo pipefail
cd "$(dirname "$0")/.."
RECSYS=.venv/bin/recsys
PORT="${PORT:-$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"

echo "== nightly: fetch MovieLens-100k, train, evaluate, publish a bundle"
"$RECSYS" nightly || [ $? -eq 3 ]   # 3 = kept aside after a regression; the old bundle still serves

echo "== serve on 127.0.0.1:$PORT"
"$RECSYS" serve --port "$PORT" &
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

echo "== shutting down (SIGTERM drains in-flight calls)"
kill -TERM "$SERVER"
wait "$SERVER"
trap - EXIT
echo "demo finished"

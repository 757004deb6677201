#!/bin/sh
# The amplification attack of issue 13: one gzipped span whose attribute is 63 MiB of
# control characters (a 64 KB body), posted to a collector binary; prints the answer,
# what the store grew by, the collector's peak memory, and what reading the trace back
# returns. Extra arguments go to the collector, e.g. to lift the bounds:
#   collector/benches/hostile.sh target/debug/tracia-collector --max-value-bytes 100000000 --max-span-bytes 1000000000
set -eu
BIN=${1:?usage: hostile.sh PATH/TO/tracia-collector [collector flags]}
shift
DIR=$(mktemp -d)
BODY=$DIR/hostile.pb.gz
python3 "$(dirname "$0")/hostile_request.py" "$BODY" gzip 1 63
echo "body: $(wc -c < "$BODY") bytes gzipped"
"$BIN" --http-addr 127.0.0.1:14318 --grpc-addr 127.0.0.1:14317 --data-dir "$DIR/store" \
    --rate-limit 0 "$@" >/dev/null 2>"$DIR/log" &
PID=$!
trap 'kill $PID 2>/dev/null; rm -rf "$DIR"' EXIT
until curl -sf http://127.0.0.1:14318/healthz >/dev/null; do sleep 0.2; done
curl -s -o /dev/null -w "answer: %{http_code} after %{time_total}s\n" \
    -H 'content-type: application/x-protobuf' -H 'content-encoding: gzip' \
    --data-binary @"$BODY" http://127.0.0.1:14318/v1/traces
echo "store grew to: $(du -cb "$DIR/store" | tail -1 | cut -f1) bytes"
echo "peak memory: $(grep VmHWM /proc/$PID/status | tr -s ' \t' ' ')"
curl -s -o /dev/null -w "trace read back: %{size_download} bytes\n" \
    http://127.0.0.1:14318/api/ui/traces/tr_4bf92f3577b34da6
echo "peak memory after reading: $(grep VmHWM /proc/$PID/status | tr -s ' \t' ' ')"

#!/bin/sh
# The "gRPC before auth" attack of issue 13: CLIENTS keyless clients at once (48 by
# default) each send one OTLP/gRPC export of about 60 MiB to a collector that has an API
# key; prints the status each got and the collector's peak memory. Before issue 13 the
# key was checked after tonic decoded each message (1.85 GB resident for 48 clients);
# now an interceptor refuses on the metadata, before the body is read.
#   collector/benches/grpc_keyless.sh target/debug/tracia-collector [CLIENTS]
set -eu
BIN=${1:?usage: grpc_keyless.sh PATH/TO/tracia-collector [CLIENTS]}
CLIENTS=${2:-48}
DIR=$(mktemp -d)
FRAME=$DIR/export.grpc
python3 "$(dirname "$0")/hostile_request.py" "$FRAME" grpc 120 60
echo "each export: $(wc -c < "$FRAME") bytes"
"$BIN" --http-addr 127.0.0.1:14328 --grpc-addr 127.0.0.1:14327 --data-dir "$DIR/store" \
    --api-key "bench-key-0123456789abcdef" >/dev/null 2>"$DIR/log" &
PID=$!
trap 'kill $PID 2>/dev/null; rm -rf "$DIR"' EXIT
until curl -sf http://127.0.0.1:14328/healthz >/dev/null; do sleep 0.2; done
echo "idle memory: $(grep VmRSS /proc/$PID/status | tr -s ' \t' ' ')"
i=0
CLIENT_PIDS=""
while [ "$i" -lt "$CLIENTS" ]; do
  ( rc=0; curl -s --http2-prior-knowledge -o /dev/null -D "$DIR/headers.$i" --max-time 60 \
      -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @"$FRAME" \
      http://127.0.0.1:14327/opentelemetry.proto.collector.trace.v1.TraceService/Export || rc=$?
    echo "curl exit $rc" > "$DIR/rc.$i" ) &
  CLIENT_PIDS="$CLIENT_PIDS $!"
  i=$((i + 1))
done
for pid in $CLIENT_PIDS; do wait "$pid" || true; done
# The refusal is a trailers-only answer (grpc-status 16) and then a reset of the
# stream whose body was never read: curl reports the reset as exit 92.
echo "how the $CLIENTS clients ended (curl exit 92: stream reset after the refusal):"
cat "$DIR"/rc.* | sort | uniq -c
cat "$DIR"/headers.* 2>/dev/null | grep -i '^grpc-status' | tr -d '\r' | sort | uniq -c || true
echo "peak memory: $(grep VmHWM /proc/$PID/status | tr -s ' \t' ' ')"
echo "spans stored: $(curl -s -H 'authorization: Bearer bench-key-0123456789abcdef' \
    'http://127.0.0.1:14328/api/v1/spans?limit=1' | head -c 200)"
echo

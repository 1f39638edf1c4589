#!/usr/bin/env bash
# `make run`: start kilnd in the foreground with the example function
# deployed as app "examples", fn "hello" (json-http), trigger /hello.
# Ctrl-C stops kilnd, which removes its containers before it exits.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${KILN_DATA_DIR:-$PWD/.kiln}
LISTEN=${KILN_LISTEN:-127.0.0.1:8080}
export KILN_API_URL="http://$LISTEN"
mkdir -p "$DATA"

echo "==> building the example function image (no Docker needed)"
bin/kiln build images/go/example --tag kiln/hello:latest --output "$DATA/hello.tar"

echo "==> starting kilnd on $LISTEN (data in $DATA)"
bin/kilnd --listen "$LISTEN" --data-dir "$DATA" &
KILND=$!
# Ctrl-C reaches kilnd too (same process group); the script only waits
# for kilnd to finish its clean shutdown.
trap 'echo; echo "==> stopping kilnd (removing its containers)"' INT TERM

for _ in $(seq 1 300); do
	if curl -fsS "http://$LISTEN/healthz" >/dev/null 2>&1; then break; fi
	if ! kill -0 "$KILND" 2>/dev/null; then wait "$KILND"; exit 1; fi
	sleep 0.1
done

bin/kiln images import "$DATA/hello.tar"
bin/kiln apps get examples >/dev/null 2>&1 || bin/kiln apps create examples >/dev/null
bin/kiln fns get examples hello >/dev/null 2>&1 || bin/kiln fns create examples hello kiln/hello:latest --format json-http >/dev/null
bin/kiln triggers list examples 2>/dev/null | grep -q '/hello' || bin/kiln triggers create examples hello hello --source /hello >/dev/null

cat <<MSG

kiln is serving. Try:

    curl -d World http://$LISTEN/t/examples/hello

Press Ctrl-C to stop.
MSG

status=0
while kill -0 "$KILND" 2>/dev/null; do
	wait "$KILND" || status=$?
done
exit "$status"

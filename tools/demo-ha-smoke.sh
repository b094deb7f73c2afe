#!/usr/bin/env bash
# What the README tells a new user to try with several nodes, as CI runs
# it: make demo-ha (on free ports and a directory of its own), an ssh
# through HAProxy with real OpenSSH, the session listed with the node
# that served it, then Ctrl-C, which must stop everything.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=.ci-demo-ha
out=$(mktemp)
trap 'rm -f "$out"' EXIT
make demo-ha DEMO_HA_FLAGS="--dir $dir --listen 127.0.0.1:0 --web 127.0.0.1:0" >"$out" 2>&1 &
make_pid=$!
for _ in $(seq 1 600); do
	grep -q "sekisho demo ready" "$out" && break
	if ! kill -0 "$make_pid" 2>/dev/null; then
		cat "$out" >&2
		echo "demo-ha-smoke: make demo-ha exited before it was ready" >&2
		exit 1
	fi
	sleep 0.5
done
if ! grep -q "sekisho demo ready" "$out"; then
	cat "$out" >&2
	echo "demo-ha-smoke: not ready within 5 minutes" >&2
	kill -INT "$make_pid"
	exit 1
fi
bastion=$(sed -n 's/^  bastion  \([0-9.]*:[0-9]*\).*/\1/p' "$out")
port=${bastion##*:}
marker="demo-ha-smoke-$$"
got=$(ssh -o BatchMode=yes -o UserKnownHostsFile="$dir/known_hosts" -p "$port" -i "$dir/keys/aiko" \
	aiko+db-jp-01@127.0.0.1 "echo $marker")
status=0
if [ "$got" != "$marker" ]; then
	echo "demo-ha-smoke: ssh through HAProxy printed '$got', want '$marker'" >&2
	status=1
fi
if ! bin/sekisho sessions --config "$dir/node-1/sekisho.yaml" | grep -Eq "aiko .* node-[0-9] "; then
	bin/sekisho sessions --config "$dir/node-1/sekisho.yaml" >&2
	echo "demo-ha-smoke: the session is not listed with the node that served it" >&2
	status=1
fi
# Ctrl-C reaches the demo (make passes SIGINT on) and stops everything.
pkill -INT -f "bin/sekisho demo --ha --dir $dir" || true
for _ in $(seq 1 120); do
	pgrep -f "$dir" >/dev/null || break
	sleep 0.5
done
if pgrep -af "$dir" >&2; then
	echo "demo-ha-smoke: processes left after Ctrl-C" >&2
	status=1
fi
wait "$make_pid" 2>/dev/null || true
rm -rf "$dir"
[ $status -eq 0 ] && echo "demo-ha-smoke: ok (ssh through HAProxy served by a node, listed, stopped clean)"
exit $status

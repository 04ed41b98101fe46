#!/usr/bin/env bash
# docker/e2e.sh: end-to-end check of the seed's HA topology (docker/compose.yaml) with a real
# Docker engine and real Consul: janus.service.starlings, asked from the Alien4Cloud host's client
# through consul-dns-proxy, resolves to both Janus hosts; when one Janus stops, its Consul TCP
# check (every 10s) goes critical and it disappears from the answers; when it comes back, so does
# its address. Everything is torn down at the end, whatever happened.
#
# Where no Docker engine runs (the CI machines of this project), it says so and exits 0.
# Usage: docker/e2e.sh            (env: E2E_KEEP=1 keeps the stack up for a look afterwards)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if ! docker info >/dev/null 2>&1; then
  echo "e2e: no Docker engine here, skipped"
  exit 0
fi
docker compose version >/dev/null 2>&1 || { echo "e2e: FAIL: needs the Docker Compose v2 plugin (docker compose)" >&2; exit 1; }

project=cdp-e2e-$$
dc() { docker compose -p "$project" -f compose.yaml "$@"; }
teardown() {
  if [[ ${E2E_KEEP:-0} == 1 ]]; then echo "e2e: kept up as project $project (docker compose -p $project -f docker/compose.yaml down -v)"; return; fi
  dc down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true
}
trap teardown EXIT
t0=$(date +%s)
elapsed() { echo $(($(date +%s) - t0)); }

JANUS1=172.28.53.21 JANUS2=172.28.53.22

# answers NAME: the sorted A records the client gets for NAME through its resolver (the proxy).
answers() {
  dc exec -T client dig +short +tries=1 +time=2 "$1" A 2>/dev/null | grep -E '^[0-9.]+$' | sort | tr '\n' ' ' | sed 's/ $//'
}
# wait_for DESC SECONDS CMD...: poll CMD until it succeeds, or fail after SECONDS.
wait_for() {
  local desc=$1 limit=$2; shift 2
  local deadline=$(($(date +%s) + limit))
  until "$@"; do
    if (($(date +%s) >= deadline)); then echo "e2e: FAIL: $desc not within ${limit}s (last answer: '$(answers janus.service.starlings)')" >&2; dc ps >&2; dc logs --tail 30 proxy >&2; exit 1; fi
    sleep 1
  done
  echo "e2e: ok   $desc (t=$(elapsed)s)"
}
is() { [[ $(answers "$1") == "$2" ]]; }

echo "e2e: building and starting the topology (project $project)"
dc up -d --build --wait --wait-timeout 300
echo "e2e: up (t=$(elapsed)s)"

# Consul needs a leader, the agents must join and each check must pass once (10s interval).
wait_for "janus.service.starlings -> both Janus hosts" 180 is janus.service.starlings "$JANUS1 $JANUS2"
is janus.service.consul "$JANUS1 $JANUS2" && echo "e2e: ok   janus.service.consul -> both Janus hosts" ||
  { echo "e2e: FAIL: janus.service.consul: '$(answers janus.service.consul)'" >&2; exit 1; }
is server2.janus.service.starlings "$JANUS2" && echo "e2e: ok   tag lookup server2.janus.service.starlings -> $JANUS2" ||
  { echo "e2e: FAIL: server2.janus.service.starlings: '$(answers server2.janus.service.starlings)'" >&2; exit 1; }
srv=$(dc exec -T client dig +short janus.service.starlings SRV | sort | tr '\n' ';')
echo "e2e: info janus.service.starlings SRV: $srv"
# The name is usable as Alien4Cloud uses it: http://janus.service.starlings:8800.
dc exec -T client wget -q -T 3 -O - http://janus.service.starlings:8800/ | grep -q '^janus-' &&
  echo "e2e: ok   http://janus.service.starlings:8800 answers" ||
  { echo "e2e: FAIL: http://janus.service.starlings:8800 does not answer" >&2; exit 1; }

# Failover: stop Janus 1; the TCP check (interval 10s) goes critical, the proxy follows.
t_stop=$(date +%s)
dc stop -t 2 janus-1 >/dev/null
wait_for "janus-1 stopped: janus.service.starlings -> $JANUS2 only" 60 is janus.service.starlings "$JANUS2"
echo "e2e: info janus-1 left the answers $(($(date +%s) - t_stop))s after it stopped (check interval 10s)"
# Every answer from now on must be janus-2 alone: ask a few times (Consul shuffles, the proxy caches).
for _ in 1 2 3 4 5; do is janus.service.starlings "$JANUS2" || { echo "e2e: FAIL: janus-1 came back while stopped: '$(answers janus.service.starlings)'" >&2; exit 1; }; done
echo "e2e: ok   five more answers without janus-1"

dc start janus-1 >/dev/null
wait_for "janus-1 restarted: both Janus hosts again" 60 is janus.service.starlings "$JANUS1 $JANUS2"

# Agent failover: freeze the local agent (its sockets stay bound but nothing answers, the worst
# case for a forwarder); the proxy must answer from the Consul servers' DNS instead.
dc pause a4c-agent >/dev/null
wait_for "local agent frozen: still both Janus hosts (via the servers)" 30 is janus.service.starlings "$JANUS1 $JANUS2"
dc unpause a4c-agent >/dev/null

echo "e2e: PASS (t=$(elapsed)s)"

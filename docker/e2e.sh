#!/usr/bin/env bash
# docker/e2e.sh: end-to-end check of the seed's HA topology (docker/compose.yaml) with real Consul.
# From the Alien4Cloud host container (a4c; its resolver is consul-dns-proxy on 127.0.0.1):
#  - getent hosts janus.service.starlings and the SRV answer name both Janus hosts, and
#    http://janus.service.starlings:8800/ reaches a Janus stand-in;
#  - Janus 1 stopped: its TCP check (every 10s) goes critical and it leaves the answers within the
#    check interval + 1s, while curl keeps working; started again, it comes back;
#  - the host's Consul agent stopped: answers keep coming (the proxy fails over to the servers),
#    never SERVFAIL nor a timeout;
#  - the proxy's HEALTHCHECK is healthy, and /metrics is scraped from the host (127.0.0.1 only).
# Everything is torn down at the end, whatever happened.
#
# Engines: Docker (docker compose) where an engine runs; otherwise podman-compose, as root, with
# the podman settings of docker/podman-env.sh and images built here, since no registry can be
# pulled from: the proxy and the a4c host on image-test.sh's stand-in Debian/Node base, Consul
# from Debian's 1.8.7 package (docker/consul-image.sh). podman-compose older than 1.0.4 lacks
# what compose.yaml uses (ipv4_address, ipam subnets, network_mode service:), so Debian's
# backport package is then fetched into the cache folder (apt-get download through a private
# sources list built from this machine's Debian mirror; nothing is installed system-wide).
# It skips (exit 0) only where neither Docker nor podman can run containers, and says so.
#
# Usage: docker/e2e.sh          (env: E2E_KEEP=1 keeps the stack up afterwards for a look)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
cd "$here"

project=cdp-e2e
JANUS1=172.28.53.21 JANUS2=172.28.53.22
CHECK_INTERVAL=10                      # docker/consul/janus-*.json
t_start=$(date +%s)
t_last=$t_start
timings=()
lap() { local now; now=$(date +%s); timings+=("$1=$((now - t_last))s"); echo "e2e: $1 done in $((now - t_last))s"; t_last=$now; }
die() { echo "e2e: FAIL: $*" >&2; exit 1; }
ok() { echo "e2e: ok   $*"; }
skip() { echo "e2e: SKIPPED: $*"; exit 0; }
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

# --- engine ------------------------------------------------------------------------------------
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  engine=docker
  docker compose version >/dev/null 2>&1 || die "needs the Docker Compose v2 plugin (docker compose)"
elif [[ $(id -u) != 0 ]]; then
  skip "no Docker engine, and podman as set up here needs root"
else
  if ! command -v podman >/dev/null; then
    command -v apt-get >/dev/null || skip "no Docker engine, no podman, and no apt-get to install it"
    echo "e2e: installing podman"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman >/dev/null
  fi
  # shellcheck source=docker/podman-env.sh
  source "$here/podman-env.sh"
  pm info >/dev/null 2>&1 || skip "no Docker engine, and podman cannot run containers here (podman info fails)"
  engine=podman
fi
echo "e2e: engine $engine"

work=$(mktemp -d /tmp/cdp-e2e.XXXXXX)
watch_pid=

if [[ $engine == docker ]]; then
  dc() { docker compose -p "$project" -f compose.yaml "$@"; }
  up() { dc up -d --build --wait --wait-timeout 300; }
  in_a4c() { dc exec -T a4c "$@"; }
  in_a4c_stdin() { dc exec -T a4c "$@"; }
  stop_svc() { dc stop -t 2 "$1" >/dev/null; }
  start_svc() { dc start "$1" >/dev/null; }
  proxy_healthy() { [[ $(docker inspect --format '{{.State.Health.Status}}' "$(dc ps -q proxy)") == healthy ]]; }
  show_state() { dc ps >&2 || true; dc logs --tail 30 proxy >&2 || true; }
  down() { dc down -v --remove-orphans --timeout 2 >/dev/null 2>&1 || true; }
else
  # --- podman: tools, podman-compose, images ---------------------------------------------------
  need=()
  command -v runc >/dev/null || need+=(runc)
  command -v catatonit >/dev/null || need+=(catatonit)      # compose.yaml's `init: true`
  [[ -x /usr/bin/podman-compose ]] || need+=(podman-compose)  # and its python3-yaml/-dotenv
  if ((${#need[@]})); then
    echo "e2e: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    source "$here/podman-env.sh"        # again: init_path names catatonit once it is installed
  fi
  pc_version() { /usr/bin/python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import podman_compose as p; print(p.__version__)' "$1"; }
  pc_new_enough() { printf '%s\n' 1.0.4 "$1" | sort -V -C; }
  pc_py=/usr/lib/python3/dist-packages/podman_compose.py
  have=$(pc_version "$(dirname "$pc_py")")
  if ! pc_new_enough "$have"; then
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    dir=$cdp_cache/podman-compose
    pc_py=$dir/usr/lib/python3/dist-packages/podman_compose.py
    if [[ ! -f $pc_py ]] || ! pc_new_enough "$(pc_version "$(dirname "$pc_py")")"; then
      mirror=$(cdp_debian_mirror "$codename")
      [[ -n $codename && -n $mirror ]] || die "podman-compose $have is too old (needs 1.0.4+) and no Debian mirror for '$codename' is configured"
      echo "e2e: podman-compose $have is too old (needs 1.0.4+); fetching $codename-backports' package"
      st=$dir/apt
      mkdir -p "$st/lists/partial" "$st/cache/archives/partial" "$st/etc" "$st/dl"
      keyring=/usr/share/keyrings/debian-archive-keyring.gpg
      signed=; [[ -r $keyring ]] && signed="[signed-by=$keyring] "
      echo "deb ${signed}${mirror%/} ${codename}-backports main" >"$st/etc/sources.list"
      apt_opts=(-o "Dir::Etc::sourcelist=$st/etc/sources.list" -o "Dir::Etc::sourceparts=/dev/null"
        -o "Dir::State::Lists=$st/lists" -o "Dir::Cache=$st/cache" -o "Dir::State::status=/dev/null"
        -o "Debug::NoLocking=1" -o "APT::Sandbox::User=root" -o "APT::Get::List-Cleanup=0" -qq)
      apt-get "${apt_opts[@]}" update
      (cd "$st/dl" && rm -f podman-compose_*.deb && apt-get "${apt_opts[@]}" download podman-compose)
      dpkg-deb -x "$(ls "$st/dl"/podman-compose_*.deb | head -1)" "$dir"
      pc_new_enough "$(pc_version "$(dirname "$pc_py")")" || die "$codename-backports' podman-compose is still older than 1.0.4"
    fi
  fi
  echo "e2e: podman-compose $(pc_version "$(dirname "$pc_py")") ($pc_py)"
  lap tools

  # --base-only also runs the base once: an image that exists but does not run means podman
  # cannot run containers here (a skip); no image at all is a failure.
  if ! bash "$repo/docker/image-test.sh" --base-only >"$work/base.log" 2>&1; then
    cat "$work/base.log" >&2
    pm image exists "$cdp_base_tag" || die "could not assemble the base image"
    skip "podman cannot run a container on this machine (the base image exists but does not start)"
  fi
  lap base-image
  consul_image=$(bash "$repo/docker/consul-image.sh" | tail -1)
  lap consul-image

  # build_cached TAG KEY PODMAN-BUILD-ARGS...: build unless TAG already carries label cdp.key=KEY.
  build_cached() {
    local tag=$1 key=$2 name=${1##*/}; shift 2
    if [[ $(pm image inspect --format '{{ index .Labels "cdp.key" }}' "$tag" 2>/dev/null || true) == "$key" ]]; then
      echo "e2e: $tag is up to date"; return
    fi
    pm build --network host --pull=never --format docker --layers=false --label "cdp.key=$key" \
      --build-arg BASE_IMAGE="$cdp_base_tag" -t "$tag" "$@" >"$work/build-${name%%:*}.log" 2>&1 ||
      { tail -40 "$work/build-${name%%:*}.log" >&2; die "podman build of $tag failed"; }
  }
  base_id=$(pm image inspect --format '{{.Id}}' "$cdp_base_tag")
  a4c_image=localhost/cdp-a4c:e2e
  mkdir -p "$work/empty"
  build_cached "$a4c_image" "$( { cat a4c.Dockerfile; echo "$base_id"; } | sha256sum | cut -c1-16)" \
    -f "$here/a4c.Dockerfile" "$work/empty"
  lap a4c-image
  # The proxy image is keyed on its build context (docker/Dockerfile and what .dockerignore lets in).
  proxy_image=localhost/consul-dns-proxy:e2e
  proxy_key=$( { echo "$base_id";
    tar -C "$repo" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --exclude='*.tsbuildinfo' -cf - \
      package.json package-lock.json tsconfig.json src config docker/Dockerfile docker/tsconfig.build.json docker/config.yaml; } |
    sha256sum | cut -c1-16)
  build_cached "$proxy_image" "$proxy_key" -f "$here/Dockerfile" "$repo"
  lap proxy-image

  export CONSUL_IMAGE=$consul_image NODE_IMAGE=$cdp_base_tag A4C_IMAGE=$a4c_image PROXY_IMAGE=$proxy_image
  pc() { /usr/bin/python3 "$pc_py" -p "$project" -f compose.yaml "$@"; }
  ctr() { echo "${project}_$1_1"; }              # podman-compose's container names
  up() { pc up -d --no-build >"$work/up.log" 2>&1 || { tail -40 "$work/up.log" >&2; return 1; }; }
  in_a4c() { pm exec "$(ctr a4c)" "$@"; }
  in_a4c_stdin() { pm exec -i "$(ctr a4c)" "$@"; }
  stop_svc() { pm stop -t 2 "$(ctr "$1")" >/dev/null; }
  start_svc() { pm start "$(ctr "$1")" >/dev/null; }
  # podman runs no HEALTHCHECK timer without systemd: run the image's check now, as the timer would.
  proxy_healthy() { pm healthcheck run "$(ctr proxy)" >/dev/null 2>&1; }
  show_state() { pm ps -a --filter "label=io.podman.compose.project=$project" >&2 || true; pm logs --tail 30 "$(ctr proxy)" >&2 || true; }
  down() {
    local ids pass
    # podman refuses to remove a container that others depend on (podman-compose's --requires,
    # a shared network namespace) unless --depend; a second pass catches any it still left.
    for pass in 1 2 3 4; do
      ids=$(pm ps -aq --filter "label=io.podman.compose.project=$project" 2>/dev/null || true)
      [[ -n $ids ]] || break
      pm rm -f --depend -t 0 $ids >/dev/null 2>&1 || true
    done
    [[ -z $ids ]] || echo "e2e: warning: containers of $project left after teardown: $ids" >&2
    pm network rm -f "${project}_ha" >/dev/null 2>&1 || true
  }
fi

teardown() {
  local rc=$?
  [[ -n $watch_pid ]] && kill "$watch_pid" 2>/dev/null
  if ((rc)); then show_state; fi
  if [[ ${E2E_KEEP:-0} == 1 ]]; then echo "e2e: kept up as project $project"; else down; fi
  rm -rf "$work"
}
trap teardown EXIT
trap 'exit 130' INT                    # so that the EXIT trap tears down after a signal too
trap 'exit 143' TERM

# --- up ----------------------------------------------------------------------------------------
export CONSUL_UI_PORT=${CONSUL_UI_PORT:-$(free_port)} PROXY_METRICS_PORT=${PROXY_METRICS_PORT:-$(free_port)}
down                                   # what an interrupted run left
echo "e2e: starting the topology (project $project; metrics on 127.0.0.1:$PROXY_METRICS_PORT)"
up || die "compose up failed"
lap up

# hosts NAME: the sorted addresses getent gives for NAME on the a4c host (resolver: the proxy).
hosts() { in_a4c getent hosts "$1" 2>/dev/null | awk '{ print $1 }' | sort | xargs; }
# wait_for DESC SECONDS CMD...: poll CMD until it succeeds, or fail after SECONDS.
wait_for() {
  local desc=$1 limit=$2 t0; shift 2
  t0=$(date +%s)
  until "$@"; do
    (($(date +%s) - t0 < limit)) || die "$desc: not within ${limit}s (getent: '$(hosts janus.service.starlings)')"
    sleep 1
  done
  ok "$desc ($(($(date +%s) - t0))s)"
}
is_hosts() { [[ $(hosts "$1") == "$2" ]]; }

# Consul needs a leader, the agents must join and each check must pass once.
wait_for "getent hosts janus.service.starlings -> $JANUS1 $JANUS2" 180 is_hosts janus.service.starlings "$JANUS1 $JANUS2"
lap converge
is_hosts janus.service.consul "$JANUS1 $JANUS2" && ok "getent hosts janus.service.consul -> both" ||
  die "janus.service.consul: '$(hosts janus.service.consul)'"
is_hosts server2.janus.service.starlings "$JANUS2" && ok "tag lookup server2.janus.service.starlings -> $JANUS2" ||
  die "server2.janus.service.starlings: '$(hosts server2.janus.service.starlings)'"
# SRV: one record per Janus host on port 8800; the targets' addresses (Additional) are both hosts.
srv=$(in_a4c dig +tries=1 +time=3 +noall +answer +additional janus.service.starlings SRV)
srv_ports=$(awk '$4 == "SRV" { print $7 }' <<<"$srv" | sort | xargs)
srv_addrs=$(awk 'NR == FNR { if ($4 == "SRV") t[$8] = 1; next } $4 == "A" && ($1 in t) { print $5 }' <(echo "$srv") <(echo "$srv") | sort | xargs)
[[ $srv_ports == "8800 8800" && $srv_addrs == "$JANUS1 $JANUS2" ]] && ok "dig SRV janus.service.starlings -> 2 x port 8800 on $srv_addrs" ||
  die "dig SRV janus.service.starlings: $srv"
body=$(in_a4c curl -sS --max-time 3 http://janus.service.starlings:8800/) && [[ $body == janus-[12] ]] &&
  ok "curl http://janus.service.starlings:8800/ -> $body" || die "curl http://janus.service.starlings:8800/: '$body'"
wait_for "the proxy's HEALTHCHECK is healthy" 60 proxy_healthy
metrics() { node -e 'fetch(process.argv[1],{signal:AbortSignal.timeout(3000)}).then(r=>r.text()).then(t=>process.stdout.write(t),()=>{})' "http://127.0.0.1:$PROXY_METRICS_PORT/metrics"; }
m=$(metrics | grep -c '^consul_dns_proxy_requests_total' || true)
((m > 0)) && ok "/metrics from the host (127.0.0.1:$PROXY_METRICS_PORT): $(metrics | grep -c '^[a-z]') samples, $m request counters" ||
  die "no consul_dns_proxy_requests_total from http://127.0.0.1:$PROXY_METRICS_PORT/metrics"
lap checks

# --- failures, observed from inside the a4c host -------------------------------------------------
# One sampler in the a4c container for the rest of the run: every ~0.2s the time, the rcode and
# addresses of janus.service.starlings A (dig, one try, 2s), and what curl on the URL got.
cat >"$work/watch.sh" <<'EOF'
echo "pid $$"
while :; do
  t=$(date +%s.%N)
  out=$(dig +tries=1 +time=2 +noall +comments +answer janus.service.starlings A 2>&1)
  st=$(printf '%s\n' "$out" | sed -n 's/.*status: \([A-Z]*\).*/\1/p')
  ips=$(printf '%s\n' "$out" | awk '$4 == "A" { print $5 }' | sort | paste -sd, -)
  body=$(curl -s --max-time 2 http://janus.service.starlings:8800/ || echo curl-failed)
  echo "$t ${st:-no-answer} ${ips:--} ${body:-empty}"
  sleep 0.2
done
EOF
in_a4c_stdin sh <"$work/watch.sh" >"$work/watch.log" 2>&1 &
watch_pid=$!
for _ in $(seq 50); do grep -q '^[0-9]' "$work/watch.log" 2>/dev/null && break; sleep 0.2; done
# first_after T AWK-COND LIMIT: wait up to LIMIT s for a sample after T matching COND; print its time.
first_after() {
  local t=$1 cond=$2 limit=$3 deadline=$(($(date +%s) + $3)) hit
  while :; do
    hit=$(awk -v t="$t" '$1 ~ /^[0-9]/ && $1 > t && ('"$cond"') { print $1; exit }' "$work/watch.log")
    [[ -n $hit ]] && { echo "$hit"; return 0; }
    (($(date +%s) < deadline)) || return 1
    sleep 0.2
  done
}
# bad_between T1 T2 AWK-COND: the samples in (T1, T2] that match COND.
bad_between() { awk -v a="$1" -v b="$2" '$1 ~ /^[0-9]/ && $1 > a && $1 <= b && ('"$3"')' "$work/watch.log"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
both="$JANUS1,$JANUS2"

t_stop=$(date +%s.%N)
stop_svc janus-1
t_gone=$(first_after "$t_stop" "\$3 == \"$JANUS2\"" 30) || die "janus-1 still answered 30s after it stopped: $(tail -3 "$work/watch.log")"
gone=$(secs "$t_stop" "$t_gone")
awk -v d="$gone" -v lim=$((CHECK_INTERVAL + 1)) 'BEGIN { exit !(d <= lim) }' ||
  die "janus-1 left the answers ${gone}s after it stopped (limit: check interval ${CHECK_INTERVAL}s + 1s)"
ok "janus-1 stopped: it left the answers after ${gone}s (limit $((CHECK_INTERVAL + 1))s)"
sleep 3                                          # a few more samples with janus-1 down
t_up=$(date +%s.%N)
bad=$(bad_between "$t_gone" "$t_up" "\$2 != \"NOERROR\" || \$3 != \"$JANUS2\"")
[[ -z $bad ]] || die "janus-1 came back (or an error) while stopped: $bad"
bad=$(bad_between "$t_stop" "$t_up" '$4 !~ /^janus-[12]$/')
[[ -z $bad ]] || die "curl failed while janus-1 was down: $bad"
ok "curl kept working while janus-1 was down ($(bad_between "$t_stop" "$t_up" 1 | wc -l) samples, all answered)"

start_svc janus-1
t_back=$(first_after "$t_up" "\$3 == \"$both\"" $((CHECK_INTERVAL * 3))) || die "janus-1 not back in the answers $((CHECK_INTERVAL * 3))s after it started: $(tail -3 "$work/watch.log")"
ok "janus-1 started: back in the answers after $(secs "$t_up" "$t_back")s"

t_agent=$(date +%s.%N)
stop_svc a4c-agent
sleep 15                                          # the proxy's failover to the servers, and after
t_end=$(date +%s.%N)
n=$(bad_between "$t_agent" "$t_end" 1 | wc -l)
bad=$(bad_between "$t_agent" "$t_end" "\$2 != \"NOERROR\" || \$3 != \"$both\" || \$4 !~ /^janus-[12]\$/")
((n >= 10)) || die "only $n samples in the 15s after the agent stopped"
[[ -z $bad ]] || die "after the host's agent stopped: $bad"
ok "the host's Consul agent stopped: $n answers in 15s, all NOERROR with both Janus hosts (no SERVFAIL, no timeout)"
srv_after=$(in_a4c dig +short +tries=1 +time=3 janus.service.starlings SRV | wc -l)
((srv_after == 2)) && ok "dig SRV still answers 2 records without the local agent" || die "dig SRV without the local agent: $srv_after records"
proxy_healthy && ok "the proxy's HEALTHCHECK is still healthy without the local agent" || die "the proxy's HEALTHCHECK failed without the local agent"
m=$(metrics | grep -c '^consul_dns_proxy_' || true)
((m > 0)) && ok "/metrics still scraped from the host ($m samples)" || die "/metrics no longer answers"
lap failover

kill "$watch_pid" 2>/dev/null; watch_pid=
echo "e2e: timings: ${timings[*]} total=$(($(date +%s) - t_start))s"
echo "e2e: PASS"

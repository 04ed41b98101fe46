#!/usr/bin/env bash
# docker/image-test.sh: build the proxy's container image with podman on a machine that has no
# Docker engine and no reachable image registry, run it against the Consul simulator on loopback,
# and check it with dig and /health.
#
# Why it looks like this:
# - No registry image can be pulled here, so the Dockerfile's BASE_IMAGE (node:20-bookworm-slim for
#   users) is replaced by a local stand-in of the same shape: a debootstrap'd Debian bookworm
#   (minbase) plus this machine's own Node 20 and npm under /usr/local, imported with
#   `podman import`. The Debian mirror is read from this machine's apt sources at run time, so no
#   mirror or registry host is written into the repository.
# - podman runs as root with runc, the vfs storage driver and cgroupfs (what works in this
#   sandbox), under a storage root of its own in the cache folder so that nothing else's podman
#   state is touched (docker/podman-env.sh, shared with consul-image.sh and e2e.sh); build and
#   run use the host network (the build's `npm ci` needs the npm
#   registry; the test talks to the simulator on 127.0.0.1).
# - The debootstrap tree and the base image are cached under $CDP_IMAGE_CACHE (default
#   /var/tmp/consul-dns-proxy-image-test), so a second run skips them. The app image is built with
#   --layers=false: with the vfs driver every cached layer is a full copy of the root file system,
#   and committing each Dockerfile step took longer (111-144s) than rebuilding without a layer
#   cache (about 50s). The test image and containers are removed at the end; --clean-cache also
#   removes the cached base.
# Every packet goes to loopback only (team rule): the container gets a config file with no
# recursors, and the simulator stands in for the Consul agent.
#
# Usage: docker/image-test.sh [--base-only] [--clean-cache]
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=docker/podman-env.sh
source "$repo/docker/podman-env.sh"
cache=$cdp_cache
suite=bookworm                                   # the Debian release of node:20-bookworm-slim
base_tag=$cdp_base_tag
image_tag=localhost/consul-dns-proxy:image-test
base_only=0
for a in "$@"; do
  case $a in
    --base-only) base_only=1 ;;
    --clean-cache) rm -rf "$cache"; echo "image-test: removed $cache"; exit 0 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "image-test: unknown argument $a" >&2; exit 2 ;;
  esac
done

t_start=$(date +%s)
t_last=$t_start
timings=()
lap() { # lap NAME: record the seconds since the previous lap
  local now; now=$(date +%s)
  timings+=("$1=$((now - t_last))s")
  echo "image-test: $1 done in $((now - t_last))s"
  t_last=$now
}
die() { echo "image-test: FAIL: $*" >&2; exit 1; }

# --- 0. tools --------------------------------------------------------------------------------
if [[ $(id -u) != 0 ]]; then die "must run as root (podman with runc/vfs/cgroupfs as set up here)"; fi
need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v dig >/dev/null || need+=(bind9-dnsutils)
if ((${#need[@]})); then
  echo "image-test: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
node_bin=$(command -v node) || die "no node on PATH"
node_ver=$(node -v)
[[ $node_ver == v20.* ]] || die "this machine's node is $node_ver; the stand-in base needs Node 20"
arch=$(dpkg --print-architecture)
lap tools

# --- 1. podman set-up: docker/podman-env.sh (sourced above) ----------------------------------
mkdir -p "$cache"

# --- 2. the stand-in base image ----------------------------------------------------------------
rootfs=$cache/rootfs-$suite-$arch
if [[ ! -f $rootfs/.complete ]]; then
  mirror=$(cdp_debian_mirror "$suite")
  [[ -n $mirror ]] || die "no Debian '$suite' source found in /etc/apt/sources.list{,.d/*}"
  echo "image-test: debootstrap --variant=minbase $suite from this machine's mirror"
  rm -rf "$rootfs.tmp"
  debootstrap --variant=minbase --arch="$arch" "$suite" "$rootfs.tmp" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
    { tail -20 "$cache/debootstrap.log" >&2; die "debootstrap failed (log: $cache/debootstrap.log)"; }
  rm -rf "$rootfs.tmp"/var/cache/apt/archives/*.deb "$rootfs.tmp"/var/lib/apt/lists/*
  touch "$rootfs.tmp/.complete"
  rm -rf "$rootfs"
  mv "$rootfs.tmp" "$rootfs"
  lap debootstrap
fi

# The base is rebuilt when this machine's node, npm or CA bundle changes.
npm_dir=$(cd "$(dirname "$(readlink -f "$(command -v npm)")")/.." && pwd)   # .../node_modules/npm
ca_bundle=/etc/ssl/certs/ca-certificates.crt
base_key=$( { echo "$suite $arch"; sha256sum "$node_bin" "$npm_dir/package.json"; [[ -f $ca_bundle ]] && sha256sum "$ca_bundle"; } | sha256sum | cut -c1-16)
have_key=$(pm image inspect --format '{{ index .Labels "cdp.base-key" }}' "$base_tag" 2>/dev/null || true)
if [[ $have_key != "$base_key" ]]; then
  echo "image-test: assembling $base_tag (node $node_ver)"
  stage=$(mktemp -d "$cache/stage.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
  # One merged tree: podman import refuses a layer tar that names a path twice.
  cp -a "$rootfs/." "$stage/"
  rm -f "$stage/.complete"
  # The official node image's layout: /usr/local/bin/node, npm under /usr/local/lib/node_modules.
  mkdir -p "$stage/usr/local/bin" "$stage/usr/local/lib/node_modules" "$stage/usr/local/etc"
  cp "$node_bin" "$stage/usr/local/bin/node"
  cp -a "$npm_dir" "$stage/usr/local/lib/node_modules/npm"
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$stage/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$stage/usr/local/bin/npx"
  # This sandbox reaches the npm registry through a TLS-intercepting egress proxy whose CA is in
  # the machine's bundle; the stand-in base trusts the same bundle for npm (as the machine's own
  # npm config does). The real node:20-bookworm-slim needs nothing of the kind.
  if [[ -f $ca_bundle ]]; then
    mkdir -p "$stage/etc/ssl/certs"
    cp "$ca_bundle" "$stage/etc/ssl/certs/ca-certificates.crt"
    echo "cafile=/etc/ssl/certs/ca-certificates.crt" >"$stage/usr/local/etc/npmrc"
  fi
  tar -C "$stage" -cf - . |
    pm import --quiet \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change "ENV NODE_VERSION=${node_ver#v}" \
      --change "LABEL cdp.base-key=$base_key" \
      --change 'CMD ["node"]' \
      --message "debootstrap $suite minbase + node $node_ver (stand-in for node:20-$suite-slim)" \
      - "$base_tag" >/dev/null
  rm -rf "$stage"
  trap - EXIT
  lap base-image
fi
# Containers left by an interrupted run (this storage root is ours alone).
for c in $(pm ps -a --format '{{.Names}}' 2>/dev/null | grep '^cdp-image-test-' || true); do
  pm rm -f "$c" >/dev/null 2>&1 || true
done
pm run --rm --network host "$base_tag" node -e 'console.log("image-test: base node", process.version)'
((base_only)) && { echo "image-test: base ready ($base_tag); timings: ${timings[*]}"; exit 0; }

# --- 3. build the image ------------------------------------------------------------------------
[[ -f $repo/docker/Dockerfile ]] || die "no docker/Dockerfile"
# --format docker keeps HEALTHCHECK (the OCI image format has no such field).
pm build --network host --pull=never --format docker --layers=false \
  -f "$repo/docker/Dockerfile" --build-arg BASE_IMAGE="$base_tag" \
  -t "$image_tag" "$repo" >"$cache/build.log" 2>&1 ||
  { tail -40 "$cache/build.log" >&2; die "podman build failed (log: $cache/build.log)"; }
lap build
user=$(pm image inspect --format '{{.Config.User}}' "$image_tag")
echo "image-test: image $image_tag user=$user size=$(pm image inspect --format '{{.Size}}' "$image_tag") bytes"
[[ $user =~ ^[1-9][0-9]*(:[0-9]+)?$ ]] || die "image user '$user' is not a numeric non-root uid"

# --- 4. the simulator on loopback --------------------------------------------------------------
work=$(mktemp -d /tmp/cdp-image-test.XXXXXX)
ctr=cdp-image-test-$$
sim_pid=
cleanup() {
  pm rm -f -t 2 "$ctr" >/dev/null 2>&1 || true
  pm rm -f -t 2 "$ctr-cc" >/dev/null 2>&1 || true
  [[ -n $sim_pid ]] && kill "$sim_pid" 2>/dev/null && wait "$sim_pid" 2>/dev/null
  pm rmi -f "$image_tag" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

sim_js=$repo/dist/test/support/sim-cli.js
if [[ -f $sim_js ]]; then
  sim=(node "$sim_js" --dns-port 0 --http-port 0 --janus)   # janus-1/2 at 127.0.0.11/.12
else
  # No simulator built yet: a minimal stand-in that answers janus.service.consul A with two
  # passing instances (AA, TTL 0, as Consul does) and serves /v1/health/service/janus.
  cat >"$work/mini-sim.cjs" <<'EOF'
const dgram = require('node:dgram'), http = require('node:http');
const ips = ['127.0.0.11', '127.0.0.12'];   // as sim-cli --janus
function answer(q) {
  if (q.length < 12) return null;
  let o = 12, labels = [];
  while (o < q.length && q[o] !== 0) { labels.push(q.subarray(o + 1, o + 1 + q[o]).toString().toLowerCase()); o += q[o] + 1; }
  const qend = o + 5, name = labels.join('.'), qtype = q.readUInt16BE(o + 1);
  const hit = name === 'janus.service.consul' && qtype === 1;
  const h = Buffer.alloc(12); q.copy(h, 0, 0, 2);
  h.writeUInt16BE(0x8400 | (q.readUInt16BE(2) & 0x0100) | (hit ? 0 : 3), 2);
  h.writeUInt16BE(1, 4); h.writeUInt16BE(hit ? ips.length : 0, 6);
  const rrs = hit ? ips.map((ip) => { const r = Buffer.alloc(16); r.writeUInt16BE(0xc00c, 0); r.writeUInt16BE(1, 2); r.writeUInt16BE(1, 4); r.writeUInt32BE(0, 6); r.writeUInt16BE(4, 10); ip.split('.').forEach((b, i) => { r[12 + i] = +b; }); return r; }) : [];
  return Buffer.concat([h, q.subarray(12, qend), ...rrs]);
}
const dns = dgram.createSocket('udp4');
dns.on('message', (m, r) => { const a = answer(m); if (a) dns.send(a, r.port, r.address); });
const api = http.createServer((req, res) => {
  res.setHeader('X-Consul-Index', '1'); res.setHeader('Content-Type', 'application/json');
  if (!req.url.startsWith('/v1/health/service/janus')) { res.end('[]'); return; }
  res.end(JSON.stringify(ips.map((ip, i) => ({ Node: { Node: `janus-${i + 1}`, Address: ip, Datacenter: 'dc1' },
    Service: { ID: 'janus', Service: 'janus', Tags: ['server', `server${i + 1}`], Address: ip, Port: 8800 },
    Checks: [{ CheckID: 'serfHealth', Status: 'passing' }, { CheckID: 'service:janus', Status: 'passing', ServiceID: 'janus' }] }))));
});
dns.bind(0, '127.0.0.1', () => api.listen(0, '127.0.0.1', () =>
  console.log(JSON.stringify({ msg: 'listening', dns: dns.address().port, http: api.address().port }))));
process.on('SIGTERM', () => process.exit(0));
EOF
  sim=(node "$work/mini-sim.cjs")
fi
"${sim[@]}" >"$work/sim.out" 2>"$work/sim.err" &
sim_pid=$!
sim_dns= sim_http=
for _ in $(seq 1 100); do
  # Accept either JSON keys (dns/http, dnsPort/httpPort) or "dns 127.0.0.1:PORT" style lines.
  read -r sim_dns sim_http < <(node -e '
    const t = require("fs").readFileSync(process.argv[1], "utf8");
    const num = (re) => { const m = t.match(re); return m ? m[1] : ""; };
    const d = num(/"dns(?:Port)?"\s*:\s*"?(?:[\d.]+:)?(\d+)/i) || num(/dns\D*?127\.0\.0\.1:(\d+)/i);
    const h = num(/"http(?:Port)?"\s*:\s*"?(?:http:\/\/)?(?:[\d.]+:)?(\d+)/i) || num(/http\D*?127\.0\.0\.1:(\d+)/i);
    if (d && h) console.log(d, h);' "$work/sim.out" 2>/dev/null || true) || true
  [[ -n $sim_dns && -n $sim_http ]] && break
  kill -0 "$sim_pid" 2>/dev/null || { cat "$work/sim.err" >&2; die "simulator exited"; }
  sleep 0.1
done
[[ -n $sim_dns ]] || { cat "$work/sim.out" "$work/sim.err" >&2; die "could not read the simulator's ports"; }
echo "image-test: simulator ${sim[*]:1:1} dns=127.0.0.1:$sim_dns http=127.0.0.1:$sim_http"

# --- 5. run the image --------------------------------------------------------------------------
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
metrics_port=$(free_port)
# A mounted config file (no recursors: nothing leaves loopback), the environment
# (CONSUL_HTTP_ADDR) and flags together, as a user would combine them.
cat >"$work/config.yaml" <<EOF
# image-test: mounted over the image's /etc/consul-dns-proxy/config.yaml
listen: ["127.0.0.1:0"]          # replaced by the --listen flags below
recursors: []
consul:
  agents: ["127.0.0.1:8600"]
log:
  level: info
EOF
chmod 644 "$work/config.yaml"
listen_args=(--listen 127.0.0.1:0)
# Port 53 as the image's non-root user: only if nothing on this machine holds it already.
if node -e 'require("dgram").createSocket("udp4").on("error",()=>process.exit(1)).bind(53,"127.53.0.1",function(){this.close()})' 2>/dev/null; then
  listen_args+=(--listen 127.53.0.1:53)
  port53=1
else
  port53=0
fi
pm run -d --name "$ctr" --network host \
  -v "$work/config.yaml:/etc/consul-dns-proxy/config.yaml:ro" \
  -e CONSUL_HTTP_ADDR="127.0.0.1:$sim_http" \
  -e CONSUL_DNS_PROXY_HEALTH_URL="http://127.0.0.1:$metrics_port/health" \
  "$image_tag" "${listen_args[@]}" --agent "127.0.0.1:$sim_dns" \
  --metrics "127.0.0.1:$metrics_port" --log-level info >/dev/null 2>"$work/run.err" ||
  { cat "$work/run.err" >&2; die "podman run failed"; }
proxy_port=
for _ in $(seq 1 150); do
  proxy_port=$(pm logs "$ctr" 2>/dev/null | node -e '
    const lines = require("fs").readFileSync(0, "utf8").split("\n");
    for (const l of lines) { try { const j = JSON.parse(l);
      if (j.msg === "listening") { for (const a of j.udp || []) { const m = /^127\.0\.0\.1:(\d+)$/.exec(a); if (m) { console.log(m[1]); process.exit(0); } } } } catch {} }' || true)
  [[ -n $proxy_port ]] && break
  [[ $(pm inspect --format '{{.State.Running}}' "$ctr" 2>/dev/null) == true ]] ||
    { pm logs "$ctr" >&2 || true; die "the container exited"; }
  sleep 0.2
done
[[ -n $proxy_port ]] || { pm logs "$ctr" >&2 || true; die "no \"listening\" log line from the container"; }
lap start
echo "image-test: proxy in container on udp/tcp 127.0.0.1:$proxy_port, metrics 127.0.0.1:$metrics_port"

ok=1
expect="127.0.0.11 127.0.0.12"   # the two Janus instances of the simulator
check_dig() { # check_dig LABEL SERVER PORT [dig args...]
  local label=$1 server=$2 port=$3; shift 3
  local out
  out=$(dig @"$server" -p "$port" +tries=1 +time=3 "$@" janus.service.consul A 2>&1) || true
  got=$(awk '$1 ~ /^janus\.service\.consul\.$/ && $4 == "A" { print $5 }' <<<"$out" | sort | xargs)
  if grep -q 'status: NOERROR' <<<"$out" && [[ $got == "$expect" ]]; then
    echo "image-test: ok   $label: janus.service.consul -> $got"
  else
    echo "image-test: FAIL $label:"; echo "$out"; ok=0
  fi
}
check_dig "dig udp" 127.0.0.1 "$proxy_port"
check_dig "dig tcp" 127.0.0.1 "$proxy_port" +tcp
if ((port53)); then check_dig "dig udp port 53 (non-root uid)" 127.53.0.1 53; fi
alias_out=$(dig @127.0.0.1 -p "$proxy_port" +tries=1 +time=3 +short janus.service.starlings A 2>&1 | sort | xargs || true)
if [[ $alias_out == "$expect" ]]; then echo "image-test: ok   alias janus.service.starlings -> $alias_out"
else echo "image-test: FAIL alias janus.service.starlings: $alias_out"; ok=0; fi
health=$(node -e 'fetch(process.argv[1]).then(async r=>console.log(r.status, (await r.text()).slice(0,200)),e=>console.log("error",e.message))' "http://127.0.0.1:$metrics_port/health")
if [[ $health == 200* ]]; then echo "image-test: ok   /health: $health"; else echo "image-test: FAIL /health: $health"; ok=0; fi
if pm healthcheck run "$ctr" >"$work/hc.out" 2>&1; then echo "image-test: ok   image HEALTHCHECK"
else echo "image-test: FAIL image HEALTHCHECK: $(grep -v systemd "$work/hc.out" | tail -3)"; ok=0; fi
metrics=$(node -e 'fetch(process.argv[1]).then(async r=>console.log((await r.text()).split("\n").filter(l=>/^[a-z]/.test(l)).length),e=>console.log(0))' "http://127.0.0.1:$metrics_port/metrics")
echo "image-test: info /metrics has $metrics sample lines"
# The image's own config and the CLI's version, run the way a user would.
if out=$(pm run --rm --network host --name "$ctr-cc" "$image_tag" --check-config 2>&1); then
  echo "image-test: ok   --check-config of the image's own config"
else echo "image-test: FAIL --check-config of the image's own config: $out"; ok=0; fi
echo "image-test: info version: $(pm exec "$ctr" node /app/dist/src/cli.js --version 2>&1 | tail -1)"
lap checks

pm stop -t 10 "$ctr" >/dev/null 2>&1
echo "image-test: container stopped with exit code $(pm inspect --format '{{.State.ExitCode}}' "$ctr")"
lap stop

total=$(($(date +%s) - t_start))
echo "image-test: timings: ${timings[*]} total=${total}s"
((ok)) || die "some checks failed"
echo "image-test: PASS"

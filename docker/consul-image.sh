#!/usr/bin/env bash
# docker/consul-image.sh: build a local Consul image for docker/compose.yaml where no registry can
# be pulled from: Debian's `consul` binary (bullseye, 1.8.7, what test/support/install-consul.sh
# installs) on the stand-in Debian base that docker/image-test.sh assembles, with the podman
# settings of docker/podman-env.sh. Prints the image's tag on the last line.
#
# The image behaves like the official hashicorp/consul one for what compose.yaml uses: config in
# /consul/config, data in /consul/data, and `agent ARGS...` runs
# `consul agent -data-dir=/consul/data -config-dir=/consul/config ARGS...`; any other command
# runs `consul COMMAND...`. It runs as root (the official image drops to a consul user; nothing
# here depends on that).
#
# Rebuilt only when the binary or the base image changes (label cdp.consul-key).
# Usage: docker/consul-image.sh        (env: CDP_IMAGE_CACHE as image-test.sh)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=docker/podman-env.sh
source "$repo/docker/podman-env.sh"
die() { echo "consul-image: FAIL: $*" >&2; exit 1; }

if ! pm image exists "$cdp_base_tag"; then
  bash "$repo/docker/image-test.sh" --base-only >&2 || die "could not assemble the base image"
fi
consul_bin=$(bash "$repo/test/support/install-consul.sh" --print) || die "could not install Debian's consul"
version=$("$consul_bin" version | awk 'NR == 1 { sub(/^v/, "", $2); print $2 }')
[[ -n $version ]] || die "$consul_bin version printed nothing"
tag=localhost/cdp-consul:$version
key=$( { sha256sum "$consul_bin" | cut -c1-64; pm image inspect --format '{{.Id}}' "$cdp_base_tag"; } | sha256sum | cut -c1-16)
have=$(pm image inspect --format '{{ index .Labels "cdp.consul-key" }}' "$tag" 2>/dev/null || true)
if [[ $have == "$key" ]]; then
  echo "consul-image: $tag is up to date" >&2
  echo "$tag"
  exit 0
fi

t0=$(date +%s)
ctx=$(mktemp -d "$cdp_cache/consul-ctx.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
cp "$consul_bin" "$ctx/consul"
cat >"$ctx/entrypoint.sh" <<'EOF'
#!/bin/sh
# As the official image's entrypoint: `agent` gets the image's data and config folders.
set -e
if [ "$1" = agent ]; then
  shift
  exec consul agent -data-dir=/consul/data -config-dir=/consul/config "$@"
fi
exec consul "$@"
EOF
cat >"$ctx/Containerfile" <<EOF
FROM $cdp_base_tag
COPY consul /usr/local/bin/consul
COPY entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN chmod 755 /usr/local/bin/consul /usr/local/bin/docker-entrypoint.sh && mkdir -p /consul/data /consul/config && consul version
LABEL cdp.consul-key=$key org.opencontainers.image.title="consul $version (Debian package, local stand-in for hashicorp/consul)"
EXPOSE 8300 8301 8301/udp 8302 8302/udp 8500 8600 8600/udp
VOLUME /consul/data
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["agent", "-dev", "-client", "0.0.0.0"]
EOF
pm build --network none --pull=never --format docker --layers=false -t "$tag" "$ctx" >"$cdp_cache/consul-build.log" 2>&1 ||
  { tail -20 "$cdp_cache/consul-build.log" >&2; die "podman build failed (log: $cdp_cache/consul-build.log)"; }
echo "consul-image: built $tag in $(($(date +%s) - t0))s" >&2
echo "$tag"

# The Alien4Cloud host of docker/compose.yaml: what a client on that host resolves and connects
# with (getent from libc-bin, dig, curl). It owns the host's network namespace, which the host's
# Consul agent and consul-dns-proxy join; its /etc/resolv.conf names the proxy (127.0.0.1).
# BASE_IMAGE: any Debian image (docker/e2e.sh passes its local stand-in where nothing is pulled).
ARG BASE_IMAGE=node:20-bookworm-slim
FROM ${BASE_IMAGE}
RUN set -eu; \
    export DEBIAN_FRONTEND=noninteractive; \
    apt-get update; \
    apt-get install -y --no-install-recommends curl bind9-dnsutils ca-certificates; \
    apt-get clean; rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    command -v getent dig curl
CMD ["sleep", "infinity"]

# docker/podman-env.sh: the podman settings shared by docker/image-test.sh, docker/consul-image.sh
# and docker/e2e.sh. Source it (bash); it defines:
#   cdp_cache       cache folder ($CDP_IMAGE_CACHE, default /var/tmp/consul-dns-proxy-image-test)
#   cdp_base_tag    the stand-in for node:20-bookworm-slim that image-test.sh assembles
#   pm ARGS...      podman with those settings
#   cdp_debian_mirror SUITE   the first deb source of this machine for SUITE (read at run time)
#
# Why these settings: podman runs as root with runc, the vfs storage driver and cgroupfs (what
# works in this sandbox), under a storage root of its own in the cache folder so that nothing
# else's podman state is touched. They are written to config files and exported through
# CONTAINERS_CONF / CONTAINERS_STORAGE_CONF rather than passed as flags, so that every podman
# started on our behalf (podman-compose's included) uses the same storage and network folder.
# Networks are kept in the cache folder too (network_config_dir), away from the machine's own.

cdp_cache=${CDP_IMAGE_CACHE:-/var/tmp/consul-dns-proxy-image-test}
cdp_base_tag=localhost/cdp-base:bookworm-node20

mkdir -p "$cdp_cache/networks"
# --init needs catatonit; Debian installs it in /usr/bin, podman looks in /usr/libexec/podman.
cdp_init_line=
if cdp_init_path=$(command -v catatonit 2>/dev/null); then cdp_init_line="init_path = \"$cdp_init_path\""; fi
cat >"$cdp_cache/containers.conf" <<EOF
[containers]
default_ulimits = []
$cdp_init_line

[network]
network_config_dir = "$cdp_cache/networks"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
EOF
cat >"$cdp_cache/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$cdp_cache/storage"
runroot = "$cdp_cache/run"
EOF
export CONTAINERS_CONF=$cdp_cache/containers.conf
export CONTAINERS_STORAGE_CONF=$cdp_cache/storage.conf

pm() {
  podman --root "$cdp_cache/storage" --runroot "$cdp_cache/run" --storage-driver vfs \
    --runtime runc --cgroup-manager cgroupfs --events-backend file "$@"
}

# The first deb source of this machine whose suite is exactly SUITE (deb822 *.sources first,
# then one-line sources.list), read now, never stored in the repository.
cdp_debian_mirror() {
  local suite=$1 f
  {
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    awk -v suite="$suite" '
      function flush() { if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " suite " ") && uris != "") { split(uris, u, " "); print u[1]; found = 1; exit } types = suites = uris = "" }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]*#/ { next }
      tolower($1) == "types:"  { $1 = ""; types = $0 }
      tolower($1) == "suites:" { $1 = ""; suites = $0 }
      tolower($1) == "uris:"   { $1 = ""; uris = $0 }
      END { if (!found) flush() }' "$f" | sed 's/^ *//' | head -1
  done | head -1
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    # deb [options] URI SUITE COMPONENTS...
    sed -E 's/\[[^]]*\]//' "$f" | awk -v suite="$suite" '$1 == "deb" && $3 == suite { print $2; exit }'
  done | head -1
  } | head -1
}

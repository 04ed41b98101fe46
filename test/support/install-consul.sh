#!/usr/bin/env bash
# Installs the `consul` binary of Debian's bullseye suite (Consul 1.8.7, MPL-2.0) for the tests,
# without touching the system's apt configuration: a private sources list, state and cache
# directory under the cache folder, built from the Debian mirror this machine's apt already uses
# (read at run time, so no host name is written here). `apt-get download`, then `dpkg-deb -x`.
#
#   test/support/install-consul.sh          # installs into $CONSUL_CACHE_DIR (default below)
#   test/support/install-consul.sh --print  # prints the binary's path (installs first if needed)
#
# Idempotent: a binary that is already there and runs is kept (well under a second).
# The tests find the binary through $CONSUL_BIN, then this cache folder, then the PATH.
set -euo pipefail

cache="${CONSUL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/consul-dns-proxy/consul}"
bin="$cache/usr/bin/consul"
print=0
[[ "${1:-}" == "--print" ]] && print=1

say() { ((print)) || echo "install-consul: $*" >&2; }

if [[ -x "$bin" ]] && "$bin" version >/dev/null 2>&1; then
  ((print)) && echo "$bin" || say "already installed: $("$bin" version | head -1) at $bin"
  exit 0
fi

# The mirror: the first http(s) URI of a Debian archive (not debian-security) in the system's
# sources, deb822 (.sources) or one-line (.list) format.
mirror=""
shopt -s nullglob
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
  [[ -r "$f" ]] || continue
  while read -r uri; do
    [[ "$uri" == *debian-security* ]] && continue
    mirror="$uri"
    break
  done < <(grep -hoE '^(URIs:[[:space:]]*|deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)https?://[^[:space:]]+' "$f" \
    | grep -oE 'https?://[^[:space:]]+' || true)
  [[ -n "$mirror" ]] && break
done
if [[ -z "$mirror" ]]; then
  echo "install-consul: no Debian mirror found in /etc/apt/sources.list{,.d}; set CONSUL_BIN to a consul binary" >&2
  exit 1
fi
say "using the Debian mirror configured for apt: $mirror (suite bullseye)"

state="$cache/apt"
mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/etc" "$state/dl"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
signed=""
[[ -r "$keyring" ]] && signed="[signed-by=$keyring] "
echo "deb ${signed}${mirror%/} bullseye main" >"$state/etc/sources.list"

apt_opts=(
  -o "Dir::Etc::sourcelist=$state/etc/sources.list"
  -o "Dir::Etc::sourceparts=/dev/null"
  -o "Dir::State::Lists=$state/lists"
  -o "Dir::Cache=$state/cache"
  -o "Dir::State::status=/dev/null"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=root"
  -o "APT::Get::List-Cleanup=0"
  -qq
)
apt-get "${apt_opts[@]}" update >&2
(cd "$state/dl" && rm -f consul_*.deb && apt-get "${apt_opts[@]}" download consul >&2)
deb=$(ls "$state/dl"/consul_*.deb | head -1)
dpkg-deb -x "$deb" "$cache"
if ! "$bin" version >/dev/null 2>&1; then
  echo "install-consul: $bin does not run" >&2
  exit 1
fi
((print)) && echo "$bin" || say "installed $("$bin" version | head -1) at $bin"

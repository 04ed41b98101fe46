# Consul server settings shared by consul-server-1..3 in docker/compose.yaml (the seed's
# "cluster of Consul servers": 3 for HA). node_name comes from -node on the command line.
# Written for both Consul 1.8.7 (Debian's package, what docker/e2e.sh runs) and current Consul.
datacenter       = "dc1"
server           = true
bootstrap_expect = 3
retry_join       = ["172.28.53.11", "172.28.53.12", "172.28.53.13"]
# The 30s default leaves a restarted agent out of the cluster for that long.
retry_interval   = "1s"
# DNS (8600) and HTTP (8500) on every address, not only loopback: the proxy fails over to the
# servers' DNS when the local agent is down.
client_addr = "0.0.0.0"
# `ui = true`, not current Consul's `ui_config { enabled = true }`: 1.8.7 rejects ui_config
# (it came in 1.9); current Consul still accepts `ui` (deprecated).
ui = true
# Leader election in seconds rather than tens of seconds (1 is also the production advice).
performance {
  raft_multiplier = 1
}
# Nothing here may call out of the topology (Consul's update check contacts HashiCorp).
disable_update_check = true
log_level = "INFO"

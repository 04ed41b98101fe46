# Consul server settings shared by consul-server-1..3 in docker/compose.yaml (the seed's
# "cluster of Consul servers": 3 for HA). node_name comes from -node on the command line.
datacenter       = "dc1"
server           = true
bootstrap_expect = 3
retry_join       = ["172.28.53.11", "172.28.53.12", "172.28.53.13"]
# DNS (8600) and HTTP (8500) on every address, not only loopback: the proxy fails over to the
# servers' DNS when the local agent is down.
client_addr = "0.0.0.0"
ui_config {
  enabled = true
}
log_level = "INFO"

# Consul client agent settings shared by the Janus hosts and the Alien4Cloud host in
# docker/compose.yaml: the seed's `consul agent -config-dir ./consul-conf -retry-join <srv>...`.
# The same keys work with Consul 1.8.7 and current Consul.
datacenter     = "dc1"
server         = false
retry_join     = ["172.28.53.11", "172.28.53.12", "172.28.53.13"]
# The 30s default leaves a restarted agent out of the cluster for that long.
retry_interval = "1s"
client_addr    = "0.0.0.0"
# Nothing here may call out of the topology (Consul's update check contacts HashiCorp).
disable_update_check = true
log_level      = "INFO"

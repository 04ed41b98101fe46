# Consul client agent settings shared by the Janus hosts and the Alien4Cloud host in
# docker/compose.yaml: the seed's `consul agent -config-dir ./consul-conf -retry-join <srv>...`.
datacenter  = "dc1"
server      = false
retry_join  = ["172.28.53.11", "172.28.53.12", "172.28.53.13"]
client_addr = "0.0.0.0"
log_level   = "INFO"

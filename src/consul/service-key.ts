/**
 * The one key of a Consul service in this program: the name, or `service@dc` for an explicit
 * datacenter. Health watches, the cache's per-service index and the wiring between them use it.
 */
export function serviceKey(service: string, dc?: string): string {
  return dc ? `${service}@${dc}` : service;
}

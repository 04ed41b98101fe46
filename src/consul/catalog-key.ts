/**
 * The watch key of the one catalog watch (a blocking query on /v1/catalog/services): ensure(),
 * touch() and the live state take it like a service name. A service name is one DNS label, so a
 * name starting with a dot never collides with one.
 */
export const CATALOG = '.catalog';

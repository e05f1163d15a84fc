import { z } from 'zod';
import { isIpAddress } from '../rules/cidr.js';
import { defineIdentitySource } from './source.js';

const MAPPED_PREFIX = '::ffff:';

/**
 * The caller's IP address as its id (as graygate trusts it: the peer, or X-Forwarded-For via
 * configured trusted proxies). For machine clients without accounts; callers behind one NAT
 * share an id, so they share a version.
 */
const ClientIpIdentityConfig = z.strictObject({}).meta({ description: "The caller's IP address as its id (IPv4 dotted, IPv6 as the peer reports it)." });

export const clientIpIdentity = defineIdentitySource({
  kind: 'clientIp',
  schema: ClientIpIdentityConfig,
  inputs: () => [{ kind: 'clientIp' }],
  create() {
    return (facts) => {
      const ip = facts.clientIp;
      // A data plane without an address (a test, a Unix socket) gives '' or garbage: no identity.
      if (!isIpAddress(ip)) return undefined;
      // A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; one caller, one id: a.b.c.d.
      return ip.length > 7 && ip.startsWith(MAPPED_PREFIX) && ip.includes('.') ? ip.slice(MAPPED_PREFIX.length) : ip;
    };
  },
});

import { z } from 'zod';
import { Cidr, compileCidrList } from '../cidr.js';
import { defineStrategy } from '../strategy.js';

/** Client IP in one of several CIDR networks (IPv4 and IPv6). */
const CidrConfig = z
  .strictObject({
    cidrs: z
      .array(Cidr)
      .min(1, { message: 'give at least one CIDR' })
      .meta({ description: 'Networks such as 10.0.0.0/8 or 2001:db8::/32, or single addresses. IPv4 networks also match IPv4-mapped IPv6 peers.' }),
  })
  .meta({
    description: "The caller's IP in one of the networks. The IP is the peer's address, or X-Forwarded-For when the peer is a configured trusted proxy.",
  });

export type CidrConfig = z.infer<typeof CidrConfig>;

/** Matches `facts.clientIp` against integer masks prepared at compile. */
export const cidr = defineStrategy({
  kind: 'cidr',
  schema: CidrConfig,
  inputs: () => [{ kind: 'clientIp' }],
  compile(config) {
    const inList = compileCidrList(config.cidrs);
    return (facts) => inList(facts.clientIp);
  },
});

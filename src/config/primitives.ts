import { z } from 'zod';

/**
 * Small schemas shared by the config document, strategies and identity sources. Kept apart
 * from `schema.ts` so that strategy files can import them without an import cycle.
 */

/** A user id bound: an integer within the range JavaScript represents exactly. */
export const UserIdNumber = z
  .number({ error: (issue) => (issue.input === undefined ? 'required' : `expected integer, got ${JSON.stringify(issue.input)}`) })
  .int({ error: (issue) => `expected integer, got ${JSON.stringify(issue.input)}` })
  .min(Number.MIN_SAFE_INTEGER)
  .max(Number.MAX_SAFE_INTEGER);

/** An inclusive range of numeric user ids. */
export const IdRange = z
  .strictObject({
    from: UserIdNumber.meta({ description: 'First user id in the range (inclusive).' }),
    to: UserIdNumber.meta({ description: 'Last user id in the range (inclusive).' }),
  })
  .meta({ description: 'An inclusive range of numeric user ids.' });
export type IdRange = z.infer<typeof IdRange>;

/** An HTTP header name as RFC 9110 allows it; stored lower case. */
export const HeaderName = z
  .string()
  .regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, { message: 'expected an HTTP header name (letters, digits, - and token characters)' })
  .transform((name) => name.toLowerCase());

/** A cookie name as RFC 6265 allows it (an HTTP token); case-sensitive. */
export const CookieName = z
  .string()
  .regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, { message: 'expected a cookie name (letters, digits and token characters)' });

/** A query parameter name, as decoded; case-sensitive. */
export const QueryParamName = z.string().min(1, { message: 'expected a query parameter name' }).max(256);

/** A name for upstreams, services and rules: what operators type in the CLI and see in logs. */
export const Name = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, { message: 'expected a name of letters, digits, ".", "_" or "-" (at most 63, starting with a letter or digit)' });

/** A regular expression given as a string; checked to compile. */
export const RegexSource = z.string().min(1).superRefine((source, ctx) => {
  try {
    new RegExp(source);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: `invalid regular expression: ${(error as Error).message}` });
  }
});

/** A duration in milliseconds. */
export const Milliseconds = z.number().int().min(0).max(24 * 3600 * 1000);

/** `host:port`, `:port` or a bare port for a listener. */
export const ListenAddress = z
  .union([z.number().int().min(0).max(65535), z.string().min(1)])
  .transform((value, ctx) => {
    const text = String(value);
    const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]*)):?(\d{1,5})$/.exec(text.includes(':') ? text : `:${text}`);
    const port = match ? Number(match[3]) : NaN;
    if (!match || !(port >= 0 && port <= 65535)) {
      ctx.addIssue({ code: 'custom', message: `expected host:port or a port, got ${JSON.stringify(value)}` });
      return z.NEVER;
    }
    return { host: match[1] ?? (match[2] || '127.0.0.1'), port };
  });
export type ListenAddress = z.output<typeof ListenAddress>;

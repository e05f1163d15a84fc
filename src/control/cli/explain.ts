import type { Command } from 'commander';
import { AdminCallError, createClient, withClientOptions, type ClientOptions } from './client.js';
import { print, printJson, run, table } from './output.js';

const collect = (value: string, previous: string[] = []) => [...previous, value];

function pairs(values: string[] | undefined, flag: string, separator = '='): Record<string, string> | undefined {
  if (!values?.length) return undefined;
  const out: Record<string, string> = {};
  for (const text of values) {
    const at = text.indexOf(separator);
    if (at <= 0) throw new AdminCallError(undefined, 'usage', `${flag}: expected NAME${separator}VALUE, got ${JSON.stringify(text)}`);
    out[text.slice(0, at).trim()] = text.slice(at + 1).trim();
  }
  return out;
}

interface ExplainOptions extends ClientOptions {
  path: string;
  host?: string;
  method?: string;
  header?: string[];
  cookie?: string[];
  query?: string[];
  clientIp?: string;
}

/** `graygate explain`: where a described request goes and why. */
export function registerExplainCommand(program: Command): void {
  withClientOptions(
    program
      .command('explain')
      .description('Where the gateway would send a request, which rule decided, and the identity it saw.')
      .option('--path <path>', 'request path', '/')
      .option('--host <host>', 'request host')
      .option('--method <method>', 'request method')
      .option('-H, --header <name:value>', 'a request header (repeatable)', collect)
      .option('--cookie <name=value>', 'a cookie (repeatable)', collect)
      .option('--query <name=value>', 'a query parameter (repeatable)', collect)
      .option('--client-ip <ip>', 'the caller\'s address'),
  ).action(async (options: ExplainOptions) =>
    run(options.json, async () => {
      const headers = pairs(options.header, '--header', ':');
      const cookies = pairs(options.cookie, '--cookie');
      const query = pairs(options.query, '--query');
      const body = {
        path: options.path,
        ...(options.host ? { host: options.host } : {}),
        ...(options.method ? { method: options.method } : {}),
        ...(headers ? { headers } : {}),
        ...(cookies ? { cookies } : {}),
        ...(query ? { query } : {}),
        ...(options.clientIp ? { clientIp: options.clientIp } : {}),
      };
      const result = await createClient(options).call('POST', '/v1/explain', body);
      if (options.json) return printJson(result);
      print(`${result.service} → ${result.version} (${result.upstream}) because: ${result.reason} · identity ${result.identity.userId ?? 'unknown'}${result.identity.source ? ` from ${result.identity.source}` : ''} · routing version ${result.routingVersion}`);
      if (result.rules.length) print(table(['RULE', 'TO', 'MATCHED'], (result.rules as { name: string; to: string; matched: boolean }[]).map((r) => [r.name, r.to, r.matched ? 'yes' : 'no'])));
    }),
  );
}

import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import { parse as parseYaml } from 'yaml';

/** Where the admin API is and how to authenticate: flags, then environment, then a small file. */
export interface ClientOptions {
  url?: string;
  token?: string;
  adminConfig?: string;
  json?: boolean;
}

/** Exit codes of the admin commands (also in `graygate <command> --help`). */
export const ExitCode = {
  ok: 0,
  /** The server refused the request as invalid (400), or the operator declined. */
  refused: 1,
  usage: 2,
  /** The server could not be reached, or failed (5xx). */
  unreachable: 3,
  unauthorized: 4,
  /** 409: a stale version, a concurrent writer, or an illegal lifecycle move. */
  conflict: 5,
  notFound: 6,
  /** A wait (e.g. --wait-drained) ran out of time. */
  timeout: 7,
} as const;

export const exitCodesHelp = `
Exit codes: 0 ok · 1 refused (invalid request, or not confirmed) · 2 usage · 3 server unreachable or failing ·
4 unauthorized · 5 conflict (stale version, concurrent write, illegal lifecycle move) · 6 not found · 7 wait timed out.
Server and token: --url/--token, else GRAYGATE_ADMIN_URL/GRAYGATE_ADMIN_TOKEN, else the file named by --admin-config,
GRAYGATE_ADMIN_CONFIG or ~/.config/graygate/admin.yaml ({url: …, token: …}); default url http://127.0.0.1:9901.`;

/** An answer of the admin API that was not 2xx, or no answer at all. */
export class AdminCallError extends Error {
  constructor(
    readonly status: number | undefined,
    readonly code: string,
    message: string,
    readonly issues: readonly string[] = [],
  ) {
    super(message);
  }

  get exitCode(): number {
    if (this.status === undefined || this.status >= 500) return ExitCode.unreachable;
    if (this.status === 401) return ExitCode.unauthorized;
    if (this.status === 409) return ExitCode.conflict;
    if (this.status === 404) return ExitCode.notFound;
    return ExitCode.refused;
  }
}

export interface AdminClient {
  readonly url: string;
  call<T = any>(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<T>; // eslint-disable-line @typescript-eslint/no-explicit-any
}

/** The text on one line: a server's or a library's message may hold line breaks. */
export const oneLine = (text: string) => text.replace(/\s*[\r\n]+\s*/g, ' ').trim();

/** A setting the CLI was given that cannot work: exit 2, naming where it came from. */
const usage = (message: string) => new AdminCallError(undefined, 'usage', message);

function fileSettings(file: string | undefined): { url?: string; token?: string; source?: string } {
  const explicit = file || process.env.GRAYGATE_ADMIN_CONFIG || undefined;
  const flag = file ? '--admin-config' : 'GRAYGATE_ADMIN_CONFIG';
  const candidate = explicit ?? path.join(homedir(), '.config', 'graygate', 'admin.yaml');
  if (!existsSync(candidate)) {
    if (explicit) throw usage(`${flag}: ${candidate} does not exist; give an existing file of {url: …, token: …}, or --url and --token`);
    return {};
  }
  let raw: { url?: unknown; token?: unknown } | null;
  try {
    raw = parseYaml(readFileSync(candidate, 'utf8')) as { url?: unknown; token?: unknown } | null;
  } catch (error) {
    const why = (error as NodeJS.ErrnoException).code === 'EACCES' ? 'permission denied' : (error as NodeJS.ErrnoException).code === 'EISDIR' ? 'is a directory' : oneLine((error as Error).message);
    throw usage(`${explicit ? `${flag}: ` : ''}cannot read ${candidate}: ${why}; it holds YAML {url: …, token: …}`);
  }
  return {
    source: candidate,
    ...(typeof raw?.url === 'string' ? { url: raw.url } : {}),
    ...(typeof raw?.token === 'string' ? { token: raw.token } : {}),
  };
}

/** What to try when the admin API cannot be reached at all. */
const unreachableHint = 'is the gateway running, with admin.listen set? Give its admin address with --url or GRAYGATE_ADMIN_URL';

/** The client for the options given: flags win over the environment, which wins over the file. */
export function createClient(options: ClientOptions): AdminClient {
  const file = fileSettings(options.adminConfig);
  const [given, source] = options.url
    ? [options.url, '--url']
    : process.env.GRAYGATE_ADMIN_URL
      ? [process.env.GRAYGATE_ADMIN_URL, 'GRAYGATE_ADMIN_URL']
      : file.url
        ? [file.url, `url in ${file.source}`]
        : ['http://127.0.0.1:9901', 'the default'];
  let parsedUrl: URL | undefined;
  try {
    parsedUrl = new URL(given);
  } catch {
    parsedUrl = undefined;
  }
  if (parsedUrl === undefined || !['http:', 'https:'].includes(parsedUrl.protocol) || parsedUrl.search || parsedUrl.hash) {
    throw usage(`${source}: expected the admin API's address like http://127.0.0.1:9901, got ${JSON.stringify(given)}`);
  }
  const url = given.replace(/\/+$/, '');
  const token = options.token || process.env.GRAYGATE_ADMIN_TOKEN || file.token;
  return {
    url,
    async call(method, urlPath, body, headers = {}) {
      // Loaded on first use: every graygate command starts faster without it.
      const { request } = await import('undici');
      const payload = body !== undefined ? JSON.stringify(body) : undefined;
      let response;
      try {
        response = await request(`${url}${urlPath}`, {
          method: method as 'GET',
          headers: {
            ...(token ? { authorization: `Bearer ${token}` } : {}),
            ...(payload !== undefined ? { 'content-type': 'application/json' } : {}),
            ...headers,
          },
          ...(payload !== undefined ? { body: payload } : {}),
          headersTimeout: 30_000,
          bodyTimeout: 30_000,
        });
      } catch (error) {
        throw new AdminCallError(undefined, 'unreachable', `cannot reach the admin API at ${url} (${oneLine((error as Error).message) || (error as { code?: string }).code || 'no answer'}); ${unreachableHint}`);
      }
      const text = await response.body.text();
      let parsed: unknown;
      try {
        parsed = text ? JSON.parse(text) : undefined;
      } catch {
        parsed = undefined;
      }
      if (response.statusCode >= 200 && response.statusCode < 300) {
        // A write that stands but is not yet served by every worker of the gateway: say so, whatever the command prints.
        const served = (parsed as { served?: { everywhere?: boolean; message?: string } } | undefined)?.served;
        if (served?.everywhere === false && served.message) process.stderr.write(`graygate: warning: ${served.message}\n`);
        return parsed as never;
      }
      const error = (parsed as { error?: { code?: string; message?: string; issues?: string[] } } | undefined)?.error;
      let message = oneLine(error?.message ?? text.slice(0, 300)) || `HTTP ${response.statusCode} from ${url}`;
      if (response.statusCode === 401) {
        message += token
          ? '; check the token given by --token, GRAYGATE_ADMIN_TOKEN or the admin config file'
          : '; give a token with --token or GRAYGATE_ADMIN_TOKEN';
      } else if (response.statusCode === 413) {
        const limit = /limit (\d+) bytes/.exec(message)?.[1];
        const sent = payload !== undefined ? `: this one is ${Buffer.byteLength(payload)} bytes` : '';
        message = `document too large (limit ${limit !== undefined ? `${limit} bytes, ` : ''}admin.bodyLimitBytes of the gateway)${sent}; send a smaller one, or raise admin.bodyLimitBytes`;
      }
      throw new AdminCallError(response.statusCode, error?.code ?? `HTTP ${response.statusCode}`, message, error?.issues ?? []);
    },
  };
}

/** Adds --url, --token, --admin-config and --json to a command. */
export function withClientOptions(command: Command): Command {
  return command
    .option('--url <url>', 'admin API address (env GRAYGATE_ADMIN_URL; default http://127.0.0.1:9901)')
    .option('--token <token>', 'bearer token (env GRAYGATE_ADMIN_TOKEN)')
    .option('--admin-config <file>', 'file with {url, token} (env GRAYGATE_ADMIN_CONFIG; default ~/.config/graygate/admin.yaml)')
    .option('--json', 'print the API\'s JSON answer instead of a table')
    .addHelpText('after', exitCodesHelp);
}

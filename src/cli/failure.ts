/**
 * How the command line reports a failure: one line a person can act on (what, which setting or
 * flag, what to do), never a stack trace or a library's error dump.
 */

/** The text on one line: line breaks and the blanks around them become one space. */
export function oneLine(text: string): string {
  return text.replace(/\s*[\r\n]+\s*/g, ' ').trim();
}

/** Set GRAYGATE_DEBUG=1 to see the stack of an unexpected error (for a bug report). */
export function debugStack(error: unknown): string {
  const wanted = process.env.GRAYGATE_DEBUG !== undefined && process.env.GRAYGATE_DEBUG !== '' && process.env.GRAYGATE_DEBUG !== '0';
  return wanted && error instanceof Error && error.stack ? `${error.stack}\n` : '';
}

/** A socket that could not be bound: the errno and the address, when the error tells them. */
export interface ListenFailure {
  readonly errno: 'EADDRINUSE' | 'EACCES' | 'EADDRNOTAVAIL';
  readonly host?: string;
  readonly port?: number;
}

const listenErrnos = ['EADDRINUSE', 'EACCES', 'EADDRNOTAVAIL'] as const;

/**
 * The listen failure inside an error: a Node errno error (`listen EADDRINUSE: address already in
 * use 127.0.0.1:8080`, with `code`, `address`, `port`), or a message relayed as text, as a
 * `--workers` worker reports it (`bind EADDRINUSE 127.0.0.1:8080`).
 */
export function listenFailureOf(error: unknown): ListenFailure | undefined {
  const fields = (error ?? {}) as { code?: unknown; address?: unknown; port?: unknown; message?: unknown };
  const message = typeof fields.message === 'string' ? fields.message : String(error);
  const errno = listenErrnos.find((code) => fields.code === code || new RegExp(`\\b${code}\\b`).test(message));
  if (errno === undefined) return undefined;
  if (typeof fields.port === 'number') return { errno, ...(typeof fields.address === 'string' ? { host: fields.address } : {}), port: fields.port };
  const at = /(\[[0-9a-fA-F:.]+\]|[0-9a-fA-F:.]*[0-9a-zA-Z]):(\d{1,5})\s*$/.exec(message);
  return at ? { errno, host: at[1]!.replace(/^\[|\]$/g, ''), port: Number(at[2]) } : { errno };
}

/** `host:port` as written in a URL or a listen setting. */
export function formatAddress(host: string | undefined, port: number | undefined): string {
  const shownHost = host === undefined ? '' : host.includes(':') ? `[${host}]` : host;
  return port === undefined ? shownHost || 'the address' : `${shownHost}:${port}`;
}

/**
 * What to say about a listen failure, given which setting asked for that address and how the
 * operator changes it: `listen 127.0.0.1:8080 is already in use (…); stop that program, or …`.
 */
export function describeListenFailure(failure: ListenFailure, setting: string, change: string): string {
  const where = `${setting} ${formatAddress(failure.host, failure.port)}`;
  switch (failure.errno) {
    case 'EADDRINUSE':
      return `${where} is already in use (another graygate or another program listens there): stop that program, or choose a free address with ${change}`;
    case 'EACCES':
      return `${where}: permission denied (ports below 1024 need privileges): choose a port above 1023 with ${change}`;
    case 'EADDRNOTAVAIL':
      return `${where}: this machine has no such address: use 127.0.0.1, 0.0.0.0 or one of its own addresses with ${change}`;
  }
}

import { AdminCallError, ExitCode, oneLine } from './client.js';

/** A plain text table: columns padded to their widest cell. */
export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((header, i) => Math.max(header.length, ...rows.map((row) => (row[i] ?? '').length)));
  const line = (cells: readonly string[]) => cells.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

export function print(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

export function printJson(value: unknown): void {
  print(JSON.stringify(value, null, 2));
}

/** Runs a command body and turns its outcome into an exit code, reporting API errors on stderr (or as JSON with --json). */
export async function run(json: boolean | undefined, body: () => Promise<number | void>): Promise<void> {
  try {
    process.exitCode = (await body()) ?? ExitCode.ok;
  } catch (error) {
    if (error instanceof AdminCallError) {
      if (json) printJson({ error: { status: error.status ?? null, code: error.code, message: error.message, ...(error.issues.length ? { issues: error.issues } : {}) } });
      else {
        process.stderr.write(`graygate: ${error.code}: ${error.message}\n`);
        for (const issue of error.issues.length > 1 ? error.issues : []) process.stderr.write(`  - ${issue}\n`);
      }
      process.exitCode = error.code === 'usage' ? ExitCode.usage : error.exitCode;
      return;
    }
    // A bug in the command itself: still one line (the stack on request), and exit 1.
    const message = oneLine((error as Error)?.message ?? String(error));
    if (json) printJson({ error: { status: null, code: 'unexpected', message } });
    else process.stderr.write(`graygate: unexpected error: ${message} (GRAYGATE_DEBUG=1 prints its stack for a bug report)\n`);
    if (process.env.GRAYGATE_DEBUG && process.env.GRAYGATE_DEBUG !== '0' && error instanceof Error) process.stderr.write(`${error.stack}\n`);
    process.exitCode = ExitCode.refused;
  }
}

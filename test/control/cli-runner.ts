import { execFile } from 'node:child_process';
import { cliPath } from '../helpers/gateway-process.js';
import { trackProcess } from '../helpers/processes.js';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real CLI (`node dist/cli/main.js …`) with no terminal on stdin; resolves with its exit code and output. */
export function graygate(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [cliPath, ...args],
      { env: { ...process.env, GRAYGATE_ADMIN_URL: '', GRAYGATE_ADMIN_TOKEN: '', GRAYGATE_ADMIN_CONFIG: '', HOME: '/nonexistent', ...env }, timeout: 60_000 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 99) : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) });
      },
    );
    // Killed with the test file or the run should it hang (the timeout covers a live worker only).
    if (child.pid !== undefined) trackProcess(child.pid);
    child.stdin?.end();
  });
}

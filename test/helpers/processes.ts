import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

/**
 * Every process a test starts dies with the test, its file and the run, also when they fail or
 * are interrupted. A test process is started in a process group of its own (`detached`), so the
 * group takes along what it forks itself (a gateway's `--workers`, a shell's children), and is
 * recorded twice:
 *
 * - in this module (one copy per test file: vitest isolates files), killed by the setup file's
 *   `afterAll` once the file's own hooks ran, and on the worker's `exit`;
 * - in the run's pid file (`GG_TEST_RUN_DIR`, made by the global setup), which the vitest main
 *   process reads when a worker fork died (even by SIGKILL, which runs no handler), at the end of
 *   the run, and on its SIGINT/SIGTERM/exit; a run killed outright is swept by the next run.
 *
 * Each record carries the process's start time (from /proc), so a pid the kernel has since given
 * to another process is never signalled.
 */

/** The environment variable naming the run's directory (set by the global setup). */
export const RUN_DIR_ENV = 'GG_TEST_RUN_DIR';
/** Run directories live here, one per vitest run: `<prefix><main pid>`. */
export const RUN_DIR_PREFIX = path.join(tmpdir(), 'graygate-test-run-');

export interface ProcessRecord {
  readonly pid: number;
  /** Start time in clock ticks since boot (/proc/PID/stat field 22): tells a reused pid apart. */
  readonly startTime: string;
  /** True when `pid` leads its own process group: the whole group is killed. */
  readonly group: boolean;
  /** The test worker that started it (and its start time): when it is gone, so is the reason to live. */
  readonly ownerPid: number;
  readonly ownerStartTime: string;
}

/** Start time of `pid` (field 22 of /proc/PID/stat), or undefined when no such process runs (or it is a zombie). */
export function processStartTime(pid: number): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may hold spaces: count fields after its end.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  if (fields[0] === 'Z' || fields[0] === 'X') return undefined;
  return fields[19];
}

/** True while `pid` runs (a zombie counts as gone). */
export function isAlive(pid: number): boolean {
  return processStartTime(pid) !== undefined;
}

/** Pids of every live process in process group `pgid`. */
export function groupMembers(pgid: number): number[] {
  const members: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (fields[0] !== 'Z' && fields[0] !== 'X' && Number(fields[2]) === pgid) members.push(Number(name));
    } catch {
      // exited while we looked
    }
  }
  return members;
}

const ownStartTime = processStartTime(process.pid) ?? '';
const tracked = new Map<number, ProcessRecord>();

function runFile(): string | undefined {
  const dir = process.env[RUN_DIR_ENV];
  return dir ? path.join(dir, 'pids') : undefined;
}

/**
 * Signals the process a record names, and its group, unless that pid now belongs to another
 * process. A group whose leader has exited is still signalled: its pid cannot be reused while
 * the group has members, so whatever answers to it is what the leader left behind.
 */
export function killRecord(record: ProcessRecord, signal: NodeJS.Signals = 'SIGKILL'): void {
  const now = processStartTime(record.pid);
  if (now !== undefined && now !== record.startTime) return;
  try {
    process.kill(record.group ? -record.pid : record.pid, signal);
  } catch {
    // already gone
  }
}

/** Records a process started elsewhere (a library's child) so it dies with the test file and the run. */
export function trackProcess(pid: number, options: { group?: boolean } = {}): void {
  const startTime = processStartTime(pid);
  if (startTime === undefined) return;
  const record: ProcessRecord = { pid, startTime, group: options.group ?? false, ownerPid: process.pid, ownerStartTime: ownStartTime };
  tracked.set(pid, record);
  const file = runFile();
  if (file) {
    try {
      appendFileSync(file, `${JSON.stringify(record)}\n`);
    } catch {
      // the run directory is gone (the run is ending): the in-process record still holds
    }
  }
}

/**
 * `spawn`, in a process group of its own, recorded for the file's and the run's teardown. Use
 * `killProcessGroup` (or `stopProcess`) to end it together with whatever it forked.
 */
export function spawnTracked(command: string, args: readonly string[], options: SpawnOptions = {}): ChildProcess {
  const child = spawn(command, args, { ...options, detached: true });
  if (child.pid !== undefined) trackProcess(child.pid, { group: true });
  return child;
}

/** Sends `signal` to the child's process group (the child and everything it forked); no-op once it is gone. */
export function killProcessGroup(child: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): void {
  if (child.pid === undefined) return;
  const record = tracked.get(child.pid);
  if (record) killRecord(record, signal);
  else if (child.exitCode === null && child.signalCode === null) child.kill(signal);
}

/** Kills every process this test file started that still runs (with their groups). */
export function killAllTracked(signal: NodeJS.Signals = 'SIGKILL'): void {
  for (const record of tracked.values()) killRecord(record, signal);
  tracked.clear();
}

/** Pids this test file started (for tests of this module). */
export function trackedPids(): number[] {
  return [...tracked.keys()];
}

// A worker that exits (normally, on an uncaught error, or by process.exit) takes its processes
// along; a SIGKILLed one cannot, and the main process's watch on the pid file covers it.
process.once('exit', () => killAllTracked());

/** Reads a run's pid file: one JSON record a line (a torn last line is skipped). */
export function readRecords(file: string): ProcessRecord[] {
  if (!existsSync(file)) return [];
  const records: ProcessRecord[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line) continue;
    try {
      records.push(JSON.parse(line) as ProcessRecord);
    } catch {
      // written while we read
    }
  }
  return records;
}

function ownerGone(record: ProcessRecord): boolean {
  return processStartTime(record.ownerPid) !== record.ownerStartTime;
}

/**
 * The vitest main process's side: creates the run directory, kills the processes of workers that
 * died every `everyMs`, and everything on SIGINT/SIGTERM/exit. Returns the teardown (kills
 * everything recorded, removes the directory). Also sweeps runs whose main process is gone.
 */
export function superviseRun(options: { everyMs?: number } = {}): () => void {
  sweepDeadRuns();
  const dir = `${RUN_DIR_PREFIX}${process.pid}`;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'owner'), JSON.stringify({ pid: process.pid, startTime: ownStartTime }));
  writeFileSync(path.join(dir, 'pids'), '');
  process.env[RUN_DIR_ENV] = dir;
  const file = path.join(dir, 'pids');
  const reapOrphans = () => {
    for (const record of readRecords(file)) if (ownerGone(record)) killRecord(record);
  };
  const timer = setInterval(reapOrphans, options.everyMs ?? 1_000);
  timer.unref();
  let done = false;
  const killAll = () => {
    if (done) return;
    done = true;
    clearInterval(timer);
    for (const record of readRecords(file)) killRecord(record);
    rmSync(dir, { recursive: true, force: true });
  };
  // vitest answers SIGINT/SIGTERM with process.exit, so 'exit' alone would do; the signal
  // listeners kill at once, before its shutdown waits on workers (and never replace its exit:
  // vitest's own listener is there too).
  // A signal listener replaces the default exit: where nobody else listens, exit as it would.
  const onSignal = (signal: NodeJS.Signals, othersListen: boolean) => () => {
    killAll();
    if (!othersListen) process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  const onInt = onSignal('SIGINT', process.listenerCount('SIGINT') > 0);
  const onTerm = onSignal('SIGTERM', process.listenerCount('SIGTERM') > 0);
  process.once('exit', killAll);
  process.once('SIGINT', onInt);
  process.once('SIGTERM', onTerm);
  return () => {
    killAll();
    process.off('exit', killAll);
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
  };
}

/** Kills what runs whose vitest main process is gone (killed outright) left behind, and removes their directories. */
export function sweepDeadRuns(): void {
  const parent = path.dirname(RUN_DIR_PREFIX);
  const prefix = path.basename(RUN_DIR_PREFIX);
  for (const name of readdirSync(parent)) {
    if (!name.startsWith(prefix)) continue;
    const dir = path.join(parent, name);
    let owner: { pid: number; startTime: string };
    try {
      owner = JSON.parse(readFileSync(path.join(dir, 'owner'), 'utf8')) as typeof owner;
    } catch {
      continue;
    }
    if (processStartTime(owner.pid) === owner.startTime) continue;
    for (const record of readRecords(path.join(dir, 'pids'))) killRecord(record);
    rmSync(dir, { recursive: true, force: true });
  }
}

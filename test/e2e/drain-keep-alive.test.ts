import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { eventually } from '../helpers/eventually.js';

// Back-to-back keep-alive clients across SIGTERM: a client sends its next request the moment the
// previous response ended, on the same connection, so at any instant most connections either have
// a request in flight or one on the wire. A drain that closes a connection whose last response did
// not say `Connection: close` loses that request (the client sees FIN or RST, never an answer).
// The race is timing-dependent, so each mode runs several times.

const bun = path.join(fileURLToPath(new URL('../..', import.meta.url)), 'node_modules/.bin/bun');
const CLIENTS = 20;
const RUNS = Number(process.env.GG_DRAIN_RUNS ?? 4);

interface ClientResult {
  sent: number;
  answered: number;
  /** Answers that were not 200. */
  failed: number;
  /** The connection ended right after a response that said `Connection: close`. */
  endedByClose: boolean;
  /** Answers without `Connection: close` that arrived after another answer on this connection already said close. */
  afterClose: number;
  connectError?: string;
}

/**
 * One client on one raw keep-alive connection: writes a request, and on each complete response
 * writes the next one at once, until a response says `Connection: close` or the connection ends.
 */
function loopClient(port: number, id: number, result: ClientResult): Promise<ClientResult> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    let buffer = Buffer.alloc(0);
    let closeSaid = false;
    const send = () => {
      result.sent++;
      socket.write(`GET /c${id}/${result.sent} HTTP/1.1\r\nhost: app.test\r\n\r\n`);
    };
    socket.on('connect', send);
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      for (;;) {
        const headEnd = buffer.indexOf('\r\n\r\n');
        if (headEnd < 0) return;
        const head = buffer.subarray(0, headEnd).toString('latin1');
        const length = /\r\ncontent-length:\s*(\d+)/i.exec(head);
        if (!length) throw new Error(`response without content-length:\n${head}`);
        const end = headEnd + 4 + Number(length[1]);
        if (buffer.length < end) return;
        buffer = buffer.subarray(end);
        if (closeSaid) result.afterClose++;
        result.answered++;
        if (!/^HTTP\/1\.1 200 /.test(head)) result.failed++;
        if (/\r\nconnection:\s*close/i.test(head)) closeSaid = true;
        else send();
      }
    });
    socket.on('error', (error: Error & { code?: string }) => {
      if (result.sent <= 1 && result.answered === 0) result.connectError = error.code ?? error.message;
    });
    socket.on('close', () => {
      result.endedByClose = closeSaid;
      resolve(result);
    });
  });
}

interface RunOutcome {
  clients: ClientResult[];
  exitCode: number | string;
  /** From SIGTERM to the process's exit, for the record only. */
  drainMs: number;
}

async function oneRun(start: () => Promise<GatewayProcess>): Promise<RunOutcome> {
  const gateway = await start();
  try {
    const live = Array.from({ length: CLIENTS }, (): ClientResult => ({ sent: 0, answered: 0, failed: 0, endedByClose: false, afterClose: 0 }));
    const clients = live.map((result, i) => loopClient(gateway.port, i, result));
    // Every client mid-loop before the signal: a few answers each.
    await eventually(
      () => {
        if (!live.every((client) => client.answered >= 3)) throw new Error(`clients not all looping yet: ${live.map((c) => c.answered).join(',')}`);
      },
      { withinMs: 30_000 },
    );
    const signalledAt = Date.now();
    const exited = gateway.stop('SIGTERM');
    const results = await Promise.all(clients);
    const exitCode = await exited;
    return { clients: results, exitCode, drainMs: Date.now() - signalledAt };
  } finally {
    if (gateway.child.exitCode === null && gateway.child.signalCode === null) gateway.child.kill('SIGKILL');
  }
}

function lostIn(outcome: RunOutcome): number {
  return outcome.clients.reduce((sum, client) => sum + (client.sent - client.answered), 0);
}

describe('SIGTERM under back-to-back keep-alive clients', () => {
  let backend: Backend;
  beforeAll(async () => {
    // A few milliseconds per answer, so requests are in flight at the signal as well.
    backend = await startBackend('stable', (req, res) => {
      req.resume();
      const body = JSON.stringify({ url: req.url });
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
      }, Math.floor(Math.random() * 4));
      return true;
    });
  });
  afterAll(() => backend?.close());

  const config = () => ({
    upstreams: { v1: { servers: [backend.url] } },
    services: [{ name: 'app', stable: 'v1' }],
    proxy: { shutdownGraceMs: 20_000 },
  });

  const modes: [string, () => Promise<GatewayProcess>][] = [
    ['node, one process', () => startGatewayProcess({ config: config(), readyWithinMs: 30_000 })],
    ['node, --workers 2', () => startGatewayProcess({ config: config(), args: ['--workers', '2'], readyWithinMs: 30_000 })],
    ['bun, one process', () => startGatewayProcess({ config: config(), args: ['--workers', '1'], runtime: bun, readyWithinMs: 30_000 })],
  ];

  it.each(modes)(
    '%s: loses no request, answers every one in flight, and says Connection: close before closing',
    async (mode, start) => {
      if (mode.startsWith('bun')) expect(existsSync(bun), `${bun} (npm install installs bun as an optional dependency)`).toBe(true);
      const lostPerRun: number[] = [];
      const outcomes: RunOutcome[] = [];
      for (let run = 0; run < RUNS; run++) {
        const outcome = await oneRun(start);
        outcomes.push(outcome);
        lostPerRun.push(lostIn(outcome));
      }
      // One line per mode for the record (requests lost per run).
      console.log(`drain ${mode}: lost per run ${JSON.stringify(lostPerRun)}, drain ms ${JSON.stringify(outcomes.map((o) => o.drainMs))} over ${RUNS} runs of ${CLIENTS} clients`);
      expect(lostPerRun).toEqual(lostPerRun.map(() => 0));
      for (const outcome of outcomes) {
        expect(outcome.exitCode).toBe(0);
        for (const client of outcome.clients) {
          expect(client.connectError).toBeUndefined();
          expect(client.failed).toBe(0);
          expect(client.afterClose).toBe(0);
          // The gateway ended every connection by saying so in a response, never under a request.
          expect(client.endedByClose).toBe(true);
          expect(client.answered).toBeGreaterThan(0);
        }
      }
    },
    300_000,
  );
});

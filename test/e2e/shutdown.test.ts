import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { startGatewayProcess } from '../helpers/gateway-process.js';
import { eventually } from '../helpers/eventually.js';
import { get } from '../helpers/load.js';

/** Requests a probe got answered on a connection opened after the drain began. */
const acceptedDuringDrain: { status: number; connection: string | undefined }[] = [];

/** One request on a new connection (no pooling): refused, or its status and `Connection` header. */
function probeNewConnection(url: string): Promise<'refused' | { status: number; connection: string | undefined }> {
  return new Promise((resolve, reject) => {
    const request = http.get(url, { agent: false }, (response) => {
      response.resume();
      response.on('end', () => {
        const answered = { status: response.statusCode ?? 0, connection: response.headers.connection };
        acceptedDuringDrain.push(answered);
        resolve(answered);
      });
    });
    request.on('error', (error: Error & { code?: string }) => (error.code === 'ECONNREFUSED' ? resolve('refused') : reject(error)));
  });
}

describe('graceful shutdown of the gateway process', () => {
  let slow: Backend;
  const releases: (() => void)[] = [];

  beforeAll(async () => {
    // Answers only when the test lets it, so requests are provably in flight at SIGTERM.
    slow = await startBackend('stable', (req, res) => {
      req.resume();
      // Only /slow/ and /stuck are held; a probe of a new connection is answered at once.
      if (req.url === '/fast') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ version: 'stable', url: req.url }));
        return true;
      }
      releases.push(() => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ version: 'stable', url: req.url }));
      });
      return true;
    });
  });
  afterAll(() => slow?.close());

  it('lets requests in flight at SIGTERM complete, stops accepting new connections, and exits 0', async () => {
    const gateway = await startGatewayProcess({
      config: {
        upstreams: { v1: { servers: [slow.url] } },
        services: [{ name: 'app', stable: 'v1' }],
        proxy: { shutdownGraceMs: 10_000 },
      },
    });
    const inFlight = Array.from({ length: 5 }, (_, i) => get(`${gateway.url}/slow/${i}`));
    while (releases.length < 5) await new Promise((resolve) => setTimeout(resolve, 10));

    const exited = gateway.stop('SIGTERM');
    while (!/"event":"draining"/.test(gateway.output())) await new Promise((resolve) => setTimeout(resolve, 10));
    // Under --workers the primary logs the drain before each worker has heard of it, so a
    // connection opened in that moment may still be accepted: it must then be answered in full
    // (the probe asks for `Connection: close` itself). Once every worker has stopped accepting, new connections are refused.
    const probes = await eventually(async () => {
      const probe = await probeNewConnection(`${gateway.url}/fast`);
      if (probe !== 'refused') throw new Error(`a new connection was still accepted (${JSON.stringify(probe)})`);
      return probe;
    });
    expect(probes).toBe('refused');
    for (const answered of acceptedDuringDrain) expect(answered.status).toBe(200);

    for (const release of releases) release();
    const responses = await Promise.all(inFlight);
    expect(responses.map((response) => response.status)).toEqual([200, 200, 200, 200, 200]);
    expect(responses.map((response) => response.json?.url)).toEqual(['/slow/0', '/slow/1', '/slow/2', '/slow/3', '/slow/4']);
    expect(await exited).toBe(0);
  });

  it('stops waiting at the grace cap when a request never finishes, and still exits', async () => {
    releases.length = 0;
    const gateway = await startGatewayProcess({
      config: {
        upstreams: { v1: { servers: [slow.url] } },
        services: [{ name: 'app', stable: 'v1' }],
        proxy: { shutdownGraceMs: 500 },
      },
    });
    const stuck = get(`${gateway.url}/stuck`).catch((error: Error) => error);
    while (releases.length < 1) await new Promise((resolve) => setTimeout(resolve, 10));
    // The request is never released: exiting at all means the grace cap ended the wait.
    expect(await gateway.stop('SIGTERM')).toBe(0);
    expect(await stuck).toBeInstanceOf(Error);
  });
});

import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { canaryDocument, startPlane, type PlaneUnderTest } from './harness.js';

const MB = 1024 * 1024;
const TOTAL = 100 * MB;
const CHUNK = 64 * 1024;
const seed = randomBytes(CHUNK);

/** Chunk `i` of a deterministic stream: the seed with the chunk number stamped in front. */
function chunkAt(i: number, size: number): Buffer {
  const chunk = Buffer.from(seed.subarray(0, size));
  chunk.writeUInt32BE(i >>> 0, 0);
  return chunk;
}

/** Writes `total` bytes of the stream to `out`, honouring backpressure; resolves with their sha256. */
function writeStream(out: NodeJS.WritableStream & { destroyed?: boolean }, total: number): Promise<string> {
  const hash = createHash('sha256');
  let sent = 0;
  let i = 0;
  return new Promise((resolve, reject) => {
    const pump = (): void => {
      while (sent < total) {
        if (out.destroyed) return reject(new Error('destination closed'));
        const chunk = chunkAt(i++, Math.min(CHUNK, total - sent));
        sent += chunk.length;
        hash.update(chunk);
        if (!out.write(chunk)) {
          out.once('drain', pump);
          return;
        }
      }
      out.end();
      resolve(hash.digest('hex'));
    };
    pump();
  });
}

let backend: Backend;
let gateway: PlaneUnderTest;
const endlessClosed: number[] = [];
/** Bytes the backend has handed to its response on /endless, summed over requests. */
let endlessWritten = 0;

beforeAll(async () => {
  backend = await startBackend('stream', (req, res) => {
    if (req.url === '/upload') {
      const hash = createHash('sha256');
      let length = 0;
      req.on('data', (chunk: Buffer) => {
        length += chunk.length;
        hash.update(chunk);
      });
      req.on('end', () => res.end(JSON.stringify({ length, sha256: hash.digest('hex'), te: req.headers['transfer-encoding'] ?? null })));
      return true;
    }
    if (req.url === '/download' || req.url === '/download-chunked') {
      req.resume();
      const headers: http.OutgoingHttpHeaders = { 'content-type': 'application/octet-stream' };
      if (req.url === '/download') headers['content-length'] = TOTAL;
      res.writeHead(200, headers);
      // The expected hash is recomputed by the client from the same deterministic stream.
      writeStream(res, TOTAL).catch(() => undefined);
      return true;
    }
    if (req.url === '/endless') {
      req.resume();
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      let i = 0;
      const pump = (): void => {
        while (!res.destroyed) {
          endlessWritten += CHUNK;
          if (!res.write(chunkAt(i++, CHUNK))) break;
        }
        if (!res.destroyed) res.once('drain', pump);
      };
      res.on('close', () => endlessClosed.push(Date.now()));
      pump();
      return true;
    }
    return false;
  });
  gateway = await startPlane(canaryDocument([backend.url], [backend.url]));
});

afterAll(async () => {
  await gateway?.close();
  await backend?.close();
});

function expectedDigest(total: number): string {
  const hash = createHash('sha256');
  let sent = 0;
  for (let i = 0; sent < total; i++) {
    const chunk = chunkAt(i, Math.min(CHUNK, total - sent));
    sent += chunk.length;
    hash.update(chunk);
  }
  return hash.digest('hex');
}

describe('streaming', () => {
  it.each([
    ['with Content-Length', true],
    ['chunked', false],
  ])('passes a 100 MB upload %s intact', async (_name, sized) => {
    const result = await new Promise<{ status: number; body: { length: number; sha256: string; te: string | null }; sent: string }>((resolve, reject) => {
      const headers: http.OutgoingHttpHeaders = sized ? { 'content-length': TOTAL } : { 'transfer-encoding': 'chunked' };
      const req = http.request(`${gateway.url}/upload`, { method: 'POST', headers, agent: false }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => void sent.then((digest) => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text), sent: digest })));
      });
      req.on('error', reject);
      const sent = writeStream(req, TOTAL);
    });
    expect(result.status).toBe(200);
    expect(result.body.length).toBe(TOTAL);
    expect(result.body.sha256).toBe(result.sent);
    if (!sized) expect(result.body.te).toBe('chunked');
  });

  it.each([
    ['with Content-Length', '/download'],
    ['chunked', '/download-chunked'],
  ])('passes a 100 MB download %s intact', async (_name, path) => {
    const expected = expectedDigest(TOTAL);
    const result = await new Promise<{ status: number; length: number; sha256: string; te: string | undefined }>((resolve, reject) => {
      http
        .get(`${gateway.url}${path}`, { agent: false }, (res) => {
          const hash = createHash('sha256');
          let length = 0;
          res.on('data', (chunk: Buffer) => {
            length += chunk.length;
            hash.update(chunk);
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, length, sha256: hash.digest('hex'), te: res.headers['transfer-encoding'] }));
          res.on('error', reject);
        })
        .on('error', reject);
    });
    expect(result.status).toBe(200);
    expect(result.length).toBe(TOTAL);
    expect(result.sha256).toBe(expected);
    if (path === '/download') expect(result.te).toBeUndefined();
  });
});

describe('slow clients', () => {
  it('pause the upstream: what reaches the gateway stops growing until the client reads again', async () => {
    const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
    let seen = 0;
    const req = http.get(`${gateway.url}/endless`, { agent: false });
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      req.on('response', resolve);
      req.on('error', reject);
    });
    res.on('data', (chunk: Buffer) => (seen += chunk.length));
    await eventually(() => expect(seen).toBeGreaterThan(1 * MB));
    // The client stops reading; kernel buffers and the gateway's queue fill, then the upstream
    // must be paused instead of streaming on into the gateway's memory.
    res.pause();
    await sleep(500);
    const stalledAt = endlessWritten;
    await sleep(500);
    expect(endlessWritten - stalledAt).toBeLessThan(1 * MB);
    // Reading again resumes the stream end to end.
    const before = seen;
    res.resume();
    await eventually(() => expect(seen - before).toBeGreaterThan(16 * MB), { withinMs: 5_000 });
    req.destroy();
  });
});

describe('client aborts', () => {
  it('abort the upstream request and return sockets to baseline, without crashing', async () => {
    const connections = () => new Promise<number>((resolve, reject) => backend.server.getConnections((error, count) => (error ? reject(error) : resolve(count))));
    await eventually(async () => expect(gateway.plane.stats()).toMatchObject({ openConnections: 0, inFlightRequests: 0 }));
    // Nothing is left counted in flight to any upstream either.
    expect(Object.values(gateway.plane.stats().upstreams).map((load) => load.inFlightRequests)).toEqual(Object.values(gateway.plane.stats().upstreams).map(() => 0));
    const closedBefore = endlessClosed.length;
    const rounds = 20;
    for (let round = 0; round < rounds; round++) {
      await new Promise<void>((resolve, reject) => {
        const req = http.get(`${gateway.url}/endless`, { agent: false }, (res) => {
          let seen = 0;
          res.on('data', (chunk: Buffer) => {
            seen += chunk.length;
            // Leave mid-stream, after the proxy is surely streaming.
            if (seen >= 256 * 1024) {
              req.destroy();
              resolve();
            }
          });
        });
        req.on('error', () => resolve());
        req.on('timeout', () => reject(new Error('no data')));
      });
    }
    // Every upstream response was aborted, not left streaming into a dead client.
    await eventually(() => expect(endlessClosed.length - closedBefore).toBe(rounds), { withinMs: 5_000 });
    await eventually(async () => {
      expect(gateway.plane.stats()).toMatchObject({ openConnections: 0, inFlightRequests: 0 });
      // Aborted upstream sockets are destroyed, not returned to the pool half-read.
      expect(await connections()).toBe(0);
    }, { withinMs: 5_000 });
    // The gateway still serves.
    const ok = await new Promise<number>((resolve, reject) =>
      http.get(`${gateway.url}/plain`, { agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      }).on('error', reject),
    );
    expect(ok).toBe(200);
  });
});

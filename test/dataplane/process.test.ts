import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startBackend, type Backend } from '../helpers/backend.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';

// The memory bound is a property of the real process: the gateway runs as `graygate start`
// and its peak RSS (VmHWM) is read from /proc while 100 MB flow each way.

const MB = 1024 * 1024;
const TOTAL = 100 * MB;
const CHUNK = 64 * 1024;
const block = randomBytes(CHUNK);

function pump(out: NodeJS.WritableStream, total: number, hash?: ReturnType<typeof createHash>): void {
  let sent = 0;
  const next = (): void => {
    while (sent < total) {
      const size = Math.min(CHUNK, total - sent);
      const chunk = size === CHUNK ? block : block.subarray(0, size);
      sent += size;
      hash?.update(chunk);
      if (!out.write(chunk)) {
        out.once('drain', next);
        return;
      }
    }
    out.end();
  };
  next();
}

let backend: Backend;
let gateway: GatewayProcess;

beforeAll(async () => {
  backend = await startBackend('stable', (req, res) => {
    if (req.url === '/upload') {
      const hash = createHash('sha256');
      let length = 0;
      req.on('data', (chunk: Buffer) => {
        length += chunk.length;
        hash.update(chunk);
      });
      req.on('end', () => res.end(JSON.stringify({ length, sha256: hash.digest('hex') })));
      return true;
    }
    if (req.url === '/download') {
      req.resume();
      res.writeHead(200, { 'content-length': TOTAL });
      pump(res, TOTAL);
      return true;
    }
    return false;
  });
  gateway = await startGatewayProcess({
    config: {
      upstreams: { stable: { servers: [backend.url] } },
      services: [{ name: 'web', stable: 'stable' }],
    },
    // One process: the memory bound is about the process that streams the bytes, and the RSS
    // read is the started process's; under workers that is the primary, which never sees them.
    workers: 1,
  });
});

afterAll(async () => {
  await gateway?.stop('SIGTERM');
  await backend?.close();
});

describe('gateway process memory', () => {
  it('streams a 100 MB upload and a 100 MB download, its peak RSS growing by less than one body', async () => {
    // The bound is on growth over the process's own peak before the transfer: a gateway that
    // buffered a body would grow by at least its 100 MB, while the idle process's size (which
    // changes as features are added) says nothing about streaming.
    const peakBeforeKb = gateway.peakRssKb();
    const sentHash = createHash('sha256');
    const upload = await new Promise<{ length: number; sha256: string }>((resolve, reject) => {
      const req = http.request(`${gateway.url}/upload`, { method: 'POST', headers: { 'content-length': TOTAL }, agent: false }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve(JSON.parse(text)));
      });
      req.on('error', reject);
      pump(req, TOTAL, sentHash);
    });
    expect(upload.length).toBe(TOTAL);
    expect(upload.sha256).toBe(sentHash.digest('hex'));

    const expected = createHash('sha256');
    for (let sent = 0; sent < TOTAL; sent += CHUNK) expected.update(block);
    const download = await new Promise<{ length: number; sha256: string }>((resolve, reject) => {
      http
        .get(`${gateway.url}/download`, { agent: false }, (res) => {
          const hash = createHash('sha256');
          let length = 0;
          res.on('data', (chunk: Buffer) => {
            length += chunk.length;
            hash.update(chunk);
          });
          res.on('end', () => resolve({ length, sha256: hash.digest('hex') }));
          res.on('error', reject);
        })
        .on('error', reject);
    });
    expect(download.length).toBe(TOTAL);
    expect(download.sha256).toBe(expected.digest('hex'));

    const peakKb = gateway.peakRssKb();
    console.log(`gateway peak RSS after 2 x 100 MB: ${(peakKb / 1024).toFixed(1)} MB (before: ${(peakBeforeKb / 1024).toFixed(1)} MB)`);
    expect(peakKb - peakBeforeKb).toBeLessThan(TOTAL / 1024);
  });

  it('drains and exits 0 on SIGTERM', async () => {
    expect(await gateway.stop('SIGTERM')).toBe(0);
  });
});

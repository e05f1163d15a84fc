import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RoutingDocument, Settings } from '../../src/config/schema.js';
import { NodeDataPlane } from '../../src/dataplane/node/server.js';
import { identityCompiler } from '../../src/identity/request-identity.js';
import { silentLogger } from '../../src/observe/log.js';
import { compileRouting } from '../../src/rules/compile.js';
import { startBackend, type Backend } from '../helpers/backend.js';
import { eventually } from '../helpers/eventually.js';
import { FLAG, FRAME, frame, getRequestBlock, padField, rawH2Connect, rstStream } from '../helpers/h2-frames.js';
import { certFactory, h2Connect, h2Request, type CertFactory } from '../helpers/tls.js';

/**
 * The HTTP/2 attacks of recent years, sent as raw frames: each must cost the attacker its
 * connection, in bounded memory, while other clients are served as before.
 */

let factory: CertFactory;
let backend: Backend;
let plane: NodeDataPlane;
let port: number;

beforeAll(async () => {
  factory = certFactory();
  const cert = factory.cert('attacks', { names: ['localhost'] });
  // The upstream answers slowly: a reset stream must not be left running against it.
  backend = await startBackend('slow', (req, res) => {
    req.resume();
    const timer = setTimeout(() => res.end('late'), 200);
    res.on('close', () => clearTimeout(timer));
    return true;
  });
  plane = new NodeDataPlane({
    settings: Settings.parse({ listen: 'off', tls: { listen: '127.0.0.1:0', certificates: [{ cert: cert.cert, key: cert.key }] } }),
    logger: silentLogger(),
  });
  plane.setSnapshot(compileRouting(RoutingDocument.parse({ upstreams: { slow: { servers: [backend.url] } }, services: [{ name: 'slow', stable: 'slow' }] }), 1, { identity: identityCompiler() }));
  port = (await plane.listen()).tls!.port;
});

afterAll(async () => {
  await plane?.drain(1_000);
  await backend?.close();
  factory?.remove();
});

async function stillServes(): Promise<void> {
  const session = await h2Connect(port);
  try {
    const reply = await h2Request(session, { ':path': '/after' });
    expect(reply.status).toBe(200);
    expect(reply.body.toString()).toBe('late');
  } finally {
    session.close();
  }
}

describe('HTTP/2 attacks', () => {
  it('rapid reset (CVE-2023-44487): a client opening and resetting streams in a loop is cut off', async () => {
    const attacker = await rawH2Connect(port);
    const block = getRequestBlock('localhost');
    let streamId = 1;
    // Bounded: a gateway that never cuts the client off fails here, after this many streams.
    const cap = 100_000;
    while (!attacker.isClosed() && streamId < cap * 2) {
      const batch: Buffer[] = [];
      for (let i = 0; i < 100; i++, streamId += 2) batch.push(frame(FRAME.HEADERS, FLAG.END_HEADERS | FLAG.END_STREAM, streamId, block), rstStream(streamId));
      if (!attacker.write(Buffer.concat(batch))) await new Promise((resolve) => attacker.socket.once('drain', resolve).once('close', resolve));
      // Let the gateway's event loop run between batches, as the network would.
      await new Promise((resolve) => setImmediate(resolve));
    }
    await eventually(() => expect(attacker.isClosed()).toBe(true));
    expect(streamId).toBeLessThan(cap * 2);
    // Told why before the close: GOAWAY with ENHANCE_YOUR_CALM.
    expect(attacker.goawayCode()).toBe(0xb);
    // Cut off long before the cap: after about twice the stream limit (256) of abandoned streams,
    // plus what was already on the wire.
    expect((streamId - 1) / 2).toBeLessThan(20_000);
    // Nothing is left in flight for the reset streams, and others are served.
    await eventually(() => expect(plane.stats().inFlightRequests).toBe(0));
    await stillServes();
  });

  it('CONTINUATION flood: a header block that never ends closes the connection in bounded memory', async () => {
    const attacker = await rawH2Connect(port);
    // HEADERS without END_HEADERS, then CONTINUATION frames, none ending the block.
    attacker.write(frame(FRAME.HEADERS, 0, 1, getRequestBlock('localhost')));
    const filler = Buffer.concat(Array.from({ length: 100 }, () => padField('v'.repeat(100))));
    let sent = 0;
    // Bounded: 64 MiB of continuation is far beyond any header limit.
    const cap = 64 * 1024 * 1024;
    while (!attacker.isClosed() && sent < cap) {
      const chunk = frame(FRAME.CONTINUATION, 0, 1, filler);
      sent += chunk.length;
      if (!attacker.write(chunk)) await new Promise((resolve) => attacker.socket.once('drain', resolve).once('close', resolve));
      await new Promise((resolve) => setImmediate(resolve));
    }
    await eventually(() => expect(attacker.isClosed()).toBe(true));
    // The server can only have buffered what it read before it closed: far below the cap.
    expect(sent).toBeLessThan(cap);
    await eventually(() => expect(plane.stats().inFlightRequests).toBe(0));
    await stillServes();
  });
});

import http from 'node:http';
import net from 'node:net';
import { RoutingDocument, Settings } from '../../src/config/schema.js';
import { createNodeDataPlane } from '../../src/dataplane/node/index.js';
import type { DataPlane } from '../../src/dataplane/runtime.js';
import { silentLogger } from '../../src/observe/log.js';
import { identityCompiler } from '../../src/identity/request-identity.js';
import { compileRouting, type CompileOptions } from '../../src/rules/compile.js';

/** A real node data plane on an ephemeral loopback port, routing `document` (compiled for real). */
export interface PlaneUnderTest {
  readonly plane: DataPlane;
  readonly url: string;
  readonly port: number;
  /** Compiles and installs another routing document (version increments). */
  setDocument(document: unknown): void;
  close(): Promise<void>;
}

export async function startPlane(document: unknown, settings: Record<string, unknown> = {}, compileOptions: CompileOptions = {}): Promise<PlaneUnderTest> {
  const plane = createNodeDataPlane({
    settings: Settings.parse({ listen: '127.0.0.1:0', ...settings }),
    logger: silentLogger(),
  });
  let version = 1;
  plane.setSnapshot(compileRouting(RoutingDocument.parse(document), version, { identity: identityCompiler(), ...compileOptions }));
  const { port } = await plane.listen();
  return {
    plane,
    port,
    url: `http://127.0.0.1:${port}`,
    setDocument(next) {
      plane.setSnapshot(compileRouting(RoutingDocument.parse(next), ++version, { identity: identityCompiler(), ...compileOptions }));
    },
    close: () => plane.drain(1_000),
  };
}

/** A document with a `stable` and a `candidate` upstream; header `x-canary: 1` picks the candidate. */
export function canaryDocument(stable: string[], candidate: string[], upstreamExtra: Record<string, unknown> = {}) {
  return {
    upstreams: {
      stable: { servers: stable, ...upstreamExtra },
      candidate: { servers: candidate, ...upstreamExtra },
    },
    services: [
      {
        name: 'web',
        stable: 'stable',
        release: { candidate: 'candidate', rules: [{ header: { name: 'x-canary', equals: '1' } }] },
      },
    ],
  };
}

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
  trailers: NodeJS.Dict<string>;
  body: Buffer;
  json<T = Record<string, unknown>>(): T;
}

/** One request over a fresh connection (no agent), body buffered: for small test bodies only. */
export function send(
  url: string,
  options: { method?: string; path?: string; headers?: http.OutgoingHttpHeaders | string[]; body?: string | Buffer } = {},
): Promise<Reply> {
  const target = new URL(options.path ?? '/', url);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: target.hostname, port: target.port, path: target.pathname + target.search, method: options.method ?? 'GET', headers: options.headers as http.OutgoingHttpHeaders, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('error', reject);
        res.on('end', () => {
          const body = Buffer.concat(chunks);
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            rawHeaders: res.rawHeaders,
            trailers: res.trailers,
            body,
            json: <T>() => JSON.parse(body.toString()) as T,
          });
        });
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

/**
 * Writes raw bytes on a fresh TCP connection and resolves with everything the server sent until
 * it closed the connection or `withinMs` passed (then the socket is destroyed).
 */
export function rawExchange(port: number, bytes: string | Buffer, withinMs = 3_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    // Timed from the connection, not the call: the bytes are queued until it is up, and on a busy
    // box a short window could close it before they were ever sent.
    let timer: ReturnType<typeof setTimeout> | undefined;
    socket.once('connect', () => (timer = setTimeout(() => socket.destroy(), withinMs)));
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('latin1'));
    });
    socket.write(bytes);
  });
}

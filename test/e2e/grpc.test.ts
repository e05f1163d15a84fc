import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import http2 from 'node:http2';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deadPort } from '../helpers/backend.js';
import { startGatewayProcess, type GatewayProcess } from '../helpers/gateway-process.js';
import { makeTestPki, type TestPki } from '../helpers/upstream-certs.js';

/**
 * gRPC end to end: a real grpc-js client calls through the real gateway process (its TLS
 * listener, HTTP/2 by ALPN) to real grpc-js servers: stable over h2c, candidate over h2 with TLS
 * verified against a private CA. A header rule on the `x-user-id` metadata picks the candidate.
 */

const protoPath = fileURLToPath(new URL('../fixtures/grpc/echo.proto', import.meta.url));
const definition = protoLoader.loadSync(protoPath, { keepCase: true, defaults: true });
// grpc-js builds the service constructors at run time from the .proto file.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const proto = grpc.loadPackageDefinition(definition) as any;

interface Msg {
  text: string;
  version: string;
  count: number;
}

interface GrpcBackend {
  readonly port: number;
  /** Unary calls the server saw cancelled by the caller (the gateway, at a deadline). */
  cancelled: number;
  close(): void;
}

/** A grpc-js server for the Echo (and Fallback) service, answering with its `name` as version. */
async function startGrpcBackend(name: string, credentials: grpc.ServerCredentials): Promise<GrpcBackend> {
  const server = new grpc.Server();
  const backend = { port: 0, cancelled: 0, close: () => server.forceShutdown() };
  const unary = (call: grpc.ServerUnaryCall<Msg, Msg>, callback: grpc.sendUnaryData<Msg>) => {
    const text = call.request.text;
    if (text === 'fail') {
      callback({ code: grpc.status.INVALID_ARGUMENT, details: `refused by ${name}: fail is not accepted` });
      return;
    }
    if (text === 'hang') {
      // Never answers: the call ends when the caller cancels it.
      call.on('cancelled', () => backend.cancelled++);
      return;
    }
    const user = call.metadata.get('x-user-id')[0];
    callback(null, { text: `${text}${user === undefined ? '' : ` for ${String(user)}`}`, version: name, count: 1 });
  };
  server.addService(proto.graygate.test.Echo.service, {
    Unary: unary,
    ServerStream: (call: grpc.ServerWritableStream<Msg, Msg>) => {
      for (let i = 0; i < call.request.count; i++) call.write({ text: `${call.request.text}-${i}`, version: name, count: i });
      call.end();
    },
    ClientStream: (call: grpc.ServerReadableStream<Msg, Msg>, callback: grpc.sendUnaryData<Msg>) => {
      const texts: string[] = [];
      call.on('data', (message: Msg) => texts.push(message.text));
      call.on('end', () => callback(null, { text: texts.join(','), version: name, count: texts.length }));
    },
    Bidi: (call: grpc.ServerDuplexStream<Msg, Msg>) => {
      call.on('data', (message: Msg) => call.write({ text: `echo ${message.text}`, version: name, count: message.count }));
      call.on('end', () => call.end());
    },
  });
  server.addService(proto.graygate.test.Fallback.service, { Unary: unary });
  backend.port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', credentials, (error, port) => (error ? reject(error) : resolve(port))),
  );
  return backend;
}

function unary(client: grpc.Client, text: string, metadata = new grpc.Metadata(), method = 'Unary'): Promise<Msg> {
  return new Promise((resolve, reject) => {
    (client as unknown as Record<string, (...args: unknown[]) => void>)[method]!.call(client, { text }, metadata, (error: grpc.ServiceError | null, reply: Msg) =>
      error ? reject(error) : resolve(reply),
    );
  });
}

let pki: TestPki;
let stable: GrpcBackend;
let candidate: GrpcBackend;
let gateway: GatewayProcess;
let tlsPort: number;
/** The Echo client's methods as grpc-js generates them from the .proto file. */
interface EchoClient extends grpc.Client {
  Unary(request: Partial<Msg>, metadata: grpc.Metadata, options: grpc.CallOptions, callback: (error: grpc.ServiceError | null, reply: Msg) => void): void;
  ServerStream(request: Partial<Msg>, metadata: grpc.Metadata): grpc.ClientReadableStream<Msg>;
  ClientStream(metadata: grpc.Metadata, callback: (error: grpc.ServiceError | null, reply: Msg) => void): grpc.ClientWritableStream<Partial<Msg>>;
  Bidi(metadata: grpc.Metadata): grpc.ClientDuplexStream<Partial<Msg>, Msg>;
}

let echo: EchoClient;
let fallback: grpc.Client;
let down: grpc.Client;

beforeAll(async () => {
  pki = makeTestPki();
  stable = await startGrpcBackend('stable', grpc.ServerCredentials.createInsecure());
  candidate = await startGrpcBackend('candidate', grpc.ServerCredentials.createSsl(null, [{ cert_chain: Buffer.from(pki.server.certPem), private_key: Buffer.from(pki.server.keyPem) }], false));
  const dead = await deadPort();
  gateway = await startGatewayProcess({
    config: {
      tls: { listen: '127.0.0.1:0', certificates: [{ cert: pki.server.cert, key: pki.server.key }] },
      upstreams: {
        stable: { servers: [`http://127.0.0.1:${stable.port}`], protocol: 'h2c', timeouts: { responseHeadersMs: 5_000 } },
        candidate: { servers: [`https://127.0.0.1:${candidate.port}`], protocol: 'h2', tls: { ca: pki.ca.cert } },
        dead: { servers: [`http://127.0.0.1:${dead}`], protocol: 'h2c' },
      },
      services: [
        { name: 'echo', match: { pathPrefix: '/graygate.test.Echo/' }, stable: 'stable', release: { candidate: 'candidate', rules: [{ header: { name: 'x-user-id', equals: '42' } }] } },
        { name: 'fallback', match: { pathPrefix: '/graygate.test.Fallback/' }, stable: 'stable', release: { candidate: 'dead', rules: [{ header: { name: 'x-user-id', equals: '42' } }] } },
        { name: 'down', match: { pathPrefix: '/graygate.test.Down/' }, stable: 'dead' },
      ],
    },
  });
  const listening = gateway.logs().find((line) => line.event === 'listening') as { tls?: { port: number } } | undefined;
  tlsPort = listening!.tls!.port;
  const credentials = grpc.credentials.createSsl(Buffer.from(pki.ca.certPem));
  // The gateway's certificate names localhost and 127.0.0.1; the name is checked against it.
  const options = { 'grpc.ssl_target_name_override': 'localhost' };
  echo = new proto.graygate.test.Echo(`127.0.0.1:${tlsPort}`, credentials, options);
  fallback = new proto.graygate.test.Fallback(`127.0.0.1:${tlsPort}`, credentials, options);
  down = new proto.graygate.test.Down(`127.0.0.1:${tlsPort}`, credentials, options);
});

afterAll(async () => {
  for (const client of [echo, fallback, down]) client?.close();
  await gateway?.stop();
  stable?.close();
  candidate?.close();
  pki?.remove();
});

/** `x-user-id` metadata: 42 is the canary user. */
function user(id: string): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set('x-user-id', id);
  return metadata;
}

describe('gRPC through the gateway', () => {
  it('forwards a unary call to stable, and to the candidate when the x-user-id metadata matches the rule', async () => {
    expect(await unary(echo, 'hello', user('7'))).toMatchObject({ text: 'hello for 7', version: 'stable' });
    expect(await unary(echo, 'hello', user('42'))).toMatchObject({ text: 'hello for 42', version: 'candidate' });
    expect(await unary(echo, 'anonymous')).toMatchObject({ version: 'stable' });
  });

  it('streams a server-streaming call to its end with status OK', async () => {
    for (const [id, version] of [['1', 'stable'], ['42', 'candidate']] as const) {
      const call = echo.ServerStream({ text: 'tick', count: 300 }, user(id));
      const received: Msg[] = [];
      call.on('data', (message: Msg) => received.push(message));
      const status = await new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
      expect(status.code).toBe(grpc.status.OK);
      expect(received).toHaveLength(300);
      expect(received.every((message, i) => message.text === `tick-${i}` && message.version === version)).toBe(true);
    }
  });

  it('forwards a client-streaming call and its single answer', async () => {
    const reply = await new Promise<Msg>((resolve, reject) => {
      const call = echo.ClientStream(user('42'), (error, message) => (error ? reject(error) : resolve(message)));
      for (let i = 0; i < 25; i++) call.write({ text: `m${i}` });
      call.end();
    });
    expect(reply).toMatchObject({ version: 'candidate', count: 25, text: Array.from({ length: 25 }, (_, i) => `m${i}`).join(',') });
  });

  it('carries a bidirectional call both ways at once: each answer arrives before the next message is sent', async () => {
    const call = echo.Bidi(user('3'));
    const answers: Msg[] = [];
    const rounds = 10;
    const done = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
    await new Promise<void>((resolve, reject) => {
      call.on('error', reject);
      call.on('data', (message: Msg) => {
        answers.push(message);
        // Ping-pong: the next message goes only once this answer came back through the gateway.
        if (answers.length < rounds) call.write({ text: `p${answers.length}`, count: answers.length });
        else {
          call.end();
          resolve();
        }
      });
      call.write({ text: 'p0', count: 0 });
    });
    expect((await done).code).toBe(grpc.status.OK);
    expect(answers.map((message) => message.text)).toEqual(Array.from({ length: rounds }, (_, i) => `echo p${i}`));
    expect(answers.every((message) => message.version === 'stable')).toBe(true);
  });

  it("passes a backend's error status and message through unchanged", async () => {
    for (const id of ['1', '42']) {
      const error = await unary(echo, 'fail', user(id)).then(
        () => undefined,
        (failure: grpc.ServiceError) => failure,
      );
      expect(error?.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(error?.details).toBe(`refused by ${id === '42' ? 'candidate' : 'stable'}: fail is not accepted`);
    }
  });

  it('answers UNAVAILABLE, as a gRPC status, when no server of the upstream answers', async () => {
    const error = await unary(down, 'anyone').then(
      () => undefined,
      (failure: grpc.ServiceError) => failure,
    );
    expect(error?.code).toBe(grpc.status.UNAVAILABLE);
    expect(error?.details).toMatch(/GG_UPSTREAM_CONNECT/);
    expect(error?.details).toMatch(/upstream "dead"/);
  });

  it('sends a call whose candidate is down to stable', async () => {
    expect(await unary(fallback, 'safe', user('42'))).toMatchObject({ text: 'safe for 42', version: 'stable' });
  });

  it("ends a call at its grpc-timeout with DEADLINE_EXCEEDED (trailers-only) and cancels it upstream", async () => {
    const before = stable.cancelled;
    const answer = await rawCall(tlsPort, pki.ca.certPem, '/graygate.test.Echo/Unary', 'hang', { 'grpc-timeout': '300m' });
    expect(answer.status).toBe(200);
    expect(answer.endStreamWithHeaders).toBe(true);
    expect(answer.headers['content-type']).toBe('application/grpc');
    expect(answer.headers['grpc-status']).toBe(String(grpc.status.DEADLINE_EXCEEDED));
    expect(decodeURIComponent(String(answer.headers['grpc-message']))).toMatch(/deadline \(grpc-timeout\)/);
    await expectEventually(() => stable.cancelled > before);
  });

  it('ends a call at the upstream timeout when it comes before the grpc-timeout (the earlier deadline wins)', async () => {
    // The stable upstream's responseHeadersMs is 5 s; the call allows a minute.
    const answer = await rawCall(tlsPort, pki.ca.certPem, '/graygate.test.Echo/Unary', 'hang', { 'grpc-timeout': '60S' });
    expect(answer.headers['grpc-status']).toBe(String(grpc.status.DEADLINE_EXCEEDED));
    expect(decodeURIComponent(String(answer.headers['grpc-message']))).toMatch(/did not send response headers in time.*GG_UPSTREAM_TIMEOUT/);
  });

  it('a grpc-js deadline still ends the call for the client', async () => {
    const error = await new Promise<grpc.ServiceError | undefined>((resolve) => {
      echo.Unary({ text: 'hang' }, new grpc.Metadata(), { deadline: Date.now() + 300 }, (failure) => resolve(failure ?? undefined));
    });
    expect(error?.code).toBe(grpc.status.DEADLINE_EXCEEDED);
  });
});

async function expectEventually(check: () => boolean): Promise<void> {
  const { eventually } = await import('../helpers/eventually.js');
  await eventually(() => {
    if (!check()) throw new Error('not yet');
  });
}

/** A gRPC message frame: compression flag 0, 4-byte length, then Msg { text } in protobuf. */
function frame(text: string): Buffer {
  const bytes = Buffer.from(text);
  const message = Buffer.concat([Buffer.from([0x0a, bytes.length]), bytes]);
  const head = Buffer.alloc(5);
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

/**
 * One gRPC call over a bare node:http2 client, to send a grpc-timeout that no client-side
 * deadline races (grpc-js would end the call itself at the same moment) and to see whether the
 * answer's header block ended the stream (trailers-only).
 */
function rawCall(port: number, ca: string, path: string, text: string, headers: Record<string, string>) {
  return new Promise<{ status: number; headers: http2.IncomingHttpHeaders; endStreamWithHeaders: boolean }>((resolve, reject) => {
    const session = http2.connect(`https://127.0.0.1:${port}`, { ca, servername: 'localhost' });
    session.on('error', reject);
    const request = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', ...headers });
    request.on('response', (responseHeaders, flags) => {
      resolve({ status: Number(responseHeaders[':status']), headers: responseHeaders, endStreamWithHeaders: (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0 });
      session.close();
    });
    request.on('error', reject);
    request.end(frame(text));
  });
}

import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** What a test backend saw of one request. */
export interface SeenRequest {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  rawHeaders: string[];
}

export interface Backend {
  readonly name: string;
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  readonly port: number;
  readonly server: http.Server;
  /** Requests seen so far, oldest first. */
  readonly seen: SeenRequest[];
  close(): Promise<void>;
}

/**
 * A real HTTP backend on an ephemeral loopback port. By default every request gets
 * `200 {"version": name, "method", "url", "headers"}` with header `x-backend: name`;
 * pass `handler` to answer differently (return true when it handled the request).
 */
export async function startBackend(
  name: string,
  handler?: (req: http.IncomingMessage, res: http.ServerResponse) => boolean | void,
): Promise<Backend> {
  const seen: SeenRequest[] = [];
  const server = http.createServer((req, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders });
    if (handler?.(req, res)) return;
    req.resume();
    req.on('end', () => {
      const body = JSON.stringify({ version: name, method: req.method, url: req.url, headers: req.headers });
      res.writeHead(200, { 'content-type': 'application/json', 'x-backend': name, 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  // Upgraded sockets leave the server's bookkeeping (closeAllConnections misses them): track all.
  const sockets = new Set<import('node:net').Socket>();
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    name,
    url: `http://127.0.0.1:${port}`,
    port,
    server,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A loopback port that nothing listens on (it was free a moment ago): connecting is refused. */
export async function deadPort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

import http from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A tiny backend for the demo: answers every request with one line saying which version it
 * is, so a newcomer's curl shows where the gateway sent them. Not part of the gateway itself.
 */
export async function startDemoBackend(version: string, upstream: string): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    req.resume();
    const body = `hello from ${version} (${upstream}): ${req.method} ${req.url}\n`;
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'x-version': version, 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

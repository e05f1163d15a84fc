import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ErrorCode } from '../../errors.js';
import { classifyUpstreamError } from '../balancer.js';
import { rawErrorResponse } from '../error-response.js';
import { buildUpstreamRequestHeaders, connectionTokens, HOP_BY_HOP } from '../headers.js';
import type { RouteHost, UpstreamAttempts } from '../route.js';
import type { NodeRequestFacts } from './facts.js';
import type { NodeServer } from './upstream.js';

/** What the upgrade path needs from the data plane. */
export interface UpgradeHost extends RouteHost {
  readonly preserveHost: boolean;
  /** A tunnel is open (both sockets piped) / closed, for drain and stats. */
  tunnelOpened(client: Duplex, upstream: Duplex): void;
  tunnelClosed(client: Duplex, upstream: Duplex): void;
}

/** Writes the data plane's error answer on a raw client socket and closes it. */
export function writeRawError(socket: Duplex, code: ErrorCode, message: string): void {
  if (socket.destroyed || !socket.writable) {
    socket.destroy();
    return;
  }
  socket.end(rawErrorResponse(code, message));
}

/**
 * Response head lines (`name: value\r\n`…) from raw headers, without hop-by-hop ones; `keep`
 * names hop-by-hop headers to pass anyway (Connection and Upgrade on a 101).
 */
function headLines(rawHeaders: readonly string[], keep: ReadonlySet<string> | undefined): string {
  const named = connectionTokens(headerValue(rawHeaders, 'connection'));
  let text = '';
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const lower = rawHeaders[i]!.toLowerCase();
    if ((HOP_BY_HOP.has(lower) || named?.has(lower)) && !keep?.has(lower)) continue;
    text += `${rawHeaders[i]}: ${rawHeaders[i + 1]}\r\n`;
  }
  return text;
}

function headerValue(rawHeaders: readonly string[], lower: string): string | undefined {
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]!.toLowerCase() === lower) return rawHeaders[i + 1];
  return undefined;
}

const KEEP_ON_SWITCH: ReadonlySet<string> = new Set(['connection', 'upgrade']);

/**
 * Connects an HTTP Upgrade (WebSocket or other) to a server of the upstream `attempts` chose and
 * pipes the two sockets. Error and close handlers are on both sockets before any byte is written:
 * a reset on either side must never become an uncaught 'error', and a close must release both. A
 * non-101 reply is passed to the client and the connection closed; after a failure the shared
 * attempt policy says what to try next (another server, stable) or to answer with the error.
 */
export function proxyUpgrade(host: UpgradeHost, req: IncomingMessage, client: Duplex, head: Buffer, facts: NodeRequestFacts, attempts: UpstreamAttempts<NodeServer>): void {
  let upstreamRequest: http.ClientRequest | undefined;
  let finished = false;
  let isTunnel = false;
  const onClientGone = (): void => {
    if (!finished) upstreamRequest?.destroy();
  };
  client.once('close', onClientGone);
  // In flight to its upstream from the choice until the client socket closes: a handshake, a
  // refused upgrade being passed on, or an open tunnel (a long-lived socket to stable means stable
  // has not drained). 'close' fires once, so the count is released exactly once.
  client.once('close', () => {
    if (isTunnel) attempts.upstream!.counter.tunnels--;
    attempts.released();
  });

  const attempt = (): void => {
    const server = attempts.pick(Date.now());
    if (server === undefined) {
      finished = true;
      writeRawError(client, 'GG_UPSTREAM_CONNECT', `no server of upstream "${attempts.upstream!.name}" accepted a connection`);
      return;
    }
    connect(server);
  };

  const connect = (server: NodeServer): void => {
    const raw = buildUpstreamRequestHeaders(req.rawHeaders, facts, {
      preserveHost: host.preserveHost,
      originHost: server.hostHeader,
      bodyUntouched: true,
    });
    raw.push('connection', 'upgrade', 'upgrade', req.headers.upgrade ?? 'websocket');
    const timeouts = attempts.upstream!.config.timeouts;
    const request = (server.isTls ? https : http).request({
      host: server.hostname,
      // SNI takes host names only (RFC 6066 §3); the upstream's tls section may name another.
      servername: server.tls?.servername ?? (server.isTls && isIP(server.hostname) === 0 ? server.hostname : undefined),
      // Verified like the upstream's pooled connections: its CA (or the system's), its client certificate.
      ...(server.tls === undefined ? {} : { ca: server.tls.ca, cert: server.tls.cert, key: server.tls.key, rejectUnauthorized: server.tls.rejectUnauthorized }),
      port: server.port,
      method: req.method,
      path: req.url,
      headers: raw as unknown as http.OutgoingHttpHeaders,
      setHost: false,
      agent: false,
      timeout: timeouts.connectMs + timeouts.responseHeadersMs,
    });
    upstreamRequest = request;
    let answered = false;
    request.on('timeout', () => {
      const error = Object.assign(new Error('upstream upgrade timed out'), { code: 'UND_ERR_HEADERS_TIMEOUT' });
      request.destroy(error);
    });
    request.on('error', (error: Error & { code?: string }) => {
      if (answered || finished) return;
      answered = true;
      // A client that left is not the upstream's failure.
      if (client.destroyed) return;
      const failure = classifyUpstreamError(error);
      if (attempts.failed(host, failure, false, Date.now()) !== 'fail') return attempt();
      finished = true;
      writeRawError(client, failure.code, `${failure.message} (upstream "${attempts.upstream!.name}")`);
    });
    request.on('response', (response) => {
      // The server declined to switch: pass its answer on, then close (the client's socket is
      // not in a state to carry another request).
      answered = true;
      finished = true;
      attempts.answered();
      response.on('error', () => client.destroy());
      client.write(
        `HTTP/1.1 ${response.statusCode} ${response.statusMessage ?? ''}\r\n${headLines(response.rawHeaders, undefined)}connection: close\r\n\r\n`,
      );
      // Transfer-Encoding was dropped with the other hop-by-hop headers and Node de-chunks the
      // body, so a body without Content-Length is delimited by the close that follows it.
      response.pipe(client);
    });
    request.on('upgrade', (response, upstreamSocket: Duplex, upstreamHead: Buffer) => {
      answered = true;
      finished = true;
      attempts.answered();
      client.removeListener('close', onClientGone);
      upstreamSocket.on('error', () => upstreamSocket.destroy());
      // A tunnel ends when either side is done. Server sockets allow half-open connections, so
      // a FIN alone would leave the pair open forever: the side that ended is closed, and the
      // other is ended once its pending bytes are flushed, then destroyed.
      client.once('end', () => client.end());
      upstreamSocket.once('close', () => {
        if (!client.destroyed) client.end(() => client.destroy());
      });
      client.once('close', () => {
        if (!upstreamSocket.destroyed) upstreamSocket.end(() => upstreamSocket.destroy());
      });
      if (client.destroyed) {
        upstreamSocket.destroy();
        return;
      }
      host.tunnelOpened(client, upstreamSocket);
      isTunnel = true;
      attempts.upstream!.counter.tunnels++;
      client.once('close', () => host.tunnelClosed(client, upstreamSocket));
      (upstreamSocket as { setTimeout?: (ms: number) => void }).setTimeout?.(0);
      // An anonymous caller minted an id to decide this upgrade: hand it back on the 101, so the
      // next connection of the same browser gets the same version.
      const minted = facts.mintedAnonymousCookie === undefined ? '' : `set-cookie: ${facts.mintedAnonymousCookie}\r\n`;
      client.write(`HTTP/1.1 101 ${response.statusMessage || 'Switching Protocols'}\r\n${headLines(response.rawHeaders, KEEP_ON_SWITCH)}${minted}\r\n`);
      if (upstreamHead.length > 0) client.write(upstreamHead);
      if (head.length > 0) upstreamSocket.write(head);
      upstreamSocket.pipe(client);
      client.pipe(upstreamSocket);
    });
    request.end();
  };

  attempt();
}

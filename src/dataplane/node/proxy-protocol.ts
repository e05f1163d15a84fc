import net, { type AddressInfo, type Socket } from 'node:net';
import type { Logger } from 'pino';
import type { ProxyProtocolSettings } from '../../config/schema.js';
import { rateLimited } from '../../observe/log.js';
import { compileCidrList } from '../../rules/cidr.js';
import { unwrapMappedIpv4 } from '../headers.js';
import { parseProxyHeader, type ProxiedSource } from './proxy-header.js';

/**
 * What became of one connection accepted by the PROXY protocol front:
 * - `proxied`: a trusted peer's header named the client; requests on it see that address;
 * - `local`: a trusted peer's header said to use the connection's own address (v2 LOCAL, as load
 *   balancers' health checks send; v1 UNKNOWN; no IP family);
 * - `direct`: a peer not in `trustedFrom` sent no header; it is served as itself;
 * and refused (closed without a byte sent): `untrusted` (a header from a peer not in
 * `trustedFrom`), `missing` (a trusted peer sent no header), `malformed` (a header that is not a
 * valid one), `timeout` (no complete header within `headerTimeoutMs`).
 */
export type ProxyProtocolOutcome = 'proxied' | 'local' | 'direct' | 'untrusted' | 'missing' | 'malformed' | 'timeout';

export const PROXY_PROTOCOL_OUTCOMES: readonly ProxyProtocolOutcome[] = ['proxied', 'local', 'direct', 'untrusted', 'missing', 'malformed', 'timeout'];

/**
 * The client address each connection's PROXY header carried, by the socket the front handed on.
 * Set once per connection, read per request with one lookup; nothing is allocated per request,
 * and a closed socket's entry goes with it.
 */
const carried = new WeakMap<object, string>();
/** Whether any front was made in this process: without one, a request pays nothing for the lookup. */
let isAnyFront = false;

/**
 * The client address a PROXY header carried for the connection `socket` belongs to, if one did.
 * `socket` is the one a request reports (`req.socket`): the accepted TCP socket itself for plain
 * HTTP, or a TLS socket wrapping it (https, and HTTP/2's socket proxy, which forwards property
 * reads to the TLS socket). A TLS socket built over an accepted socket keeps that socket in
 * `_parent` (node:tls has done so since its first version); a test with a real https server pins it.
 */
export function proxiedAddressOf(socket: object): string | undefined {
  if (!isAnyFront) return undefined;
  const direct = carried.get(socket);
  if (direct !== undefined) return direct;
  const parent = (socket as { _parent?: unknown })._parent;
  return typeof parent === 'object' && parent !== null ? carried.get(parent) : undefined;
}

export interface ProxyProtocolFrontOptions {
  readonly settings: ProxyProtocolSettings;
  readonly logger: Logger;
  /** Told of every accepted connection's outcome, for metrics. */
  readonly onOutcome?: (outcome: ProxyProtocolOutcome) => void;
}

/**
 * A TCP listener in front of any net.Server (http, https, an HTTP/2 secure server): it reads the
 * PROXY header of each connection, within a deadline, and hands the socket, with every byte after
 * the header still unread, to the server as if that server had accepted it
 * (`server.emit('connection', socket)`). The header comes before anything else on the wire, TLS
 * handshake included, so the server behind needs no change; requests learn the client address
 * through `proxiedAddressOf`.
 *
 * Whom to believe: only peers in `trustedFrom` may send a header, and they must (a load balancer
 * that stopped sending one would otherwise make every client look like the load balancer). Peers
 * outside it are served as themselves, and closed if they send a header: they could name any
 * address they like.
 */
export class ProxyProtocolFront {
  /** The server that listens; `target` never does. */
  readonly listener: net.Server;
  private readonly isTrusted: (ip: string) => boolean;
  private readonly timeoutMs: number;
  private readonly logger: Logger;
  private readonly logRefusal: ReturnType<typeof rateLimited>;
  private readonly onOutcome: (outcome: ProxyProtocolOutcome) => void;
  /** Connections whose header is still awaited: closed with the front. */
  private readonly pending = new Set<Socket>();

  constructor(
    private readonly target: net.Server,
    options: ProxyProtocolFrontOptions,
  ) {
    isAnyFront = true;
    this.isTrusted = compileCidrList(options.settings.trustedFrom);
    this.timeoutMs = options.settings.headerTimeoutMs;
    this.logger = options.logger;
    // Refusals are the peer's doing, many a second from a scanner: a few lines, then a count.
    this.logRefusal = rateLimited(options.logger);
    this.onOutcome = options.onOutcome ?? (() => {});
    this.listener = net.createServer({ noDelay: true }, (socket) => this.accept(socket));
    // Stopping the server behind (a drain) stops this one from accepting too.
    target.once('close', () => this.close());
  }

  /** Listens on `port`/`host`; resolves with the bound address. */
  listen(port: number, host: string): Promise<AddressInfo> {
    return new Promise<AddressInfo>((resolve, reject) => {
      const onError = (error: Error): void => reject(error);
      this.listener.once('error', onError);
      this.listener.listen(port, host, () => {
        this.listener.removeListener('error', onError);
        this.listener.on('error', (error) => this.logger.error({ err: error }, 'PROXY protocol listener error'));
        // node:http starts its request and headers timeouts checks on 'listening': the server
        // behind must run them for the connections it is handed, as if it listened itself.
        this.target.emit('listening');
        resolve(this.listener.address() as AddressInfo);
      });
    });
  }

  /** Stops accepting and closes connections still awaiting their header (none has sent a request). */
  close(): void {
    if (this.listener.listening) this.listener.close();
    for (const socket of this.pending) socket.destroy();
    this.pending.clear();
  }

  private accept(socket: Socket): void {
    const peer = unwrapMappedIpv4(socket.remoteAddress ?? '');
    const isTrusted = this.isTrusted(peer);
    this.pending.add(socket);
    let received: Buffer | undefined;
    let timer: NodeJS.Timeout | undefined;
    const finish = (): void => {
      clearTimeout(timer);
      socket.removeListener('readable', onReadable);
      socket.removeListener('error', onError);
      socket.removeListener('close', onClose);
      this.pending.delete(socket);
    };
    const refuse = (outcome: ProxyProtocolOutcome, reason: string): void => {
      finish();
      socket.destroy();
      this.onOutcome(outcome);
      // A trusted peer that gets it wrong is a configuration to fix; anyone else is noise.
      const level = outcome === 'missing' || outcome === 'malformed' ? 'warn' : 'info';
      this.logRefusal(`proxy-protocol-${outcome}`, level, { event: 'proxy-protocol-refused', peer, outcome, reason }, `PROXY protocol: closed a connection from ${peer}: ${reason}`);
    };
    const handOver = (outcome: ProxyProtocolOutcome, rest: Buffer | undefined, source: ProxiedSource | undefined): void => {
      finish();
      if (source !== undefined) carried.set(socket, source.address);
      // Back into the stream, for the server to read first: the request line, or the TLS hello.
      if (rest !== undefined && rest.length > 0) socket.unshift(rest);
      this.onOutcome(outcome);
      this.target.emit('connection', socket);
    };
    const onReadable = (): void => {
      let chunk: Buffer | null;
      while ((chunk = socket.read() as Buffer | null) !== null) received = received === undefined ? chunk : Buffer.concat([received, chunk]);
      if (received === undefined) return;
      const parsed = parseProxyHeader(received);
      switch (parsed.kind) {
        case 'incomplete':
          return;
        case 'absent':
          if (isTrusted) refuse('missing', 'a trusted peer sent no PROXY header (is the load balancer set to send one?)');
          else handOver('direct', received, undefined);
          return;
        case 'invalid':
          if (isTrusted) refuse('malformed', `malformed PROXY v${parsed.version} header: ${parsed.reason}`);
          else refuse('untrusted', `a PROXY header from a peer not in proxyProtocol.trustedFrom`);
          return;
        case 'header':
          if (!isTrusted) refuse('untrusted', `a PROXY header from a peer not in proxyProtocol.trustedFrom`);
          else handOver(parsed.source === undefined ? 'local' : 'proxied', received.subarray(parsed.length), parsed.source);
          return;
      }
    };
    // Before any I/O: a reset while the header is awaited must never become an uncaught 'error'.
    const onError = (): void => {
      finish();
      socket.destroy();
    };
    // Closed before a whole header (a load balancer's TCP health check does this): nothing to count.
    const onClose = (): void => finish();
    socket.on('error', onError);
    socket.on('close', onClose);
    socket.on('readable', onReadable);
    timer = setTimeout(() => refuse('timeout', `no complete PROXY header within ${this.timeoutMs} ms`), this.timeoutMs);
  }
}

/**
 * The listen step of a node data plane: `server` itself listens when `proxyProtocol` is undefined;
 * otherwise a PROXY protocol front listens and hands it each connection, counting outcomes in
 * `registry`. Resolves with the bound address. Under `--workers`, each worker's listener shares
 * the one listening socket through node:cluster, front or not.
 */
export async function listenBehindProxyProtocol(
  server: net.Server,
  listen: { readonly host: string; readonly port: number },
  proxyProtocol: ProxyProtocolSettings | undefined,
  options: { readonly logger: Logger; readonly onOutcome?: ((outcome: ProxyProtocolOutcome) => void) | undefined },
): Promise<AddressInfo> {
  if (proxyProtocol === undefined) {
    await new Promise<void>((resolve, reject) => {
      const onError = (error: Error): void => reject(error);
      server.once('error', onError);
      server.listen(listen.port, listen.host, () => {
        server.removeListener('error', onError);
        resolve();
      });
    });
    return server.address() as AddressInfo;
  }
  const front = new ProxyProtocolFront(server, { settings: proxyProtocol, logger: options.logger, ...(options.onOutcome ? { onOutcome: options.onOutcome } : {}) });
  return front.listen(listen.port, listen.host);
}

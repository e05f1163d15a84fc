import type { ErrorCode } from '../../errors.js';
import { classifyUpstreamError } from '../balancer.js';
import { openBunWebSocket, type BunClientWebSocket, type BunMessage, type BunServerWebSocket, type BunWebSocketHandler } from './bun-api.js';

/**
 * Bytes a tunnel may hold for a peer that reads slower than the other side writes, per direction.
 * Neither of Bun's WebSockets can stop reading (uWebSockets has no pause for a server socket, the
 * client WebSocket has none either), so backpressure cannot travel back to the sender as it does
 * through Node's piped sockets: past this bound the tunnel is closed with 1011 on both sides.
 */
export const TUNNEL_BUFFER_LIMIT_BYTES = 1024 * 1024;

/** Largest single message a client may send through a tunnel (Bun closes beyond it with 1009). */
export const TUNNEL_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

/** Close codes a peer may receive but no endpoint may send (RFC 6455 §7.4.1). */
const NO_STATUS = 1005;
const ABNORMAL = 1006;

/** What a tunnel needs from the data plane. */
export interface TunnelHost {
  tunnelClosed(tunnel: Tunnel): void;
  fault(key: string, fields: object, message: string): void;
}

export interface UpgradeFailure {
  readonly code: ErrorCode;
  readonly isConnectFailure: boolean;
  readonly message: string;
  /** The upstream's status when it answered with another than 101 (an answer, not a failure). */
  readonly refusedWith?: number;
}

/**
 * Closes with `code` and `reason`, or plainly when the socket refuses them: a code one side may
 * send need not be one the other side's API accepts (the WHATWG client takes 1000 and 3000-4999
 * only), and a throw inside a Bun handler must not become an uncaught exception.
 */
function closeWith(socket: { close(code?: number, reason?: string): void }, code: number, reason: string): void {
  try {
    socket.close(code, reason);
  } catch {
    socket.close();
  }
}

function byteLength(message: string | ArrayBuffer | Uint8Array): number {
  return typeof message === 'string' ? Buffer.byteLength(message) : message.byteLength;
}

/**
 * Opens a client WebSocket to `url` and resolves once the upstream answered 101, with why not
 * otherwise. Bun's client reports a failure only as an error event whose text carries the
 * upstream's status ("Expected 101 status code: 403") and whose `error.code` names a connect
 * failure (ECONNREFUSED); neither the status line's headers nor a refusal's body are exposed.
 */
export function openUpstreamWebSocket(
  url: string,
  headers: Headers,
  protocols: string[],
  timeoutMs: number,
  clientSignal: AbortSignal,
): Promise<BunClientWebSocket | UpgradeFailure> {
  return new Promise((resolve) => {
    const socket = openBunWebSocket(url, { headers, protocols });
    socket.binaryType = 'arraybuffer';
    let settled = false;
    let failure: UpgradeFailure | undefined;
    const settle = (outcome: BunClientWebSocket | UpgradeFailure): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clientSignal.removeEventListener('abort', onClientGone);
      resolve(outcome);
    };
    // A client that leaves while the upstream handshake is pending takes the upstream with it.
    const onClientGone = (): void => {
      socket.terminate();
      settle({ code: 'GG_UPSTREAM_RESET', isConnectFailure: false, message: 'the client closed the connection' });
    };
    clientSignal.addEventListener('abort', onClientGone, { once: true });
    const timer = setTimeout(() => {
      socket.terminate();
      settle(classifyUpstreamError({ code: 'UND_ERR_HEADERS_TIMEOUT' }));
    }, timeoutMs);
    socket.onopen = () => settle(socket);
    socket.onerror = (event) => {
      const text = event.message ?? '';
      const status = /Expected 101 status code: (\d{3})/.exec(text)?.[1];
      if (status !== undefined) {
        failure = { code: 'GG_UPSTREAM_RESET', isConnectFailure: false, message: `the upstream refused the WebSocket upgrade with status ${status}`, refusedWith: Number(status) };
      } else if (/Missing client protocol/.test(text)) {
        // Bun's client follows the WHATWG rule: subprotocols were offered and the upstream's 101
        // chose none, so it fails the connection (RFC 6455 alone would let the client decide).
        failure = { code: 'GG_UPSTREAM_RESET', isConnectFailure: false, message: 'the upstream accepted the WebSocket upgrade without choosing one of the offered subprotocols' };
      } else {
        failure = classifyUpstreamError({ code: event.error?.code ?? (/Failed to connect/.test(text) ? 'ECONNREFUSED' : 'ECONNRESET') });
      }
    };
    socket.onclose = () => settle(failure ?? classifyUpstreamError({ code: 'ECONNRESET' }));
    if (clientSignal.aborted) onClientGone();
  });
}

/**
 * One bridged WebSocket: the client's socket (Bun.serve) and the upstream's (Bun's client
 * WebSocket). Messages keep their kind (text or binary) and order; a close on either side closes
 * the other with the same code and reason; a peer that vanished without a close frame (1006)
 * makes the gateway cut the other side as well (the client) or say "going away" (the upstream).
 */
export class Tunnel {
  private client: BunServerWebSocket<Tunnel> | undefined;
  /** Upstream messages that arrived between the upstream's 101 and the client's. */
  private early: (string | ArrayBuffer)[] = [];
  private earlyBytes = 0;
  /** A close (the upstream's, or the gateway's) before the client's 101 was out, to pass on once it is. */
  private earlyClose: { code: number; reason: string } | undefined;
  private closed = false;

  constructor(
    private readonly host: TunnelHost,
    private readonly upstream: BunClientWebSocket,
    readonly upstreamName: string,
  ) {
    upstream.onmessage = (event) => this.fromUpstream(event.data as string | ArrayBuffer);
    upstream.onclose = (event) => this.upstreamClosed(event.code, event.reason);
    upstream.onerror = null;
  }

  /** The client's 101 is out: flush what the upstream sent meanwhile. */
  clientOpened(client: BunServerWebSocket<Tunnel>): void {
    this.client = client;
    const early = this.early;
    this.early = [];
    for (const message of early) client.send(message);
    if (this.earlyClose !== undefined) this.closeClient(this.earlyClose.code, this.earlyClose.reason);
  }

  fromClient(message: BunMessage): void {
    if (this.closed) return;
    this.upstream.send(message);
    // The upstream reads slower than the client writes: Bun's client queues what the socket did
    // not take, and nothing can make the client pause, so the queue is bounded.
    if (this.upstream.bufferedAmount > TUNNEL_BUFFER_LIMIT_BYTES) this.overflow('upstream');
  }

  private fromUpstream(message: string | ArrayBuffer): void {
    if (this.closed) return;
    const client = this.client;
    if (client === undefined) {
      this.early.push(message);
      this.earlyBytes += byteLength(message);
      if (this.earlyBytes > TUNNEL_BUFFER_LIMIT_BYTES) this.overflow('client');
      return;
    }
    // -1: queued under backpressure (kept, below the limit); 0: dropped past backpressureLimit.
    if (client.send(message) === 0 && byteLength(message) > 0) this.overflow('client');
  }

  private overflow(slow: 'client' | 'upstream'): void {
    this.host.fault(`websocket-overflow:${slow}`, { upstream: this.upstreamName, limitBytes: TUNNEL_BUFFER_LIMIT_BYTES }, `the ${slow} of a WebSocket read too slowly; closing the tunnel with 1011`);
    this.close(1011, `the ${slow} reads too slowly (gateway buffer limit)`);
  }

  /** Closes both sides (drain, overflow); the tunnel counts as closed at once. */
  close(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    closeWith(this.upstream, code, reason);
    if (this.client === undefined) this.earlyClose = { code, reason };
    else closeWith(this.client, code, reason);
    this.host.tunnelClosed(this);
  }

  clientClosed(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    if (code === NO_STATUS) this.upstream.close();
    else if (code === ABNORMAL) this.upstream.close(1001, 'the client went away');
    else closeWith(this.upstream, code, reason);
    this.host.tunnelClosed(this);
  }

  private upstreamClosed(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    if (this.client === undefined) this.earlyClose = { code, reason };
    else this.closeClient(code, reason);
    this.host.tunnelClosed(this);
  }

  private closeClient(code: number, reason: string): void {
    const client = this.client!;
    if (code === NO_STATUS) client.close();
    else if (code === ABNORMAL) client.terminate();
    else closeWith(client, code, reason);
  }
}

/** Bun.serve's websocket handlers: every server WebSocket carries its Tunnel as `data`. */
export const tunnelHandlers: BunWebSocketHandler<Tunnel> = {
  open: (ws) => ws.data.clientOpened(ws),
  message: (ws, message) => ws.data.fromClient(message),
  close: (ws, code, reason) => ws.data.clientClosed(code, reason),
  backpressureLimit: TUNNEL_BUFFER_LIMIT_BYTES,
  // graygate closes with its own code and a log line when the limit is reached.
  closeOnBackpressureLimit: false,
  maxPayloadLength: TUNNEL_MAX_MESSAGE_BYTES,
  // Compressing every message again for the client is CPU a proxy need not spend.
  perMessageDeflate: false,
};

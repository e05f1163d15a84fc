/**
 * The slice of Bun's API the Bun data plane uses, typed here so that graygate type-checks without
 * bun-types (and without Bun's globals leaking into the runtime-neutral code). Reached only
 * through `bunRuntime()`, which exists only when graygate runs under Bun.
 */
export interface BunSocketAddress {
  readonly address: string;
  readonly port: number;
}

export interface BunServer {
  readonly port: number;
  readonly hostname: string;
  readonly pendingRequests: number;
  readonly pendingWebSockets: number;
  stop(closeActiveConnections?: boolean): Promise<void> | void;
  requestIP(request: Request): BunSocketAddress | null;
  /** Switches the request's connection to a WebSocket (answers 101); false when it cannot. */
  upgrade<T>(request: Request, options?: { data?: T; headers?: Record<string, string> }): boolean;
}

/** A message as Bun hands it to a server WebSocket: text as a string, binary as a Buffer. */
export type BunMessage = string | Uint8Array;

/** Bun's server side of a WebSocket (uWebSockets). */
export interface BunServerWebSocket<T> {
  readonly data: T;
  /** Bytes sent, -1 when queued under backpressure, 0 when dropped (past `backpressureLimit`). */
  send(message: string | ArrayBuffer | Uint8Array): number;
  close(code?: number, reason?: string): void;
  /** Cuts the connection without a close frame (the peer sees 1006). */
  terminate(): void;
}

export interface BunWebSocketHandler<T> {
  open?(ws: BunServerWebSocket<T>): void;
  message(ws: BunServerWebSocket<T>, message: BunMessage): void;
  close?(ws: BunServerWebSocket<T>, code: number, reason: string): void;
  drain?(ws: BunServerWebSocket<T>): void;
  /** Bytes queued per connection before send() drops a message and returns 0. */
  backpressureLimit?: number;
  closeOnBackpressureLimit?: boolean;
  /** Largest message accepted from a client; larger ones close the connection with 1009. */
  maxPayloadLength?: number;
  perMessageDeflate?: boolean;
}

/** Bun's client WebSocket takes headers beyond the standard constructor (a Bun extension). */
export interface BunWebSocketInit {
  headers?: Headers;
  protocols?: string[];
}

/** The slice of Bun's client WebSocket (the WHATWG one plus `terminate()`) the bridge uses. */
export interface BunClientWebSocket {
  binaryType: 'arraybuffer' | 'blob' | 'nodebuffer';
  readonly protocol: string;
  readonly readyState: number;
  readonly bufferedAmount: number;
  onopen: (() => void) | null;
  onmessage: ((event: { data: string | ArrayBuffer | Uint8Array }) => void) | null;
  onerror: ((event: { message?: string; error?: { code?: string } }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  send(data: string | ArrayBuffer | Uint8Array): void;
  close(code?: number, reason?: string): void;
  /** Cuts the connection without a close frame (the peer sees 1006). */
  terminate(): void;
}

export interface BunServeOptions {
  hostname: string;
  port: number;
  reusePort?: boolean;
  /** Seconds a connection may stay idle (Bun caps it at 255; 0 disables). */
  idleTimeout?: number;
  /** Resolves with undefined once the request was upgraded to a WebSocket. */
  fetch(request: Request, server: BunServer): Response | undefined | Promise<Response | undefined>;
  error?(error: Error): Response | Promise<Response>;
  websocket?: BunWebSocketHandler<unknown>;
}

/** What Bun's `Headers.prototype.toJSON()` returns: lower-case names; Set-Cookie as an array, every other repeated header joined as `get()` joins it. */
export type BunHeaderRecord = Record<string, string | string[]>;

/** Bun's Headers: the standard ones plus `toJSON()`, every header in one native call. */
export interface BunHeaders extends Headers {
  toJSON(): BunHeaderRecord;
}

/** Bun's fetch takes these beyond the standard RequestInit. */
export interface BunFetchInit extends RequestInit {
  decompress?: boolean;
  duplex?: 'half';
}

export interface BunGlobal {
  readonly version: string;
  serve(options: BunServeOptions): BunServer;
}

/** Opens a client WebSocket with Bun's constructor (headers are a Bun extension). */
export function openBunWebSocket(url: string, init: BunWebSocketInit): BunClientWebSocket {
  const Constructor = (globalThis as unknown as { WebSocket: new (url: string, init: BunWebSocketInit) => BunClientWebSocket }).WebSocket;
  return new Constructor(url, init);
}

/** Bun's global, or undefined when not running under Bun. */
export function bunRuntime(): BunGlobal | undefined {
  return (globalThis as { Bun?: BunGlobal }).Bun;
}

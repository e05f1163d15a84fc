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
}

export interface BunServeOptions {
  hostname: string;
  port: number;
  reusePort?: boolean;
  /** Seconds a connection may stay idle (Bun caps it at 255; 0 disables). */
  idleTimeout?: number;
  fetch(request: Request, server: BunServer): Response | Promise<Response>;
  error?(error: Error): Response | Promise<Response>;
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

/** Bun's global, or undefined when not running under Bun. */
export function bunRuntime(): BunGlobal | undefined {
  return (globalThis as { Bun?: BunGlobal }).Bun;
}

import http2, { type Http2SecureServer } from 'node:http2';
import https from 'node:https';
import tls, { type SecureContext, type SecureContextOptions } from 'node:tls';
import type { Logger } from 'pino';
import type { ProxySettings, TlsSettings } from '../../config/schema.js';
import { ticketKeys } from './ticket-keys.js';
import type { CertificatePair } from '../tls-files.js';
import { WatchedTlsFiles } from '../tls-watched-files.js';

/** The TLS listener's server: HTTP/2 with HTTP/1.1 fallback, or HTTPS alone when HTTP/2 is off. */
export type TlsServer = Http2SecureServer | https.Server;

/**
 * Builds the TLS listener's server (not listening yet): the certificates chosen by SNI, the
 * protocol and cipher policy, client-certificate verification and the HTTP/2 limits. Requests of
 * both protocols arrive on the server's 'request' event; whatever accepts connections for it
 * (its own `listen`, or a front that hands it accepted sockets with `emit('connection', socket)`)
 * is the caller's business.
 */
export function createTlsServer(settings: TlsSettings, proxy: ProxySettings, certificates: TlsCertificates): TlsServer {
  const secure: tls.TlsOptions = {
    ...certificates.defaultOptions(),
    // With one certificate the server's own context (swapped by `setSecureContext` on reload) is
    // the answer to every name: no callback, which would stop each handshake for a trip into
    // JavaScript to pick the context.
    ...(certificates.choosesByName ? { SNICallback: certificates.sniCallback } : {}),
    // Nagle off as each socket is accepted (one call fewer per connection than setNoDelay).
    noDelay: true,
    // A client that opens a connection and never finishes the handshake holds a socket: bound it
    // like a client that never finishes its headers.
    handshakeTimeout: Math.max(1_000, proxy.clientHeadersTimeoutMs),
    ...(settings.clientCertificates ? { requestCert: true, rejectUnauthorized: settings.clientCertificates.mode === 'required' } : {}),
  };
  const server: TlsServer = settings.http2.enabled ? createHttp2Server(settings, secure) : https.createServer(secure);
  if (settings.clientCertificates?.mode === 'optional') {
    // OpenSSL either refuses every unverified client or none: "optional" lets a client without a
    // certificate in, and closes a connection whose certificate did not verify.
    server.prependListener('secureConnection', (socket: tls.TLSSocket) => {
      if (!socket.authorized && socket.getPeerCertificate().raw !== undefined) socket.destroy();
    });
  }
  return server;
}

function createHttp2Server(settings: TlsSettings, secure: tls.TlsOptions): Http2SecureServer {
  return http2.createSecureServer({
    ...secure,
    allowHTTP1: true,
    settings: {
      maxConcurrentStreams: settings.http2.maxConcurrentStreams,
      maxHeaderListSize: settings.http2.maxHeaderListBytes,
      enablePush: false,
    },
    maxHeaderListPairs: 2_000,
    // Bounds what one connection may buffer (headers being assembled, unacknowledged data):
    // past it new streams are refused, so a flood costs this much memory per connection at most.
    maxSessionMemory: 10,
  });
}

/** Options every secure context gets: protocol floor, ciphers, the client CA, the session ticket keys. */
interface ContextBase {
  readonly minVersion: tls.SecureVersion;
  readonly ciphers: string;
  readonly ca?: string;
  readonly ticketKeys: Buffer;
}

/**
 * The listener's certificates: one secure context per configured pair, looked up per handshake by
 * the server name the client sent (exact names, then `*.` wildcards one label deep, as RFC 6125
 * matches them); the first pair when none matches. `reload` reads the files again and swaps in
 * what is valid: each pair that fails keeps its previous context and is reported by file, so a
 * certificate renewal that wrote a bad key never takes the listener down, and connections already
 * open keep the context they were made with.
 */
export class TlsCertificates extends WatchedTlsFiles {
  private exact = new Map<string, SecureContext>();
  private wildcard = new Map<string, SecureContext>();
  private fallback!: SecureContext;
  private server: TlsServer | undefined;

  /** Reads every file once; throws ConfigError naming each file that cannot be served. */
  constructor(settings: TlsSettings, logger: Logger) {
    super(settings, logger);
    this.build();
  }

  private base(): ContextBase {
    return { minVersion: this.settings.minVersion, ciphers: this.settings.ciphers, ticketKeys: ticketKeys(), ...(this.ca !== undefined ? { ca: this.ca } : {}) };
  }

  private static optionsOf(base: ContextBase, pair: CertificatePair): SecureContextOptions {
    return { ...base, cert: pair.certPem, key: pair.keyPem };
  }

  /** Whether the server name picks among several certificates (otherwise the first serves all). */
  get choosesByName(): boolean {
    return this.pairs.length > 1;
  }

  /** The default context's options (the first pair), for the server's own context. */
  defaultOptions(): SecureContextOptions {
    return TlsCertificates.optionsOf(this.base(), this.pairs[0]!);
  }

  /** Builds every context from the current pairs; throws when OpenSSL refuses one (the caller keeps the old ones). */
  private build(): void {
    const base = this.base();
    const exact = new Map<string, SecureContext>();
    const wildcard = new Map<string, SecureContext>();
    let fallback: SecureContext | undefined;
    for (const pair of this.pairs) {
      const context = tls.createSecureContext(TlsCertificates.optionsOf(base, pair));
      fallback ??= context;
      for (const name of pair.names) {
        // The first pair naming a host wins, as the list's order says.
        if (name.startsWith('*.')) {
          if (!wildcard.has(name.slice(2))) wildcard.set(name.slice(2), context);
        } else if (!exact.has(name)) exact.set(name, context);
      }
    }
    this.exact = exact;
    this.wildcard = wildcard;
    this.fallback = fallback!;
  }

  /** The context for a server name (any case); the first pair's when nothing matches. */
  contextFor(serverName: string): SecureContext {
    const name = serverName.toLowerCase();
    const exact = this.exact.get(name);
    if (exact !== undefined) return exact;
    const dot = name.indexOf('.');
    if (dot > 0) {
      const wildcard = this.wildcard.get(name.slice(dot + 1));
      if (wildcard !== undefined) return wildcard;
    }
    return this.fallback;
  }

  readonly sniCallback = (serverName: string, callback: (error: Error | null, context?: SecureContext) => void): void => {
    callback(null, this.contextFor(serverName));
  };

  /** The names each pair is served for, in order (for logs and tests). */
  names(): string[][] {
    return this.pairs.map((pair) => [...pair.names]);
  }

  /** Watches every file; a change reloads (new handshakes only) once the burst of writes settles. */
  watch(server: TlsServer): void {
    this.server = server;
    this.watchFiles();
  }

  /**
   * Reads the files again. A pair that loads is swapped in for new handshakes; a pair (or CA) that
   * does not is refused, logged with its file, and its previous version stays. Returns whether
   * anything changed.
   */
  reload(): boolean {
    const next = this.reread();
    if (next === undefined) return false;
    const before = { pairs: this.pairs, ca: this.ca, exact: this.exact, wildcard: this.wildcard, fallback: this.fallback };
    this.pairs = next.pairs;
    this.ca = next.ca;
    try {
      this.build();
      this.server?.setSecureContext(this.defaultOptions());
    } catch (error) {
      // OpenSSL refused what the checks let through (a key type it does not take): keep the old.
      Object.assign(this, before);
      this.refuse(this.settings.certificates[0]!.cert, `the new certificates could not be loaded: ${(error as Error).message}`);
      return false;
    }
    this.reloaded('TLS certificates reloaded: new connections use them, open ones keep theirs');
    return true;
  }
}

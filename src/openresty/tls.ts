import { chmodSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { TlsSettings } from '../config/schema.js';
import { ConfigError } from '../errors.js';
import type { Logger } from '../observe/log.js';
import type { CertificatePair } from '../dataplane/tls-files.js';
import { WatchedTlsFiles } from '../dataplane/tls-watched-files.js';

/**
 * TLS on the OpenResty data plane: nginx terminates it, graygate hands it the certificates.
 * The nginx.conf names one certificate (nginx will not start an `ssl` listener without one): the
 * first pair, written at start. Every handshake then runs tls.lua's certificate phase, which
 * picks the pair by the server name from the set graygate pushed to the control socket (a shared
 * dict and a version number), so SNI and a renewed certificate need no nginx reload. graygate
 * watches and checks the files exactly as for its own listener; nginx only ever sees pairs that
 * parse and match.
 */

/** The files nginx's `ssl_certificate`/`ssl_certificate_key` name, in the prefix directory. */
export const PLACEHOLDER_CERT = 'graygate-tls-placeholder.crt';
export const PLACEHOLDER_KEY = 'graygate-tls-placeholder.key';

/** The certificate set pushed to nginx (POST /graygate/tls on the control socket). */
export interface TlsSetMessage {
  readonly format: 'graygate-openresty-tls/1';
  /** Newer sets have higher versions; nginx keeps the highest it was given. */
  readonly version: number;
  /** In order: the first is served when no name matches. */
  readonly certificates: readonly { readonly cert: string; readonly key: string; readonly names: readonly string[] }[];
  /** True when the set is the one certificate nginx.conf names: the certificate phase then has nothing to change. */
  readonly placeholder: boolean;
  /** The CA bundle (PEM) client certificates must chain to, when they are verified. */
  readonly ca?: string;
}

/**
 * Node takes TLS 1.2 ciphers and TLS 1.3 suites (`TLS_…`) in one list; OpenSSL, and so nginx,
 * takes them apart: `ssl_ciphers` for TLS 1.2, `Ciphersuites` (through ssl_conf_command) for 1.3.
 */
export function splitCiphers(list: string): { ciphers: string[]; suites: string[] } {
  const ciphers: string[] = [];
  const suites: string[] = [];
  for (const name of list.split(':')) {
    const trimmed = name.trim();
    if (trimmed === '') continue;
    (trimmed.startsWith('TLS_') ? suites : ciphers).push(trimmed);
  }
  return { ciphers, suites };
}

/** A value nginx takes unquoted after a directive (cipher names; no spaces, quotes or semicolons). */
function checkedValue(value: string, field: string): string {
  if (/["'\\$\s;{}]/.test(value)) throw new ConfigError([`${field}: ${JSON.stringify(value)} holds a character nginx cannot take in a directive`]);
  return value;
}

/**
 * The directives of the TLS `server {}` (besides `listen`): the placeholder certificate, the
 * protocols and ciphers of the settings, a shared session cache, HTTP/2's stream limit and the
 * certificate phase. `dir` holds the placeholder files.
 */
export function tlsServerDirectives(tls: TlsSettings, dir: string): string {
  const { ciphers, suites } = splitCiphers(tls.ciphers);
  // As on Node: a list without TLS 1.3 suites means no TLS 1.3.
  const protocols = tls.minVersion === 'TLSv1.3' ? ['TLSv1.3'] : suites.length > 0 ? ['TLSv1.2', 'TLSv1.3'] : ['TLSv1.2'];
  const lines = [
    `ssl_certificate ${path.join(dir, PLACEHOLDER_CERT)};`,
    `ssl_certificate_key ${path.join(dir, PLACEHOLDER_KEY)};`,
    `ssl_protocols ${protocols.join(' ')};`,
    ...(ciphers.length > 0 ? [`ssl_ciphers ${checkedValue(ciphers.join(':'), 'tls.ciphers')};`] : []),
    ...(suites.length > 0 ? [`ssl_conf_command Ciphersuites ${checkedValue(suites.join(':'), 'tls.ciphers')};`] : []),
    // Resumption by session id across workers (tickets work across workers already: nginx makes
    // their keys once, in the master).
    'ssl_session_cache shared:graygate_tls_sessions:10m;',
    'ssl_session_timeout 1h;',
    ...(tls.http2.enabled ? [`http2_max_concurrent_streams ${tls.http2.maxConcurrentStreams};`] : []),
    // The certificate for the server name, from the set graygate pushed (no reload on renewal).
    `ssl_certificate_by_lua_block { require("graygate.tls").certificate(${tls.clientCertificates ? 'true' : ''}) }`,
    // Client certificates: tls.lua asks for one in the handshake (the CA from the pushed set, so a
    // renewed CA file needs no reload) and nginx records the outcome; a connection whose
    // certificate did not verify, or (when required) that sent none, is answered 495 / 496.
    ...(tls.clientCertificates
      ? ['if ($graygate_client_cert = 495) { return 495; }', 'if ($graygate_client_cert = 496) { return 496; }']
      : []),
  ];
  return lines.join('\n');
}

/** The `map` (http level) that turns nginx's $ssl_client_verify into the answer for the TLS server's `if`s. */
export function clientCertificateMap(tls: TlsSettings): string {
  if (!tls.clientCertificates) return '';
  return [
    'map $ssl_client_verify $graygate_client_cert {',
    '    default 495;',
    // Plain connections (the other listener of the same server) have no verification at all.
    '    "" "";',
    '    SUCCESS "";',
    `    NONE ${tls.clientCertificates.mode === 'required' ? '496' : '""'};`,
    '}',
  ].join('\n');
}

/** nginx answered that it cannot load a set (as opposed to not answering at all). */
export class TlsSetRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TlsSetRefused';
  }
}

/** Writes the first pair where nginx.conf names it, readable by its owner only (it holds the private key). */
export function writePlaceholder(dir: string, pair: CertificatePair): void {
  for (const [file, text] of [
    [PLACEHOLDER_CERT, pair.certPem],
    [PLACEHOLDER_KEY, pair.keyPem],
  ] as const) {
    const target = path.join(dir, file);
    writeFileSync(target, text, { mode: 0o600 });
    // An existing file keeps its mode through writeFileSync: make sure.
    chmodSync(target, 0o600);
  }
}

/**
 * The certificates graygate serves through nginx: read and checked at construction (a ConfigError
 * naming each file that cannot be served), watched, and re-read on a change. A pair that no longer
 * loads (missing, unparsable, mismatched, expired) is refused with its file named and its previous
 * version stays; what loads is pushed to nginx by `push` for new handshakes.
 */
export class OpenRestyTlsCertificates extends WatchedTlsFiles {
  /** The pair written as nginx.conf's certificate. */
  private readonly placeholder: CertificatePair;
  private version = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    settings: TlsSettings,
    logger: Logger,
    /** Delivers a set to nginx; rejects with TlsSetRefused when nginx refused it, with another error when it could not be reached. */
    private readonly push: (message: TlsSetMessage) => Promise<void>,
  ) {
    super(settings, logger);
    this.placeholder = this.pairs[0]!;
  }

  /** The pair nginx.conf names (the first). */
  get first(): CertificatePair {
    return this.placeholder;
  }

  /** The set as it stands, with a version higher than any before (also across restarts of graygate, for an nginx it attaches to). */
  message(): TlsSetMessage {
    this.version = Math.max(this.version + 1, Date.now());
    const only = this.pairs.length === 1 ? this.pairs[0]! : undefined;
    return {
      format: 'graygate-openresty-tls/1',
      version: this.version,
      certificates: this.pairs.map((pair) => ({ cert: pair.certPem, key: pair.keyPem, names: pair.names })),
      placeholder: only !== undefined && only.certPem === this.placeholder.certPem && only.keyPem === this.placeholder.keyPem,
      ...(this.ca !== undefined ? { ca: this.ca } : {}),
    };
  }

  /** Watches every certificate, key and CA file; a change reloads once the burst of writes settles. */
  watch(): void {
    this.watchFiles();
  }

  /** Reads the files again and pushes what changed and loads; resolves with whether nginx took a new set. */
  async reload(): Promise<boolean> {
    const next = this.reread();
    if (next === undefined) return false;
    const before = { pairs: this.pairs, ca: this.ca };
    this.pairs = next.pairs;
    this.ca = next.ca;
    try {
      await this.push(this.message());
    } catch (error) {
      if (!(error instanceof TlsSetRefused)) {
        // nginx did not answer (busy, or its control socket briefly gone): the files are good, so
        // they stay current here and are pushed again until nginx takes them.
        this.logger.warn({ event: 'tls-push-failed', err: error }, `could not hand the reloaded certificates to nginx, trying again: ${(error as Error).message}`);
        this.retryPush();
        return false;
      }
      // nginx's OpenSSL refused what the checks let through (a key type it does not take): keep the old.
      this.pairs = before.pairs;
      this.ca = before.ca;
      this.refuse(this.settings.certificates[0]!.cert, `nginx could not load the new certificates: ${(error as Error).message}`);
      return false;
    }
    this.reloaded('TLS certificates reloaded in nginx: new connections use them, open ones keep theirs');
    return true;
  }

  private retryPush(): void {
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      if (this.closed) return;
      this.push(this.message()).then(
        () => {
          this.appliedReloads++;
          this.logger.info({ event: 'tls-reloaded' }, 'TLS certificates reloaded in nginx: new connections use them, open ones keep theirs');
        },
        (error: unknown) => {
          if (error instanceof TlsSetRefused) this.refuse(this.settings.certificates[0]!.cert, `nginx could not load the new certificates: ${error.message}`);
          else this.retryPush();
        },
      );
    }, 1_000);
    this.retryTimer.unref();
  }

  override close(): void {
    super.close();
    this.closed = true;
    clearTimeout(this.retryTimer);
  }
}

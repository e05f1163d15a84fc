import { createHash, createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { Upstream, UpstreamTls } from '../config/schema.js';

/**
 * The TLS material of one upstream, read from the files its `tls` section names: what a client
 * connection to its https:// servers needs (Node's `tls.connect` option names), checked before
 * use so a bad file is reported with its field and path instead of as a failed handshake.
 * Runtime-neutral: Node's pools, upgrade tunnels and Bun's fetch all take these.
 */
export interface UpstreamTlsMaterial {
  /** Trusted CA certificates (PEM); undefined: the system CAs. */
  readonly ca: string | undefined;
  /** Client certificate chain and key (PEM) for servers that ask for one. */
  readonly cert: string | undefined;
  readonly key: string | undefined;
  /** SNI and the name checked against the certificate; undefined: the server URL's host. */
  readonly servername: string | undefined;
  readonly rejectUnauthorized: boolean;
  /** Changes whenever any of the above does: part of a pool's key, so new files get new connections. */
  readonly digest: string;
}

/** An upstream's TLS files could not be used; `code` is what the data plane classifies it by. */
export class UpstreamTlsError extends Error {
  readonly code = 'GG_TLS_FILES';
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Parses every certificate of a PEM text; throws naming `where` when there is none or one is broken. */
function certificates(text: string, where: string): X509Certificate[] {
  const blocks = text.match(PEM_CERTIFICATE);
  if (blocks === null) throw new UpstreamTlsError(`${where}: no PEM certificate (-----BEGIN CERTIFICATE-----) in the file`);
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (error) {
      throw new UpstreamTlsError(`${where}: certificate ${i + 1} of the file does not parse (${(error as Error).message})`, { cause: error });
    }
  });
}

function readPem(file: string, where: string): string {
  const absolute = path.resolve(file);
  try {
    return readFileSync(absolute, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new UpstreamTlsError(`${where}: cannot read ${absolute} (${code ?? (error as Error).message})`, { cause: error });
  }
}

/**
 * Reads and checks the files of `upstream.tls` (`at` is the field path for messages, e.g.
 * `upstreams.api.tls`): the CA bundle holds certificates, the client certificate parses, its key
 * parses and belongs to it. Throws UpstreamTlsError naming the field and file. Synchronous: it
 * runs when a routing document is applied or validated, never per request.
 */
export function loadUpstreamTls(tls: UpstreamTls | undefined, at: string): UpstreamTlsMaterial {
  if (tls === undefined) {
    return { ca: undefined, cert: undefined, key: undefined, servername: undefined, rejectUnauthorized: true, digest: 'system' };
  }
  const hash = createHash('sha256');
  let ca: string | undefined;
  if (tls.ca !== undefined) {
    const where = `${at}.ca`;
    ca = readPem(tls.ca, where);
    certificates(ca, `${where} (${path.resolve(tls.ca)})`);
  }
  let cert: string | undefined;
  let key: string | undefined;
  if (tls.cert !== undefined && tls.key !== undefined) {
    cert = readPem(tls.cert, `${at}.cert`);
    const leaf = certificates(cert, `${at}.cert (${path.resolve(tls.cert)})`)[0]!;
    key = readPem(tls.key, `${at}.key`);
    let keyObject: KeyObject;
    try {
      keyObject = createPrivateKey(key);
    } catch (error) {
      throw new UpstreamTlsError(`${at}.key (${path.resolve(tls.key)}): not a usable unencrypted PEM private key (${(error as Error).message})`, { cause: error });
    }
    if (!leaf.checkPrivateKey(keyObject)) {
      throw new UpstreamTlsError(`${at}.key (${path.resolve(tls.key)}) is not the private key of ${at}.cert (${path.resolve(tls.cert)})`);
    }
  }
  for (const part of [ca ?? '', cert ?? '', key ?? '', tls.serverName ?? '', String(tls.verify)]) hash.update(part).update('\0');
  return { ca, cert, key, servername: tls.serverName, rejectUnauthorized: tls.verify, digest: hash.digest('hex').slice(0, 16) };
}

/** True when the upstream has at least one https:// server (the only ones TLS settings apply to). */
export function hasTlsServers(upstream: Upstream): boolean {
  return upstream.servers.some((server) => server.startsWith('https:'));
}

/**
 * Problems with the TLS files of every upstream of a routing document, one `path: message` line
 * each (for `graygate validate`); empty when all are usable.
 */
export function upstreamTlsIssues(upstreams: Readonly<Record<string, Upstream>>): string[] {
  const issues: string[] = [];
  for (const [name, upstream] of Object.entries(upstreams)) {
    if (upstream.tls === undefined) continue;
    try {
      loadUpstreamTls(upstream.tls, `upstreams.${name}.tls`);
    } catch (error) {
      if (!(error instanceof UpstreamTlsError)) throw error;
      issues.push(error.message);
    }
  }
  return issues;
}

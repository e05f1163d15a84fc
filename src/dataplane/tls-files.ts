import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { TlsSettings } from '../config/schema.js';

/**
 * Reading and checking the TLS listener's files, for every runtime and for `graygate validate`:
 * a certificate and its key must exist, parse, and belong together; a CA bundle must hold at
 * least one certificate. Nothing here serves TLS; the listeners build their contexts from what
 * this returns.
 */

/** A file that cannot be used, and why; `file` is the path as configured, resolved. */
export class TlsFileError extends Error {
  constructor(
    readonly file: string,
    /** The settings path of the field naming the file, e.g. `tls.certificates[0].key`. */
    readonly field: string,
    message: string,
  ) {
    super(`${field} ${file}: ${message}`);
    this.name = 'TlsFileError';
  }
}

/** A certificate and key that parse and match. */
export interface CertificatePair {
  readonly certPem: string;
  readonly keyPem: string;
  /** Server names it is served for: the configured ones, else the DNS names it lists (lower case). */
  readonly names: readonly string[];
  readonly notAfter: Date;
  readonly subject: string;
}

/** Settings with every TLS file path made absolute against `baseDir` (the config file's directory). */
export function resolveTlsPaths<S extends { tls?: TlsSettings | undefined }>(settings: S, baseDir: string): S {
  const tls = settings.tls;
  if (tls === undefined) return settings;
  const at = (file: string) => path.resolve(baseDir, file);
  return {
    ...settings,
    tls: {
      ...tls,
      certificates: tls.certificates.map((entry) => ({ ...entry, cert: at(entry.cert), key: at(entry.key) })),
      ...(tls.clientCertificates ? { clientCertificates: { ...tls.clientCertificates, ca: at(tls.clientCertificates.ca) } } : {}),
    },
  };
}

function readText(file: string, field: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : (error as Error).message;
    throw new TlsFileError(file, field, why);
  }
}

/** `DNS:a.example, DNS:*.b.example, IP Address:10.0.0.1` → the DNS names, lower case. */
function dnsNamesOf(certificate: X509Certificate): string[] {
  const names: string[] = [];
  for (const entry of (certificate.subjectAltName ?? '').split(',')) {
    const trimmed = entry.trim();
    if (trimmed.startsWith('DNS:')) names.push(trimmed.slice(4).toLowerCase());
  }
  if (names.length > 0) return names;
  // No subjectAltName: the subject's CN is the name (what clients fell back to before SANs).
  const cn = /^CN=(.+)$/m.exec(certificate.subject);
  return cn ? [cn[1]!.trim().toLowerCase()] : [];
}

/**
 * Reads `tls.certificates[index]`: both files exist, the certificate parses (the first of the
 * chain is the server's), the key parses and is the certificate's. Throws TlsFileError naming
 * the file at fault.
 */
export function readCertificatePair(entry: { cert: string; key: string; names?: readonly string[] | undefined }, index: number): CertificatePair {
  const certField = `tls.certificates[${index}].cert`;
  const keyField = `tls.certificates[${index}].key`;
  const certPem = readText(entry.cert, certField);
  const keyPem = readText(entry.key, keyField);
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(certPem);
  } catch (error) {
    throw new TlsFileError(entry.cert, certField, `not a PEM certificate (${(error as Error).message})`);
  }
  let key: ReturnType<typeof createPrivateKey>;
  try {
    key = createPrivateKey(keyPem);
  } catch (error) {
    throw new TlsFileError(entry.key, keyField, `not an unencrypted PEM private key (${(error as Error).message})`);
  }
  if (!certificate.checkPrivateKey(key)) {
    throw new TlsFileError(entry.key, keyField, `is not the key of ${certField} ${entry.cert} (they do not match)`);
  }
  return {
    certPem,
    keyPem,
    names: entry.names && entry.names.length > 0 ? entry.names : dnsNamesOf(certificate),
    notAfter: new Date(certificate.validTo),
    subject: certificate.subject.replace(/\n/g, ', '),
  };
}

/** Reads the client-certificate CA bundle: it must hold at least one certificate. */
export function readCaBundle(file: string): string {
  const field = 'tls.clientCertificates.ca';
  const pem = readText(file, field);
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g);
  if (!blocks) throw new TlsFileError(file, field, 'holds no PEM certificate');
  for (const block of blocks) {
    try {
      new X509Certificate(block);
    } catch (error) {
      throw new TlsFileError(file, field, `holds a certificate that does not parse (${(error as Error).message})`);
    }
  }
  return pem;
}

/** A certificate that expires within this long gets a warning. */
export const EXPIRY_WARNING_DAYS = 14;

/** What to say about a certificate's expiry at `now`: an error once expired, a warning within 14 days. */
export function expiryProblem(pair: CertificatePair, file: string, field: string, now = Date.now()): { level: 'error' | 'warning'; message: string } | undefined {
  const left = pair.notAfter.getTime() - now;
  const day = 86_400_000;
  const date = pair.notAfter.toISOString().slice(0, 10);
  if (left <= 0) return { level: 'error', message: `${field} ${file}: the certificate expired on ${date}` };
  if (left < EXPIRY_WARNING_DAYS * day) {
    return { level: 'warning', message: `${field} ${file}: the certificate expires in ${Math.max(1, Math.floor(left / day))} day(s), on ${date}` };
  }
  return undefined;
}

/**
 * Checks every TLS file of `settings` (paths already absolute): returns the errors (missing,
 * unreadable, unparsable, mismatched, expired) and warnings (expiring within 14 days), each naming
 * its field and file. Used by `graygate validate` and at start.
 */
export function checkTlsFiles(tls: TlsSettings, now = Date.now()): { errors: string[]; warnings: string[] } {
  const errors: string[] = [];
  const warnings: string[] = [];
  tls.certificates.forEach((entry, index) => {
    try {
      const pair = readCertificatePair(entry, index);
      const problem = expiryProblem(pair, entry.cert, `tls.certificates[${index}].cert`, now);
      if (problem?.level === 'error') errors.push(problem.message);
      else if (problem) warnings.push(problem.message);
      if (pair.names.length === 0 && index > 0) {
        warnings.push(`tls.certificates[${index}].cert ${entry.cert}: lists no DNS name, so no server name selects it; give it names`);
      }
    } catch (error) {
      if (error instanceof TlsFileError) errors.push(error.message);
      else throw error;
    }
  });
  if (tls.clientCertificates) {
    try {
      readCaBundle(tls.clientCertificates.ca);
    } catch (error) {
      if (error instanceof TlsFileError) errors.push(error.message);
      else throw error;
    }
  }
  return { errors, warnings };
}

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** A certificate and its key, as files in the test's temp dir (and their PEM text). */
export interface CertFiles {
  readonly cert: string;
  readonly key: string;
  readonly certPem: string;
  readonly keyPem: string;
}

/**
 * Two private CAs and certificates they sign, made by `openssl` in a fresh temp dir when a test
 * starts (no private key is ever committed): EC P-256, valid for two days.
 */
export interface TestPki {
  readonly dir: string;
  /** The CA that signs the servers' and the client's certificates. */
  readonly ca: CertFiles;
  /** A CA that signed nothing here: trusting only it must refuse the servers. */
  readonly otherCa: CertFiles;
  /** A server certificate for `localhost` and IP 127.0.0.1. */
  readonly server: CertFiles;
  /** A server certificate for the DNS name `api.internal.test` only (no IP entry). */
  readonly namedServer: CertFiles;
  /** A client certificate (CN graygate-client) for mTLS. */
  readonly client: CertFiles;
  /** Removes the temp dir. */
  remove(): void;
}

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

function files(dir: string, name: string): CertFiles {
  const cert = path.join(dir, `${name}.crt`);
  const key = path.join(dir, `${name}.key`);
  return { cert, key, certPem: readFileSync(cert, 'utf8'), keyPem: readFileSync(key, 'utf8') };
}

function makeCa(dir: string, name: string, subject: string): void {
  openssl(dir, ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', `${name}.key`]);
  openssl(dir, [
    'req', '-x509', '-new', '-key', `${name}.key`, '-subj', subject, '-days', '2', '-out', `${name}.crt`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
}

function makeLeaf(dir: string, name: string, subject: string, extensions: string, ca: string): void {
  openssl(dir, ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', `${name}.key`]);
  openssl(dir, ['req', '-new', '-key', `${name}.key`, '-subj', subject, '-out', `${name}.csr`]);
  writeFileSync(path.join(dir, `${name}.ext`), `${extensions}\nbasicConstraints=CA:FALSE\n`);
  openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-days', '2', '-extfile', `${name}.ext`, '-out', `${name}.crt`]);
}

/** Makes the test PKI with `openssl` (a few hundred ms). */
export function makeTestPki(): TestPki {
  const dir = mkdtempSync(path.join(tmpdir(), 'graygate-pki-'));
  makeCa(dir, 'ca', '/CN=graygate test CA');
  makeCa(dir, 'other-ca', '/CN=graygate unrelated CA');
  makeLeaf(dir, 'server', '/CN=localhost', 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth', 'ca');
  makeLeaf(dir, 'named-server', '/CN=api.internal.test', 'subjectAltName=DNS:api.internal.test\nextendedKeyUsage=serverAuth', 'ca');
  makeLeaf(dir, 'client', '/CN=graygate-client', 'extendedKeyUsage=clientAuth', 'ca');
  return {
    dir,
    ca: files(dir, 'ca'),
    otherCa: files(dir, 'other-ca'),
    server: files(dir, 'server'),
    namedServer: files(dir, 'named-server'),
    client: files(dir, 'client'),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

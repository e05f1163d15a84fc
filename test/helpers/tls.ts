import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';

/**
 * Certificates for tests, made with the openssl CLI into a temp dir at run time (no private key is
 * committed). EC P-256 keys: quick to generate on a loaded box.
 */
export interface CertFiles {
  readonly cert: string;
  readonly key: string;
  /** The certificate's PEM text. */
  readonly pem: string;
}

export interface CertFactory {
  readonly dir: string;
  /** A CA (self-signed) to sign server or client certificates with. */
  ca(name: string): CertFiles;
  /**
   * A certificate for `names` (DNS subjectAltNames; the first is also the CN), signed by `ca` or
   * self-signed; `days` of validity from now (negative: already expired), `cn` to override it.
   */
  cert(file: string, options: { names: string[]; ca?: CertFiles; days?: number; clientAuth?: boolean; noSan?: boolean }): CertFiles;
  /** A fresh key that belongs to no certificate. */
  strayKey(file: string): string;
  remove(): void;
}

export function certFactory(): CertFactory {
  const dir = mkdtempSync(path.join(tmpdir(), 'graygate-tls-'));
  const openssl = (args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const newKey = (file: string) => openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', file]);
  return {
    dir,
    ca(name) {
      const key = path.join(dir, `${name}.key`);
      const cert = path.join(dir, `${name}.pem`);
      newKey(key);
      openssl(['req', '-x509', '-new', '-key', key, '-out', cert, '-days', '30', '-subj', `/CN=${name}`, '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
      return { cert, key, pem: readFileSync(cert, 'utf8') };
    },
    cert(file, options) {
      const key = path.join(dir, `${file}.key`);
      const cert = path.join(dir, `${file}.pem`);
      const csr = path.join(dir, `${file}.csr`);
      const ext = path.join(dir, `${file}.ext`);
      newKey(key);
      openssl(['req', '-new', '-key', key, '-out', csr, '-subj', `/CN=${options.names[0]}`]);
      const lines = [options.clientAuth ? 'extendedKeyUsage=clientAuth' : 'extendedKeyUsage=serverAuth'];
      if (!options.noSan) lines.push(`subjectAltName=${options.names.map((name) => (/^\d+\.\d+\.\d+\.\d+$/.test(name) ? `IP:${name}` : `DNS:${name}`)).join(',')}`);
      writeFileSync(ext, `${lines.join('\n')}\n`);
      const days = options.days ?? 30;
      // `openssl x509` (3.0) cannot date a certificate in the past; `openssl ca` can, with
      // -startdate/-enddate in its YYMMDDHHMMSSZ form, which an expired certificate needs.
      const stamp = (ms: number) => `${new Date(ms).toISOString().replace(/[-:T]/g, '').slice(2, 14)}Z`;
      const notBefore = days > 0 ? Date.now() - 3_600_000 : Date.now() + (days - 2) * 86_400_000;
      const notAfter = Date.now() + days * 86_400_000;
      const conf = path.join(dir, `${file}.cnf`);
      const db = path.join(dir, `${file}.index`);
      writeFileSync(db, '');
      writeFileSync(
        conf,
        ['[ca]', 'default_ca = d', '[d]', `database = ${db}`, `new_certs_dir = ${dir}`, `serial = ${path.join(dir, `${file}.serial`)}`, 'default_md = sha256', 'policy = p', 'unique_subject = no', '[p]', 'commonName = supplied', ''].join('\n'),
      );
      const signer = options.ca ? ['-cert', options.ca.cert, '-keyfile', options.ca.key] : ['-selfsign', '-keyfile', key];
      openssl(['ca', '-batch', '-notext', '-config', conf, '-in', csr, ...signer, '-out', cert, '-extfile', ext, '-startdate', stamp(notBefore), '-enddate', stamp(notAfter), '-create_serial']);
      return { cert, key, pem: readFileSync(cert, 'utf8') };
    },
    strayKey(file) {
      const key = path.join(dir, `${file}.key`);
      newKey(key);
      return key;
    },
    remove() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The certificate the server presents to a new TLS connection asking for `servername`. */
export function servedCertificate(port: number, servername: string | undefined, options: tls.ConnectionOptions = {}): Promise<tls.PeerCertificate> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ...(servername ? { servername } : {}), rejectUnauthorized: false, ALPNProtocols: ['http/1.1'], ...options }, () => {
      const certificate = socket.getPeerCertificate();
      socket.end();
      resolve(certificate);
    });
    socket.on('error', reject);
  });
}

export interface H2Reply {
  status: number;
  headers: http2.IncomingHttpHeaders;
  body: Buffer;
}

/** One HTTP/2 request on `session` (an open client session), body buffered. */
export function h2Request(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body?: string | Buffer): Promise<H2Reply> {
  return new Promise((resolve, reject) => {
    const stream = session.request(headers, { endStream: body === undefined });
    const chunks: Buffer[] = [];
    let responseHeaders: http2.IncomingHttpHeaders = {};
    stream.on('response', (h) => (responseHeaders = h));
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('error', reject);
    stream.on('end', () => resolve({ status: Number(responseHeaders[':status']), headers: responseHeaders, body: Buffer.concat(chunks) }));
    if (body !== undefined) stream.end(body);
  });
}

/** An HTTP/2 client session to the TLS listener on `port` (certificate not verified unless `ca` is given). */
export function h2Connect(port: number, options: { servername?: string; ca?: string } = {}): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`https://127.0.0.1:${port}`, {
      ...(options.servername ? { servername: options.servername } : {}),
      ...(options.ca ? { ca: options.ca } : { rejectUnauthorized: false }),
    });
    session.once('connect', () => resolve(session));
    session.once('error', reject);
  });
}

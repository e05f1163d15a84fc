import tls from 'node:tls';

/**
 * A raw HTTP/2 client over TLS (ALPN h2), for the frames node:http2's client will not send: a
 * stream reset right after its headers in a tight loop, header blocks that never end. Frames are
 * RFC 9113 §4.1: 24-bit length, type, flags, 31-bit stream id.
 */

export const FRAME = { DATA: 0x0, HEADERS: 0x1, RST_STREAM: 0x3, SETTINGS: 0x4, GOAWAY: 0x7, CONTINUATION: 0x9 } as const;
export const FLAG = { END_STREAM: 0x1, END_HEADERS: 0x4, ACK: 0x1 } as const;
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

/** An HPACK literal field without indexing, new name (RFC 7541 §6.2.2); short names and values only. */
function literal(name: string, value: string): Buffer {
  return Buffer.concat([Buffer.from([0x00, name.length]), Buffer.from(name, 'latin1'), Buffer.from([value.length]), Buffer.from(value, 'latin1')]);
}

/** HPACK block of `GET https://<authority>/`: static-table :method GET (2), :path / (4), :scheme https (7). */
export function getRequestBlock(authority: string): Buffer {
  return Buffer.concat([Buffer.from([0x82, 0x84, 0x87]), Buffer.from([0x01, authority.length]), Buffer.from(authority, 'latin1')]);
}

/** A header field to pad CONTINUATION frames with: `x-pad: <value>` (value under 127 bytes). */
export function padField(value: string): Buffer {
  return literal('x-pad', value);
}

export function rstStream(streamId: number, errorCode = 0x8 /* CANCEL */): Buffer {
  const payload = Buffer.alloc(4);
  payload.writeUInt32BE(errorCode, 0);
  return frame(FRAME.RST_STREAM, 0, streamId, payload);
}

export interface RawH2 {
  readonly socket: tls.TLSSocket;
  /** Types of the frames received so far (GOAWAY = 7). */
  readonly received: number[];
  /** The GOAWAY error code, once one arrived. */
  goawayCode(): number | undefined;
  readonly closed: Promise<void>;
  isClosed(): boolean;
  write(bytes: Buffer): boolean;
}

/** Opens a TLS connection with ALPN h2 and sends the preface and an empty SETTINGS frame. */
export function rawH2Connect(port: number): Promise<RawH2> {
  return new Promise((resolve, reject) => {
    const received: number[] = [];
    let goaway: number | undefined;
    let closed = false;
    let pending = Buffer.alloc(0);
    const socket = tls.connect({ host: '127.0.0.1', port, ALPNProtocols: ['h2'], rejectUnauthorized: false }, () => {
      if (socket.alpnProtocol !== 'h2') return reject(new Error(`ALPN chose ${String(socket.alpnProtocol)}, not h2`));
      socket.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0)]));
      resolve({
        socket,
        received,
        goawayCode: () => goaway,
        closed: closedPromise,
        isClosed: () => closed,
        write: (bytes) => (closed ? false : socket.write(bytes)),
      });
    });
    const closedPromise = new Promise<void>((done) => socket.once('close', () => {
      closed = true;
      done();
    }));
    socket.on('error', (error) => {
      if (!closed && socket.alpnProtocol === undefined) reject(error);
    });
    socket.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 9) {
        const length = pending.readUIntBE(0, 3);
        if (pending.length < 9 + length) break;
        const type = pending[3]!;
        received.push(type);
        if (type === FRAME.SETTINGS && (pending[4]! & FLAG.ACK) === 0) socket.write(frame(FRAME.SETTINGS, FLAG.ACK, 0));
        if (type === FRAME.GOAWAY && length >= 8) goaway ??= pending.readUInt32BE(9 + 4);
        pending = pending.subarray(9 + length);
      }
    });
  });
}

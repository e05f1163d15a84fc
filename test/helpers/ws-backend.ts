import { createHash } from 'node:crypto';
import type http from 'node:http';
import type { Duplex } from 'node:stream';
import type { Backend } from './backend.js';

// A WebSocket server (RFC 6455) on a test backend's 'upgrade' event, with no dependency: frames
// of any length, masked or not, fragmented or not. It is the upstream end of the tunnels the
// adapters' tests drive, so it records what it saw (handshake headers, close codes).

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export interface WsFrame {
  readonly opcode: number;
  readonly payload: Buffer;
}

/** Encodes one final frame; `mask` for a client's frames (servers send theirs unmasked). */
export function encodeFrame(opcode: number, payload: Buffer, mask = false): Buffer {
  const length = payload.length;
  const lengthBytes = length < 126 ? Buffer.from([length]) : length < 65_536 ? Buffer.from([126, length >> 8, length & 0xff]) : Buffer.concat([Buffer.from([127]), bigLength(length)]);
  lengthBytes[0]! |= mask ? 0x80 : 0;
  if (!mask) return Buffer.concat([Buffer.from([0x80 | opcode]), lengthBytes, payload]);
  const key = Buffer.from([1, 2, 3, 4]);
  const masked = Buffer.alloc(length);
  for (let i = 0; i < length; i++) masked[i] = payload[i]! ^ key[i % 4]!;
  return Buffer.concat([Buffer.from([0x80 | opcode]), lengthBytes, key, masked]);
}

function bigLength(length: number): Buffer {
  const out = Buffer.alloc(8);
  out.writeBigUInt64BE(BigInt(length));
  return out;
}

export function closePayload(code: number, reason: string): Buffer {
  const out = Buffer.alloc(2);
  out.writeUInt16BE(code);
  return Buffer.concat([out, Buffer.from(reason)]);
}

/**
 * Cuts whole frames off the front of a byte stream; continuation frames are joined into one
 * message under the first frame's opcode.
 */
export class FrameReader {
  private buffer: Buffer = Buffer.alloc(0);
  /** Chunks not joined yet: a large frame is joined once, when it is complete (not per chunk). */
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Bytes the frame at the front needs in all, once its header is known. */
  private needed = 0;
  private fragments: Buffer[] = [];
  private fragmentOpcode = 0;

  push(chunk: Buffer): WsFrame[] {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.buffer.length + this.pendingBytes < this.needed) return [];
    this.buffer = Buffer.concat([this.buffer, ...this.pending]);
    this.pending = [];
    this.pendingBytes = 0;
    this.needed = 0;
    const frames: WsFrame[] = [];
    for (;;) {
      const data = this.buffer;
      if (data.length < 2) break;
      const fin = (data[0]! & 0x80) !== 0;
      const opcode = data[0]! & 0x0f;
      const masked = (data[1]! & 0x80) !== 0;
      let length = data[1]! & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (data.length < 4) break;
        length = data.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (data.length < 10) break;
        length = Number(data.readBigUInt64BE(2));
        offset = 10;
      }
      const maskKey = masked ? data.subarray(offset, offset + 4) : undefined;
      if (masked) offset += 4;
      if (data.length < offset + length) {
        this.needed = offset + length;
        break;
      }
      let payload = Buffer.from(data.subarray(offset, offset + length));
      if (maskKey !== undefined) for (let i = 0; i < payload.length; i++) payload[i] = payload[i]! ^ maskKey[i % 4]!;
      this.buffer = data.subarray(offset + length);
      if (opcode === 0) {
        this.fragments.push(payload);
        if (!fin) continue;
        payload = Buffer.concat(this.fragments);
        this.fragments = [];
        frames.push({ opcode: this.fragmentOpcode, payload });
      } else if (!fin) {
        this.fragmentOpcode = opcode;
        this.fragments = [payload];
      } else {
        frames.push({ opcode, payload });
      }
    }
    return frames;
  }
}

export interface WsUpstream {
  /** Handshake requests seen, oldest first. */
  readonly handshakes: { url: string; headers: http.IncomingHttpHeaders }[];
  /** Close frames received from the gateway: code (1005 when none) and reason. */
  readonly closes: { code: number; reason: string }[];
  /** Connections that ended without a close frame from the gateway. */
  readonly dropsWithoutClose: number;
  /** Open upgraded sockets. */
  readonly sockets: Set<Duplex>;
}

/**
 * Makes `backend` a WebSocket server. Paths: `/refuse` answers 403 with a body; otherwise 101,
 * choosing subprotocol `chat.v2` when offered. Messages: a text `close:CODE:REASON` makes it
 * close with that code; `flood:N` sends N binary messages of 64 KiB at once; `pause:MS` stops
 * reading for MS milliseconds; any other text
 * comes back as `NAME:text`, binary comes back as it was.
 */
export function serveWebSockets(backend: Backend): WsUpstream {
  const state = { handshakes: [] as WsUpstream['handshakes'], closes: [] as WsUpstream['closes'], dropsWithoutClose: 0, sockets: new Set<Duplex>() };
  backend.server.on('upgrade', (req: http.IncomingMessage, socket: Duplex) => {
    socket.on('error', () => socket.destroy());
    state.handshakes.push({ url: req.url ?? '', headers: req.headers });
    if (req.url === '/refuse') {
      socket.end('HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 6\r\n\r\nnot ok');
      return;
    }
    const accept = createHash('sha1').update(`${req.headers['sec-websocket-key']}${GUID}`).digest('base64');
    const offered = (req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim());
    const protocol = offered.includes('chat.v2') ? 'Sec-WebSocket-Protocol: chat.v2\r\n' : '';
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n${protocol}x-backend: ${backend.name}\r\n\r\n`);
    state.sockets.add(socket);
    let sawClose = false;
    socket.on('close', () => {
      state.sockets.delete(socket);
      if (!sawClose) state.dropsWithoutClose++;
    });
    const reader = new FrameReader();
    socket.on('data', (chunk: Buffer) => {
      for (const frame of reader.push(chunk)) {
        if (frame.opcode === 0x8) {
          sawClose = true;
          const code = frame.payload.length >= 2 ? frame.payload.readUInt16BE(0) : 1005;
          state.closes.push({ code, reason: frame.payload.subarray(2).toString() });
          socket.end(encodeFrame(0x8, frame.payload.subarray(0, 2)));
        } else if (frame.opcode === 0x9) {
          socket.write(encodeFrame(0xa, frame.payload));
        } else if (frame.opcode === 0x1) {
          const text = frame.payload.toString();
          const close = /^close:(\d+):(.*)$/.exec(text);
          const flood = /^flood:(\d+)$/.exec(text);
          const pause = /^pause:(\d+)$/.exec(text);
          if (close) {
            socket.write(encodeFrame(0x8, closePayload(Number(close[1]), close[2]!)));
          } else if (pause) {
            // Stop reading for a while: what the gateway is sent meanwhile has to wait somewhere.
            socket.pause();
            setTimeout(() => socket.resume(), Number(pause[1]));
          } else if (flood) {
            const chunk64k = Buffer.alloc(64 * 1024, 7);
            for (let i = 0; i < Number(flood[1]); i++) socket.write(encodeFrame(0x2, chunk64k));
          } else {
            socket.write(encodeFrame(0x1, Buffer.from(`${backend.name}:${text}`)));
          }
        } else if (frame.opcode === 0x2) {
          socket.write(encodeFrame(0x2, frame.payload));
        }
      }
    });
    socket.on('end', () => socket.end());
  });
  return state;
}

import { randomBytes } from 'node:crypto';

/** The length node:tls wants for `ticketKeys`: a 16-byte key name, a 16-byte HMAC key and a 16-byte AES key. */
export const TICKET_KEYS_BYTES = 48;

let shared: Buffer | undefined;

/**
 * The keys TLS session tickets are sealed with in this process. A client resumes a session with
 * the ticket it got from whichever process served it; under `--workers` its next connection may
 * land on another worker, which can open the ticket only if it holds the same keys. node:cluster
 * shares a TLS server's keys itself, but only for a server that listens itself: the TLS server
 * behind a PROXY protocol front never does, so each worker had keys of its own and, with the
 * strict round robin, a client almost never resumed. The primary therefore makes the keys once
 * and hands them to every worker (`useTicketKeys`), and every secure context of the listener
 * (each certificate's, and each one made again on a reload) is built with them, so a ticket
 * outlives a certificate reload too. A single process makes its own on first use.
 */
export function ticketKeys(): Buffer {
  shared ??= randomBytes(TICKET_KEYS_BYTES);
  return shared;
}

/** Makes `keys` (from the primary) this process's ticket keys; refuses keys of the wrong length. */
export function useTicketKeys(keys: Uint8Array): void {
  if (keys.length !== TICKET_KEYS_BYTES) throw new Error(`TLS ticket keys must be ${TICKET_KEYS_BYTES} bytes, got ${keys.length}`);
  shared = Buffer.from(keys);
}

/** Fresh keys, for a primary to hand to its workers. */
export function newTicketKeys(): Buffer {
  return randomBytes(TICKET_KEYS_BYTES);
}

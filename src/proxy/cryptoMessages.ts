/**
 * Messages between the proxy and its crypto worker threads (cryptoWorker.ts), in one file
 * (piscina style). A task is one record's AES-256-GCM seal or open, detached from its envelope
 * (SealJob / OpenJob in src/protocol/envelope.ts); buffers arrive in the worker as Uint8Array.
 */
export type CryptoTask =
  | { op: 'seal'; key: Uint8Array; nonce: Uint8Array; aad: Uint8Array; header: Uint8Array; plaintext: Uint8Array }
  | { op: 'open'; key: Uint8Array; nonce: Uint8Array; aad: Uint8Array; record: Uint8Array; length: number }

/** seal: the record bytes; open: the plaintext, or null when the record failed authentication. */
export type CryptoResult = Uint8Array | null

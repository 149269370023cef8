/**
 * Wire-protocol constants shared by the device SDK, the security server and the proxy.
 * Specified in docs/protocol.md; changing any value here changes the protocol version.
 */
export const PROTOCOL_VERSION = 1

/** Largest plaintext carried by one record (64 KiB). */
export const MAX_RECORD_PLAINTEXT = 64 * 1024
export const TAG_LENGTH = 16
export const RECORD_HEADER_LENGTH = 4
export const NONCE_LENGTH = 12
export const KEY_LENGTH = 32

/** Envelope preamble lengths, by kind. */
export const REQUEST_PREAMBLE_LENGTH = 20
export const RESPONSE_PREAMBLE_LENGTH = 28
export const RESPONSE_SALT_LENGTH = 16

export const MAGIC_0 = 0x47 // 'G'
export const MAGIC_1 = 0x48 // 'H'

export const KIND_REQUEST = 0x01
export const KIND_RESPONSE = 0x02

export const DIRECTION_C2S = 0x01
export const DIRECTION_S2C = 0x02

export const FLAG_FINAL = 0x01
export const FLAG_HEAD = 0x02
/**
 * On a head record only: the plaintext is `u16 head length || head || body bytes` (docs/protocol.md
 * §7.2). One record instead of two for a small message: half the AES-GCM operations. A response
 * is joined only when its request's head record was (a sender of JOINED reads it).
 */
export const FLAG_JOINED = 0x04
export const FLAGS_KNOWN = FLAG_FINAL | FLAG_HEAD | FLAG_JOINED
/** Bytes of the head-length prefix of a joined head record. */
export const JOINED_PREFIX_LENGTH = 2

/** Session ids are 16 random bytes (128 bits), base64url without padding: 22 characters. */
export const SESSION_ID_BYTES = 16
export const SESSION_ID_LENGTH = 22
export const NONCE_BYTES = 16

/** HTTP header carrying the session id on every proxied request. */
export const SESSION_HEADER = 'gatehouse-session'
/** Media type of envelope bodies, both directions. */
export const ENVELOPE_MEDIA_TYPE = 'application/vnd.gatehouse.envelope'

/** HKDF info labels. Each is prefixed so keys for different purposes never coincide. */
export const LABEL_ENROLL = 'gatehouse/v1 enroll'
export const LABEL_ENROLL_CONFIRM = 'gatehouse/v1 enroll-confirm'
export const LABEL_SESSION_OPEN = 'gatehouse/v1 session-open'
export const LABEL_SESSION_ACCEPT = 'gatehouse/v1 session-accept'
export const LABEL_SESSION_CLOSE = 'gatehouse/v1 session-close'
export const LABEL_C2S = 'gatehouse/v1 c2s'
export const LABEL_S2C = 'gatehouse/v1 s2c'
export const LABEL_RESPONSE = 'gatehouse/v1 response'
export const LABEL_COMMAND_ACK = 'gatehouse/v1 command-ack'

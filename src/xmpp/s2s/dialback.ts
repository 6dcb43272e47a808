/**
 * XEP-0220 Server Dialback 1.1.1 keys, generated as XEP-0185 (Dialback Key Generation and
 * Validation 1.0) recommends:
 *
 *   key = HMAC-SHA256( SHA256(Secret), { Receiving Server, ' ', Originating Server, ' ', Stream ID } )
 *
 * hex-encoded. The secret is the installation's (dataDir/secret.key), so a restarted server still
 * verifies the keys it handed out before; it never leaves the server.
 */
import { createHash, createHmac, timingSafeEqual } from "node:crypto";

export const NS_DIALBACK = "jabber:server:dialback";
/** XEP-0220 §2.1: the receiving server's stream feature. */
export const NS_DIALBACK_FEATURE = "urn:xmpp:features:dialback";

export function dialbackKey(secret: Buffer, receiving: string, originating: string, streamId: string): string {
  const key = createHash("sha256").update(secret).digest("hex");
  return createHmac("sha256", key).update(`${receiving} ${originating} ${streamId}`).digest("hex");
}

/** Compares a key a peer sent with the expected one in constant time. */
export function keysEqual(given: string, expected: string): boolean {
  const a = Buffer.from(given.trim());
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

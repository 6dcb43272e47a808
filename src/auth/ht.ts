/**
 * The Hashed Token SASL mechanisms (draft-schmaus-kitten-sasl-ht-08), server side, as XEP-0484
 * FAST uses them: HT-SHA-256-NONE, and with channel binding -UNIQ (tls-unique), -EXPR
 * (tls-exporter), -ENDP (tls-server-end-point). One round trip:
 *
 *   client: authcid NUL HMAC(token, "Initiator" || cb-data)
 *   server: HMAC(token, "Responder" || cb-data)   (in the success's additional data)
 *
 * The server keeps SHA-256(token) only; for tokens longer than SHA-256's 64-byte block RFC 2104 §2
 * keys HMAC with exactly that hash, so both sides compute the same values (see FAST_TOKEN_BYTES).
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import type { ChannelBindingType } from "./sasl.js";

export const HT_MECHANISMS = ["HT-SHA-256-ENDP", "HT-SHA-256-EXPR", "HT-SHA-256-UNIQ", "HT-SHA-256-NONE"] as const;
export type HtMechanism = (typeof HT_MECHANISMS)[number];

/** The channel binding each HT mechanism uses (none for -NONE). */
export function htChannelBinding(mechanism: HtMechanism): ChannelBindingType | "tls-unique" | undefined {
  switch (mechanism) {
    case "HT-SHA-256-ENDP": return "tls-server-end-point";
    case "HT-SHA-256-EXPR": return "tls-exporter";
    case "HT-SHA-256-UNIQ": return "tls-unique";
    case "HT-SHA-256-NONE": return undefined;
  }
}

export function isHtMechanism(name: string): name is HtMechanism {
  return (HT_MECHANISMS as readonly string[]).includes(name);
}

/** The client's message: its authentication identity and its proof. undefined when malformed. */
export function parseHtInitial(data: Buffer | undefined): { authcid: string; proof: Buffer } | undefined {
  if (!data) return undefined;
  const nul = data.indexOf(0);
  if (nul <= 0 || data.length - nul - 1 !== 32) return undefined;
  return { authcid: data.subarray(0, nul).toString("utf8"), proof: data.subarray(nul + 1) };
}

const mac = (key: Buffer, label: string, cb: Buffer) => createHmac("sha256", key).update(Buffer.concat([Buffer.from(label), cb])).digest();

/** Constant-time check of the initiator's proof against the stored key (XEP-0484 §6.1). */
export function htVerify(key: Buffer, proof: Buffer, cb: Buffer): boolean {
  const expected = mac(key, "Initiator", cb);
  return proof.length === expected.length && timingSafeEqual(proof, expected);
}

/** The responder message that proves the server knows the token too. */
export function htResponder(key: Buffer, cb: Buffer): Buffer {
  return mac(key, "Responder", cb);
}

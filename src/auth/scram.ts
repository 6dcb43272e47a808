/**
 * SCRAM (RFC 5802; SHA-256 per RFC 7677) — the server side, plus credential derivation.
 * Channel binding per RFC 5929 (tls-server-end-point) and RFC 9266 (tls-exporter).
 */
import { createHash, createHmac, pbkdf2, randomBytes, timingSafeEqual } from "node:crypto";
import { promisify } from "node:util";
import { saslprep } from "@mongodb-js/saslprep";
import type { ScramCredential, ScramCredentials, ScramHash } from "../storage/index.js";

const pbkdf2Async = promisify(pbkdf2);

export const SCRAM_HASHES: readonly ScramHash[] = ["SHA-1", "SHA-256"];
// Prosody's default; RFC 5802 §5.1 suggests at least 4096, which is also our floor.
export const MIN_ITERATIONS = 4096;

const nodeHash = (h: ScramHash) => (h === "SHA-1" ? "sha1" : "sha256");
/** The output length of the hash: the size of a SaltedPassword. */
export const hashLength = (h: ScramHash) => (h === "SHA-1" ? 20 : 32);
export const H = (h: ScramHash, data: Buffer) => createHash(nodeHash(h)).update(data).digest();
export const HMAC = (h: ScramHash, key: Buffer, data: string | Buffer) => createHmac(nodeHash(h), key).update(data).digest();

/** RFC 4013 SASLprep, as RFC 5802 §5.1 requires for passwords; throws on prohibited output. */
export function prepPassword(password: string): string {
  return saslprep(password);
}

export async function saltedPassword(hash: ScramHash, password: string, salt: Buffer, iterations: number): Promise<Buffer> {
  return pbkdf2Async(prepPassword(password), salt, iterations, hashLength(hash), nodeHash(hash));
}

export async function deriveCredential(hash: ScramHash, password: string, iterations: number, salt = randomBytes(16)): Promise<ScramCredential> {
  if (iterations < MIN_ITERATIONS) throw new Error(`SCRAM iteration count must be at least ${MIN_ITERATIONS}`);
  return credentialFromSalted(hash, await saltedPassword(hash, password, salt, iterations), salt, iterations);
}

/** RFC 5802 §3: the keys the server stores, from a SaltedPassword (ours, or a client's in a XEP-0480 upgrade). */
export function credentialFromSalted(hash: ScramHash, salted: Buffer, salt: Buffer, iterations: number): ScramCredential {
  return {
    iterations,
    salt: salt.toString("base64"),
    storedKey: H(hash, HMAC(hash, salted, "Client Key")).toString("base64"),
    serverKey: HMAC(hash, salted, "Server Key").toString("base64"),
  };
}

export async function deriveCredentials(password: string, iterations: number): Promise<Record<ScramHash, ScramCredential>> {
  const [sha1, sha256] = await Promise.all(SCRAM_HASHES.map((h) => deriveCredential(h, password, iterations)));
  return { "SHA-1": sha1!, "SHA-256": sha256! };
}

/**
 * The strongest keys an account has: SHA-256 for accounts made here, SHA-1 for one imported with
 * only SCRAM-SHA-1 keys (XEP-0227 from ejabberd or Prosody). A password checks against these.
 */
export function strongestCredential(credentials: ScramCredentials): { hash: ScramHash; credential: ScramCredential } | undefined {
  for (const hash of [...SCRAM_HASHES].reverse()) {
    const credential = credentials[hash];
    if (credential) return { hash, credential };
  }
  return undefined;
}

/**
 * The keys an account lacks, derived from its password once that password proved right (the
 * next PLAIN login of an imported account). undefined when nothing is missing. The stored
 * iteration count is kept when it is above ours.
 */
export async function missingCredentials(credentials: ScramCredentials, password: string, iterations: number): Promise<ScramCredentials | undefined> {
  const missing = SCRAM_HASHES.filter((h) => !credentials[h]);
  if (missing.length === 0) return undefined;
  const count = Math.max(iterations, ...SCRAM_HASHES.map((h) => credentials[h]?.iterations ?? 0));
  const out: ScramCredentials = { ...credentials };
  for (const h of missing) out[h] = await deriveCredential(h, password, count);
  return out;
}

/** Verifies a plaintext password (SASL PLAIN, password change) against stored SCRAM keys, in constant time. */
export async function verifyPassword(credential: ScramCredential, hash: ScramHash, password: string): Promise<boolean> {
  let salted: Buffer;
  try {
    salted = await saltedPassword(hash, password, Buffer.from(credential.salt, "base64"), credential.iterations);
  } catch {
    return false; // SASLprep rejected the password
  }
  const stored = H(hash, HMAC(hash, salted, "Client Key"));
  return safeEqual(stored, Buffer.from(credential.storedKey, "base64"));
}

/** CVE-2021-32921: secrets are compared in constant time. */
export function safeEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

export function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.alloc(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ b[i]!;
  return out;
}

/** RFC 5802 §5.1: "=2C" and "=3D" encode ',' and '='; any other '=' sequence is invalid. */
export function decodeSaslName(value: string): string | undefined {
  if (/=(?!2C|3D)/.test(value)) return undefined;
  return value.replace(/=2C/g, ",").replace(/=3D/g, "=");
}

export function parseAttributes(message: string): Map<string, string> | undefined {
  const out = new Map<string, string>();
  for (const part of message.split(",")) {
    if (part.length < 2 || part[1] !== "=" || !/^[a-zA-Z]$/.test(part[0]!)) return undefined;
    out.set(part[0]!, part.slice(2));
  }
  return out;
}

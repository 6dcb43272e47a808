/**
 * RFC 7519 JSON Web Tokens, signed only (RFC 7515 compact form), with the two algorithms push
 * providers need: ES256 (APNs provider tokens) and RS256 (Google service-account grants).
 */
import { createPrivateKey, sign, type KeyObject } from "node:crypto";

const b64url = (data: string | Buffer) => Buffer.from(data).toString("base64url");

export function signJwt(alg: "ES256" | "RS256", header: Record<string, string>, claims: Record<string, unknown>, key: KeyObject | string): string {
  const privateKey = typeof key === "string" ? createPrivateKey(key) : key;
  const input = `${b64url(JSON.stringify({ alg, typ: "JWT", ...header }))}.${b64url(JSON.stringify(claims))}`;
  // RFC 7518 §3.4: ES256 signatures are R || S (64 bytes), not DER.
  const signature = sign("sha256", Buffer.from(input), alg === "ES256" ? { key: privateKey, dsaEncoding: "ieee-p1363" } : privateKey);
  return `${input}.${b64url(signature)}`;
}

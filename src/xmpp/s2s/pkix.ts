/**
 * Authenticating a remote server by its certificate: RFC 6125 (version of March 2011) as RFC 6120
 * §13.7.1.2 and RFC 7590 apply it to XMPP.
 *
 * - The chain must lead to one of the configured trust anchors, every certificate in it valid now
 *   (RFC 6120 §13.7.2 asks for PKIX validation, RFC 5280).
 * - The leaf must name the domain (RFC 6125 §6, ./cert-identity.ts): a dNSName, with a wildcard
 *   only as the whole leftmost label (§6.4.3: "*.example.com" matches "im.example.com", not
 *   "a.b.example.com" or "example.com"); an SRVName for _xmpp-server or _xmpps-server (RFC 4985,
 *   XEP-0368); an XmppAddr that is the domain JID (RFC 6120 §13.7.1.4); the subject's CN only when
 *   the subjectAltName has none of these (§6.4.4).
 *
 * The result is a fact handed to the s2s streams; what a failure means (refuse, or try dialback)
 * is their policy.
 */
import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { rootCertificates } from "node:tls";
import { identifiersName, presentedIdentifiers } from "./cert-identity.js";

/** A chain may be longer than this only in a misconfigured or hostile peer. */
const MAX_CHAIN = 8;

export type Verdict = { ok: true } | { ok: false; reason: string };

/** Certificates trusted for s2s: the PEM files given, or Node's bundled Mozilla roots. */
export function loadTrustAnchors(files: readonly string[]): X509Certificate[] {
  const pems = files.length ? files.map((f) => readFileSync(f, "utf8")) : [...rootCertificates];
  return pems.flatMap(splitPem).map((pem) => new X509Certificate(pem));
}

function splitPem(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

/** RFC 6125 §6: the reference identifier `domain` against the certificate's presented ones. */
export function certificateNamesDomain(cert: X509Certificate, domain: string): boolean {
  const ids = presentedIdentifiers(cert.raw);
  return ids !== undefined && identifiersName(ids, domain);
}

function currentlyValid(cert: X509Certificate, now: number): boolean {
  return Date.parse(cert.validFrom) <= now && now <= Date.parse(cert.validTo);
}

function issuedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
}

/** `chain`: DER certificates as the peer sent them, leaf first. */
export function verifyServerCertificate(chain: readonly Buffer[], domain: string, anchors: readonly X509Certificate[], now = Date.now()): Verdict {
  if (!chain.length) return { ok: false, reason: "no certificate" };
  let presented: X509Certificate[];
  try {
    presented = chain.slice(0, MAX_CHAIN).map((der) => new X509Certificate(der));
  } catch {
    return { ok: false, reason: "unparsable certificate" };
  }
  const leaf = presented[0]!;
  if (!certificateNamesDomain(leaf, domain)) return { ok: false, reason: `certificate does not name ${domain}` };
  let current = leaf;
  for (let depth = 0; depth < MAX_CHAIN; depth++) {
    if (!currentlyValid(current, now)) return { ok: false, reason: "certificate expired or not yet valid" };
    // A leaf that is itself an anchor is trusted as configured (a pinned certificate).
    if (anchors.some((a) => a.raw.equals(current.raw))) return { ok: true };
    const anchor = anchors.find((a) => issuedBy(current, a));
    if (anchor) return currentlyValid(anchor, now) ? { ok: true } : { ok: false, reason: "trust anchor expired" };
    const next = presented.find((c) => c !== current && c.ca && issuedBy(current, c));
    if (!next) return { ok: false, reason: "certificate chain does not lead to a trusted CA" };
    current = next;
  }
  return { ok: false, reason: "certificate chain too long" };
}

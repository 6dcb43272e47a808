/**
 * The identities a server certificate presents, and whether one names a domain: RFC 6125 (version
 * of March 2011) §6 as RFC 6120 §13.7.1.2 and XEP-0368 apply it to server-to-server XMPP.
 *
 * Presented identifiers are read from the certificate's DER with a small reader bounded by the
 * buffer (Node's X509Certificate prints otherName entries only inside its subjectAltName summary
 * string, which is not meant to be parsed):
 * - DNS-ID: subjectAltName dNSName (RFC 5280 §4.2.1.6);
 * - SRV-ID: subjectAltName otherName id-on-dnsSRV 1.3.6.1.5.5.7.8.7, an IA5String
 *   "_Service.Name" (RFC 4985 §2);
 * - XmppAddr: subjectAltName otherName id-on-xmppAddr 1.3.6.1.5.5.7.8.5, a UTF8String JID
 *   (RFC 6120 §13.7.1.4);
 * - CN-ID: the subject's commonName values.
 */
import { domainToASCII } from "node:url";
import { tryParseJid } from "../jid.js";

export interface PresentedIdentifiers {
  dnsNames: string[];
  srvNames: string[];
  xmppAddrs: string[];
  /** Whether the subjectAltName holds a uniformResourceIdentifier (a URI-ID, RFC 6125 §6.5.2). */
  hasUri: boolean;
  commonNames: string[];
}

/** RFC 6120 §13.7.1.2 / XEP-0368 §3: the services an SRV-ID may name for a server's domain. */
export const SERVER_SRV_SERVICES: readonly string[] = ["xmpp-server", "xmpps-server"];

const OID_COMMON_NAME = "2.5.4.3";
const OID_SUBJECT_ALT_NAME = "2.5.29.17";
const OID_XMPP_ADDR = "1.3.6.1.5.5.7.8.5";
const OID_SRV_NAME = "1.3.6.1.5.5.7.8.7";

/** DER identifier octets (X.690 §8.1.2) met on the way to the names. */
const TAG = {
  BOOLEAN: 0x01, OCTET_STRING: 0x04, OID: 0x06, UTF8_STRING: 0x0c, PRINTABLE_STRING: 0x13, IA5_STRING: 0x16, BMP_STRING: 0x1e,
  SEQUENCE: 0x30, SET: 0x31,
  /** Context-specific, constructed: [0] version / otherName / its value, [3] extensions. */
  CONTEXT_0: 0xa0, CONTEXT_3: 0xa3,
  /** GeneralName's [2] dNSName and [6] uniformResourceIdentifier (IMPLICIT, primitive). */
  SAN_DNS_NAME: 0x82, SAN_URI: 0x86,
} as const;

/** One DER tag-length-value; `value` is a view into the certificate. */
interface Tlv { tag: number; value: Uint8Array }

class DerError extends Error {}

/** The TLVs laid end to end in `bytes`; anything that runs past its container is an error. */
function children(bytes: Uint8Array): Tlv[] {
  const out: Tlv[] = [];
  let at = 0;
  while (at < bytes.length) {
    if (at + 2 > bytes.length) throw new DerError("truncated header");
    const tag = bytes[at]!;
    // Multi-byte tags (low bits all set) do not occur in X.509.
    if ((tag & 0x1f) === 0x1f) throw new DerError("high tag number");
    let length = bytes[at + 1]!;
    at += 2;
    if (length & 0x80) {
      const octets = length & 0x7f;
      // DER has no indefinite length (0x80); four length octets cover any certificate.
      if (octets === 0 || octets > 4 || at + octets > bytes.length) throw new DerError("bad length");
      length = 0;
      for (let i = 0; i < octets; i++) length = length * 256 + bytes[at + i]!;
      at += octets;
    }
    if (at + length > bytes.length) throw new DerError("value runs past its container");
    out.push({ tag, value: bytes.subarray(at, at + length) });
    at += length;
  }
  return out;
}

function only(bytes: Uint8Array, tag: number): Tlv {
  const [first] = children(bytes);
  if (!first || first.tag !== tag) throw new DerError(`expected tag 0x${tag.toString(16)}`);
  return first;
}

/** X.690 §8.19: the dotted form of an OBJECT IDENTIFIER's content. */
function oid(value: Uint8Array): string {
  const arcs: number[] = [];
  let arc = 0;
  for (const byte of value) {
    arc = arc * 128 + (byte & 0x7f);
    if (arc > Number.MAX_SAFE_INTEGER / 128) throw new DerError("OID arc too large");
    if (!(byte & 0x80)) {
      if (arcs.length === 0) arcs.push(arc < 80 ? Math.floor(arc / 40) : 2, arc < 80 ? arc % 40 : arc - 80);
      else arcs.push(arc);
      arc = 0;
    }
  }
  return arcs.join(".");
}

function directoryString(tlv: Tlv): string | undefined {
  switch (tlv.tag) {
    case TAG.UTF8_STRING: case TAG.PRINTABLE_STRING: case TAG.IA5_STRING:
      return Buffer.from(tlv.value).toString("utf8");
    case TAG.BMP_STRING:
      return Buffer.from(tlv.value).swap16().toString("utf16le");
    default:
      return undefined;
  }
}

/** The presented identifiers of a DER certificate; undefined when its structure cannot be read. */
export function presentedIdentifiers(der: Uint8Array): PresentedIdentifiers | undefined {
  try {
    const certificate = only(der, TAG.SEQUENCE);
    const tbs = children(certificate.value)[0];
    if (!tbs || tbs.tag !== TAG.SEQUENCE) return undefined;
    const fields = children(tbs.value);
    // TBSCertificate: [0] version, serialNumber, signature, issuer, validity, subject, …: the
    // subject is the fourth SEQUENCE (the serial number is an INTEGER).
    const subject = fields.filter((f) => f.tag === TAG.SEQUENCE)[3];
    if (!subject) return undefined;
    const ids: PresentedIdentifiers = { dnsNames: [], srvNames: [], xmppAddrs: [], hasUri: false, commonNames: [] };
    for (const rdn of children(subject.value)) {
      if (rdn.tag !== TAG.SET) continue;
      for (const attribute of children(rdn.value)) {
        const [type, value] = children(attribute.value);
        if (type?.tag !== TAG.OID || !value || oid(type.value) !== OID_COMMON_NAME) continue;
        const text = directoryString(value);
        if (text !== undefined) ids.commonNames.push(text);
      }
    }
    const extensions = fields.find((f) => f.tag === TAG.CONTEXT_3);
    if (!extensions) return ids;
    for (const extension of children(only(extensions.value, TAG.SEQUENCE).value)) {
      const parts = children(extension.value);
      if (parts[0]?.tag !== TAG.OID || oid(parts[0].value) !== OID_SUBJECT_ALT_NAME) continue;
      const extnValue = parts[1]?.tag === TAG.BOOLEAN ? parts[2] : parts[1];
      if (extnValue?.tag !== TAG.OCTET_STRING) return undefined;
      readGeneralNames(only(extnValue.value, TAG.SEQUENCE).value, ids);
    }
    return ids;
  } catch (err) {
    if (err instanceof DerError) return undefined;
    throw err;
  }
}

function readGeneralNames(bytes: Uint8Array, ids: PresentedIdentifiers): void {
  for (const name of children(bytes)) {
    if (name.tag === TAG.SAN_DNS_NAME) ids.dnsNames.push(Buffer.from(name.value).toString("latin1"));
    else if (name.tag === TAG.SAN_URI) ids.hasUri = true;
    else if (name.tag === TAG.CONTEXT_0) {
      // OtherName ::= SEQUENCE { type-id OBJECT IDENTIFIER, value [0] EXPLICIT ANY } (the [0]
      // IMPLICIT of GeneralName replaces the SEQUENCE tag).
      const [type, wrapped] = children(name.value);
      if (type?.tag !== TAG.OID || wrapped?.tag !== TAG.CONTEXT_0) continue;
      const typeId = oid(type.value);
      const [value] = children(wrapped.value);
      // RFC 6120 §13.7.1.4: "id-on-xmppAddr ... XmppAddr ::= UTF8String"; RFC 4985 §2:
      // "SRVName ::= IA5String (SIZE (1..MAX))". Another string type is not that identifier.
      if (typeId === OID_XMPP_ADDR && value?.tag === TAG.UTF8_STRING) ids.xmppAddrs.push(Buffer.from(value.value).toString("utf8"));
      else if (typeId === OID_SRV_NAME && value?.tag === TAG.IA5_STRING) ids.srvNames.push(Buffer.from(value.value).toString("latin1"));
    }
  }
}

/** A domain in the A-label form DNS-IDs and SRV-IDs use, lowercase, without a trailing dot. */
function asciiDomain(domain: string): string {
  const trimmed = domain.endsWith(".") ? domain.slice(0, -1) : domain;
  return domainToASCII(trimmed.toLowerCase()).toLowerCase();
}

/**
 * RFC 6125 §6.4.1 and §6.4.3 for the DNS domain name of a DNS-ID or SRV-ID: equal ignoring case,
 * or a wildcard that is the whole left-most label and stands for exactly one label. Partial
 * wildcards ("im*.example.com", a MAY of §6.4.3) are refused, and so is a wildcard over a single
 * remaining label ("*.com").
 */
export function dnsNameMatches(presented: string, reference: string): boolean {
  const name = asciiDomain(presented);
  const ref = asciiDomain(reference);
  if (!name || !ref) return false;
  if (!name.startsWith("*.")) return !name.includes("*") && name === ref;
  const base = name.slice(2);
  if (base.includes("*") || !base.includes(".")) return false;
  const dot = ref.indexOf(".");
  return dot > 0 && ref.slice(dot + 1) === base;
}

/** RFC 4985 §2: "_Service.Name"; the service must be one of `services`, the name the domain. */
function srvNameMatches(presented: string, reference: string, services: readonly string[]): boolean {
  const dot = presented.indexOf(".");
  if (!presented.startsWith("_") || dot < 2) return false;
  const service = presented.slice(1, dot).toLowerCase();
  return services.includes(service) && dnsNameMatches(presented.slice(dot + 1), reference);
}

/**
 * RFC 6120 §13.7.1.4: for a server the XmppAddr is a domain JID. It is prepared as a JID (RFC 7622),
 * then compared in A-label form, as RFC 6125 §6.4.2 compares internationalized names.
 */
function xmppAddrMatches(presented: string, reference: string): boolean {
  const jid = tryParseJid(presented);
  return jid !== undefined && !jid.local && !jid.resource && asciiDomain(jid.domain) === asciiDomain(reference);
}

/**
 * RFC 6125 §6: does a certificate presenting `ids` name the server `domain`? DNS-IDs, SRV-IDs for
 * the XMPP server services and XmppAddr domain JIDs count. The CN-ID is a last resort (§6.4.4):
 * "if and only if the presented identifiers do not include a DNS-ID, SRV-ID, URI-ID, or any
 * application-specific identifier types supported by the client, then the client MAY as a last
 * resort check ... a Common Name". Parley takes that MAY because certificates naming a server only
 * in the CN are still met on the network; any subjectAltName entry of those types — even an SRV-ID
 * for another service, or a URI-ID, which Parley does not otherwise match — rules the CN out.
 */
export function identifiersName(ids: PresentedIdentifiers, domain: string, services: readonly string[] = SERVER_SRV_SERVICES): boolean {
  if (ids.dnsNames.some((name) => dnsNameMatches(name, domain))) return true;
  if (ids.srvNames.some((name) => srvNameMatches(name, domain, services))) return true;
  if (ids.xmppAddrs.some((addr) => xmppAddrMatches(addr, domain))) return true;
  const sanPresent = ids.dnsNames.length > 0 || ids.srvNames.length > 0 || ids.xmppAddrs.length > 0 || ids.hasUri;
  // A CN-ID is a DNS domain name: wildcards as for DNS-IDs.
  return !sanPresent && ids.commonNames.some((cn) => dnsNameMatches(cn, domain));
}

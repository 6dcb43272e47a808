/**
 * JIDs per RFC 7622 (Extensible Messaging and Presence Protocol (XMPP): Address Format).
 * Localparts use the PRECIS UsernameCaseMapped profile (RFC 8265 §3.3) with the JID exclusions of
 * RFC 7622 §3.3.1; resourceparts use the OpaqueString profile (RFC 8265 §4.2); domainparts are
 * IDNA2008 labels or IP literals (RFC 7622 §3.2). Each part is limited in *bytes*, not characters.
 */
import { domainToASCII, domainToUnicode } from "node:url";
import { isIP } from "node:net";
import { BoundedMap } from "../bounded-map.js";

export class JidError extends Error {
  constructor(readonly part: "localpart" | "domainpart" | "resourcepart" | "jid", reason: string) {
    super(`${part}: ${reason}`);
  }
}

// RFC 7622 §3.3.1: "Each allowable portion of a JID ... MUST NOT be zero octets in length and
// MUST NOT be more than 1023 octets in length".
const MAX_PART_BYTES = 1023;
// RFC 7622 §3.3.1: localpart code points excluded on top of the IdentifierClass.
const LOCAL_EXCLUDED = new Set(['"', "&", "'", "/", ":", "<", ">", "@"]);

export class Jid {
  readonly bare: string;
  readonly full: string;
  constructor(readonly local: string, readonly domain: string, readonly resource: string) {
    this.bare = local ? `${local}@${domain}` : domain;
    this.full = resource ? `${this.bare}/${resource}` : this.bare;
  }
  get isBare(): boolean { return this.resource === ""; }
  toBare(): Jid { return this.resource ? parseJid(this.bare) : this; }
  withResource(resource: string): Jid { return new Jid(this.local, this.domain, prepResource(resource)); }
  toString(): string { return this.full; }
  equals(other: Jid): boolean { return this.full === other.full; }
}

const CACHE_LIMIT = 20_000;
const cache = new BoundedMap<string, Jid>(CACHE_LIMIT);

/** Parse and normalise a JID string; throws JidError when any part is invalid. */
export function parseJid(input: string): Jid {
  const hit = cache.get(input);
  if (hit) return hit;
  const jid = parseUncached(input);
  cache.set(input, jid);
  return jid;
}

/** Parse, or undefined when invalid. */
export function tryParseJid(input: string | undefined): Jid | undefined {
  if (input === undefined) return undefined;
  try { return parseJid(input); } catch { return undefined; }
}

/**
 * Whether a JID string from the wire names the same entity as a known JID. RFC 7622 §3: JIDs are
 * compared after preparation (case mapping, NFC, IDNA, a trailing dot removed), never as raw
 * strings — 'USER@LOCALHOST.' is 'user@localhost'. An unparsable string matches nothing.
 */
export function sameJid(raw: string | undefined, known: Jid | string): boolean {
  const parsed = tryParseJid(raw);
  if (!parsed) return false;
  return parsed.full === (typeof known === "string" ? tryParseJid(known)?.full : known.full);
}

function parseUncached(input: string): Jid {
  // RFC 7622 §3.1: split on the first '/' (resource), then on the first '@' before it.
  const slash = input.indexOf("/");
  const head = slash === -1 ? input : input.slice(0, slash);
  const resource = slash === -1 ? undefined : input.slice(slash + 1);
  const at = head.indexOf("@");
  const local = at === -1 ? undefined : head.slice(0, at);
  const domain = at === -1 ? head : head.slice(at + 1);
  return new Jid(
    local === undefined ? "" : prepLocal(local),
    prepDomain(domain),
    resource === undefined ? "" : prepResource(resource),
  );
}

function checkBytes(part: JidError["part"], value: string): void {
  if (value.length === 0) throw new JidError(part, "empty");
  if (Buffer.byteLength(value, "utf8") > MAX_PART_BYTES) throw new JidError(part, "longer than 1023 bytes");
}

const ASCII_SIMPLE_LOCAL = /^[a-z0-9!#$%()*+,\-.;=?[\\\]^_`{|}~]+$/;

/** RFC 8265 §3.3 UsernameCaseMapped + RFC 7622 §3.3.1 exclusions. */
export function prepLocal(raw: string): string {
  if (ASCII_SIMPLE_LOCAL.test(raw)) { checkBytes("localpart", raw); return raw; }
  // Width mapping rule (RFC 8265 §3.3.1 step 1): fullwidth and halfwidth forms to their decompositions.
  const widthMapped = raw.replace(/[\uFF01-\uFFEF]/gu, (ch) => ch.normalize("NFKC"));
  const mapped = widthMapped.toLowerCase().normalize("NFC");
  checkBytes("localpart", mapped);
  let first = true;
  for (const ch of mapped) {
    if (LOCAL_EXCLUDED.has(ch)) throw new JidError("localpart", `character ${JSON.stringify(ch)} not allowed`);
    if (!isIdentifierClass(ch, first)) throw new JidError("localpart", `code point U+${ch.codePointAt(0)!.toString(16).toUpperCase()} not allowed`);
    first = false;
  }
  return mapped;
}

const LETTER_DIGIT = /^[\p{L}\p{Nd}]$/u;
const COMBINING = /^[\p{Mn}\p{Mc}]$/u;

/** PRECIS IdentifierClass (RFC 8264 §4.2): ASCII printable, letters and digits; no spaces, symbols, controls, compatibility forms. */
function isIdentifierClass(ch: string, first: boolean): boolean {
  const cp = ch.codePointAt(0)!;
  if (cp >= 0x21 && cp <= 0x7e) return true;
  if (cp < 0x80) return false;
  if (ch.normalize("NFKC") !== ch) return false; // HasCompat
  if (LETTER_DIGIT.test(ch)) return true;
  return !first && COMBINING.test(ch);
}

const CONTROL = /[\p{Cc}\p{Cn}\p{Cs}\u200B-\u200F\u2028-\u202E\u2060-\u206F\uFEFF]/u;
const NON_ASCII_SPACE = /[\p{Zs}]/gu;

/** RFC 8265 §4.2 OpaqueString: non-ASCII spaces mapped to U+0020, NFC, no controls or unassigned code points. */
export function prepResource(raw: string): string {
  const mapped = /^[\x21-\x7e]+$/.test(raw) ? raw : raw.replace(NON_ASCII_SPACE, " ").normalize("NFC");
  checkBytes("resourcepart", mapped);
  if (CONTROL.test(mapped)) throw new JidError("resourcepart", "control or unassigned code point");
  return mapped;
}

const ASCII_SIMPLE_DOMAIN = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;

/** RFC 7622 §3.2: IP literal or IDNA2008 domain name; a trailing dot is removed. */
export function prepDomain(raw: string): string {
  let domain = raw.endsWith(".") ? raw.slice(0, -1) : raw;
  if (ASCII_SIMPLE_DOMAIN.test(domain)) { checkBytes("domainpart", domain); return domain; }
  checkBytes("domainpart", domain);
  if (domain.startsWith("[") && domain.endsWith("]")) {
    if (isIP(domain.slice(1, -1)) !== 6) throw new JidError("domainpart", "invalid IPv6 literal");
    return domain.toLowerCase();
  }
  if (isIP(domain) === 4) return domain;
  if (/[\s@/:\\<>"'&[\]%?#]/u.test(domain) || CONTROL.test(domain)) throw new JidError("domainpart", "invalid character");
  domain = domain.replace(/[\uFF01-\uFFEF\u3002]/gu, (ch) => (ch === "\u3002" ? "." : ch.normalize("NFKC"))).toLowerCase().normalize("NFC");
  const ascii = domainToASCII(domain);
  if (!ascii) throw new JidError("domainpart", "not a valid domain name");
  for (const label of ascii.split(".")) {
    if (label.length === 0 || label.length > 63) throw new JidError("domainpart", "label empty or longer than 63 bytes");
  }
  const unicode = domainToUnicode(ascii);
  checkBytes("domainpart", unicode);
  return unicode;
}

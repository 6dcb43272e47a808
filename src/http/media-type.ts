/**
 * RFC 9110 §8.3.1 media types, parsed and compared; and RFC 6266 Content-Disposition values.
 * Pure functions: an upload's content type arrives in an XMPP attribute and is later echoed in a
 * Content-Type response header, so only what the HTTP grammar allows may get through.
 */

/** RFC 9110 §5.6.2: token = 1*tchar. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/**
 * RFC 6838 §4.2 caps type and subtype names at 127 characters each; with a few parameters this is
 * plenty, and it bounds what a slot token and each stored record carry.
 */
const MAX_LENGTH = 255;

export interface MediaType {
  /** type "/" subtype, lower-cased (RFC 9110 §8.3.1: "The type and subtype tokens are case-insensitive"). */
  essence: string;
  /** Parameter names lower-cased (RFC 9110 §5.6.6: "Parameter names are case-insensitive"), values unquoted. */
  parameters: ReadonlyMap<string, string>;
}

/**
 * media-type = type "/" subtype parameters
 * parameters = *( OWS ";" OWS [ parameter ] ); parameter = token "=" ( token / quoted-string )
 *
 * Returns undefined for anything else. obs-text (bytes 0x80–0xFF) is refused too: RFC 9110 §5.5
 * keeps it only for old senders, and a recipient may read those bytes in another charset.
 */
export function parseMediaType(value: string): MediaType | undefined {
  if (value.length > MAX_LENGTH) return undefined;
  const slash = value.indexOf("/");
  if (slash < 0) return undefined;
  const type = value.slice(0, slash);
  let i = slash + 1;
  const subtypeEnd = scanToken(value, i);
  const subtype = value.slice(i, subtypeEnd);
  if (!TOKEN.test(type) || !TOKEN.test(subtype)) return undefined;
  i = subtypeEnd;
  const parameters = new Map<string, string>();
  for (;;) {
    i = skipOws(value, i);
    if (i === value.length) break;
    if (value[i] !== ";") return undefined;
    i = skipOws(value, i + 1);
    if (i === value.length || value[i] === ";") continue;
    const nameEnd = scanToken(value, i);
    const name = value.slice(i, nameEnd);
    if (!name || value[nameEnd] !== "=") return undefined;
    i = nameEnd + 1;
    let parameterValue: string;
    if (value[i] === '"') {
      const quoted = scanQuotedString(value, i);
      if (!quoted) return undefined;
      [parameterValue, i] = quoted;
    } else {
      const end = scanToken(value, i);
      if (end === i) return undefined;
      parameterValue = value.slice(i, end);
      i = end;
    }
    const key = name.toLowerCase();
    // Two values for one name leave the meaning open; refuse rather than pick one.
    if (parameters.has(key)) return undefined;
    parameters.set(key, parameterValue);
  }
  return { essence: `${type}/${subtype}`.toLowerCase(), parameters };
}

/** The canonical form: essence, then each parameter as `; name=value`, quoted where a token will not do. */
export function formatMediaType(m: MediaType): string {
  let out = m.essence;
  for (const [name, value] of m.parameters) {
    out += `; ${name}=${TOKEN.test(value) ? value : `"${value.replace(/["\\]/g, "\\$&")}"`}`;
  }
  return out;
}

/**
 * Does `sent` (a request's Content-Type) agree with `expected`? The essences must be equal; a
 * parameter both name must have the same value — charset compared case-insensitively (RFC 9110
 * §8.3.2: "The charset value is case-insensitive"), others exactly. A parameter only one side
 * names is no disagreement: a client may well send the bare essence of what it asked for.
 */
export function mediaTypesMatch(expected: MediaType, sent: MediaType): boolean {
  if (expected.essence !== sent.essence) return false;
  for (const [name, value] of sent.parameters) {
    const other = expected.parameters.get(name);
    if (other === undefined) continue;
    if (name === "charset" ? other.toLowerCase() !== value.toLowerCase() : other !== value) return false;
  }
  return true;
}

/**
 * RFC 6266 §4.1 Content-Disposition with both forms of the file name, as its Appendix D advises:
 * `filename` (a quoted ASCII fallback, anything risky replaced by "_") for old recipients and
 * `filename*` (RFC 8187 UTF-8, percent-encoded beyond attr-char) for everyone else.
 */
export function contentDisposition(kind: "inline" | "attachment", filename: string): string {
  const fallback = filename.replace(/[^\x20-\x7e]|["\\%]/g, "_");
  return `${kind}; filename="${fallback}"; filename*=UTF-8''${encodeRfc8187(filename)}`;
}

/** RFC 8187 §3.2.1: value-chars = *( pct-encoded / attr-char ). */
function encodeRfc8187(value: string): string {
  // encodeURIComponent leaves ' ( ) * ! unescaped; of those only "!" is an attr-char.
  return encodeURIComponent(value).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function scanToken(s: string, i: number): number {
  while (i < s.length && TOKEN.test(s[i]!)) i++;
  return i;
}

function skipOws(s: string, i: number): number {
  while (s[i] === " " || s[i] === "\t") i++;
  return i;
}

/**
 * quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE; qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E;
 * quoted-pair = "\" ( HTAB / SP / VCHAR ). Returns the unquoted value and the index after the closing quote.
 */
function scanQuotedString(s: string, i: number): [string, number] | undefined {
  let out = "";
  for (i++; i < s.length; i++) {
    const c = s[i]!;
    if (c === '"') return [out, i + 1];
    if (c === "\\") {
      const next = s[++i];
      if (next === undefined || !/^[\t\x20-\x7e]$/.test(next)) return undefined;
      out += next;
    } else if (/^[\t\x20-\x7e]$/.test(c)) {
      out += c;
    } else {
      return undefined;
    }
  }
  return undefined;
}

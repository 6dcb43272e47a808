/**
 * What every XMPP transport offers the stream layer above it (DESIGN.md "Streams and transports"):
 * framed events in (stream start, top-level elements, stream end), serialized writes out, close,
 * backpressure, the peer's address and the TLS facts channel binding needs. A transport knows bytes
 * and framing, never what a stanza means.
 *
 * Implementations: TCP/TLS with STARTTLS or direct TLS (RFC 6120, XEP-0368), WebSocket (RFC 7395),
 * BOSH (XEP-0124/0206).
 */
import type { ParserLimits, StreamHeader } from "../parser.js";
import type { Element } from "../xml.js";
import type { StreamError } from "../../errors.js";

export type TransportKind = "tcp" | "websocket" | "bosh";

/** The TLS session under a transport, for SASL channel binding (RFC 5929, RFC 9266). */
export interface TlsFacts {
  /** "TLSv1.3", "TLSv1.2". */
  readonly version: string | undefined;
  /** The name the client asked for with SNI. */
  readonly servername: string | undefined;
  exportKeyingMaterial(length: number, label: string): Buffer;
  /** The certificate this TLS session presented (DER), for tls-server-end-point (RFC 5929 §4). */
  serverCertificate(): Buffer | undefined;
  /** The peer's certificate chain as it sent it, leaf first (DER); empty when it sent none. */
  peerCertificates(): Buffer[];
  /** RFC 5929 §3: the first Finished message of the handshake; undefined on TLS 1.3, which has no tls-unique (RFC 9266). */
  tlsUnique(): Buffer | undefined;
}

/** Our side of a stream opening (RFC 6120 §4.7). */
export interface StreamOpen {
  /** The content namespace: jabber:client, jabber:component:accept, jabber:server. */
  ns: string;
  /** Empty from an initiating entity (RFC 6120 §4.7.3). */
  id: string;
  from?: string;
  /** Server-to-server streams name the peer (RFC 6120 §4.7.2). */
  to?: string;
  /** Prefixes declared on the header, e.g. db for XEP-0220 dialback. */
  namespaces?: Record<string, string>;
  version?: string;
  lang?: string;
}

/** How a transport's input ended. */
export type TransportEnd =
  /** The connection went away without the peer closing its stream (a dropped network). */
  | "lost"
  /** The transport was closed after a stream close from either side. */
  | "closed";

/** What a transport reports to the stream above it. */
export interface FrameReceiver {
  streamStart(header: StreamHeader): void;
  element(element: Element): void;
  /** The peer closed its stream (</stream:stream>, RFC 7395 <close/>, a BOSH terminate). */
  streamEnd(): void;
  /** Input that is not a well-formed, restricted XMPP stream, or a framing violation. */
  error(error: StreamError): void;
  /** The transport is gone; reported once. */
  ended(how: TransportEnd): void;
  /** Buffered output was taken by the network; more may be written. */
  drain(): void;
}

export interface Transport {
  readonly kind: TransportKind;
  readonly remoteAddress: string;
  /** The channel is encrypted (TLS on this connection, or under the HTTP request). */
  readonly secure: boolean;
  readonly tls: TlsFacts | undefined;
  /** When the peer last sent anything, whitespace keepalives included (ms since the epoch). */
  readonly lastInbound: number;
  /** Output accepted but not yet taken by the network, in bytes: what backpressure decides on. */
  readonly buffered: number;
  setReceiver(receiver: FrameReceiver): void;
  /** A new stream starts on this transport (RFC 6120 §4.3.3): fresh parsing with these limits. */
  restart(limits: ParserLimits): void;
  /** Other limits for the rest of this stream (SASL2 authenticates without a restart). */
  setLimits(limits: ParserLimits): void;
  /** Our stream header in this transport's framing. */
  openStream(open: StreamOpen): void;
  /** One top-level element, serialized, in the stream's content namespace. */
  send(xml: string): void;
  /** An element of the streams namespace (features, error), in this transport's framing. */
  sendStreamElement(name: "features" | "error", inner: string): void;
  /** Closes our stream, then the transport (after the peer's close, or a short wait for it). */
  closeStream(): void;
  /** Ends the transport now, dropping whatever is buffered. */
  destroy(): void;
  /** Only on TCP: upgrade to TLS in place (RFC 6120 §5.4.3.3). */
  startTls?(): void;
  /** Only on TCP: stop reading input (the peer's sends then back up: TCP flow control), and go on. */
  pauseReading?(): void;
  resumeReading?(): void;
}

export const NS_STREAMS = "http://etherx.jabber.org/streams";

/**
 * A stanza serialized by the server often leaves its namespace to the enclosing stream (TCP).
 * Transports that frame each element alone (RFC 7395 §3.3.3, XEP-0206 §4) must state it: this adds
 * xmlns to the top tag when the tag does not have one.
 */
export function withContentNamespace(xml: string, ns: string): string {
  const nameEnd = topTagNameEnd(xml);
  if (declaresDefaultNamespace(xml, nameEnd)) return xml;
  return `${xml.slice(0, nameEnd)} xmlns='${ns}'${xml.slice(nameEnd)}`;
}

const SPACE = 0x20, TAB = 0x09, LF = 0x0a, CR = 0x0d, SLASH = 0x2f, GT = 0x3e, EQ = 0x3d, APOS = 0x27, QUOT = 0x22;
const isXmlSpace = (c: number) => c === SPACE || c === TAB || c === LF || c === CR;

/** Where the name of the first tag ends (at a space, '/' or '>'). */
function topTagNameEnd(xml: string): number {
  let i = 1;
  for (; i < xml.length; i++) {
    const c = xml.charCodeAt(i);
    if (isXmlSpace(c) || c === SLASH || c === GT) break;
  }
  return i;
}

/**
 * The first tag has an `xmlns=` attribute. One pass over its attributes, char codes only (this
 * runs for every stanza sent over WebSocket or BOSH): quoted values are skipped, so neither a
 * '>' nor an "xmlns" inside a value counts.
 */
function declaresDefaultNamespace(xml: string, from: number): boolean {
  let quote = 0;
  for (let i = from; i < xml.length; i++) {
    const c = xml.charCodeAt(i);
    if (quote) { if (c === quote) quote = 0; continue; }
    if (c === APOS || c === QUOT) quote = c;
    else if (c === GT) return false;
    else if (isXmlSpace(xml.charCodeAt(i - 1)) && xml.startsWith("xmlns", i)) {
      let j = i + 5;
      while (isXmlSpace(xml.charCodeAt(j))) j++;
      if (xml.charCodeAt(j) === EQ) return true;
    }
  }
  return false;
}

/**
 * The stream parser stage: bytes → restricted-XML events → top-level elements.
 *
 * RFC 6120 §11.1: "The XML used in XMPP ... MUST NOT contain ... comments, processing instructions,
 * internal or external DTD subsets, internal or external entity references (with the exception of
 * the predefined entities)". saxes (strict, namespace-aware) tokenizes; this wrapper adds what it
 * lacks (see ../../../shared/reference/HARDENING.md §6.2): streaming UTF-8 decoding that fails on
 * invalid bytes, a byte budget per top-level element counted while parsing, depth / element /
 * attribute limits, and a rule that after the first failure no further event is trusted.
 */
import { SaxesParser, type SaxesTagNS } from "saxes";
import { Element } from "./xml.js";
import { NS } from "./ns.js";
import { StreamError } from "../errors.js";

export interface ParserLimits {
  /** Bytes per top-level element (stanza or nonza), counted from the end of the previous one. */
  maxStanzaBytes: number;
  maxDepth: number;
  maxElementsPerStanza: number;
  maxAttributes: number;
  maxNameLength: number;
  maxLangLength: number;
}

export interface StreamHeader {
  name: string;
  uri: string;
  /** The default namespace declared on the stream header (xmlns='...'). */
  defaultNs: string | undefined;
  attrs: Record<string, string>;
}

export interface ParserSink {
  streamStart(header: StreamHeader): void;
  element(element: Element): void;
  streamEnd(): void;
  error(error: StreamError): void;
}

export class StreamParser {
  private readonly decoder = new TextDecoder("utf-8", { fatal: true });
  private readonly sax: SaxesParser<{ xmlns: true }>;
  private stack: Element[] = [];
  private depth = 0;
  private elementsInStanza = 0;
  private stopped = false;
  // Byte accounting: bytes since the last top-level boundary that lie in earlier chunks, and
  // where in the current chunk (in UTF-16 units) the last boundary fell.
  private carriedBytes = 0;
  private chunk = "";
  private boundaryInChunk = -1;

  constructor(private limits: ParserLimits, private sink: ParserSink) {
    this.sax = new SaxesParser({ xmlns: true, position: false });
    const sax = this.sax;
    sax.on("xmldecl", (decl) => {
      if (this.stopped) return;
      // Prosody's util.xmppstream rejects these too; only UTF-8 XML 1.0 is XMPP.
      if (decl.encoding !== undefined && decl.encoding.toLowerCase() !== "utf-8") {
        this.fail(new StreamError("unsupported-encoding", "Only UTF-8 is supported"));
      } else if (decl.version !== "1.0" || decl.standalone !== undefined) {
        this.fail(new StreamError("restricted-xml", "Only XML 1.0 without a standalone declaration"));
      }
    });
    sax.on("doctype", () => this.fail(new StreamError("restricted-xml", "DTDs are not allowed")));
    sax.on("comment", () => this.fail(new StreamError("restricted-xml", "Comments are not allowed")));
    sax.on("processinginstruction", () => this.fail(new StreamError("restricted-xml", "Processing instructions are not allowed")));
    sax.on("opentag", (tag) => this.onOpen(tag));
    sax.on("closetag", () => this.onClose());
    sax.on("text", (text) => this.onText(text));
    sax.on("cdata", (text) => this.onText(text));
    sax.on("error", (err) => this.fail(mapSaxError(err.message)));
  }

  /** Hands the rest of the stream to another receiver (XEP-0198 resumption moves a stream into the old session). */
  retarget(sink: ParserSink): void {
    this.sink = sink;
  }

  /** New limits from the next top-level element on (XEP-0388: authentication without a stream restart). */
  setLimits(limits: ParserLimits): void {
    this.limits = limits;
  }

  /** Stop emitting; later bytes and events are ignored (used on errors, STARTTLS and stream restarts). */
  stop(): void {
    this.stopped = true;
  }

  get isStopped(): boolean {
    return this.stopped;
  }

  /** The input so far ends between top-level elements: no stanza is half-parsed (RFC 7395 framing checks this per message). */
  get betweenElements(): boolean {
    return this.depth === 1;
  }

  /** Character data read since the last tag and not reported yet: saxes reports text when the next tag starts. */
  get pendingText(): string {
    return (this.sax as unknown as { text: string }).text;
  }

  write(bytes: Uint8Array): void {
    if (this.stopped) return;
    let text: string;
    try {
      text = this.decoder.decode(bytes, { stream: true });
    } catch {
      // RFC 6120 §4.9.3.22: "...improperly encoded the stream (e.g., by violating the rules of the UTF-8 encoding)".
      this.fail(new StreamError("unsupported-encoding", "Invalid UTF-8"));
      return;
    }
    if (text.length === 0) return;
    this.chunk = text;
    this.boundaryInChunk = -1;
    try {
      this.sax.write(text);
    } catch (err) {
      // saxes reports XML errors through its error event; what is thrown comes from a handler.
      this.fail(err instanceof StreamError ? err : new StreamError("internal-server-error"));
    }
    if (this.stopped) return;
    // markBoundary() zeroed carriedBytes if a top-level element ended in this chunk.
    this.carriedBytes += Buffer.byteLength(this.boundaryInChunk === -1 ? text : text.slice(this.boundaryInChunk));
    this.chunk = "";
    if (this.carriedBytes > this.limits.maxStanzaBytes) this.tooBig();
  }

  /** The end of input without a closing stream tag: flush the decoder so a truncated character fails. */
  end(): void {
    if (this.stopped) return;
    try {
      this.decoder.decode();
    } catch {
      this.fail(new StreamError("unsupported-encoding", "Truncated UTF-8 sequence"));
    }
  }

  /**
   * saxes' public `position` is not reliable across writes; its `i` is the index in the current
   * chunk just past the construct being reported, which is what we need.
   */
  private offsetInChunk(): number {
    return (this.sax as unknown as { i: number }).i;
  }

  private bytesSinceBoundary(): number {
    const offset = this.offsetInChunk();
    if (this.boundaryInChunk === -1) return this.carriedBytes + Buffer.byteLength(this.chunk.slice(0, offset));
    return Buffer.byteLength(this.chunk.slice(this.boundaryInChunk, offset));
  }

  private markBoundary(): void {
    this.boundaryInChunk = this.offsetInChunk();
    this.carriedBytes = 0;
  }

  private tooBig(): void {
    this.fail(new StreamError("policy-violation", "XML stanza is too big",
      new Element("stanza-too-big", { xmlns: NS.XMPP_ERRORS })));
  }

  private fail(error: StreamError): void {
    if (this.stopped) return;
    this.stopped = true;
    this.stack = [];
    this.sink.error(error);
  }

  private onOpen(tag: SaxesTagNS): void {
    if (this.stopped) return;
    const attrNames = Object.keys(tag.attributes);
    if (attrNames.length > this.limits.maxAttributes) return this.fail(new StreamError("policy-violation", "Too many attributes"));
    if (tag.name.length > this.limits.maxNameLength) return this.fail(new StreamError("policy-violation", "Element name too long"));
    const attrs: Record<string, string> = {};
    for (const name of attrNames) {
      if (name.length > this.limits.maxNameLength) return this.fail(new StreamError("policy-violation", "Attribute name too long"));
      const value = tag.attributes[name]!.value;
      if (name === "xml:lang" && value.length > this.limits.maxLangLength) {
        return this.fail(new StreamError("policy-violation", "xml:lang is too long"));
      }
      attrs[name] = value;
    }

    if (this.depth === 0) {
      this.depth = 1;
      this.markBoundary();
      this.sink.streamStart({ name: tag.local, uri: tag.uri, defaultNs: tag.ns[""], attrs });
      return;
    }

    this.depth++;
    if (this.depth > this.limits.maxDepth + 1) return this.fail(new StreamError("policy-violation", "Elements nested too deep"));
    if (this.depth === 2) this.elementsInStanza = 0;
    if (++this.elementsInStanza > this.limits.maxElementsPerStanza) return this.fail(new StreamError("policy-violation", "Too many elements in one stanza"));
    if (this.bytesSinceBoundary() > this.limits.maxStanzaBytes) return this.tooBig();

    // A top-level element inherits its namespace from the stream header; make it explicit so the
    // element is self-contained when re-serialised (stored offline, forwarded to another stream).
    if (this.depth === 2 && attrs.xmlns === undefined && tag.prefix === "") attrs.xmlns = tag.uri;
    const node = new Element(tag.name, attrs);
    // A prefix bound outside this stanza (e.g. on the stream header) must travel with it.
    if (tag.prefix && tag.prefix !== "xml" && !this.boundWithin(tag.prefix)) node.attrs[`xmlns:${tag.prefix}`] = tag.uri;
    for (const name of attrNames) {
      const attr = tag.attributes[name]!;
      if (attr.prefix && attr.prefix !== "xml" && attr.prefix !== "xmlns" && !this.boundWithin(attr.prefix) && node.attrs[`xmlns:${attr.prefix}`] === undefined) {
        node.attrs[`xmlns:${attr.prefix}`] = attr.uri;
      }
    }
    const parent = this.stack[this.stack.length - 1];
    if (parent) parent.cnode(node);
    this.stack.push(node);
  }

  private boundWithin(prefix: string): boolean {
    const key = `xmlns:${prefix}`;
    for (const node of this.stack) if (node.attrs[key] !== undefined) return true;
    return false;
  }

  private onClose(): void {
    if (this.stopped) return;
    this.depth--;
    if (this.depth === 0) {
      this.stopped = true;
      this.sink.streamEnd();
      return;
    }
    const node = this.stack.pop()!;
    if (this.depth === 1) {
      if (this.bytesSinceBoundary() > this.limits.maxStanzaBytes) return this.tooBig();
      this.markBoundary();
      node.parent = null;
      this.sink.element(node);
    }
  }

  private onText(text: string): void {
    if (this.stopped) return;
    if (this.depth >= 2) {
      this.stack[this.stack.length - 1]!.t(text);
      return;
    }
    // Between top-level elements only whitespace (keepalives) is allowed.
    if (!/^[ \t\r\n]*$/.test(text)) this.fail(new StreamError("invalid-xml", "Text is not allowed at the stream level"));
  }
}

function mapSaxError(message: string): StreamError {
  if (/unbound namespace prefix/i.test(message)) return new StreamError("bad-namespace-prefix");
  if (/XML declaration/i.test(message)) return new StreamError("restricted-xml", "Misplaced XML declaration");
  return new StreamError("not-well-formed");
}

/**
 * One XML stream over a transport (RFC 6120 §4): the header checks and our header, features,
 * stream errors and the close handshake, written once for c2s, components and (later) s2s.
 *
 * The stream reports how it ended exactly once, so its owner has one place that decides what an
 * ending means (a dropped c2s connection may hibernate; anything else ends the session).
 */
import { randomBytes } from "node:crypto";
import type { StreamHeader, ParserLimits } from "../parser.js";
import type { Element } from "../xml.js";
import { NS } from "../ns.js";
import { StreamError } from "../../errors.js";
import type { Logger } from "../../log.js";
import type { Transport, TransportEnd } from "./transport.js";

/** Why a stream is over. */
export type StreamEnding =
  /** The transport dropped without a stream close (XEP-0198: the session may wait for resumption). */
  | { kind: "lost" }
  /** The peer closed its stream. */
  | { kind: "peer-closed" }
  /** We closed it, cleanly or with a stream error. */
  | { kind: "closed"; error?: StreamError };

export interface StreamOwner {
  header(header: StreamHeader): void;
  element(element: Element): void;
  ended(ending: StreamEnding): void;
  /** The transport took buffered output; more may be written. */
  drain(): void;
}

export interface StreamHeaderCheck {
  /** The default namespace the peer must declare: jabber:client, jabber:component:accept, … */
  contentNs: string;
  /** Whether the peer must say version='1.0' (RFC 6120 §4.7.5; XEP-0114 streams have none). */
  requireVersion: boolean;
}

/**
 * RFC 6120 §4.8 and §4.7.5: the checks every stream header passes, whatever the stream is for.
 * 'to' and 'from' are the owner's business.
 */
export function checkHeader(header: StreamHeader, check: StreamHeaderCheck): StreamError | undefined {
  if (header.uri !== NS.STREAMS) return new StreamError("invalid-namespace", "Not the streams namespace");
  if (header.name !== "stream") return new StreamError("invalid-xml", "Expected <stream:stream>");
  if (header.defaultNs !== check.contentNs) return new StreamError("invalid-namespace", `Default namespace must be ${check.contentNs}`);
  if (check.requireVersion) {
    // A missing version means pre-1.0 XMPP, which we do not speak.
    const version = /^(\d+)\.(\d+)$/.exec(header.attrs.version ?? "");
    if (!version || Number(version[1]) !== 1) return new StreamError("unsupported-version", "Only version 1.0 is supported");
  }
  return undefined;
}

/** What the header says besides the basics, for server-to-server streams. */
export interface HeaderShape {
  /** Prefixes to declare, e.g. db for XEP-0220 dialback. */
  namespaces?: Record<string, string>;
  /**
   * We open the stream: RFC 6120 §4.7.3, "the initiating entity MUST NOT include the 'id'
   * attribute"; the id that counts is the receiving entity's (see `peerId`).
   */
  initiating?: boolean;
}

export class XmlStream {
  /** Our stream id of the current stream (new at every restart). */
  id = "";
  private headerSent = false;
  private over = false;
  private owner: StreamOwner;

  constructor(readonly transport: Transport, private readonly contentNs: string, private readonly log: Logger, owner: StreamOwner, private readonly shape: HeaderShape = {}) {
    this.owner = owner;
    transport.setReceiver({
      streamStart: (header) => { if (!this.over) this.owner.header(header); },
      element: (element) => { if (!this.over) this.owner.element(element); },
      streamEnd: () => this.peerClosed(),
      error: (error) => this.error(error),
      ended: (how) => this.transportEnded(how),
      drain: () => { if (!this.over) this.owner.drain(); },
    });
  }

  get isOver(): boolean {
    return this.over;
  }

  get isOpen(): boolean {
    return this.headerSent && !this.over;
  }

  /** Another owner takes the rest of this stream (XEP-0198 resumption moves it into the old session). */
  handTo(owner: StreamOwner): void {
    this.owner = owner;
  }

  /** Our header (RFC 6120 §4.7.1): a fresh stream id, our domain as 'from', the peer's as 'to' (s2s). */
  open(from: string | undefined, lang: string, version = true, to?: string): void {
    this.id = this.shape.initiating ? "" : randomBytes(12).toString("base64url");
    this.transport.openStream({ ns: this.contentNs, id: this.id, from, to, lang, version: version ? "1.0" : undefined, namespaces: this.shape.namespaces });
    this.headerSent = true;
  }

  /** RFC 6120 §4.3.3: after STARTTLS or SASL success both sides start a new stream. */
  restart(limits: ParserLimits): void {
    this.headerSent = false;
    this.transport.restart(limits);
  }

  features(inner: string): void {
    this.transport.sendStreamElement("features", inner);
  }

  send(xml: string): void {
    if (!this.over) this.transport.send(xml);
  }

  /** Stream error (RFC 6120 §4.9): our header first if we had not sent one, the error, the close. */
  error(error: StreamError, from?: string): void {
    if (this.over) return;
    if (!this.headerSent) this.open(from, "en");
    this.log.info({ stage: "stream", condition: error.condition, transport: this.transport.kind, address: this.transport.remoteAddress }, "stream error");
    const element = error.toElement();
    this.transport.sendStreamElement("error", element.children.map((c) => c.toString()).join(""));
    this.finish({ kind: "closed", error });
  }

  /** A clean close from our side. */
  close(): void {
    if (this.over) return;
    this.finish({ kind: "closed" });
  }

  /**
   * The error is written past any backpressure (best effort: the peer may not be reading) and the
   * transport is dropped at once, so what it buffered is freed (HARDENING §2.2).
   */
  abort(error: StreamError): void {
    if (this.over) return;
    this.log.info({ stage: "stream", condition: error.condition, transport: this.transport.kind, address: this.transport.remoteAddress, buffered: this.transport.buffered }, "stream error: the peer is not reading");
    this.transport.sendStreamElement("error", error.toElement().children.map((c) => c.toString()).join(""));
    this.over = true;
    this.transport.destroy();
    this.owner.ended({ kind: "closed", error });
  }

  private finish(ending: StreamEnding): void {
    this.over = true;
    if (this.headerSent) this.transport.closeStream();
    else this.transport.destroy();
    this.owner.ended(ending);
  }

  private peerClosed(): void {
    if (this.over) return;
    this.over = true;
    if (this.headerSent) this.transport.closeStream();
    else this.transport.destroy();
    this.owner.ended({ kind: "peer-closed" });
  }

  private transportEnded(how: TransportEnd): void {
    if (this.over) return;
    this.over = true;
    this.transport.destroy();
    this.owner.ended(how === "lost" ? { kind: "lost" } : { kind: "peer-closed" });
  }
}

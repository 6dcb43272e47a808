/**
 * XMPP over WebSocket (RFC 7395): one XML element per text message, the stream opened with
 * <open xmlns='urn:ietf:params:xml:ns:xmpp-framing'/> and closed with <close/> instead of the
 * stream header and its end tag. The `ws` package does the WebSocket framing (RFC 6455); this class
 * maps messages to stream events, and writes ours.
 *
 * Every message goes through the same bounded parser as TCP (../parser.ts, HARDENING §6.2 #8),
 * fed as if the messages were the children of one stream root; after each message the parser must
 * sit between top-level elements with exactly one new element parsed (RFC 7395 §3.3.3: every
 * element, the <open/> and <close/> included, travels in a message of its own, and a message is a
 * complete element). The element is handed on only after that check, so a message with two
 * stanzas has neither of them routed. Violations get the stream error a TCP stream would get for
 * the same bytes read as one document: not-well-formed.
 *
 * Keepalive is WebSocket ping/pong (RFC 6455 §5.5.2: "A Ping frame may serve either as a
 * keepalive or as a means to verify that the remote endpoint is still responsive"): one shared
 * timer (`Heartbeat`) pings connections that have been silent for an interval, and a connection
 * that has not answered by the next beat is dropped — reported as "lost", like a dead TCP
 * connection, so a resumable session hibernates.
 */
import type { Duplex } from "node:stream";
import { WebSocket, type RawData } from "ws";
import { StreamParser, type ParserLimits, type StreamHeader } from "../parser.js";
import { Element, escapeXML } from "../xml.js";
import { NS } from "../ns.js";
import { StreamError } from "../../errors.js";
import { NS_STREAMS, withContentNamespace, type FrameReceiver, type StreamOpen, type TlsFacts, type Transport } from "./transport.js";
import type { TLSSocket } from "node:tls";
import { tlsFactsOf } from "./tls-facts.js";

export const NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing";
/** RFC 7395 §3.1: the WebSocket subprotocol of XMPP. */
export const XMPP_SUBPROTOCOL = "xmpp";

/**
 * What the parser sees before the first message of each stream, so that messages parse as the
 * top-level elements of one stream. Declaring jabber:client and the stream prefix here accepts,
 * as Prosody and ejabberd do, stanzas whose message does not repeat them.
 */
const STREAM_ROOT = `<stream:stream xmlns='${NS.CLIENT}' xmlns:stream='${NS_STREAMS}'>`;
/** RFC 6120 §4.4 / RFC 7395 §3.6: how long we wait for the peer's <close/>, then for its WebSocket close. */
const CLOSE_WAIT_MS = 2000;

/** WebSocket close codes (RFC 6455 §7.4.1). */
const CLOSE_NORMAL = 1000;
const CLOSE_UNSUPPORTED_DATA = 1003;

export interface WebSocketPeer {
  /** The client's address (X-Forwarded-For from a trusted proxy, else the peer's). */
  address: string;
  /** The client's side is encrypted: our TLS, or a trusted proxy's HTTPS. */
  secure: boolean;
  /** Our TLS connection with the client itself, for channel binding; not a proxy's. */
  tls: TLSSocket | undefined;
}

export interface WebSocketStreamOptions {
  /** RFC 7395 §3.6.1: answer the first <open/> with <close see-other-uri=…/>. */
  seeOtherUri?: string;
}

const UNATTENDED: FrameReceiver = { streamStart() {}, element() {}, streamEnd() {}, error() {}, ended() {}, drain() {} };

/** Pings silent connections and drops the ones that stopped answering: one timer for all of them. */
export class Heartbeat {
  private readonly members = new Set<WebSocketTransport>();
  private timer: NodeJS.Timeout | undefined;

  constructor(readonly intervalMs: number) {}

  add(transport: WebSocketTransport): void {
    this.members.add(transport);
    if (!this.timer) {
      this.timer = setInterval(() => this.beat(), this.intervalMs);
      this.timer.unref();
    }
  }

  delete(transport: WebSocketTransport): void {
    this.members.delete(transport);
    if (this.members.size === 0) this.stop();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private beat(): void {
    const now = Date.now();
    for (const transport of this.members) transport.beat(now, this.intervalMs);
  }
}

export class WebSocketTransport implements Transport {
  readonly kind = "websocket";
  readonly remoteAddress: string;
  readonly secure: boolean;
  lastInbound = Date.now();
  private parser: StreamParser;
  private receiver: FrameReceiver = UNATTENDED;
  private contentNs: string = NS.CLIENT;
  /** The next element is the <open/> of a new stream (at the start and after each restart). */
  private awaitingOpen = true;
  /** The element of the message being parsed, and whether a second one followed it. */
  private parsed: Element | undefined;
  private morePerMessage = false;
  /** A ping is out and nothing came back since (time it was sent). */
  private pingSentAt: number | undefined;
  /** We sent <close/>: only the peer's <close/> matters now. */
  private closing = false;
  private peerClosedStream = false;
  private closeCode = CLOSE_NORMAL;
  private closeTimer: NodeJS.Timeout | undefined;
  private corked = false;
  private endReported = false;

  constructor(
    private readonly ws: WebSocket,
    private readonly socket: Duplex,
    private readonly peer: WebSocketPeer,
    limits: ParserLimits,
    private readonly heartbeat: Heartbeat,
    private readonly options: WebSocketStreamOptions = {},
  ) {
    this.remoteAddress = peer.address;
    this.secure = peer.secure;
    this.parser = this.newParser(limits);
    ws.on("message", this.onMessage);
    ws.on("ping", this.onAlive);
    ws.on("pong", this.onAlive);
    ws.on("error", this.onError);
    ws.on("close", this.onClose);
    socket.on("drain", this.onDrain);
    heartbeat.add(this);
  }

  get tls(): TlsFacts | undefined {
    return this.peer.tls && tlsFactsOf(this.peer.tls);
  }

  /** What the WebSocket has not handed to the network yet (its socket's buffer and its own). */
  get buffered(): number {
    return this.ws.bufferedAmount;
  }

  setReceiver(receiver: FrameReceiver): void {
    this.receiver = receiver;
  }

  setLimits(limits: ParserLimits): void {
    this.parser.setLimits(limits);
  }

  restart(limits: ParserLimits): void {
    this.parser.stop();
    this.parser = this.newParser(limits);
    this.awaitingOpen = true;
  }

  /** RFC 7395 §3.3.2: <open/> carries the attributes of RFC 6120's stream header, in the framing namespace. */
  openStream(open: StreamOpen): void {
    this.contentNs = open.ns;
    const attrs = [`xmlns='${NS_FRAMING}'`, `id='${open.id}'`];
    if (open.from) attrs.push(`from='${escapeXML(open.from)}'`);
    if (open.version) attrs.push(`version='${open.version}'`);
    if (open.lang) attrs.push(`xml:lang='${escapeXML(open.lang)}'`);
    this.write(`<open ${attrs.join(" ")}/>`);
  }

  /** RFC 7395 §3.3.3: every message stands alone, so the stanza states its namespace. */
  send(xml: string): void {
    this.write(withContentNamespace(xml, this.contentNs));
  }

  /** RFC 7395 §3.3.3: stream-level elements declare the stream prefix themselves. */
  sendStreamElement(name: "features" | "error", inner: string): void {
    this.write(`<stream:${name} xmlns:stream='${NS_STREAMS}'>${inner}</stream:${name}>`);
  }

  /**
   * RFC 7395 §3.6: our <close/>; once the peer's <close/> is in (or after a short wait), the
   * WebSocket closing handshake.
   */
  closeStream(): void {
    if (this.closing || this.ws.readyState !== WebSocket.OPEN) return;
    this.closing = true;
    this.write(`<close xmlns='${NS_FRAMING}'/>`);
    if (this.peerClosedStream) this.closeWebSocket();
    else this.closeTimer = setTimeout(() => this.closeWebSocket(), CLOSE_WAIT_MS).unref();
  }

  destroy(): void {
    this.parser.stop();
    this.ws.terminate();
  }

  /** One heartbeat: ping after a silent interval; no answer since the last ping → the peer is gone. */
  beat(now: number, intervalMs: number): void {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    if (this.pingSentAt !== undefined) {
      if (now - this.pingSentAt >= intervalMs) this.ws.terminate();
      return;
    }
    if (now - this.lastInbound < intervalMs) return;
    this.pingSentAt = now;
    this.ws.ping();
  }

  private closeWebSocket(): void {
    clearTimeout(this.closeTimer);
    if (this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.close(this.closeCode);
    // ws waits 30 s for the peer's closing frame; a peer that does not answer is cut sooner.
    this.closeTimer = setTimeout(() => this.ws.terminate(), CLOSE_WAIT_MS).unref();
  }

  private write(data: string): void {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    // Messages of one event-loop tick leave in as few TCP segments (TLS records) as possible.
    if (!this.corked) {
      this.corked = true;
      const socket = this.socket;
      socket.cork();
      process.nextTick(() => {
        this.corked = false;
        socket.uncork();
      });
    }
    this.ws.send(data);
  }

  private newParser(limits: ParserLimits): StreamParser {
    const parser = new StreamParser(limits, {
      streamStart: () => {},
      element: (element) => {
        if (this.parsed === undefined) {
          this.parsed = element;
          return;
        }
        this.morePerMessage = true;
        parser.stop();
      },
      // Only a message closing our synthetic root gets here: never a well-formed message.
      streamEnd: () => { this.morePerMessage = true; },
      error: (error) => this.inputError(error),
    });
    parser.write(Buffer.from(STREAM_ROOT));
    return parser;
  }

  private readonly onMessage = (data: RawData, isBinary: boolean): void => {
    this.lastInbound = Date.now();
    this.pingSentAt = undefined;
    if (this.endReported) return;
    // RFC 7395 §3.2: "Data frame messages in the XMPP subprotocol MUST be of the text type".
    if (isBinary) return this.violation(CLOSE_UNSUPPORTED_DATA, new StreamError("unsupported-encoding", "Only text messages carry XMPP (RFC 7395 §3.2)"));
    const parser = this.parser;
    if (parser.isStopped) return;
    const bytes = data as Buffer;
    this.parsed = undefined;
    this.morePerMessage = false;
    parser.write(bytes);
    const element = this.parsed as Element | undefined;
    this.parsed = undefined;
    if (this.morePerMessage) return this.violation(CLOSE_NORMAL, new StreamError("not-well-formed", "One XML element per WebSocket message (RFC 7395 §3.3.3)"));
    // The parser found a problem and reported it.
    if (parser.isStopped) return;
    // A stanza still open, or a tag begun after the last '>': the element is not complete.
    if (!parser.betweenElements || tagBegunAtEnd(bytes)) return this.violation(CLOSE_NORMAL, new StreamError("not-well-formed", "Each WebSocket message must hold a complete XML element (RFC 7395 §3.3.3)"));
    // Text after the element, which the parser would only report with the next message's first tag.
    if (!isWhitespace(parser.pendingText)) return this.violation(CLOSE_NORMAL, new StreamError("invalid-xml", "Text is not allowed at the stream level"));
    // Whitespace alone: a keepalive in RFC 6120's sense (§4.6.1), nothing to hand on.
    if (!element) return;
    this.dispatch(element);
  };

  private dispatch(element: Element): void {
    const framing = element.attrs.xmlns === NS_FRAMING;
    if (framing && element.name === "close") {
      this.peerClosedStream = true;
      if (this.closing) return this.closeWebSocket();
      this.parser.stop();
      return this.receiver.streamEnd();
    }
    if (this.closing) return;
    if (!this.awaitingOpen) return this.receiver.element(element);
    this.awaitingOpen = false;
    if (framing && element.name === "open" && this.options.seeOtherUri) return this.seeOther(this.options.seeOtherUri);
    this.receiver.streamStart(toHeader(element));
  }

  /** RFC 7395 §3.6.1: the server moves the client to another endpoint instead of opening the stream. */
  private seeOther(uri: string): void {
    this.closing = true;
    this.parser.stop();
    this.write(`<close xmlns='${NS_FRAMING}' see-other-uri='${escapeXML(uri)}'/>`);
    this.closeWebSocket();
  }

  /** A framing violation: a stream error (through the stream above, which then closes), and the WebSocket close code for it. */
  private violation(closeCode: number, error: StreamError): void {
    this.parser.stop();
    this.closeCode = closeCode;
    this.inputError(error);
  }

  private inputError(error: StreamError): void {
    if (this.closing) return this.closeWebSocket();
    this.receiver.error(error);
  }

  private readonly onAlive = (): void => {
    this.lastInbound = Date.now();
    this.pingSentAt = undefined;
  };

  /**
   * ws reports what RFC 6455 forbids (and closes the connection itself, with the code it names):
   * a message over the size limit (1009), invalid UTF-8 (1007), a broken frame (1002). The session
   * ends instead of waiting for resumption — a resuming client would only send the same again.
   */
  private readonly onError = (err: Error & { code?: string }): void => {
    this.parser.stop();
    if (err.code === "WS_ERR_UNSUPPORTED_MESSAGE_LENGTH") {
      return this.inputError(new StreamError("policy-violation", "XML stanza is too big", new Element("stanza-too-big", { xmlns: NS.XMPP_ERRORS })));
    }
    if (err.code === "WS_ERR_INVALID_UTF8") return this.inputError(new StreamError("unsupported-encoding", "Invalid UTF-8"));
    this.inputError(new StreamError("bad-format", "WebSocket protocol error"));
  };

  private readonly onDrain = (): void => {
    this.receiver.drain();
  };

  private readonly onClose = (): void => {
    if (this.endReported) return;
    this.endReported = true;
    clearTimeout(this.closeTimer);
    this.parser.stop();
    this.heartbeat.delete(this);
    this.socket.off("drain", this.onDrain);
    // RFC 7395 §3.6: a WebSocket that closes without a <close/> first leaves the stream "implicitly
    // closed" — with stream management, the session may wait to be resumed.
    this.receiver.ended(this.peerClosedStream || this.closing ? "closed" : "lost");
  };
}

const LT = 0x3c;
const GT = 0x3e;

/** A '<' after the message's last '>' (or in a message without one): a tag begun and not finished. */
function tagBegunAtEnd(bytes: Buffer): boolean {
  return bytes.lastIndexOf(LT) > bytes.lastIndexOf(GT);
}

function isWhitespace(text: string): boolean {
  return /^[ \t\r\n]*$/.test(text);
}

/**
 * RFC 7395 §3.3.2: <open/> stands for RFC 6120's stream header, so the header checks see it as
 * one. Anything else where <open/> belongs keeps its real name and namespace, and fails them.
 */
function toHeader(element: Element): StreamHeader {
  const { xmlns, ...attrs } = element.attrs as Record<string, string>;
  if (element.name === "open" && xmlns === NS_FRAMING) return { name: "stream", uri: NS.STREAMS, defaultNs: NS.CLIENT, attrs };
  return { name: element.name, uri: xmlns ?? "", defaultNs: undefined, attrs };
}

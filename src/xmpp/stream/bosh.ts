/**
 * XMPP over BOSH: XEP-0124 1.11.2 (Bidirectional-streams Over Synchronous HTTP) carrying an XMPP
 * client stream as XEP-0206 1.4 says. One BoshSession is one Transport; the stream layer above it
 * (XmlStream, C2SNegotiation, C2SSession) is the same as over TCP.
 *
 * Framing. No stream header travels: the session creation request and each restart request
 * (xmpp:restart='true') become the StreamHeader the stream layer checks; our header becomes
 * attributes of the creation response (authid, from, xmpp:version), with the stream features in
 * that same response. Each request body is parsed by the bounded stream parser (../parser.ts,
 * HARDENING §6.2 #8): <body/> plays the stream element, its children are the top-level elements,
 * with the limits the stream layer set (pre-auth until SASL succeeds, post-auth after).
 *
 * Requests. Payloads are handed up in 'rid' order (§14.1); early requests wait for the gap to
 * fill, a 'rid' beyond the window ends the session with item-not-found (§14.2), a repeated 'rid'
 * gets the same response again (§14.3). The server holds at most 'hold' requests and answers the
 * oldest with whatever output is queued, or empty after 'wait' seconds (§7).
 *
 * Cost of an idle session: one held request and one timer for it (its 'wait' deadline); with no
 * request held, one timer for the inactivity deadline (§10). Nothing runs per tick.
 *
 * Not implemented, on purpose: key sequencing (§15: "If the session is secure, it is not
 * necessary" — sids are 128-bit random and the endpoint is HTTPS or behind a TLS proxy), multiple
 * streams per session (§19: we do not advertise 'stream', so such requests are ordinary ones),
 * 'ack' (§9: optional, and XEP-0198 acknowledges stanzas end to end), 'content' (responses are
 * always text/xml; charset=utf-8) and content encodings ('accept').
 */
import { randomBytes } from "node:crypto";
import { StreamParser, type ParserLimits, type StreamHeader } from "../parser.js";
import { escapeXML, type Element } from "../xml.js";
import { NS } from "../ns.js";
import { StreamError } from "../../errors.js";
import type { Logger } from "../../log.js";
import { NS_STREAMS, withContentNamespace, type FrameReceiver, type StreamOpen, type TlsFacts, type Transport, type TransportEnd } from "./transport.js";

export const NS_HTTPBIND = "http://jabber.org/protocol/httpbind";
export const NS_XBOSH = "urn:xmpp:xbosh";
/** The BOSH version we implement (the response's 'ver' is the lower of it and the client's). */
const OUR_VERSION: readonly [number, number] = [1, 11];
/** §14.1: "The client MUST take care to choose an initial 'rid' that will never be incremented above 9007199254740991". */
const MAX_RID = 2 ** 53 - 1;
/** How long a closed stream waits for a request to carry its final response (RFC 6120 §4.4 has 2 s for TCP). */
const CLOSE_WAIT_MS = 5000;
/** Bytes of a request body given to the parser at a time while only the <body> tag is wanted. */
const WRAPPER_SLICE = 512;

/** XEP-0124 §17.2 terminal binding conditions (the ones this server sends). */
export type TerminalCondition =
  | "bad-request" | "host-unknown" | "improper-addressing" | "item-not-found" | "other-request"
  | "policy-violation" | "remote-stream-error" | "system-shutdown";

/**
 * §17.1: a legacy client (no 'ver' in its session request) expects these HTTP errors instead of
 * three of the terminal conditions.
 */
const LEGACY_STATUS: Partial<Record<TerminalCondition, number>> = { "bad-request": 400, "policy-violation": 403, "item-not-found": 404 };

const EMPTY_BODY = `<body xmlns='${NS_HTTPBIND}'/>`;
/** §17.3 recoverable binding condition: the request is answered, the session lives on. */
const RECOVERABLE_ERROR = `<body xmlns='${NS_HTTPBIND}' type='error'/>`;

export function terminateBody(condition?: TerminalCondition, inner = "", attrs = ""): string {
  const cond = condition ? ` condition='${condition}'` : "";
  const streams = inner.includes("<stream:") ? ` xmlns:stream='${NS_STREAMS}'` : "";
  return `<body xmlns='${NS_HTTPBIND}' type='terminate'${cond}${attrs}${streams}>${inner}</body>`;
}

export interface BoshLimits {
  /** The longest a request is held (the client's 'wait' is lowered to this). */
  maxWaitSeconds: number;
  /** The most requests held at once (the client's 'hold' is lowered to this). */
  maxHold: number;
  /** §10: the longest the client may leave us without a request; then its transport is lost. */
  inactivitySeconds: number;
  /** §11–12: the shortest interval between empty requests. */
  pollingSeconds: number;
  /** §10: the longest pause a client may ask for; 0 turns pauses off. */
  maxPauseSeconds: number;
}

/** One HTTP request of a BOSH session, as the HTTP layer (../../http/bosh.ts) hands it over. */
export interface BoshExchange {
  /** The client's address (X-Forwarded-For from a trusted proxy already applied). */
  readonly remoteAddress: string;
  /** HTTPS, or HTTP from a trusted proxy that terminated TLS. */
  readonly secure: boolean;
  /** The HTTP connection closed before a response was sent. */
  readonly aborted: boolean;
  /** Sends the response: HTTP 200 unless `status` says otherwise. */
  respond(xml: string, status?: number): void;
  /** Closes the HTTP connection without a response. */
  drop(): void;
  /** Called once if the HTTP connection closes before the response was sent. */
  onAbort(listener: () => void): void;
}

export interface BoshServiceDeps {
  hosts: readonly string[];
  limits: BoshLimits;
  /** The parser limits of a stream before authentication (the stream layer raises them after). */
  preAuth: ParserLimits;
  log: Logger;
  /** Takes a per-address slot (../c2s/admission.ts); returns its release, or undefined when refused. */
  admit(address: string): (() => void) | undefined;
  /** A client stream starts on this transport (C2SNegotiation takes it). */
  startStream(transport: BoshSession): void;
}

/** A request body, parsed. */
interface ParsedBody {
  /** Attributes of <body/>, by qualified name. */
  attrs: Record<string, string>;
  /** Its children: the stanzas and nonzas, in order. */
  elements: Element[];
  /** A payload the bounded parser refused (the same answers as over TCP). */
  error?: StreamError;
  /** The body did not end: not a complete XML document. */
  truncated: boolean;
}

/** The sid table of one server (shared by its HTTPS and HTTP listeners) and the entry for requests. */
export class BoshService {
  private readonly sessions = new Map<string, BoshSession>();
  private shuttingDown = false;

  constructor(private readonly deps: BoshServiceDeps) {}

  get size(): number {
    return this.sessions.size;
  }

  /** Requests of a session the server has open (held, or waiting for an earlier rid); undefined for no such session. */
  openRequests(sid: string): number | undefined {
    return this.sessions.get(sid)?.openRequests;
  }

  /** One POSTed body. Everything about it is answered through `exchange`. */
  handle(body: Buffer, exchange: BoshExchange): void {
    const wrapper = readWrapper(body, this.deps.preAuth);
    // Not a BOSH body at all: no session and no version to answer in (§17.1 400 Bad Request).
    if (!wrapper) return exchange.respond(terminateBody("bad-request"), 400);
    const sid = wrapper.sid;
    if (sid === undefined) return this.create(wrapper.attrs, body, exchange);
    const session = this.sessions.get(sid);
    // §17.2 item-not-found: "(1) 'sid' is not valid".
    if (!session) return exchange.respond(terminateBody("item-not-found"));
    session.request(parseBody(body, session.parserLimits), exchange);
  }

  /**
   * Server shutdown: new sessions get system-shutdown (§17.2 "No new sessions can be created"),
   * and every open stream ends with the system-shutdown stream error now, while the HTTP
   * connections of the held requests still exist to carry it.
   */
  shutdown(): void {
    this.shuttingDown = true;
    for (const session of [...this.sessions.values()]) session.shutdown();
  }

  /** @internal the session is over. */
  forget(session: BoshSession): void {
    if (this.sessions.get(session.sid) === session) this.sessions.delete(session.sid);
  }

  private create(attrs: Record<string, string>, body: Buffer, exchange: BoshExchange): void {
    const legacy = attrs.ver === undefined;
    const refuse = (condition: TerminalCondition) => exchange.respond(terminateBody(condition), legacy ? LEGACY_STATUS[condition] : undefined);
    if (this.shuttingDown) return refuse("system-shutdown");
    const { limits, hosts, log } = this.deps;
    const rid = parseRid(attrs.rid);
    // §7.1: 'wait' and 'hold' SHOULD be there; without them the server's own values apply.
    const wait = attrs.wait === undefined ? limits.maxWaitSeconds : parseCount(attrs.wait);
    const hold = attrs.hold === undefined ? 1 : parseCount(attrs.hold);
    if (rid === undefined || wait === undefined || hold === undefined) return refuse("bad-request");
    const to = attrs.to?.toLowerCase().replace(/\.$/, "");
    // §17.2 improper-addressing: "The initialization element lacks a 'to' or 'route' attribute".
    if (!to) return refuse("improper-addressing");
    // §17.2 host-unknown: "The target domain specified in the 'to' attribute ... is unknown".
    if (!hosts.includes(to)) return refuse("host-unknown");
    const release = this.deps.admit(exchange.remoteAddress);
    if (!release) {
      log.debug({ stage: "bosh", address: exchange.remoteAddress }, "BOSH session refused: address banned or at its connection limit");
      return refuse("policy-violation");
    }
    const parsed = parseBody(body, this.deps.preAuth);
    const session = new BoshSession(this, {
      rid, to, legacy, exchange, release, log,
      wait: Math.min(wait, limits.maxWaitSeconds),
      hold: Math.min(hold, limits.maxHold),
      ver: negotiateVersion(attrs.ver),
      lang: attrs["xml:lang"],
      version: xboshAttr(attrs, "version"),
      limits,
      parserLimits: this.deps.preAuth,
    });
    this.sessions.set(session.sid, session);
    this.deps.startStream(session);
    session.begin(parsed, exchange);
  }
}

interface SessionSetup {
  rid: number;
  to: string;
  legacy: boolean;
  exchange: BoshExchange;
  release: () => void;
  log: Logger;
  wait: number;
  hold: number;
  ver: string;
  lang: string | undefined;
  version: string | undefined;
  limits: BoshLimits;
  parserLimits: ParserLimits;
}

/** A request whose payloads were handed up, waiting for its response. */
interface Held {
  rid: number;
  exchange: BoshExchange;
  heldAt: number;
  /** §10: a pause request is answered at once and never with payloads. */
  pause: boolean;
}

/** Until a stream takes the transport (synchronously after construction, before any input). */
const UNATTENDED: FrameReceiver = { streamStart() {}, element() {}, streamEnd() {}, error() {}, ended() {}, drain() {} };

export class BoshSession implements Transport {
  readonly kind = "bosh";
  readonly sid = randomBytes(16).toString("base64url");
  readonly remoteAddress: string;
  readonly secure: boolean;
  readonly tls: TlsFacts | undefined = undefined;
  lastInbound = Date.now();
  parserLimits: ParserLimits;

  private receiver: FrameReceiver = UNATTENDED;
  private readonly firstRid: number;
  /** The 'rid' whose payloads go up next (§14.1: strictly in order). */
  private nextRid: number;
  private readonly wait: number;
  private readonly hold: number;
  /** §7.2: 'requests' is one more than 'hold'; it is also the window of acceptable rids (§14.2). */
  private readonly requests: number;
  private readonly polling: boolean;
  private readonly inactivityMs: number;
  private readonly to: string;
  private readonly lang: string | undefined;
  private readonly version: string | undefined;
  private readonly legacy: boolean;
  private readonly ver: string;
  private readonly release: () => void;
  private readonly log: Logger;
  private readonly pollingMs: number;
  private readonly maxPauseSeconds: number;

  /** Held requests, oldest (lowest rid) first. */
  private held: Held[] = [];
  /** Requests that arrived ahead of a missing rid. */
  private readonly early = new Map<number, { parsed: ParsedBody; exchange: BoshExchange }>();
  /** Rids whose payloads went up but whose HTTP connection closed before they were answered. */
  private orphans: number[] = [];
  /** §14.3: the last responses, by rid, to send again if the client repeats a request. */
  private readonly answered = new Map<number, string>();
  private lastAnsweredRid = 0;

  /** Output not yet in a response. */
  private out: string[] = [];
  private outChars = 0;
  private streamError: string | undefined;
  private streamElements = false;
  private streamId = "";
  private from: string | undefined;
  private xmppVersion: string | undefined;

  private flushScheduled = false;
  private timer: NodeJS.Timeout | undefined;
  private timerDue = 0;
  /** When the last response left no request held: the inactivity period runs from here. */
  private idleSince = Date.now();
  private pauseMs: number | undefined;
  private previousRequestAt = 0;
  private previousWasEmpty = false;
  private lastResponseEmpty = false;
  private closingSince: number | undefined;
  private finished = false;

  constructor(private readonly service: BoshService, setup: SessionSetup) {
    this.remoteAddress = setup.exchange.remoteAddress;
    this.secure = setup.exchange.secure;
    this.firstRid = setup.rid;
    this.nextRid = setup.rid;
    this.to = setup.to;
    this.lang = setup.lang;
    this.version = setup.version;
    this.legacy = setup.legacy;
    this.ver = setup.ver;
    this.release = setup.release;
    this.log = setup.log;
    this.wait = setup.wait;
    this.hold = setup.hold;
    this.requests = setup.hold + 1;
    // §12: 'wait' or 'hold' of 0 asks for a polling session: every request is answered at once.
    this.polling = setup.wait === 0 || setup.hold === 0;
    this.pollingMs = setup.limits.pollingSeconds * 1000;
    // §12: "the connection manager SHOULD specify a higher than normal value for the 'inactivity' attribute".
    this.inactivityMs = (setup.limits.inactivitySeconds + (this.polling ? setup.limits.pollingSeconds : 0)) * 1000;
    this.maxPauseSeconds = setup.limits.maxPauseSeconds;
    this.parserLimits = setup.parserLimits;
  }

  // ── Transport ──────────────────────────────────────────────────────────────────────────────

  get openRequests(): number {
    return this.held.length + this.early.size;
  }

  /** Output waiting for the client's next request. */
  get buffered(): number {
    return this.outChars;
  }

  setReceiver(receiver: FrameReceiver): void {
    this.receiver = receiver;
  }

  restart(limits: ParserLimits): void {
    // XEP-0206 §5: the client asks for the new stream with xmpp:restart='true'; its requests are
    // parsed with the new limits from now on.
    this.parserLimits = limits;
  }

  /** Other limits for the rest of this stream, without a restart (SASL2): requests are parsed with them from now on. */
  setLimits(limits: ParserLimits): void {
    this.parserLimits = limits;
  }

  openStream(open: StreamOpen): void {
    this.streamId = open.id;
    this.from = open.from;
    this.xmppVersion = open.version;
  }

  send(xml: string): void {
    if (this.closingSince !== undefined || this.finished) return;
    // XEP-0206 §2: stanzas in <body/> are "qualified by the 'jabber:client' namespace".
    this.queue(withContentNamespace(xml, NS.CLIENT));
  }

  sendStreamElement(name: "features" | "error", inner: string): void {
    if (this.closingSince !== undefined || this.finished) return;
    this.streamElements = true;
    // XEP-0206 §6: a stream error ends the session, after whatever was queued before it.
    if (name === "error") this.streamError = `<stream:error>${inner}</stream:error>`;
    else this.queue(`<stream:${name}>${inner}</stream:${name}>`);
  }

  closeStream(): void {
    if (this.closingSince !== undefined || this.finished) return;
    this.closingSince = Date.now();
    this.scheduleFlush();
  }

  /** Ends now: queued output is dropped, held requests get the terminate (with the stream error, if any). */
  destroy(): void {
    if (this.finished) return;
    this.out = [];
    this.outChars = 0;
    this.answerAllTerminate(this.streamError ? "remote-stream-error" : undefined, this.streamError ?? "");
    this.finish("closed");
  }

  // ── requests ───────────────────────────────────────────────────────────────────────────────

  /** The session creation request (§7.1): the first stream starts. */
  begin(parsed: ParsedBody, exchange: BoshExchange): void {
    this.request(parsed, exchange);
  }

  request(parsed: ParsedBody, exchange: BoshExchange): void {
    if (this.finished) return exchange.respond(terminateBody("item-not-found"));
    // §16 (Security Considerations): a request of a secure session over an insecure channel —
    // "the connection manager SHOULD simply close the connection" without ending the session.
    if (this.secure && !exchange.secure) return exchange.drop();
    const rid = parseRid(parsed.attrs.rid);
    if (rid === undefined || parsed.truncated) return this.terminate("bad-request", exchange);
    this.lastInbound = Date.now();
    if (rid < this.nextRid) return this.repeated(rid, exchange);
    const previous = this.early.get(rid);
    if (previous) {
      // §14.3: the same rid again before it was answered: the older request gets a recoverable error.
      previous.exchange.respond(RECOVERABLE_ERROR);
      this.early.set(rid, { parsed, exchange });
      return;
    }
    // §11 overactivity: "the client MAY make one additional request if it is to pause or terminate".
    const endsOrPauses = parsed.attrs.type === "terminate" || parsed.attrs.pause !== undefined;
    const open = this.held.length + this.early.size + 1;
    if (open > this.requests + (endsOrPauses ? 1 : 0)) return this.terminate("policy-violation", exchange);
    // §14.2: "If it receives a request with a 'rid' greater than the values in the window, then
    // the connection manager MUST terminate the session with an error".
    if (rid - this.nextRid >= this.requests) return this.terminate("item-not-found", exchange);
    if (rid > this.nextRid) {
      this.early.set(rid, { parsed, exchange });
      return;
    }
    this.process(rid, parsed, exchange);
    for (let next = this.early.get(this.nextRid); next && !this.finished; next = this.early.get(this.nextRid)) {
      this.early.delete(this.nextRid);
      this.process(this.nextRid, next.parsed, next.exchange);
    }
    if (!this.finished) this.scheduleFlush();
  }

  /** One request, in rid order: its payloads go up, the request waits for its response. */
  private process(rid: number, parsed: ParsedBody, exchange: BoshExchange): void {
    this.nextRid = rid + 1;
    const now = Date.now();
    const attrs = parsed.attrs;
    const restart = isTrue(xboshAttr(attrs, "restart"));
    const terminate = attrs.type === "terminate";
    const pause = this.maxPauseSeconds > 0 ? parseCount(attrs.pause) : undefined;
    const empty = parsed.elements.length === 0 && !restart && !terminate && pause === undefined && rid !== this.firstRid && !parsed.error;
    if (empty && this.tooFrequent(now)) return this.terminate("policy-violation", exchange);
    this.previousRequestAt = now;
    this.previousWasEmpty = empty;
    // §10: "The connection manager SHOULD set the maximum inactivity period back to normal upon
    // reception of the next request".
    this.pauseMs = undefined;
    if (exchange.aborted) this.orphans.push(rid);
    else this.hold_(rid, exchange, now, pause !== undefined);
    if (this.closingSince !== undefined) return;
    const receiver = this.receiver;
    if (parsed.error) return receiver.error(parsed.error);
    if (rid === this.firstRid || restart) {
      // XEP-0206 §5: a restart request "SHOULD be empty ... if the client includes an XML stanza
      // in the body, the connection manager SHOULD ignore it".
      receiver.streamStart(this.header(attrs));
      if (restart) return;
    }
    for (const element of parsed.elements) receiver.element(element);
    if (terminate) receiver.streamEnd();
    if (pause !== undefined) {
      this.pauseMs = Math.min(pause, this.maxPauseSeconds) * 1000;
      this.log.debug({ stage: "bosh", seconds: this.pauseMs / 1000 }, "BOSH session paused");
    }
  }

  /** §11 and §12: empty requests more often than 'polling' allows. */
  private tooFrequent(now: number): boolean {
    const soon = now - this.previousRequestAt < this.pollingMs;
    if (!soon) return false;
    // §12: "two consecutive empty new requests ... if the connection manager's response to the
    // first request contained no payloads".
    if (this.polling) return this.previousWasEmpty && this.lastResponseEmpty;
    // §11: a sequence of 'requests' new requests none of which was answered, the last one empty.
    return this.held.length + 1 >= this.requests;
  }

  private hold_(rid: number, exchange: BoshExchange, now: number, pause: boolean): void {
    const entry: Held = { rid, exchange, heldAt: now, pause };
    let i = this.held.length;
    while (i > 0 && this.held[i - 1]!.rid > rid) i--;
    this.held.splice(i, 0, entry);
    exchange.onAbort(() => this.abandoned(entry));
  }

  /** The HTTP connection of a held request closed: nothing can be sent on it any more. */
  private abandoned(entry: Held): void {
    const i = this.held.indexOf(entry);
    if (i === -1 || this.finished) return;
    this.held.splice(i, 1);
    this.orphans.push(entry.rid);
    // Only rids within the window can come back.
    this.orphans = this.orphans.filter((rid) => rid >= this.nextRid - this.requests);
    if (this.held.length === 0) this.idleSince = Date.now();
    this.armTimer();
  }

  /** §14.3: a rid we already had. */
  private repeated(rid: number, exchange: BoshExchange): void {
    const live = this.held.find((h) => h.rid === rid);
    if (live) {
      // "respond immediately to the existing request with a recoverable binding condition ...
      // and send any future response to the latest request".
      live.exchange.respond(RECOVERABLE_ERROR);
      live.exchange = exchange;
      exchange.onAbort(() => this.abandoned(live));
      return;
    }
    const replay = this.answered.get(rid);
    // "it SHOULD return an HTTP 200 (OK) response that includes the buffered copy of the original XML response".
    if (replay !== undefined) return exchange.respond(replay);
    const orphan = this.orphans.indexOf(rid);
    if (orphan !== -1) {
      // Never answered: the client asks again for the response it did not get.
      this.orphans.splice(orphan, 1);
      if (rid < this.lastAnsweredRid) {
        // Later requests were answered meanwhile; nothing was meant for this one.
        this.remember(rid, EMPTY_BODY);
        return exchange.respond(EMPTY_BODY);
      }
      this.hold_(rid, exchange, Date.now(), false);
      this.scheduleFlush();
      return;
    }
    // "If the original response is not available ... the connection manager MUST return an
    // 'item-not-found' terminal binding error".
    this.terminate("item-not-found", exchange);
  }

  // ── responses ──────────────────────────────────────────────────────────────────────────────

  private queue(xml: string): void {
    this.out.push(xml);
    this.outChars += xml.length;
    this.scheduleFlush();
  }

  /** Output of one event-loop turn goes out in one response (like corking a TCP socket). */
  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(this.flush);
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    if (this.finished) return;
    if (this.closingSince !== undefined) {
      if (this.held.length === 0) return this.armTimer();
      this.answerAllTerminate(this.streamError ? "remote-stream-error" : undefined, this.takeOutput() + (this.streamError ?? ""));
      return this.finish("closed");
    }
    const answerAll = this.polling || this.held.some((h) => h.pause);
    let wrote = false;
    while (this.held.length > 0) {
      const oldest = this.held[0]!;
      const due = this.out.length > 0 || this.held.length > this.hold || answerAll;
      if (!due) break;
      this.held.shift();
      // §10: "The response to the pause request MUST NOT contain any payloads."
      if (oldest.pause) this.answer(oldest, "", false);
      else {
        wrote ||= this.out.length > 0;
        this.answer(oldest, this.takeOutput(), true);
      }
    }
    if (this.held.length === 0) this.idleSince = Date.now();
    this.armTimer();
    if (wrote) this.receiver.drain();
  };

  private takeOutput(): string {
    const content = this.out.length === 1 ? this.out[0]! : this.out.join("");
    this.out = [];
    this.outChars = 0;
    return content;
  }

  private answer(entry: Held, content: string, remember: boolean): void {
    let attrs = entry.rid === this.firstRid ? this.creationAttributes() : "";
    if (this.streamElements) attrs += ` xmlns:stream='${NS_STREAMS}'`;
    this.streamElements = false;
    const xml = attrs === "" && content === "" ? EMPTY_BODY : `<body xmlns='${NS_HTTPBIND}'${attrs}>${content}</body>`;
    this.lastResponseEmpty = content === "";
    if (remember) this.remember(entry.rid, xml);
    this.lastAnsweredRid = Math.max(this.lastAnsweredRid, entry.rid);
    entry.exchange.respond(xml);
  }

  private remember(rid: number, xml: string): void {
    this.answered.set(rid, xml);
    // §14.3: keep as many responses as the client may have requests open.
    for (const old of this.answered.keys()) {
      if (this.answered.size <= this.requests) break;
      this.answered.delete(old);
    }
  }

  /** §7.2 and XEP-0206 §4: the session creation response's attributes, our stream header's too. */
  private creationAttributes(): string {
    const attrs = [
      `sid='${this.sid}'`, `wait='${this.wait}'`, `requests='${this.requests}'`, `hold='${this.hold}'`,
      `inactivity='${Math.round(this.inactivityMs / 1000)}'`, `polling='${this.pollingMs / 1000}'`, `ver='${this.ver}'`,
      `authid='${this.streamId}'`, `xmlns:xmpp='${NS_XBOSH}'`, `xmpp:restartlogic='true'`,
    ];
    if (this.maxPauseSeconds > 0) attrs.push(`maxpause='${this.maxPauseSeconds}'`);
    if (this.from) attrs.push(`from='${escapeXML(this.from)}'`);
    if (this.xmppVersion) attrs.push(`xmpp:version='${this.xmppVersion}'`);
    return " " + attrs.join(" ");
  }

  /** The oldest held request carries the terminate; the others are answered empty (§13). */
  private answerAllTerminate(condition: TerminalCondition | undefined, content: string): void {
    const held = this.held;
    this.held = [];
    held.forEach((entry, i) => {
      if (i > 0) return entry.exchange.respond(EMPTY_BODY);
      const creation = entry.rid === this.firstRid ? this.creationAttributes() : "";
      entry.exchange.respond(terminateBody(condition, content, creation));
    });
    for (const { exchange } of this.early.values()) exchange.respond(terminateBody("other-request"));
    this.early.clear();
  }

  /**
   * A terminal binding error caused by `offender` (§17.2): it gets the condition, other open
   * requests get other-request. A rid we cannot answer is what a broken network leaves behind, so
   * the stream counts as lost (a resumable session waits, XEP-0198); anything else is a client
   * breaking the rules, and its stream is closed.
   */
  private terminate(condition: TerminalCondition, offender: BoshExchange): void {
    this.log.info({ stage: "bosh", condition, address: this.remoteAddress }, "BOSH session terminated");
    offender.respond(terminateBody(condition), this.legacy ? LEGACY_STATUS[condition] : undefined);
    for (const { exchange } of this.held) exchange.respond(terminateBody("other-request"));
    this.held = [];
    for (const { exchange } of this.early.values()) exchange.respond(terminateBody("other-request"));
    this.early.clear();
    this.finish(condition === "item-not-found" ? "lost" : "closed");
  }

  /** See BoshService.shutdown. */
  shutdown(): void {
    if (this.finished) return;
    if (this.closingSince === undefined) this.receiver.error(new StreamError("system-shutdown"));
    this.flush();
  }

  // ── time ───────────────────────────────────────────────────────────────────────────────────

  /**
   * One timer per session, for whichever comes first: the oldest held request's 'wait', the
   * inactivity deadline when none is held, or the end of waiting to deliver a close.
   */
  private armTimer(): void {
    if (this.finished) return;
    let due: number;
    if (this.held.length > 0) due = this.held[0]!.heldAt + this.wait * 1000;
    else if (this.closingSince !== undefined) due = this.closingSince + CLOSE_WAIT_MS;
    else due = this.idleSince + (this.pauseMs ?? this.inactivityMs);
    if (this.timer && this.timerDue === due) return;
    clearTimeout(this.timer);
    this.timerDue = due;
    this.timer = setTimeout(this.onTimer, Math.max(0, due - Date.now()));
    this.timer.unref();
  }

  private readonly onTimer = (): void => {
    this.timer = undefined;
    if (this.finished) return;
    const now = Date.now();
    const oldest = this.held[0];
    if (oldest) {
      // §7: "the connection manager SHOULD NOT wait longer than the time specified by the client in the 'wait' attribute".
      if (oldest.heldAt + this.wait * 1000 <= now) {
        this.held.shift();
        const wrote = this.out.length > 0;
        this.answer(oldest, this.takeOutput(), true);
        if (this.held.length === 0) this.idleSince = now;
        if (wrote) this.receiver.drain();
      }
    } else if (this.closingSince !== undefined) {
      return this.finish("closed");
    } else if (this.idleSince + (this.pauseMs ?? this.inactivityMs) <= now) {
      // §10: no request within the inactivity period: the client is gone (its transport is lost).
      this.log.info({ stage: "bosh", address: this.remoteAddress }, "BOSH session inactive: transport lost");
      for (const { exchange } of this.early.values()) exchange.respond(terminateBody("item-not-found"));
      this.early.clear();
      return this.finish("lost");
    }
    this.armTimer();
  };

  private finish(how: TransportEnd): void {
    if (this.finished) return;
    this.finished = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.out = [];
    this.outChars = 0;
    this.answered.clear();
    this.service.forget(this);
    this.release();
    this.receiver.ended(how);
  }

  /** The stream header the stream layer checks, from the session request or a restart request (XEP-0206 §3, §5). */
  private header(attrs: Record<string, string>): StreamHeader {
    const header: Record<string, string> = { to: attrs.to ?? this.to };
    const lang = attrs["xml:lang"] ?? this.lang;
    if (lang !== undefined) header["xml:lang"] = lang;
    const version = xboshAttr(attrs, "version") ?? this.version;
    if (version !== undefined) header.version = version;
    return { name: "stream", uri: NS.STREAMS, defaultNs: NS.CLIENT, attrs: header };
  }
}

// ── parsing ────────────────────────────────────────────────────────────────────────────────

/**
 * The <body> tag alone, to find the session whose limits parse the rest: fed to the parser a
 * slice at a time until the tag is complete. Undefined when the body is not a BOSH body.
 */
function readWrapper(body: Buffer, limits: ParserLimits): { attrs: Record<string, string>; sid: string | undefined } | undefined {
  let header: StreamHeader | undefined;
  let failed = false;
  const parser = new StreamParser(limits, {
    streamStart: (h) => { header = h; parser.stop(); },
    element: () => {},
    streamEnd: () => {},
    error: () => { failed = true; },
  });
  for (let at = 0; at < body.length && !header && !failed; at += WRAPPER_SLICE) parser.write(body.subarray(at, at + WRAPPER_SLICE));
  if (!header || header.name !== "body" || header.uri !== NS_HTTPBIND) return undefined;
  return { attrs: header.attrs, sid: header.attrs.sid };
}

/** The whole body with the session's limits: the same parser, limits and answers as a TCP stream. */
function parseBody(body: Buffer, limits: ParserLimits): ParsedBody {
  const parsed: ParsedBody = { attrs: {}, elements: [], truncated: true };
  const parser = new StreamParser(limits, {
    streamStart: (header) => { parsed.attrs = header.attrs; },
    element: (element) => {
      // XEP-0206 §2: stanzas that leave their namespace to <body/> are jabber:client stanzas.
      if (element.attrs.xmlns === NS_HTTPBIND) element.attrs.xmlns = NS.CLIENT;
      parsed.elements.push(element);
    },
    streamEnd: () => { parsed.truncated = false; },
    error: (error) => { parsed.error = error; parsed.truncated = false; },
  });
  parser.write(body);
  parser.end();
  // Payloads of a body that failed are never handed up: the error ends the stream.
  if (parsed.error) parsed.elements = [];
  return parsed;
}

/** An attribute in the urn:xmpp:xbosh namespace, whatever prefix the client bound to it. */
function xboshAttr(attrs: Record<string, string>, local: string): string | undefined {
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== NS_XBOSH || !name.startsWith("xmlns:")) continue;
    const found = attrs[`${name.slice(6)}:${local}`];
    if (found !== undefined) return found;
  }
  return undefined;
}

function isTrue(value: string | undefined): boolean {
  return value === "true" || value === "1";
}

function parseRid(value: string | undefined): number | undefined {
  if (value === undefined || !/^\d{1,16}$/.test(value)) return undefined;
  const rid = Number(value);
  return rid > 0 && rid <= MAX_RID ? rid : undefined;
}

function parseCount(value: string | undefined): number | undefined {
  if (value === undefined || !/^\d{1,6}$/.test(value)) return undefined;
  return Number(value);
}

/** §7.2: "the highest version of the BOSH protocol that the connection manager supports, or the version specified by the client ... whichever is lower". */
function negotiateVersion(theirs: string | undefined): string {
  const m = /^(\d{1,4})\.(\d{1,4})$/.exec(theirs ?? "");
  const ours = `${OUR_VERSION[0]}.${OUR_VERSION[1]}`;
  if (!m) return ours;
  const [major, minor] = [Number(m[1]), Number(m[2])];
  const lower = major < OUR_VERSION[0] || (major === OUR_VERSION[0] && minor < OUR_VERSION[1]);
  return lower ? `${major}.${minor}` : ours;
}

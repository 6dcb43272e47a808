/**
 * Stanzas a remote server sends us, on whichever stream carries them: an incoming one (./incoming.ts)
 * or, with XEP-0288 1.0.1, one of our outgoing streams used both ways (./outgoing.ts). The same
 * checks and limits apply to both before a stanza reaches the router:
 * - valid 'from' and 'to': RFC 6120 §4.9.3.10 improper-addressing otherwise;
 * - the addresses the stream authenticated (the owner's `authorize`): §4.9.3.9 invalid-from, "the
 *   data provided in a 'from' attribute does not match an authorized JID or validated domain as
 *   negotiated ... between two servers using SASL or Server Dialback";
 * - the stanza rate (./flood.ts): over it, reading pauses; staying over it ends the stream.
 * With XEP-0198 on the stream, a stanza counts as handled once the router finished with it —
 * delivered, or committed to storage — as on c2s (../c2s/sm.ts, HARDENING §1.3 P1).
 */
import type { Element } from "../xml.js";
import { NS } from "../ns.js";
import { tryParseJid, type Jid } from "../jid.js";
import { StreamError } from "../../errors.js";
import type { Logger } from "../../log.js";
import type { XmlStream } from "../stream/xml-stream.js";
import type { StreamManagement } from "../c2s/sm.js";
import { StanzaRate } from "./flood.js";

export interface InboundOptions {
  /** The router's entry for remote stanzas; a promise resolves once the stanza is in custody. */
  route: (stanza: Element) => void | Promise<void>;
  /** Stanzas per second a stream may send on average (bursts of twice that are fine); faster ones wait. */
  maxStanzasPerSecond: number;
  /** A stream kept waiting this long without slowing down is ended (policy-violation): ./flood.ts. */
  floodMs: number;
  log: Logger;
}

export interface InboundOwner {
  /** The stream error for a stanza from `from` to `to` this stream may not carry; undefined: it may. */
  authorize(from: Jid, to: Jid): StreamError | undefined;
  /** XEP-0198 on the stream, once enabled. */
  readonly sm: StreamManagement | undefined;
  /** The domains the peer authenticated, for the log. */
  readonly peerDomains: readonly string[];
  /** Our domain on the stream (the 'from' of our stream errors). */
  readonly localDomain: string | undefined;
}

export class InboundStanzas {
  private readonly rate: StanzaRate;
  /**
   * Stanzas over the rate, in order, while the socket is not read: at most what one chunk of input
   * held (reading stops at the first of them).
   */
  private held: Element[] = [];
  private holdTimer: NodeJS.Timeout | undefined;
  /** Stanzas the router has not finished with: an <r/> is answered once those before it are done. */
  private readonly routing = new Set<Promise<void>>();

  constructor(private readonly stream: XmlStream, private readonly opts: InboundOptions, private readonly owner: InboundOwner) {
    this.rate = new StanzaRate(opts.maxStanzasPerSecond, opts.floodMs, Date.now());
  }

  stanza(stanza: Element): void {
    if (this.held.length === 0 && this.rate.take(Date.now())) return this.accept(stanza);
    if (this.held.length === 0) {
      this.opts.log.info({ stage: "s2s-in", domains: this.owner.peerDomains, rate: this.opts.maxStanzasPerSecond }, "s2s peer over its stanza rate; reading paused");
      this.stream.transport.pauseReading?.();
    }
    this.held.push(stanza);
    this.releaseHeldLater();
  }

  /** XEP-0198 <r/>: `answer` runs once the router finished with every stanza before it. */
  afterRouted(answer: () => void): void {
    const reply = () => { if (!this.stream.isOver) answer(); };
    if (this.routing.size === 0) return reply();
    void Promise.allSettled([...this.routing]).then(reply);
  }

  /** The stream ended: held stanzas are dropped with it (the peer has no acknowledgement for them). */
  end(): void {
    clearTimeout(this.holdTimer);
    this.held = [];
  }

  private releaseHeldLater(): void {
    if (this.holdTimer) return;
    this.holdTimer = setTimeout(() => {
      this.holdTimer = undefined;
      this.releaseHeld();
    }, this.rate.waitMs());
    this.holdTimer.unref();
  }

  /** Held stanzas go on as tokens come; reading resumes once none is left. */
  private releaseHeld(): void {
    const now = Date.now();
    while (this.held.length && !this.stream.isOver && this.rate.take(now)) this.accept(this.held.shift()!);
    if (this.stream.isOver) return;
    if (this.held.length === 0) return this.stream.transport.resumeReading?.();
    if (this.rate.flooding(now)) {
      this.opts.log.info({ stage: "s2s-in", domains: this.owner.peerDomains, rate: this.opts.maxStanzasPerSecond, held: this.held.length }, "s2s peer stays over its stanza rate");
      return this.stream.error(new StreamError("policy-violation", "Too many stanzas"), this.owner.localDomain);
    }
    this.releaseHeldLater();
  }

  private accept(stanza: Element): void {
    const from = tryParseJid(stanza.attrs.from);
    const to = tryParseJid(stanza.attrs.to);
    if (!from || !to) return this.stream.error(new StreamError("improper-addressing", "Stanzas between servers need valid 'from' and 'to'"));
    const refused = this.owner.authorize(from, to);
    if (refused) return this.stream.error(refused, this.owner.localDomain);
    if (this.opts.log.isLevelEnabled("debug")) this.opts.log.debug({ stage: "s2s-in", tag: stanza.name, domain: from.domain }, "stanza received");
    stanza.attrs.xmlns = NS.CLIENT;
    const sm = this.owner.sm;
    const seq = sm?.receivedInbound();
    const routed = this.opts.route(stanza);
    if (seq === undefined) return;
    if (!(routed instanceof Promise)) return void sm!.handledInbound(seq);
    // The router turns every failure into an error reply; a rejection would be a router bug, and still counts as handled.
    const tracked: Promise<void> = routed
      .catch((err: unknown) => this.opts.log.error({ err, stage: "route", tag: stanza.name }, "routing failed"))
      .finally(() => { sm!.handledInbound(seq); this.routing.delete(tracked); });
    this.routing.add(tracked);
  }
}

/** An XMPP stanza of a server stream (RFC 6120 §4.8.3: in jabber:server). */
export function isServerStanza(element: Element): boolean {
  const name = element.name;
  return (name === "message" || name === "presence" || name === "iq") && element.attrs.xmlns === NS.SERVER;
}

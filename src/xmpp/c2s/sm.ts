/**
 * XEP-0198 Stream Management 1.6.3 (urn:xmpp:sm:3): the counters of one session. The session owns
 * the protocol exchange and the queue (./outbound.ts); this class owns the arithmetic, so the rules
 * (custody before ack, wrap-around at 2^32, handled-count-too-high) live in one place.
 *
 * Our delivery promise (../shared/reference/HARDENING.md §1.3): the inbound 'h' we report covers a
 * stanza only once the router finished with it — it is in a recipient's queue or committed to
 * storage (P1); unacknowledged stanzas of a session that ends are re-routed, never dropped (P3).
 */
import { randomBytes } from "node:crypto";
import { el } from "../xml.js";
import { StreamError } from "../../errors.js";

export const NS_SM = "urn:xmpp:sm:3";
const WRAP = 2 ** 32;

export interface SmLimits {
  resumeTimeoutMs: number;
  maxResumeTimeoutMs: number;
  /** Unacknowledged stanzas per session before the stream is closed (and they are re-routed). */
  maxUnacked: number;
  /**
   * Characters a hibernated session may hold for its client (issue 21 item 6): past it the session
   * ends and what it held takes the normal path (another resource, offline storage).
   */
  maxHibernatedChars: number;
}

export class AckError extends Error {
  constructor(readonly h: number, readonly sendCount: number) {
    super(`client acknowledged ${h}, only ${sendCount} sent`);
  }

  /** XEP-0198 §4: acknowledging more than was sent → undefined-condition + <handled-count-too-high/>. */
  streamError(text: string): StreamError {
    return new StreamError("undefined-condition", text, el("handled-count-too-high", { xmlns: NS_SM, h: this.h, "send-count": this.sendCount }));
  }
}

/**
 * The counters of a resumable session as they move to another node (docs/CLUSTER.md, "Resumption
 * on another node"). Taken once every inbound stanza is in custody, so 'handled' is all there is.
 */
export interface SmSnapshot {
  id: string;
  resumeTimeoutMs: number;
  handled: number;
  sent: number;
  acked: number;
}

/** The counters of one session; which stanzas they count is the outbound queue's business. */
export class StreamManagement {
  /** Inbound: stanzas received since enable, and how many of them (a prefix) are in custody. */
  private received = 0;
  private handled = 0;
  private readonly doneOutOfOrder = new Set<number>();
  /** Waiting for 'handled' to reach a count; pushed in order of their counts (received only grows). */
  private handledWaiters: Array<{ count: number; then: () => void }> = [];
  /** Outbound: stanzas written to the client since enable, and how many it acknowledged. */
  private sent = 0;
  private acked = 0;

  constructor(readonly resumable: boolean, readonly resumeTimeoutMs: number, readonly id: string = randomBytes(15).toString("base64url")) {}

  /** Whether every stanza received so far is in custody (nothing is routed out of order still). */
  get allHandled(): boolean {
    return this.handled === this.received;
  }

  /** The counters, for a session that continues on another node; only a resumable session moves. */
  snapshot(): SmSnapshot {
    if (!this.allHandled) throw new Error("stream management snapshot while inbound stanzas are still routed");
    return { id: this.id, resumeTimeoutMs: this.resumeTimeoutMs, handled: this.handled, sent: this.sent, acked: this.acked };
  }

  /**
   * The session continues here under the same id (XEP-0198 §5: the client resumes with the id it
   * was given) and with the counters it had, so the client's 'h' means the same stanzas.
   */
  static restored(snapshot: SmSnapshot): StreamManagement {
    const sm = new StreamManagement(true, snapshot.resumeTimeoutMs, snapshot.id);
    sm.received = sm.handled = snapshot.handled;
    sm.sent = snapshot.sent;
    sm.acked = snapshot.acked;
    return sm;
  }

  /** Counts an inbound stanza; returns the token to pass to `handledInbound` once it is in custody. */
  receivedInbound(): number {
    return this.received++;
  }

  /** Marks inbound stanza `seq` as in custody; returns true when the reportable 'h' moved. */
  handledInbound(seq: number): boolean {
    if (seq !== this.handled) {
      this.doneOutOfOrder.add(seq);
      return false;
    }
    this.handled++;
    if (this.doneOutOfOrder.size > 0) while (this.doneOutOfOrder.delete(this.handled)) this.handled++;
    const waiters = this.handledWaiters;
    while (waiters.length > 0 && waiters[0]!.count <= this.handled) waiters.shift()!.then();
    return true;
  }

  /**
   * Calls `then` once every stanza received so far is in custody — not later ones too: XEP-0198 §4
   * has the <a/> answering an <r/> cover what came before it, and under steady traffic a moment
   * with nothing in flight might never come.
   */
  whenReceivedHandled(then: () => void): void {
    if (this.handled === this.received) return then();
    this.handledWaiters.push({ count: this.received, then });
  }

  /** XEP-0198 §4: 'h' is an xs:unsignedInt and wraps to 0 after 2^32 - 1. */
  get inboundH(): number {
    return this.handled % WRAP;
  }

  /** A stanza was written to the client for the first time. */
  wrote(): void {
    this.sent++;
  }

  get unacknowledged(): number {
    return this.sent - this.acked;
  }

  /**
   * Applies the client's 'h' (from <a/> or <resume/>); returns how many stanzas it newly
   * acknowledged. Throws AckError when it acknowledges more than was written.
   */
  ack(h: number): number {
    const newly = (h - (this.acked % WRAP) + WRAP) % WRAP;
    if (this.acked + newly > this.sent) throw new AckError(h, this.sent % WRAP);
    this.acked += newly;
    return newly;
  }
}

/** Parses an 'h' attribute: a decimal xs:unsignedInt, or undefined. */
export function parseH(value: string | undefined): number | undefined {
  if (value === undefined || !/^\d{1,10}$/.test(value)) return undefined;
  const n = Number(value);
  return n < WRAP ? n : undefined;
}

/**
 * XEP-0198 Stream Management 1.6.3 (urn:xmpp:sm:3): the counters and the unacknowledged queue of
 * one session. The connection owns negotiation; this class owns the arithmetic, so the rules
 * (custody before ack, wrap-around at 2^32, handled-count-too-high) live in one place.
 *
 * Our delivery promise (../shared/reference/HARDENING.md §1.3): the inbound 'h' we report covers a
 * stanza only once the router finished with it — it is in a recipient's queue or committed to
 * storage (P1); unacknowledged stanzas of a session that ends are re-routed, never dropped (P3).
 */
import { randomBytes } from "node:crypto";
import type { Element } from "../xml.js";

export const NS_SM = "urn:xmpp:sm:3";
const WRAP = 2 ** 32;

export interface SmLimits {
  resumeTimeoutMs: number;
  maxResumeTimeoutMs: number;
  maxUnacked: number;
}

export interface Unacked {
  stanza: Element;
  /** When it was queued, for the XEP-0203 delay if it has to be re-routed. */
  at: number;
  /** Told true when the client acknowledges it, false when the session ends first. */
  confirm?: (acknowledged: boolean) => void;
}

export class AckError extends Error {
  constructor(readonly h: number, readonly sendCount: number) {
    super(`client acknowledged ${h}, only ${sendCount} sent`);
  }
}

export class StreamManagement {
  readonly id = randomBytes(15).toString("base64url");
  /** Inbound: stanzas received since enable, and how many of them (a prefix) are in custody. */
  private received = 0;
  private handled = 0;
  private readonly doneOutOfOrder = new Set<number>();
  /** Outbound: stanzas sent since enable, how many the client acknowledged, and the rest. */
  private sent = 0;
  private acked = 0;
  private queue: Unacked[] = [];

  constructor(readonly resumable: boolean, readonly resumeTimeoutMs: number) {}

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
    while (this.doneOutOfOrder.delete(this.handled)) this.handled++;
    return true;
  }

  /** XEP-0198 §4: 'h' is an xs:unsignedInt and wraps to 0 after 2^32 - 1. */
  get inboundH(): number {
    return this.handled % WRAP;
  }

  /** Queues an outbound stanza; returns how many are now unacknowledged. */
  sentOutbound(stanza: Element, confirm?: Unacked["confirm"]): number {
    this.sent++;
    this.queue.push(confirm ? { stanza, at: Date.now(), confirm } : { stanza, at: Date.now() });
    return this.queue.length;
  }

  get unacked(): readonly Unacked[] {
    return this.queue;
  }

  /**
   * Applies the client's 'h' (from <a/> or <resume/>); returns the stanzas it acknowledged.
   * Throws AckError when it acknowledges more than was sent.
   */
  ack(h: number): Unacked[] {
    const newly = (h - (this.acked % WRAP) + WRAP) % WRAP;
    if (this.acked + newly > this.sent) throw new AckError(h, this.sent % WRAP);
    this.acked += newly;
    const done = this.queue.splice(0, newly);
    for (const u of done) u.confirm?.(true);
    return done;
  }

  /** Empties the queue (the session ends; the caller re-routes what was in it). */
  drain(): Unacked[] {
    const q = this.queue;
    this.queue = [];
    return q;
  }
}

/** Parses an 'h' attribute: a decimal xs:unsignedInt, or undefined. */
export function parseH(value: string | undefined): number | undefined {
  if (value === undefined || !/^\d{1,10}$/.test(value)) return undefined;
  const n = Number(value);
  return n < WRAP ? n : undefined;
}

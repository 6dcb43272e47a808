/**
 * The stanza rate of one incoming server-to-server stream (issue 15 "Protection": per-domain
 * limits on rate). A token bucket that holds two seconds' worth of the rate: bursts up to that
 * pass at once. Past it a stanza waits for the next token, and the stream stops reading meanwhile
 * (./incoming.ts), so TCP backpressure slows the peer down instead of a burst ending its stream.
 *
 * A peer that stays over the rate is flooding, not bursting: once stanzas have had to wait for
 * `sustainedMs` without the bucket getting back to half full (a second of staying under the
 * rate), the stream ends with RFC 6120 §4.9.3.14 policy-violation — "the entity has violated
 * some local service policy".
 */
export class StanzaRate {
  private tokens: number;
  private refilledAt: number;
  /** Since when stanzas have had to wait, without the peer having slowed down in between. */
  private overSince: number | undefined;

  constructor(private readonly perSecond: number, private readonly sustainedMs: number, now: number) {
    this.tokens = 2 * perSecond;
    this.refilledAt = now;
  }

  /** Takes a token for one stanza; false when it has to wait. */
  take(now: number): boolean {
    this.tokens = Math.min(2 * this.perSecond, this.tokens + ((now - this.refilledAt) / 1000) * this.perSecond);
    this.refilledAt = now;
    if (this.tokens >= this.perSecond) this.overSince = undefined;
    if (this.tokens < 1) {
      this.overSince ??= now;
      return false;
    }
    this.tokens -= 1;
    return true;
  }

  /** Milliseconds until the next token. */
  waitMs(): number {
    return Math.max(1, Math.ceil(((1 - this.tokens) / this.perSecond) * 1000));
  }

  /** Over the rate for longer than it may be. */
  flooding(now: number): boolean {
    return this.overSince !== undefined && now - this.overSince > this.sustainedMs;
  }
}

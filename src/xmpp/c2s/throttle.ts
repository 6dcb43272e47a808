/**
 * Slows down repeated authentication failures from one address and bans an address after too
 * many (ejabberd mod_fail2ban: 20 failures → 1 h). Memory is bounded: the oldest entries go first.
 */
import { BoundedMap } from "../../bounded-map.js";

export interface AuthThrottleOptions {
  /** Failures from one address before it is banned. */
  banAfter: number;
  banSeconds: number;
  /** Failures that get no extra delay. */
  freeFailures: number;
  maxDelayMs: number;
}

interface Entry { failures: number; lastFailure: number; bannedUntil: number }

const MAX_ENTRIES = 100_000;

export class AuthThrottle {
  private readonly entries = new BoundedMap<string, Entry>(MAX_ENTRIES);
  constructor(private readonly options: AuthThrottleOptions, private readonly now: () => number = Date.now) {}

  isBanned(address: string): boolean {
    const e = this.entries.get(address);
    return e !== undefined && e.bannedUntil > this.now();
  }

  /** Records a failure; returns how long to wait before answering it. */
  fail(address: string): number {
    const now = this.now();
    let e = this.entries.get(address);
    if (!e || now - e.lastFailure > this.options.banSeconds * 1000) {
      e = { failures: 0, lastFailure: now, bannedUntil: 0 };
      this.entries.set(address, e);
    }
    e.failures++;
    e.lastFailure = now;
    if (e.failures >= this.options.banAfter) e.bannedUntil = now + this.options.banSeconds * 1000;
    const over = e.failures - this.options.freeFailures;
    return over <= 0 ? 0 : Math.min(this.options.maxDelayMs, 250 * 2 ** (over - 1));
  }

  succeed(address: string): void {
    const e = this.entries.get(address);
    if (e && e.bannedUntil <= this.now()) this.entries.delete(address);
  }
}

/**
 * Slows down repeated authentication failures, per address and per account.
 *
 * - Per address: failures after the first few are answered later and later, and an address is
 *   banned after too many (ejabberd mod_fail2ban: 20 failures → 1 h).
 * - Per account, whichever addresses the guesses come from: after `accountFreeFailures` failures
 *   within `accountWindowSeconds`, each further failure on that account is answered after a
 *   delay that doubles up to `accountMaxDelayMs`. This is a slow-down, never a lockout: a login
 *   with the right password is never delayed or refused for the account's sake, and failures
 *   from an address that logged in to the account successfully (the owner mistyping at home)
 *   neither count nor wait. Unknown accounts are counted like real ones, so the delay tells
 *   nothing about which exist.
 *
 * A delay slows only a client that waits for the answer. A failure from an address whose previous
 * failure is still being delayed comes from pipelining or a parallel stream, which a delay cannot
 * slow: it is answered at once, so the per-stream limit (RFC 6120 §6.4.5) closes that stream after
 * a few guesses instead of the delay holding a window open (a stream may send its next <auth>
 * while the answer to the last is held back).
 *
 * Memory is bounded: the oldest entries go first.
 */
import { BoundedMap } from "../../bounded-map.js";

export interface AuthThrottleOptions {
  /** Failures from one address before it is banned. */
  banAfter: number;
  banSeconds: number;
  /** Failures that get no extra delay. */
  freeFailures: number;
  maxDelayMs: number;
  /** Failures on one account, from any address, that get no extra delay (default 5). */
  accountFreeFailures?: number;
  /** The longest an answer to a failure on a guessed-at account waits (default 30 s). */
  accountMaxDelayMs?: number;
  /** Failures on an account are forgotten this long after the last one (default banSeconds). */
  accountWindowSeconds?: number;
}

interface AddressEntry { failures: number; lastFailure: number; bannedUntil: number; delayedUntil: number }
interface AccountEntry { failures: number; lastFailure: number; trusted: Map<string, number> }

const MAX_ENTRIES = 100_000;
/** Addresses remembered per account as having logged in to it. */
const TRUSTED_PER_ACCOUNT = 8;
const TRUST_MS = 30 * 86_400_000;
const ACCOUNT_BASE_DELAY_MS = 1000;

export class AuthThrottle {
  private readonly entries = new BoundedMap<string, AddressEntry>(MAX_ENTRIES);
  private readonly accounts = new BoundedMap<string, AccountEntry>(MAX_ENTRIES);
  private readonly accountFreeFailures: number;
  private readonly accountMaxDelayMs: number;
  private readonly accountWindowMs: number;

  constructor(private readonly options: AuthThrottleOptions, private readonly now: () => number = Date.now) {
    this.accountFreeFailures = options.accountFreeFailures ?? 5;
    this.accountMaxDelayMs = options.accountMaxDelayMs ?? 30_000;
    this.accountWindowMs = (options.accountWindowSeconds ?? options.banSeconds) * 1000;
  }

  isBanned(address: string): boolean {
    const e = this.entries.get(address);
    return e !== undefined && e.bannedUntil > this.now();
  }

  /** Records a failure (on `account` when the client named one); returns how long to wait before answering it. */
  fail(address: string, account?: string): number {
    const now = this.now();
    const entry = this.failAddress(address);
    const accountDelay = account === undefined ? 0 : this.failAccount(account, address);
    if (entry.delayedUntil > now) return 0;
    const over = entry.failures - this.options.freeFailures;
    const delay = Math.max(over <= 0 ? 0 : Math.min(this.options.maxDelayMs, 250 * 2 ** Math.min(over - 1, 30)), accountDelay);
    entry.delayedUntil = now + delay;
    return delay;
  }

  succeed(address: string, account?: string): void {
    const e = this.entries.get(address);
    if (e && e.bannedUntil <= this.now()) this.entries.delete(address);
    if (account === undefined) return;
    // The account's count stays: an attacker's guesses do not start over because the owner logged in.
    const now = this.now();
    let a = this.accounts.get(account);
    if (!a) this.accounts.set(account, (a = { failures: 0, lastFailure: 0, trusted: new Map() }));
    a.trusted.delete(address); // re-inserted as the newest
    a.trusted.set(address, now);
    if (a.trusted.size > TRUSTED_PER_ACCOUNT) a.trusted.delete(a.trusted.keys().next().value as string);
  }

  private failAddress(address: string): AddressEntry {
    const now = this.now();
    let e = this.entries.get(address);
    if (!e || now - e.lastFailure > this.options.banSeconds * 1000) {
      e = { failures: 0, lastFailure: now, bannedUntil: 0, delayedUntil: 0 };
      this.entries.set(address, e);
    }
    e.failures++;
    e.lastFailure = now;
    if (e.failures >= this.options.banAfter) e.bannedUntil = now + this.options.banSeconds * 1000;
    return e;
  }

  private failAccount(account: string, address: string): number {
    const now = this.now();
    let a = this.accounts.get(account);
    if (!a) this.accounts.set(account, (a = { failures: 0, lastFailure: now, trusted: new Map() }));
    const trustedAt = a.trusted.get(address);
    if (trustedAt !== undefined && now - trustedAt <= TRUST_MS) return 0;
    if (now - a.lastFailure > this.accountWindowMs) a.failures = 0;
    a.failures++;
    a.lastFailure = now;
    const over = a.failures - this.accountFreeFailures;
    return over <= 0 ? 0 : Math.min(this.accountMaxDelayMs, ACCOUNT_BASE_DELAY_MS * 2 ** Math.min(over - 1, 30));
  }
}

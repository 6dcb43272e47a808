/**
 * Logins to the web admin: the admin's XMPP password checked against the stored SCRAM keys (the
 * password is neither kept nor logged), failed attempts limited per address and per account,
 * sessions kept in memory behind an unguessable cookie, one CSRF token per session, and a signed
 * token for the login form itself (so a page elsewhere cannot log the browser in).
 */
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { BoundedMap } from "../bounded-map.js";
import { deriveCredential, strongestCredential, verifyPassword } from "../auth/scram.js";
import { tryParseJid } from "../xmpp/jid.js";
import type { ScramCredential, Storage } from "../storage/index.js";

export const SESSION_COOKIE = "__Host-parley-admin";
export const LOGIN_COOKIE = "__Host-parley-login";

export interface AdminSession {
  readonly id: string;
  readonly admin: string;
  readonly csrf: string;
  expires: number;
  flash?: { kind: "ok" | "error"; text: string };
}

export function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Failures within a window, per key; a key over its limit is refused until the window passes. */
export class FailureLimiter {
  private readonly failures = new BoundedMap<string, { count: number; since: number }>(50_000);
  constructor(private readonly limit: number, private readonly windowMs: number) {}

  blocked(key: string, now = Date.now()): boolean {
    const f = this.failures.get(key);
    if (!f) return false;
    if (now - f.since >= this.windowMs) {
      this.failures.delete(key);
      return false;
    }
    return f.count >= this.limit;
  }

  fail(key: string, now = Date.now()): void {
    const f = this.failures.get(key);
    if (!f || now - f.since >= this.windowMs) this.failures.set(key, { count: 1, since: now });
    else f.count++;
  }

  clear(key: string): void {
    this.failures.delete(key);
  }
}

export interface LoginOptions {
  storage: Storage;
  admins: ReadonlySet<string>;
  hosts: readonly string[];
  sessionMs: number;
  maxFailuresPerAddress: number;
  maxFailuresPerAccount: number;
  windowMs: number;
  scramIterations: number;
  /** Signs login-form tokens. */
  key: Buffer;
}

export type LoginResult =
  | { ok: true; session: AdminSession }
  | { ok: false; reason: "invalid" | "throttled" };

export class AdminLogins {
  private readonly sessions = new BoundedMap<string, AdminSession>(1000);
  private readonly byAddress: FailureLimiter;
  private readonly byAccount: FailureLimiter;
  /** Checked for unknown accounts too, so that the answer takes as long as for a real one. */
  private decoy: Promise<ScramCredential> | undefined;

  constructor(private readonly o: LoginOptions) {
    this.byAddress = new FailureLimiter(o.maxFailuresPerAddress, o.windowMs);
    this.byAccount = new FailureLimiter(o.maxFailuresPerAccount, o.windowMs);
  }

  /** A token for the login form, bound to the browser's login cookie. */
  loginToken(cookie: string): string {
    return createHmac("sha256", this.o.key).update(`login ${cookie}`).digest("base64url");
  }

  async login(input: string, password: string, address: string): Promise<LoginResult> {
    const jid = tryParseJid(input.trim());
    const account = jid && jid.local && !jid.resource && this.o.hosts.includes(jid.domain) ? jid.bare : input.trim().toLowerCase();
    if (this.byAddress.blocked(address) || this.byAccount.blocked(account)) return { ok: false, reason: "throttled" };
    const stored = jid ? await this.o.storage.accounts.get(account) : undefined;
    const strongest = stored && strongestCredential(stored.credentials);
    const { hash, credential } = strongest ?? { hash: "SHA-256" as const, credential: await (this.decoy ??= deriveCredential("SHA-256", randomBytes(16).toString("hex"), this.o.scramIterations)) };
    const passwordOk = await verifyPassword(credential, hash, password);
    // One answer for a wrong password, an unknown account, a disabled one and a non-admin.
    if (!stored || !passwordOk || stored.disabled || !this.o.admins.has(account)) {
      this.byAddress.fail(address);
      this.byAccount.fail(account);
      return { ok: false, reason: "invalid" };
    }
    this.byAccount.clear(account);
    const session: AdminSession = {
      id: randomBytes(32).toString("base64url"), admin: account, csrf: randomBytes(32).toString("base64url"),
      expires: Date.now() + this.o.sessionMs,
    };
    this.sessions.set(session.id, session);
    return { ok: true, session };
  }

  /** The live session for a cookie value, its lifetime extended; undefined for anything else. */
  session(id: string | undefined): AdminSession | undefined {
    if (!id) return undefined;
    const s = this.sessions.get(id);
    if (!s) return undefined;
    if (s.expires < Date.now() || !this.o.admins.has(s.admin)) {
      this.sessions.delete(id);
      return undefined;
    }
    s.expires = Date.now() + this.o.sessionMs;
    return s;
  }

  logout(id: string): void {
    this.sessions.delete(id);
  }

  /** Ends every web session of an account (it was disabled or deleted). */
  endFor(admin: string): void {
    for (const [id, s] of this.sessions) if (s.admin === admin) this.sessions.delete(id);
  }
}

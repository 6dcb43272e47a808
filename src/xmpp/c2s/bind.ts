/**
 * Resource binding (RFC 6120 §7): which resource a new session gets, and whether the account may
 * have it. Hibernated sessions (XEP-0198, waiting for resumption) do not count toward the limit
 * of what a user can actually use; the oldest of them make room instead (issue 22 item 3).
 */
import { randomBytes } from "node:crypto";
import { prepResource } from "../jid.js";
import { StanzaError } from "../../errors.js";
import type { Session } from "../sessions.js";

/** The client's resource, prepared (RFC 7622 OpaqueString), or one the server makes up. */
export function chooseResource(requested: string | undefined): string {
  if (!requested) return randomBytes(6).toString("base64url");
  try {
    return prepResource(requested);
  } catch {
    // RFC 6120 §7.7.2.1: a resourcepart that violates the OpaqueString profile → bad-request.
    throw new StanzaError("bad-request", "Invalid resource");
  }
}

/**
 * Admits a session for `full` next to the user's `existing` ones; returns the hibernated sessions
 * to end so that at most `max` remain, or throws resource-constraint. A session with the same
 * full JID is not counted: the new one replaces it (RFC 6120 §7.7.2.2).
 */
export function admitSession(existing: readonly Session[], full: string, max: number): Session[] {
  const others = existing.filter((s) => s.jid.full !== full);
  const live = others.filter((s) => !s.hibernating);
  // RFC 6120 §7.6.2.1: "the account has reached a limit on the number of simultaneous connected resources".
  if (live.length >= max) throw new StanzaError("resource-constraint", "Too many resources");
  const hibernated = others.filter((s) => s.hibernating);
  const excess = others.length + 1 - max;
  return excess > 0 ? hibernated.slice(0, excess) : [];
}

/**
 * The routing table of bound sessions (RFC 6120 §7). Kept behind an interface so that cluster
 * mode can later resolve a JID to a session on another node; modules only see SessionView.
 */
import type { Element } from "./xml.js";
import type { Jid } from "./jid.js";
import type { StreamError } from "../errors.js";
import type { TransportKind } from "./stream/transport.js";

export interface Session {
  readonly id: string;
  /** The transport the session runs on (while hibernating: the one it ran on last). */
  readonly transport: TransportKind;
  /** The XEP-0388 user-agent id the client logged in with, if it gave one (its device). */
  readonly userAgentId: string | undefined;
  /** XEP-0198: stanzas sent or waiting to be sent and not yet acknowledged; undefined without stream management. */
  readonly unacknowledged: number | undefined;
  /** XEP-0198: the id a client resumes this session with, when it enabled resumption (the cluster directory records it). */
  readonly resumeId?: string | undefined;
  /** The full JID bound to this session. */
  readonly jid: Jid;
  readonly remoteAddress: string;
  /** The last available presence broadcast by the client; undefined while not available. */
  presence: Element | undefined;
  priority: number;
  /** Requested the roster, so it gets roster pushes and subscription requests (RFC 6121 §2.1.6). */
  interested: boolean;
  /** Full or bare JIDs this session sent directed presence to (RFC 6121 §4.6). */
  readonly directedPresence: Set<string>;
  /**
   * Per-session states that modules mark (XEP-0280 carbons on, …); a module that changes them
   * emits "session/changed", and on a cluster the directory carries them to the other nodes.
   */
  readonly flags: Set<string>;
  send(stanza: Element): void;
  /** Whether sendConfirmed can report the client's acknowledgement (stream management is on). */
  readonly confirmsDelivery: boolean;
  /**
   * Sends, and reports whether the client acknowledged it (XEP-0198): true on its ack, false if
   * the session ends first. Returns undefined (having sent it) when the session has no stream
   * management and so cannot tell.
   */
  sendConfirmed(stanza: Element): Promise<boolean> | undefined;
  close(error?: StreamError): void;
  /** The socket is gone and the session waits to be resumed (XEP-0198 §5): stanzas queue, nobody reads them. */
  readonly hibernating: boolean;
  /**
   * Backpressure for producers of bulk output (an offline flush, an archive page): resolves once
   * the client has read what it was sent, or the session ended; undefined when there is room now.
   */
  writable(): Promise<void> | undefined;
}

export interface SessionView {
  get(fullJid: string): Session | undefined;
  ofUser(bareJid: string): readonly Session[];
  /**
   * Sessions of the user that sent available presence, in bind order. RFC 6121 §8.5 "available"
   * means a resource the user is connected with: sessions waiting for resumption count only when
   * the user has no live one (they queue what they get, and push wakes the device).
   */
  available(bareJid: string): Session[];
  count(): number;
  all(): IterableIterator<Session>;
}

export class SessionTable implements SessionView {
  private readonly byUser = new Map<string, Session[]>();
  private readonly byFull = new Map<string, Session>();

  /** Adds a session; returns the session it replaces (same full JID), which the caller closes. */
  add(session: Session): Session | undefined {
    const replaced = this.byFull.get(session.jid.full);
    if (replaced) this.remove(replaced);
    this.byFull.set(session.jid.full, session);
    const list = this.byUser.get(session.jid.bare);
    if (list) list.push(session);
    else this.byUser.set(session.jid.bare, [session]);
    return replaced;
  }

  /** false when the session was not (or no longer) in the table. */
  remove(session: Session): boolean {
    if (this.byFull.get(session.jid.full) !== session) return false;
    this.byFull.delete(session.jid.full);
    const list = this.byUser.get(session.jid.bare);
    if (list) {
      const rest = list.filter((s) => s !== session);
      if (rest.length) this.byUser.set(session.jid.bare, rest);
      else this.byUser.delete(session.jid.bare);
    }
    return true;
  }

  get(fullJid: string): Session | undefined {
    return this.byFull.get(fullJid);
  }

  ofUser(bareJid: string): readonly Session[] {
    return this.byUser.get(bareJid) ?? [];
  }

  // One pass, no filter arrays: every message asks.
  available(bareJid: string): Session[] {
    const live: Session[] = [];
    let hibernating: Session[] | undefined;
    for (const s of this.ofUser(bareJid)) {
      if (s.presence === undefined) continue;
      if (!s.hibernating) live.push(s);
      else (hibernating ??= []).push(s);
    }
    return live.length > 0 || !hibernating ? live : hibernating;
  }

  count(): number {
    return this.byFull.size;
  }

  all(): IterableIterator<Session> {
    return this.byFull.values();
  }
}

/**
 * What the c2s layer keeps across connections: every open negotiation and session (so shutdown
 * reaches each, hibernated ones included), resumable sessions by their XEP-0198 id, and work
 * started by sessions that ended (re-routing, unavailable broadcasts) that shutdown must wait for.
 */
import type { StreamError } from "../../errors.js";
import type { C2SSession } from "./session.js";
import type { HibernatedSessions, SessionState } from "./handover.js";

export interface Closable {
  close(error?: StreamError): void;
}

export class C2SRegistry implements HibernatedSessions {
  readonly open = new Set<Closable>();
  /** XEP-0198 §5: sessions that may be resumed, by stream-management id. */
  readonly resumable = new Map<string, C2SSession>();
  private readonly work = new Set<Promise<unknown>>();

  /** XEP-0198 §5 from another node: only the account that enabled resumption may take the session. */
  async handOver(smId: string, user: string): Promise<SessionState | undefined> {
    const session = this.resumable.get(smId);
    return session?.resumableBy(user) ? session.handOver() : undefined;
  }

  track(work: Promise<unknown>): void {
    this.work.add(work);
    const done = () => { this.work.delete(work); };
    work.then(done, done);
  }

  /** Closes everything open; resolves once the work that started has settled. */
  async closeAll(error: StreamError): Promise<void> {
    for (const c of [...this.open]) c.close(error);
    while (this.work.size) await Promise.allSettled([...this.work]);
  }
}

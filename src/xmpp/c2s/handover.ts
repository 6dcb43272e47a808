/**
 * XEP-0198 Stream Management 1.6.3 §5 (resumption) across cluster nodes (docs/CLUSTER.md,
 * "Resumption on another node"): what a hibernated session is made of when it leaves the node that
 * held it, and the two sides the c2s layer needs. The cluster carries the state; the session
 * (./session.ts) takes it apart and puts it together; nothing here knows about Redis.
 */
import type { TransportKind } from "../stream/transport.js";
import type { Outgoing } from "./outbound.js";
import type { SmSnapshot } from "./sm.js";

/** A resumable session as it leaves its node: everything its client may expect of it after <resumed/>. */
export interface SessionState {
  /** The bound full JID (the resource stays: XEP-0198 §5, the session is the same). */
  jid: string;
  /** The session id (Session.id) it continues under; the cluster gives it a new one as it moves (docs/CLUSTER.md). */
  sid: string;
  sm: SmSnapshot;
  /** What the client has not acknowledged, oldest first; `confirm` is kept by whoever carries the state. */
  queue: Outgoing[];
  /** How many of `queue` were written at least once (the client's 'h' may cover them). */
  written: number;
  /** The last available presence as XML, when the session was available. */
  presence: string | undefined;
  priority: number;
  interested: boolean;
  flags: string[];
  directedPresence: string[];
  userAgentId: string | undefined;
  transport: TransportKind;
}

/** The node that holds hibernated sessions gives one up (the cluster asks on behalf of another node). */
export interface HibernatedSessions {
  /**
   * Ends this node's copy of the session `smId`, if `user` may resume it (XEP-0198 §5: the same
   * account), without re-routing what it holds or telling contacts it left: it continues elsewhere.
   */
  handOver(smId: string, user: string): Promise<SessionState | undefined>;
}

/** Where a resumption that names a session this node does not hold is asked for. */
export interface ResumptionElsewhere {
  /**
   * Asks the node holding the session `smId` of `user` for it. `restore` is called once, with the
   * state or undefined (no such session, another user's, its node dead), and synchronously on
   * arrival: whatever that node forwards after the state is handled only once the session is here.
   */
  take(user: string, smId: string, restore: (state: SessionState | undefined) => void): void;
}

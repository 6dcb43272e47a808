/**
 * XEP-0198 Stream Management 1.6.3 §5 across nodes (docs/CLUSTER.md, "Resumption on another
 * node"): the rules, without Redis. Which node to ask for a session; how its state crosses the bus
 * (stanzas as strings; a delivery confirmation becomes an id the new node answers); and what the
 * old node keeps in its replica so that stanzas still reaching it follow the session.
 */
import type { SessionState } from "../xmpp/c2s/handover.js";
import type { Outgoing } from "../xmpp/c2s/outbound.js";
import type { TransportKind } from "../xmpp/stream/transport.js";
import type { DirectoryEntry } from "./directory.js";

/**
 * The node holding the session a client resumes with `smId`, among the user's sessions on the
 * other nodes (the replica: only the authenticated user's entries, dead nodes already gone).
 * Undefined: no other node has it (unknown, expired, another user's, or its node died).
 */
export function holderOf(sessionsElsewhere: ReadonlyMap<string, DirectoryEntry>, smId: string): string | undefined {
  for (const entry of sessionsElsewhere.values()) if (entry.resume === smId) return entry.node;
  return undefined;
}

/**
 * What the node that handed a session over keeps for it in its replica until the new node's own
 * entry arrives: stanzas routed on the old node meanwhile go to the new one, behind the state.
 */
export function forwardingEntry(state: SessionState, node: string): DirectoryEntry {
  return {
    node, sid: state.sid, priority: state.priority, transport: state.transport, resume: state.sm.id,
    ...(state.presence !== undefined ? { presence: state.presence } : {}),
    ...(state.flags.length ? { flags: [...state.flags].sort() } : {}),
  };
}

interface WireEntry { n: string; t?: string; x: string; at: number; c?: string }
type WireState = Omit<SessionState, "queue"> & { queue: WireEntry[] };

/**
 * The state as one string. `confirmation` turns each stanza's delivery confirmation (the old
 * node's, e.g. an offline row waiting to be deleted) into an id the new node answers with the
 * client's acknowledgement.
 */
export function encodeSessionState(state: SessionState, confirmation: (confirm: (acknowledged: boolean) => void) => string): string {
  const queue = state.queue.map((e): WireEntry => ({
    n: e.name, x: e.xml, at: e.at, ...(e.type !== undefined ? { t: e.type } : {}), ...(e.confirm ? { c: confirmation(e.confirm) } : {}),
  }));
  return JSON.stringify({ ...state, queue } satisfies WireState);
}

const TRANSPORTS: readonly TransportKind[] = ["tcp", "websocket", "bosh"];
const isString = (v: unknown): v is string => typeof v === "string";
const isCount = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
const isStrings = (v: unknown): v is string[] => Array.isArray(v) && v.every(isString);

/**
 * The state back, with `confirmed(id)` as each confirmation; undefined when the text is not a
 * state (a node of another version, a bug): the caller answers item-not-found.
 */
export function decodeSessionState(text: string, confirmed: (id: string) => (acknowledged: boolean) => void): SessionState | undefined {
  let v: Partial<WireState>;
  try {
    v = JSON.parse(text) as Partial<WireState>;
  } catch {
    return undefined;
  }
  const sm = v.sm;
  if (!isString(v.jid) || !isString(v.sid) || !sm || !isString(sm.id) || ![sm.resumeTimeoutMs, sm.handled, sm.sent, sm.acked].every(isCount)) return undefined;
  if (sm.acked > sm.sent || !Array.isArray(v.queue) || !isCount(v.written) || v.written > v.queue.length) return undefined;
  if (!Number.isSafeInteger(v.priority) || typeof v.interested !== "boolean" || !isStrings(v.flags) || !isStrings(v.directedPresence)) return undefined;
  if (v.presence !== undefined && !isString(v.presence)) return undefined;
  if (v.userAgentId !== undefined && !isString(v.userAgentId)) return undefined;
  if (!TRANSPORTS.includes(v.transport as TransportKind)) return undefined;
  const queue: Outgoing[] = [];
  for (const e of v.queue) {
    if (!e || !isString(e.n) || !isString(e.x) || typeof e.at !== "number" || (e.t !== undefined && !isString(e.t)) || (e.c !== undefined && !isString(e.c))) return undefined;
    queue.push({ name: e.n, type: e.t, xml: e.x, at: e.at, ...(e.c !== undefined ? { confirm: confirmed(e.c) } : {}) });
  }
  return {
    jid: v.jid, sid: v.sid, sm: { id: sm.id, resumeTimeoutMs: sm.resumeTimeoutMs, handled: sm.handled, sent: sm.sent, acked: sm.acked },
    queue, written: v.written, presence: v.presence, priority: v.priority!, interested: v.interested, flags: v.flags,
    directedPresence: v.directedPresence, userAgentId: v.userAgentId, transport: v.transport!,
  };
}

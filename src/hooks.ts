/**
 * Typed hooks: three kinds of extension point, each with its semantics written once, here.
 *
 * - Chains: priority-ordered handlers for one stanza; the first that returns HANDLED stops the
 *   chain. If none handles it, the caller (the router) applies the RFC default.
 * - Events: notifications; every handler runs; return values are ignored; failures are logged.
 * - Filters: a fold over a value; a handler returns the (possibly changed) value, or null to drop it.
 *   Filters are synchronous: they sit on the hot path of every stanza.
 *
 * Names and payloads are keys of the Chains / Events / Filters interfaces; a module adds its own
 * by declaration merging (`declare module "../hooks.js" { interface Events { ... } }`).
 */
import type { Element } from "./xmpp/xml.js";
import type { Jid } from "./xmpp/jid.js";
import type { Session } from "./xmpp/sessions.js";
import type { Logger } from "./log.js";
import type { MaybePromise } from "./maybe-async.js";

export const HANDLED = true as const;

/** What `emit` returns once every handler has run synchronously: one settled promise, shared. */
const EMITTED: Promise<void> = Promise.resolve();

/**
 * Where a handler sits in its hook: higher runs first, equal ones in registration order. Every
 * registration names one of these, so who runs before whom is read here, and `HookBus.table()`
 * (docs/routing.md, "Handler table") prints it per hook.
 */
export const Priority = {
  /** Observers that must see every stanza before anyone changes or drops it: metrics. */
  FIRST: 10_000,
  /** Policy that may refuse a stanza before anyone acts on it: blocking (XEP-0191). */
  POLICY: 100,
  /** Entities that own an address and take what is sent to it: MUC rooms and occupants. */
  ADDRESSEE: 90,
  /** Handlers that add to a stanza or act on it and let it go on: caps, avatar hashes, push. */
  AMEND: 50,
  /** Handlers that stamp and record a stanza before it is delivered or stored: MAM. */
  RECORD: 10,
  /** Delivery to the user's resources or storage, and everything else. */
  DELIVERY: 0,
  /** Output filters that hold stanzas back once every other filter has had its say: CSI. */
  HOLD: -1000,
  /** Observers that must see what finally leaves: metrics. */
  LAST: -10_000,
} as const;
export type PriorityLevel = (typeof Priority)[keyof typeof Priority];
export type ChainResult = typeof HANDLED | false | undefined | void;

/** A stanza on its way through the router: 'from' stamped, 'to' parsed and normalised. */
export interface Routed {
  stanza: Element;
  from: Jid;
  to: Jid;
  /** The local c2s session it came from, when it came from one. */
  origin?: Session;
  /**
   * Present when the sender can tell the stanza's order from its custody (HARDENING §1.3 P1; a
   * c2s session, whose XEP-0198 'h' may count a stanza only once it is in custody). A handler that
   * has given the stanza its place in order already (a group commit's queue, an outbox), so that
   * only the durable write is pending, hands that write here: the sender's next stanza is routed
   * at once, its 'h' waits for `written`. A rejection is answered like a failed handler. Absent,
   * the handler waits for the write itself (see `handledOnceWritten`).
   */
  custody?: (written: Promise<unknown>) => void;
}

/**
 * HANDLED for a stanza whose durable write is `written`: at once where the sender holds custody
 * apart (Routed.custody), after the write otherwise.
 */
export function handledOnceWritten(routed: Routed, written: Promise<unknown>): typeof HANDLED | Promise<typeof HANDLED> {
  if (!routed.custody) return written.then(() => HANDLED);
  routed.custody(written);
  return HANDLED;
}

export interface Chains {
  "message/host": Routed;
  "message/bare": Routed;
  "message/full": Routed;
  /** A chat/normal message for an existing user with no available resource. */
  "message/offline": Routed;
  "presence/host": Routed;
  "presence/bare": Routed;
  "presence/full": Routed;
  /** Presence a client sent without 'to' (broadcast), RFC 6121 §4.2 and §4.5. */
  "presence/broadcast": Routed;
  "iq/host": Routed;
  "iq/bare": Routed;
  "iq/full": Routed;
  /** Stanzas for domains this server does not serve; federation will handle them here. */
  "message/remote": Routed;
  "presence/remote": Routed;
  "iq/remote": Routed;
}

/** Caches of per-user state that assume this node is the only writer. */
export type CacheName = "blocklist" | "push" | "account";

/** A stanza a session held for its client, serialized once, with the time it was queued. */
export interface HeldStanza {
  /** message, presence or iq, and its 'type' attribute */
  name: string;
  type: string | undefined;
  xml: string;
  at: number;
}

export interface Events {
  "session/bound": { session: Session };
  /** Sent initial available presence (RFC 6121 §4.2): offline messages flush here. */
  "session/available": { session: Session };
  /**
   * A session's broadcast presence or priority (RFC 6121 §4.2, §4.4, §4.5) or its flags changed.
   * The cluster's session directory records it.
   */
  "session/changed": { session: Session };
  "session/closed": { session: Session; reason: string };
  /**
   * A session ended holding stanzas its client never acknowledged (or that were never written).
   * Whoever asked for a delivery confirmation was told false and keeps its copy; these are the
   * rest, oldest first. Delivery policy decides where they go (HARDENING §1.3 P3).
   */
  "session/unacknowledged": { session: Session; stanzas: readonly HeldStanza[] };
  /** Before an account's data is removed, while roster and sessions still exist. */
  "user/deleting": { jid: Jid };
  "user/deleted": { jid: Jid };
  "server/stopping": Record<string, never>;
  /**
   * A module changed a user's stored state that other cluster nodes may hold in a cache
   * (docs/CLUSTER.md, "Caches with one writer"); the cluster announces it to them.
   */
  "cache/changed": { cache: CacheName; user: string };
  /**
   * Another node changed it: whatever is cached for the user is stale. Without `user`, anything
   * of that cache may be (this node missed announcements while its Redis connection was down).
   */
  "cache/stale": { cache: CacheName; user?: string };
}

export interface Filters {
  /** Every stanza entering the router, after stamping, before any chain. */
  "stanza/in": Routed;
  /** Every stanza before it is written to a session. */
  "stanza/out": { stanza: Element; session: Session };
}

export type ChainHandler<K extends keyof Chains> = (payload: Chains[K]) => MaybePromise<ChainResult>;

/** What happens after a chain ran: exactly one of these is called, once. */
export interface ChainContinuation<R> {
  handled(): R;
  unhandled(): R;
  /** A handler threw or rejected: the payload needs the error answer (RFC 6120 §8.3.3.8). */
  failed(err: unknown): R;
}
export type EventHandler<K extends keyof Events> = (payload: Events[K]) => MaybePromise<unknown>;
export type FilterHandler<K extends keyof Filters> = (value: Filters[K]) => Filters[K] | null;

interface Entry<H> { handler: H; priority: number; owner: string }

/** One registration, as `HookBus.table()` lists it. */
export interface HandlerRow {
  kind: "chain" | "event" | "filter";
  hook: string;
  priority: number;
  /** The module that registered it, or "core". */
  owner: string;
}

const PRIORITY_NAMES = new Map<number, string>(Object.entries(Priority).map(([name, value]) => [value, name]));

/** "POLICY (100)" for a named level, the bare number otherwise. */
export function priorityName(priority: number): string {
  const name = PRIORITY_NAMES.get(priority);
  return name ? `${name} (${priority})` : String(priority);
}

/**
 * A hook's handlers. Registering is rare and running is per stanza, so a registration replaces the
 * list instead of changing it: a run iterates the array it started with (a handler that
 * unregisters another mid-run does not shift it), with no copy per run.
 */
class HandlerList<H> {
  entries: ReadonlyArray<Entry<H>> = [];

  /** Higher priority first; equal priorities keep registration order. */
  add(entry: Entry<H>): () => void {
    let i = this.entries.findIndex((e) => e.priority < entry.priority);
    if (i === -1) i = this.entries.length;
    this.entries = [...this.entries.slice(0, i), entry, ...this.entries.slice(i)];
    return () => { this.entries = this.entries.filter((e) => e !== entry); };
  }
}

export class HookBus {
  private readonly chains = new Map<string, HandlerList<ChainHandler<any>>>();
  private readonly events = new Map<string, HandlerList<EventHandler<any>>>();
  private readonly filters = new Map<string, HandlerList<FilterHandler<any>>>();

  constructor(private readonly log: Logger) {}

  chain<K extends keyof Chains>(name: K, handler: ChainHandler<K>, priority: PriorityLevel = Priority.DELIVERY, owner = "core"): () => void {
    return this.listOf(this.chains, name).add({ handler, priority, owner });
  }

  on<K extends keyof Events>(name: K, handler: EventHandler<K>, priority: PriorityLevel = Priority.DELIVERY, owner = "core"): () => void {
    return this.listOf(this.events, name).add({ handler, priority, owner });
  }

  filter<K extends keyof Filters>(name: K, handler: FilterHandler<K>, priority: PriorityLevel = Priority.DELIVERY, owner = "core"): () => void {
    return this.listOf(this.filters, name).add({ handler, priority, owner });
  }

  /** Every registration in the order it runs: by kind, then hook name, then as the runner calls them. */
  table(): HandlerRow[] {
    const rows: HandlerRow[] = [];
    const add = (kind: HandlerRow["kind"], map: Map<string, HandlerList<unknown>>) => {
      for (const hook of [...map.keys()].sort()) {
        for (const { priority, owner } of map.get(hook)!.entries) rows.push({ kind, hook, priority, owner });
      }
    };
    add("chain", this.chains);
    add("filter", this.filters);
    add("event", this.events);
    return rows;
  }

  /**
   * Runs a chain and continues with what it decided: `handled` when a handler took the payload,
   * `unhandled` when none did, `failed` when one threw or rejected — on either path, so an
   * exception never escapes as such. It stays synchronous while every handler answers
   * synchronously (no promise hop on the hot path) and returns the continuation's result either
   * way: callers never branch on which kind of handler they met.
   */
  runChain<K extends keyof Chains, R>(name: K, payload: Chains[K], then: ChainContinuation<R>): R | Promise<Awaited<R>> {
    const list = this.chains.get(name)?.entries;
    if (!list || list.length === 0) return then.unhandled();
    return this.runFrom(list, 0, payload, then);
  }

  /** The chain's decision, for callers that wait anyway; a failing handler rejects. */
  async decide<K extends keyof Chains>(name: K, payload: Chains[K]): Promise<boolean> {
    return this.runChain(name, payload, { handled: () => true, unhandled: () => false, failed: (err) => { throw err; } });
  }

  private runFrom<R>(list: ReadonlyArray<Entry<ChainHandler<any>>>, start: number, payload: unknown, then: ChainContinuation<R>): R | Promise<Awaited<R>> {
    for (let i = start; i < list.length; i++) {
      let r: ChainResult | Promise<ChainResult>;
      try {
        r = list[i]!.handler(payload);
      } catch (err) {
        return then.failed(err);
      }
      if (r === HANDLED) return then.handled();
      if (r instanceof Promise) {
        return r.then((res) => (res === HANDLED ? then.handled() : this.runFrom(list, i + 1, payload, then)), (err) => then.failed(err)) as Promise<Awaited<R>>;
      }
    }
    return then.unhandled();
  }

  /**
   * Runs every handler, in order, waiting for async ones; a failing handler is logged and does not
   * stop the others. Synchronous handlers run back to back, with no promise hop between them: a
   * notification per message (message/delivered) costs no microtask per handler.
   */
  emit<K extends keyof Events>(name: K, payload: Events[K]): Promise<void> {
    const list = this.events.get(name)?.entries;
    return list ? this.emitFrom(list, 0, name, payload) : EMITTED;
  }

  private emitFrom(list: ReadonlyArray<Entry<EventHandler<any>>>, start: number, name: string, payload: unknown): Promise<void> {
    for (let i = start; i < list.length; i++) {
      let r: unknown;
      try {
        r = list[i]!.handler(payload);
      } catch (err) {
        this.eventFailed(name, err);
        continue;
      }
      if (r instanceof Promise) {
        const next = () => this.emitFrom(list, i + 1, name, payload);
        return r.then(next, (err) => { this.eventFailed(name, err); return next(); });
      }
    }
    return EMITTED;
  }

  private eventFailed(hook: string, err: unknown): void {
    this.log.error({ err, hook }, "event handler failed");
  }

  runFilter<K extends keyof Filters>(name: K, value: Filters[K]): Filters[K] | null {
    const list = this.filters.get(name)?.entries;
    if (!list) return value;
    let current: Filters[K] | null = value;
    for (const { handler } of list) {
      current = handler(current);
      if (current === null) return null;
    }
    return current;
  }

  private listOf<H>(map: Map<string, HandlerList<H>>, name: string): HandlerList<H> {
    let list = map.get(name);
    if (!list) map.set(name, (list = new HandlerList()));
    return list;
  }
}

/**
 * The cluster's session directory (docs/CLUSTER.md): which node holds each bound full JID
 * (RFC 6120 §7), with its presence priority and last available presence (RFC 6121 §4).
 *
 * Two parts: `DirectoryReplica`, the rules over a node's in-memory copy (pure, unit-tested), and
 * `RedisDirectory`, the adapter that keeps the entries in Redis, heartbeats, finds dead nodes and
 * feeds the replica. The Redis connection is passed in.
 */
import type { Redis } from "ioredis";
import type { Logger } from "../log.js";
import type { TransportKind } from "../xmpp/stream/transport.js";
import { script } from "./script.js";

/** One bound session as the directory records it. */
export interface DirectoryEntry {
  node: string;
  /** The session's id: an entry is only ever replaced or removed by the session that wrote it, or a newer one. */
  sid: string;
  priority: number;
  /** The last available presence the session broadcast, as XML; undefined while not available. */
  presence?: string;
  transport?: TransportKind;
  /** The session's flags (Session.flags), when it has any. */
  flags?: string[];
  /** The XEP-0198 id it is resumed with, when resumption is on: where another node asks for it. */
  resume?: string;
  /** Requested the roster (RFC 6121 §2.2 "interested resource"); absent while not. */
  interested?: true;
}

/** A change to the directory, as published on the directory channel. */
export type DirectoryChange =
  | { op: "set"; full: string; entry: DirectoryEntry }
  | { op: "del"; full: string; sid: string };

export function encodeEntry(entry: DirectoryEntry): string {
  return JSON.stringify(entry);
}

/** undefined for a value that is not an entry (written by something else, or corrupt). */
export function decodeEntry(value: string): DirectoryEntry | undefined {
  try {
    const v = JSON.parse(value) as Partial<DirectoryEntry>;
    if (typeof v.node !== "string" || typeof v.sid !== "string" || typeof v.priority !== "number") return undefined;
    if (v.presence !== undefined && typeof v.presence !== "string") return undefined;
    const transport = v.transport === "tcp" || v.transport === "websocket" || v.transport === "bosh" ? v.transport : undefined;
    const flags = Array.isArray(v.flags) && v.flags.every((f) => typeof f === "string") ? v.flags : undefined;
    return {
      node: v.node, sid: v.sid, priority: v.priority, ...(v.presence !== undefined ? { presence: v.presence } : {}), ...(transport ? { transport } : {}),
      ...(flags ? { flags } : {}), ...(typeof v.resume === "string" ? { resume: v.resume } : {}),
      ...(flags ? { flags } : {}), ...(v.interested === true ? { interested: true } : {}),
    };
  } catch {
    return undefined;
  }
}

export const bareOf = (full: string): string => {
  const slash = full.indexOf("/");
  return slash === -1 ? full : full.slice(0, slash);
};

/**
 * The sessions of the *other* nodes, as this node knows them. Entries of this node are never
 * kept: its own session table is the truth for them (a change naming this node removes any
 * entry another node had for that full JID, since this node's session replaced it).
 */
export class DirectoryReplica {
  private readonly byUser = new Map<string, Map<string, DirectoryEntry>>();
  private readonly deadNodes = new Set<string>();

  constructor(readonly self: string, private readonly onChange: (full: string) => void = () => {}) {}

  apply(change: DirectoryChange): void {
    if (change.op === "set") {
      if (change.entry.node === this.self) return this.remove(change.full);
      // A node that writes is alive (it restarted under its id); if it is not, the next heartbeat check says so again.
      this.deadNodes.delete(change.entry.node);
      this.put(change.full, change.entry);
      return;
    }
    const current = this.get(change.full);
    // Compare-and-delete: a session that lost its full JID to a newer one never removes the newer entry.
    if (current && current.sid === change.sid) this.remove(change.full);
  }

  /** Replaces everything with a fresh load (after a (re)connect: changes may have been missed). */
  reset(entries: Iterable<[string, DirectoryEntry]>): void {
    const before = [...this.fulls()];
    this.byUser.clear();
    for (const [full, entry] of entries) if (entry.node !== this.self && !this.deadNodes.has(entry.node)) this.put(full, entry, false);
    for (const full of new Set([...before, ...this.fulls()])) this.onChange(full);
  }

  /**
   * A node is dead: its sessions are gone for routing from now on (and stay gone if stale changes
   * arrive). Returns the entries it had, for whoever ends those sessions.
   */
  nodeDied(node: string): Array<[string, DirectoryEntry]> {
    this.deadNodes.add(node);
    const gone: Array<[string, DirectoryEntry]> = [];
    for (const [bare, sessions] of this.byUser) {
      for (const [full, entry] of sessions) {
        if (entry.node !== node) continue;
        sessions.delete(full);
        gone.push([full, entry]);
      }
      if (sessions.size === 0) this.byUser.delete(bare);
    }
    for (const [full] of gone) this.onChange(full);
    return gone;
  }

  /** A node with this id heartbeats again (it restarted): its new sessions count. */
  nodeAlive(node: string): void {
    this.deadNodes.delete(node);
  }

  get(full: string): DirectoryEntry | undefined {
    return this.byUser.get(bareOf(full))?.get(full);
  }

  ofUser(bare: string): ReadonlyMap<string, DirectoryEntry> {
    return this.byUser.get(bare) ?? new Map();
  }

  /** Sessions per node, for `parley status` and tests. */
  countByNode(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const sessions of this.byUser.values()) for (const e of sessions.values()) counts.set(e.node, (counts.get(e.node) ?? 0) + 1);
    return counts;
  }

  private *fulls(): Iterable<string> {
    for (const sessions of this.byUser.values()) yield* sessions.keys();
  }

  private put(full: string, entry: DirectoryEntry, notify = true): void {
    const bare = bareOf(full);
    let sessions = this.byUser.get(bare);
    if (!sessions) this.byUser.set(bare, (sessions = new Map()));
    sessions.set(full, entry);
    if (notify) this.onChange(full);
  }

  private remove(full: string): void {
    const bare = bareOf(full);
    const sessions = this.byUser.get(bare);
    if (!sessions?.delete(full)) return;
    if (sessions.size === 0) this.byUser.delete(bare);
    this.onChange(full);
  }
}

/**
 * The nodes to treat as dead now: members without a heartbeat key, and nodes this node saw alive
 * that are no longer members (another node reaped them before this one looked). Never itself.
 */
export function deadNodes(self: string, members: readonly string[], heartbeating: readonly boolean[], seenAlive: ReadonlySet<string>): string[] {
  const dead = new Set(members.filter((node, i) => node !== self && !heartbeating[i]));
  const current = new Set(members);
  for (const node of seenAlive) if (!current.has(node) && node !== self) dead.add(node);
  return [...dead];
}

/** The key layout (docs/CLUSTER.md, "The session directory"). */
export class ClusterKeys {
  constructor(readonly prefix: string) {}
  user(bare: string): string { return `${this.prefix}:sess:${bare}`; }
  userPattern(): string { return `${this.prefix}:sess:*`; }
  bareOfUserKey(key: string): string { return key.slice(this.prefix.length + ":sess:".length); }
  heartbeat(node: string): string { return `${this.prefix}:node:${node}`; }
  nodeSessions(node: string): string { return `${this.prefix}:node:${node}:sessions`; }
  nodes(): string { return `${this.prefix}:nodes`; }
  reapLock(node: string): string { return `${this.prefix}:reap:${node}`; }
  /** Set by a dead node's reaper before it takes over the inbox; removed when the node starts again. */
  reaped(node: string): string { return `${this.prefix}:reaped:${node}`; }
  inbox(node: string): string { return `${this.prefix}:inbox:${node}`; }
  /** A group chat room's lease: the id of the node hosting it (docs/CLUSTER.md, "Rooms"). */
  roomHost(room: string): string { return `${this.prefix}:room:${room}:host`; }
  /** The room's occupants as its host records them: nick → occupant record. */
  roomOccupants(room: string): string { return `${this.prefix}:room:${room}:occupants`; }
  /** The rooms a node took, so that whoever reaps it takes them over. */
  nodeRooms(node: string): string { return `${this.prefix}:node:${node}:rooms`; }
  directoryChannel(): string { return `${this.prefix}:dir`; }
  invalidationChannel(): string { return `${this.prefix}:invalidate`; }
}

// Each script touches one key, so that it runs on Redis Cluster too (no CROSSSLOT).
/** HSET that returns the value it replaced. */
const SWAP = script(`local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return old`);
/** HSET/HDEL only while the entry still belongs to ARGV[2] in field ARGV[3] ('sid' or 'node'). */
const IF_OWNED = script(`local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local ok, e = pcall(cjson.decode, v)
if not ok or e[ARGV[3]] ~= ARGV[2] then return 0 end
if ARGV[4] then redis.call('HSET', KEYS[1], ARGV[1], ARGV[4]) else redis.call('HDEL', KEYS[1], ARGV[1]) end
return 1`);

/** HSET only while the field is free or still holds ARGV[3]'s session (a re-assertion never displaces a newer session). */
const IF_FREE_OR_OWNED = script(`local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then
  local ok, e = pcall(cjson.decode, v)
  if ok and e.sid ~= ARGV[3] then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1`);

/** How long a reaped node's mark lasts if its id never starts again. */
const REAPED_MARK_MS = 86_400_000;

export interface RedisDirectoryOptions {
  node: string;
  keys: ClusterKeys;
  heartbeatMs: number;
  nodeTimeoutMs: number;
  /** Commands. */
  redis: Redis;
  /** A connection in subscriber mode for the directory channel. */
  subscriber: Redis;
  replica: DirectoryReplica;
  log: Logger;
  /**
   * A node was found dead (here, or by another node), with the sessions this node knew on it;
   * `reaping`: this node is the one survivor that cleans up after it.
   */
  nodeDied(node: string, reaping: boolean, sessions: Array<[string, DirectoryEntry]>): void | Promise<void>;
  /** A node has a live heartbeat (seen at each check). */
  nodeAlive?(node: string): void;
}

export class RedisDirectory {
  private timer: NodeJS.Timeout | undefined;
  private loading: DirectoryChange[] | undefined;
  private ticking: Promise<void> | undefined;
  private beating: Promise<void> | undefined;
  /** Other nodes seen with a live heartbeat, so that one reaped by another node before we looked is still noticed. */
  private readonly seenAlive = new Set<string>();
  private stopped = false;
  private graceUntil = 0;

  constructor(private readonly o: RedisDirectoryOptions) {}

  /** Heartbeats, subscribes, loads the replica; resolves once the replica is loaded. */
  async start(): Promise<void> {
    await this.beat();
    const { subscriber, keys } = this.o;
    subscriber.on("message", (channel: string, message: string) => {
      if (channel !== keys.directoryChannel()) return;
      let change: DirectoryChange;
      try {
        change = JSON.parse(message) as DirectoryChange;
      } catch {
        return;
      }
      if (this.loading) this.loading.push(change);
      else this.o.replica.apply(change);
    });
    // ioredis subscribes again after a reconnect; what was published meanwhile is lost, so reload.
    subscriber.on("ready", () => { if (!this.stopped) void this.reload(); });
    await subscriber.subscribe(keys.directoryChannel());
    await this.reload();
    this.timer = setInterval(() => {
      // The heartbeat goes out on time even while an earlier check is still reaping a dead node:
      // taking over its rooms and inbox can take longer than the timeout on a loaded machine, and
      // a reaper whose heartbeat lapsed meanwhile would be taken for dead itself.
      this.beating ??= this.beat().catch((err) => this.o.log.error({ err, stage: "cluster" }, "heartbeat failed"))
        .finally(() => { this.beating = undefined; });
      this.ticking ??= this.tick().finally(() => { this.ticking = undefined; });
    }, this.o.heartbeatMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.ticking;
    await this.beating;
  }

  /** Records a bound session; returns the entry it replaced (a session of the same full JID), if any. */
  async bind(full: string, entry: DirectoryEntry): Promise<DirectoryEntry | undefined> {
    const { redis, keys } = this.o;
    const old = (await SWAP(redis, [keys.user(bareOf(full))], [full, encodeEntry(entry)])) as string | null;
    await redis.pipeline().sadd(keys.nodeSessions(this.o.node), full).publish(keys.directoryChannel(), JSON.stringify({ op: "set", full, entry } satisfies DirectoryChange)).exec();
    return old === null ? undefined : decodeEntry(old);
  }

  /**
   * Writes a session's entry again after Redis may have lost it (a restart without persistence,
   * a failover): unless another session took the full JID meanwhile.
   */
  async reassert(full: string, entry: DirectoryEntry): Promise<void> {
    const { redis, keys } = this.o;
    const done = await IF_FREE_OR_OWNED(redis, [keys.user(bareOf(full))], [full, encodeEntry(entry), entry.sid]);
    if (done !== 1) return;
    await redis.pipeline().sadd(keys.nodeSessions(this.o.node), full).publish(keys.directoryChannel(), JSON.stringify({ op: "set", full, entry } satisfies DirectoryChange)).exec();
  }

  /**
   * The command connection came back: if Redis lost its data, no node's heartbeat is there yet,
   * so nobody is taken for dead until each had one timeout to beat again.
   */
  reconnected(): void {
    this.graceUntil = Date.now() + this.o.nodeTimeoutMs;
  }

  /** The session's presence changed; written only while the entry is still the session's. */
  async update(full: string, entry: DirectoryEntry): Promise<void> {
    const { redis, keys } = this.o;
    const done = await IF_OWNED(redis, [keys.user(bareOf(full))], [full, entry.sid, "sid", encodeEntry(entry)]);
    if (done === 1) await redis.publish(keys.directoryChannel(), JSON.stringify({ op: "set", full, entry } satisfies DirectoryChange));
  }

  /** The session ended; its entry goes unless a newer session (anywhere) took the full JID. */
  async unbind(full: string, sid: string): Promise<void> {
    const { redis, keys } = this.o;
    const done = await IF_OWNED(redis, [keys.user(bareOf(full))], [full, sid, "sid"]);
    // This node holds the full JID no longer either way (a newer session elsewhere may have it).
    const after = redis.pipeline().srem(keys.nodeSessions(this.o.node), full);
    if (done === 1) after.publish(keys.directoryChannel(), JSON.stringify({ op: "del", full, sid } satisfies DirectoryChange));
    await after.exec();
  }

  /** The ids of the nodes with a live heartbeat, and their directory session counts (`parley status`). */
  static async status(redis: Redis, keys: ClusterKeys): Promise<Array<{ node: string; alive: boolean; sessions: number }>> {
    const members = (await redis.smembers(keys.nodes())).sort();
    const pipeline = redis.pipeline();
    for (const node of members) pipeline.exists(keys.heartbeat(node)).scard(keys.nodeSessions(node));
    const replies = (await pipeline.exec()) ?? [];
    return members.map((node, i) => ({ node, alive: replies[2 * i]?.[1] === 1, sessions: Number(replies[2 * i + 1]?.[1] ?? 0) }));
  }

  /**
   * Removes the directory entries of a node (a dead one, or this node's previous run): those it
   * recorded and that no newer session replaced. Returns how many went.
   */
  async removeEntriesOf(node: string): Promise<number> {
    const { redis, keys } = this.o;
    const fulls = await redis.smembers(keys.nodeSessions(node));
    let removed = 0;
    for (const full of fulls) {
      const entry = decodeEntry((await redis.hget(keys.user(bareOf(full)), full)) ?? "");
      if (!entry || (await IF_OWNED(redis, [keys.user(bareOf(full))], [full, node, "node"])) !== 1) continue;
      removed++;
      await redis.publish(keys.directoryChannel(), JSON.stringify({ op: "del", full, sid: entry.sid } satisfies DirectoryChange));
    }
    await redis.del(keys.nodeSessions(node));
    return removed;
  }

  private async beat(): Promise<void> {
    const { redis, keys, node, nodeTimeoutMs } = this.o;
    await redis.pipeline().set(keys.heartbeat(node), String(Date.now()), "PX", Math.round(nodeTimeoutMs)).sadd(keys.nodes(), node).exec();
  }

  private async reload(): Promise<void> {
    const { redis, keys, replica } = this.o;
    this.loading = [];
    try {
      const entries: Array<[string, DirectoryEntry]> = [];
      let cursor = "0";
      do {
        const [next, found] = await redis.scan(cursor, "MATCH", keys.userPattern(), "COUNT", 1000);
        cursor = next;
        const pipeline = redis.pipeline();
        for (const key of found) pipeline.hgetall(key);
        const replies = (await pipeline.exec()) ?? [];
        for (const [, hash] of replies) {
          for (const [full, value] of Object.entries((hash ?? {}) as Record<string, string>)) {
            const entry = decodeEntry(value);
            if (entry) entries.push([full, entry]);
          }
        }
      } while (cursor !== "0");
      replica.reset(entries);
    } catch (err) {
      this.o.log.error({ err, stage: "cluster" }, "loading the session directory failed");
    } finally {
      const missed = this.loading ?? [];
      this.loading = undefined;
      for (const change of missed) replica.apply(change);
    }
  }

  /** Looks for nodes whose heartbeat expired (after this node's own, sent just before on the same connection). */
  private async tick(): Promise<void> {
    const { redis, keys, node, nodeTimeoutMs, log } = this.o;
    try {
      const members = await redis.smembers(keys.nodes());
      const pipeline = redis.pipeline();
      for (const m of members) pipeline.exists(keys.heartbeat(m));
      const alive = ((await pipeline.exec()) ?? []).map(([, n]) => n === 1);
      const dead = Date.now() < this.graceUntil ? [] : deadNodes(node, members, alive, this.seenAlive);
      members.forEach((m, i) => {
        if (!alive[i] || m === node) return;
        this.seenAlive.add(m);
        this.o.replica.nodeAlive(m);
        this.o.nodeAlive?.(m);
      });
      for (const gone of dead) {
        this.seenAlive.delete(gone);
        // One survivor reaps (the holder of the lock); one that another node reaped already is only forgotten here.
        const reaping = members.includes(gone) && (await redis.set(keys.reapLock(gone), node, "PX", Math.round(nodeTimeoutMs), "NX")) === "OK";
        log.warn({ stage: "cluster", node: gone, reaping }, "node heartbeat expired");
        // Before anything reads its inbox: from now on nobody adds to it.
        if (reaping) await redis.set(keys.reaped(gone), node, "PX", REAPED_MARK_MS);
        await this.o.nodeDied(gone, reaping, this.o.replica.nodeDied(gone));
        if (reaping) {
          const removed = await this.removeEntriesOf(gone);
          await redis.srem(keys.nodes(), gone);
          log.info({ stage: "cluster", node: gone, removed }, "dead node's directory entries removed");
        }
      }
    } catch (err) {
      log.error({ err, stage: "cluster" }, "checking the other nodes failed");
    }
  }
}

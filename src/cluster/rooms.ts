/**
 * Group chat rooms on a cluster (docs/CLUSTER.md, "Rooms"): each room is hosted by one node at a
 * time, the holder of its lease in Redis (`P:room:<jid>:host`, SET NX PX, renewed with the
 * heartbeat). A stanza for a room reaching another node goes to the host on the node bus; a node
 * that finds no live lease takes it and loads the room (config, affiliations and archive from
 * Postgres, occupants from the per-room hash `P:room:<jid>:occupants` the host keeps). A room
 * broadcast crosses the bus once per node with occupants, not once per occupant.
 *
 * `RoomLeases` holds the rules (pure, unit-tested); `ClusterRoomPlacement` is the adapter to
 * Redis and the bus, passed in.
 */
import type { Redis } from "ioredis";
import type { Logger } from "../log.js";
import { BoundedMap } from "../bounded-map.js";
import { deliverCopies, type PlacementEvents, type RoomPlacement } from "../placement.js";
import type { Router } from "../xmpp/router.js";
import { parseElement } from "../xmpp/xml-parse.js";
import { shareChildren, type Element } from "../xmpp/xml.js";
import type { ClusterKeys } from "./directory.js";
import type { ClusterSessionTable } from "./sessions.js";
import { RemoteSession } from "./sessions.js";
import { script } from "./script.js";

/** The answer of a placement rule: this node, or the node that hosts the room. */
export const HERE = Symbol("here");
export type Host = typeof HERE | string;

/** How many rooms hosted elsewhere a node remembers the host of. */
const KNOWN_HOSTS = 10_000;

/**
 * Who hosts which room, as this node knows it. A room is hosted here from the moment this node
 * took its lease until it released or lost it; the host of a room elsewhere is remembered until
 * that node dies (a host that released the room meanwhile passes the stanza on: one more hop).
 */
export class RoomLeases {
  private readonly hosted = new Set<string>();
  private readonly elsewhere = new BoundedMap<string, string>(KNOWN_HOSTS);
  private readonly dead = new Set<string>();

  constructor(readonly self: string) {}

  /** HERE, the host to forward to, or undefined: ask Redis (claim). */
  route(room: string): Host | undefined {
    if (this.hosted.has(room)) return HERE;
    return this.elsewhere.get(room);
  }

  /** Holders a claim may displace: nodes known dead, whose leases may not have expired yet. */
  displaceable(): string[] {
    return [...this.dead];
  }

  /** What Redis answered to a claim: the lease holder now. */
  claimed(room: string, holder: string): Host {
    if (holder === this.self) {
      this.elsewhere.delete(room);
      this.hosted.add(room);
      return HERE;
    }
    this.hosted.delete(room);
    this.elsewhere.set(room, holder);
    return holder;
  }

  /** This node no longer hosts the room (released it, or the lease was found held by another). */
  released(room: string): void {
    this.hosted.delete(room);
  }

  /** Renewal answers: the rooms whose lease was no longer this node's (lost while unreachable). */
  renewed(rooms: readonly string[], stillOurs: readonly boolean[]): string[] {
    const lost = rooms.filter((room, i) => !stillOurs[i] && this.hosted.has(room));
    for (const room of lost) this.hosted.delete(room);
    return lost;
  }

  nodeDied(node: string): void {
    if (node === this.self) return;
    this.dead.add(node);
    for (const [room, host] of this.elsewhere) if (host === node) this.elsewhere.delete(room);
  }

  /** A node heartbeats again (it restarted): its new leases are live. */
  nodeAlive(node: string): void {
    this.dead.delete(node);
  }

  hostedRooms(): string[] {
    return [...this.hosted];
  }
}

/** The recipients of a broadcast by where their sessions are: this node, another node, or unknown here. */
export function recipientsByNode(recipients: Iterable<string>, nodeOf: (full: string) => Host | undefined): { local: string[]; remote: Map<string, string[]>; unknown: string[] } {
  const local: string[] = [];
  const unknown: string[] = [];
  const remote = new Map<string, string[]>();
  for (const full of recipients) {
    const node = nodeOf(full);
    if (node === HERE) local.push(full);
    else if (node === undefined) unknown.push(full);
    else {
      let list = remote.get(node);
      if (!list) remote.set(node, (list = []));
      list.push(full);
    }
  }
  return { local, remote, unknown };
}

/**
 * The holder now: itself when it holds the lease already or took it (free, or held by a node
 * ARGV[3..] that this node knows is dead); otherwise the holder, unchanged.
 */
const CLAIM = script(`local h = redis.call('GET', KEYS[1])
if h and h ~= ARGV[1] then
  local stale = false
  for i = 3, #ARGV do if ARGV[i] == h then stale = true end end
  if not stale then return h end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]`);
/** PEXPIRE while the lease is still ARGV[1]'s. */
const RENEW = script(`if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0`);
/** DEL while the lease is still ARGV[1]'s. */
const RELEASE = script(`if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0`);

export interface ClusterRoomPlacementOptions {
  node: string;
  keys: ClusterKeys;
  redis: Redis;
  sessions: ClusterSessionTable;
  /** How room stanzas and broadcasts reach other nodes. */
  bus: { toRoom(node: string, room: string, xml: string): void; fanout(node: string, xml: string, recipients: string[]): void };
  /** The lease's time to live: a dead host's rooms are free after it (the node timeout). */
  leaseMs: number;
  /** How often leases are renewed (the heartbeat). */
  renewMs: number;
  log: Logger;
}

export class ClusterRoomPlacement implements RoomPlacement {
  readonly shared = true;
  private readonly leases: RoomLeases;
  private readonly claims = new Map<string, Promise<Host>>();
  private events: PlacementEvents | undefined;
  private router: Pick<Router, "deliver" | "route"> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private renewing: Promise<void> | undefined;

  constructor(private readonly o: ClusterRoomPlacementOptions) {
    this.leases = new RoomLeases(o.node);
  }

  /** Starts renewing leases; stanzas from other nodes are handled through `router` from now on. */
  start(router: Pick<Router, "deliver" | "route">): void {
    this.router = router;
    this.timer = setInterval(() => { this.renewing ??= this.renew().finally(() => { this.renewing = undefined; }); }, this.o.renewMs);
    this.timer.unref();
  }

  /**
   * Stops renewing and lets go of every lease this node still holds. The rooms stay listed under
   * this node (`P:node:<id>:rooms`): the survivor that reaps it adopts them, so the occupants on
   * other nodes stay in them and those of this node leave.
   */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.renewing;
    const rooms = this.leases.hostedRooms();
    for (const room of rooms) this.leases.released(room);
    await Promise.all(rooms.map((room) => RELEASE(this.o.redis, [this.o.keys.roomHost(room)], [this.o.node]).catch(() => undefined)));
  }

  watch(events: PlacementEvents): void {
    this.events = events;
  }

  admit(room: string, stanza: Element): boolean | Promise<boolean> {
    const known = this.leases.route(room);
    if (known === HERE) return true;
    if (known !== undefined) return this.forward(known, room, stanza);
    return this.claim(room).then((host) => host === HERE || this.forward(host, room, stanza));
  }

  broadcast(message: Element, recipients: Iterable<string>): void {
    const { sessions, bus } = this.o;
    const { local, remote, unknown } = recipientsByNode(recipients, (full) => {
      if (sessions.local(full)) return HERE;
      const session = sessions.get(full);
      return session instanceof RemoteSession ? session.node : undefined;
    });
    // Routed, as on one node: a recipient whose session this node does not know (yet) is taken for gone.
    deliverCopies(message, [...local, ...unknown], sessions, this.router!);
    if (remote.size === 0) return;
    const xml = message.toString();
    for (const [node, fulls] of remote) bus.fanout(node, xml, fulls);
  }

  /** A broadcast from a room's host: a copy to each recipient with a session on this node. */
  deliverFanout(xml: string, recipients: readonly string[]): void {
    const template = parseElement(xml);
    const copyFor = shareChildren(template);
    for (const to of recipients) {
      const session = this.o.sessions.local(to);
      // Gone since the host sent it: the host hears of it from the directory.
      if (session) this.router!.deliver(session, copyFor({ ...template.attrs, to }));
    }
  }

  occupants(room: string): Promise<ReadonlyMap<string, string>> {
    return this.o.redis.hgetall(this.o.keys.roomOccupants(room)).then((hash) => new Map(Object.entries(hash)));
  }

  recordOccupant(room: string, nick: string, record: string): void {
    this.o.redis.hset(this.o.keys.roomOccupants(room), nick, record).catch((err) => this.failed("record occupant", err));
  }

  forgetOccupant(room: string, nick: string): void {
    this.o.redis.hdel(this.o.keys.roomOccupants(room), nick).catch((err) => this.failed("forget occupant", err));
  }

  release(room: string, forget: boolean): void {
    const { redis, keys, node } = this.o;
    this.leases.released(room);
    RELEASE(redis, [keys.roomHost(room)], [node]).catch((err) => this.failed("release", err));
    if (!forget) return;
    redis.pipeline().srem(keys.nodeRooms(node), room).del(keys.roomOccupants(room)).exec().catch((err) => this.failed("forget room", err));
  }

  /** A session of another node is gone from the directory (or was never known): tell the rooms. */
  sessionChanged(full: string): void {
    if (this.events && !this.o.sessions.get(full)) this.events.sessionGone(full);
  }

  nodeAlive(node: string): void {
    this.leases.nodeAlive(node);
  }

  hostedRooms(): number {
    return this.leases.hostedRooms().length;
  }

  /**
   * A node died. Its leases are displaced from now on; the reaper (one survivor) takes over the
   * rooms it hosted at once, before the dead node's inbox is routed again, so the stanzas sent
   * to the dead host find the room hosted here.
   */
  async nodeDied(node: string, reaping: boolean): Promise<void> {
    this.leases.nodeDied(node);
    if (!reaping) return;
    const { redis, keys } = this.o;
    const rooms = await redis.smembers(keys.nodeRooms(node));
    let adopted = 0;
    for (const room of rooms) {
      if ((await this.claim(room)) !== HERE) continue;
      adopted++;
      await this.events?.adopted(room).catch((err) => this.failed("adopt", err));
    }
    await redis.del(keys.nodeRooms(node));
    this.o.log.info({ stage: "cluster", node, rooms: rooms.length, adopted }, "dead node's rooms taken over");
  }

  /** One claim per room at a time: stanzas arriving together wait for the same answer. */
  private claim(room: string): Promise<Host> {
    let pending = this.claims.get(room);
    if (pending) return pending;
    const { redis, keys, node, leaseMs } = this.o;
    pending = CLAIM(redis, [keys.roomHost(room)], [node, Math.round(leaseMs), ...this.leases.displaceable()]).then(async (holder) => {
      const host = this.leases.claimed(room, String(holder));
      if (host === HERE) await redis.sadd(keys.nodeRooms(node), room);
      return host;
    }).finally(() => this.claims.delete(room));
    this.claims.set(room, pending);
    return pending;
  }

  private forward(node: string, room: string, stanza: Element): false {
    this.o.bus.toRoom(node, room, stanza.toString());
    return false;
  }

  private async renew(): Promise<void> {
    const rooms = this.leases.hostedRooms();
    if (rooms.length === 0) return;
    const { redis, keys, node, leaseMs } = this.o;
    try {
      const answers = await Promise.all(rooms.map((room) => RENEW(redis, [keys.roomHost(room)], [node, Math.round(leaseMs)])));
      for (const room of this.leases.renewed(rooms, answers.map((a) => a === 1))) {
        this.o.log.warn({ stage: "cluster", room }, "room lease lost to another node");
        this.events?.lost(room);
      }
    } catch (err) {
      this.failed("renew", err);
    }
  }

  private failed(what: string, err: unknown): void {
    this.o.log.error({ err, stage: "cluster", what }, "room placement: Redis command failed");
  }
}

/**
 * One node of a cluster (docs/CLUSTER.md): ties the session directory and the node bus to this
 * node's router and session table. What it decides is only *how* a stanza for a session reaches
 * that session's node; *which* session gets it stays with the router and the modules.
 */
import { Redis } from "ioredis";
import type { Config } from "../config.js";
import type { CacheName, HookBus } from "../hooks.js";
import type { Logger } from "../log.js";
import type { Router } from "../xmpp/router.js";
import type { Session } from "../xmpp/sessions.js";
import { StreamError, type StreamErrorCondition } from "../errors.js";
import { parseElement } from "../xmpp/xml-parse.js";
import type { Element } from "../xmpp/xml.js";
import { ClusterKeys, DirectoryReplica, RedisDirectory, type DirectoryEntry } from "./directory.js";
import { NodeBus, type BusReceiver } from "./bus.js";
import { ClusterSessionTable, RemoteSession } from "./sessions.js";
import { RequestIds } from "./replies.js";
import { ClusterRoomPlacement } from "./rooms.js";
import type { BusEntryKind } from "./bus.js";
import { parseJid } from "../xmpp/jid.js";
import type { HibernatedSessions, ResumptionElsewhere, SessionState } from "../xmpp/c2s/handover.js";
import { decodeSessionState, encodeSessionState, forwardingEntry, holderOf } from "./resumption.js";
import { randomBytes } from "node:crypto";

/** Every cache that a reconnect makes stale. */
const CACHES: readonly CacheName[] = ["blocklist", "push", "account"];

export type ClusterSettings = NonNullable<Config["cluster"]>;

export interface ClusterStatus {
  node: string;
  /** Sessions of the other nodes this node knows, by node. */
  remoteSessions: Map<string, number>;
  /** Deliveries sent to other nodes whose confirmation has not come yet. */
  awaitingConfirmation: number;
  /** Entries this node added to other nodes' inboxes since it started, by kind. */
  sent: Readonly<Record<BusEntryKind, number>>;
  /** Group chat rooms this node hosts. */
  hostedRooms: number;
}

/** Runs `then` each time a connection that was up comes back (not at the first connect). */
function afterReconnect(connection: Redis, then: () => void): void {
  let connected = connection.status === "ready";
  connection.on("close", () => { connected = false; });
  connection.on("ready", () => {
    if (connected) return;
    connected = true;
    then();
  });
}

/**
 * Connected by start(). While Redis is down, commands wait for it to come back instead of failing
 * (maxRetriesPerRequest: null): a stanza for another node goes out once Redis is back.
 */
function connection(url: string, name: string, log: Logger): Redis {
  const redis = new Redis(url, { lazyConnect: true, connectionName: name, maxRetriesPerRequest: null });
  // Logged once per outage, not at every reconnect attempt.
  let reported = false;
  redis.on("error", (err: Error) => {
    if (reported) return;
    reported = true;
    log.warn({ stage: "cluster", connection: name, err: err.message }, "Redis connection lost; reconnecting");
  });
  redis.on("ready", () => { reported = false; });
  return redis;
}

export class ClusterNode implements ResumptionElsewhere {
  readonly sessions = new ClusterSessionTable();
  readonly keys: ClusterKeys;
  private readonly redis: Redis;
  private readonly subscriber: Redis;
  private readonly reader: Redis;
  private readonly replica: DirectoryReplica;
  private readonly directory: RedisDirectory;
  private readonly bus: NodeBus;
  /** Which node hosts each group chat room, for the MUC module (docs/CLUSTER.md, "Rooms"). */
  readonly rooms: ClusterRoomPlacement;
  private router: Router | undefined;
  private hooks: HookBus | undefined;
  private hibernated: HibernatedSessions | undefined;
  private readonly detach: Array<() => void> = [];
  private readonly requestIds: RequestIds;
  private readonly reaped: Array<(node: string) => Promise<number>> = [];

  constructor(private readonly settings: ClusterSettings, private readonly log: Logger) {
    const node = settings.nodeId;
    this.keys = new ClusterKeys(settings.keyPrefix);
    this.requestIds = new RequestIds(node);
    this.redis = connection(settings.redisUrl, `parley:${node}`, log);
    this.subscriber = connection(settings.redisUrl, `parley:${node}:sub`, log);
    this.reader = connection(settings.redisUrl, `parley:${node}:inbox`, log);
    this.replica = new DirectoryReplica(node, (full) => {
      this.sessions.changed(full);
      this.rooms.sessionChanged(full);
    });
    this.bus = new NodeBus({ node, keys: this.keys, redis: this.redis, reader: this.reader, receiver: this.receiver(), log });
    this.rooms = new ClusterRoomPlacement({
      node, keys: this.keys, redis: this.redis, sessions: this.sessions, bus: this.bus, log,
      leaseMs: settings.nodeTimeoutSeconds * 1000, renewMs: settings.heartbeatSeconds * 1000,
    });
    this.directory = new RedisDirectory({
      node, keys: this.keys, redis: this.redis, subscriber: this.subscriber, replica: this.replica, log,
      heartbeatMs: settings.heartbeatSeconds * 1000, nodeTimeoutMs: settings.nodeTimeoutSeconds * 1000,
      nodeDied: async (dead, reaping, sessions) => {
        const failed = this.bus.nodeDied(dead);
        // Before its inbox is routed again: the stanzas for its rooms find them hosted here.
        await this.rooms.nodeDied(dead, reaping);
        if (!reaping) return;
        const rerouted = await this.bus.takeOver(dead, (xml) => this.reroute(xml));
        log.info({ stage: "cluster", node: dead, failed, rerouted, sessions: sessions.length }, "dead node's traffic taken over");
        await this.endSessionsOf(sessions);
        for (const adopt of this.reaped) {
          const adopted = await adopt(dead).catch((err: unknown) => {
            log.error({ err, stage: "cluster", node: dead }, "taking over a dead node's s2s outbox failed");
            return 0;
          });
          if (adopted) log.info({ stage: "cluster", node: dead, adopted }, "dead node's s2s outbox taken over");
        }
      },
      nodeAlive: (node) => this.rooms.nodeAlive(node),
    });
    this.sessions.connect(this.replica, this.bus);
  }

  /**
   * What else the reaper of a dead node takes over: `adopt` makes that node's durable work this
   * node's (the s2s outbox rows it queued) and says how much there was.
   */
  whenReaped(adopt: (node: string) => Promise<number>): void {
    this.reaped.push(adopt);
  }

  get nodeId(): string {
    return this.settings.nodeId;
  }

  /**
   * Joins the cluster once the modules are ready (stanzas from other nodes are routed at once):
   * what this node's previous run left in the directory goes, the replica is loaded, the inbox read.
   * `hibernated`: this node's resumable sessions, which other nodes may ask for.
   */
  async start(router: Router, hooks: HookBus, hibernated: HibernatedSessions): Promise<void> {
    this.router = router;
    this.hooks = hooks;
    this.hibernated = hibernated;
    try {
      await Promise.all([this.redis.connect(), this.subscriber.connect(), this.reader.connect()]).catch((err: Error) => {
        throw new Error(`cluster: cannot reach Redis at ${withoutPassword(this.settings.redisUrl)}: ${err.message}`);
      });
      // Others may send to this node again (a reaper marked its previous run).
      await this.redis.del(this.keys.reaped(this.nodeId));
      const stale = await this.directory.removeEntriesOf(this.nodeId);
      if (stale) this.log.info({ stage: "cluster", removed: stale }, "entries of this node's previous run removed");
      await this.directory.start();
      await this.watchCaches(hooks);
      this.rooms.start(router);
      await this.bus.start();
    } catch (err) {
      await this.disconnect();
      throw err;
    }
    this.watchReconnects();
    this.detach.push(router.attachReplyForwarding({
      requestId: () => this.requestIds.next(),
      forward: (reply) => {
        const owner = this.requestIds.otherOwner(reply.attrs.id);
        if (owner === undefined) return false;
        this.bus.reply(owner, reply.toString());
        return true;
      },
    }));
    const record = (what: string, write: Promise<unknown>) =>
      write.catch((err) => this.log.error({ err, stage: "cluster", what }, "session directory write failed"));
    // Each node writes the entries of its own sessions only (the events also run for the
    // sessions of a dead node that this node ends, see endSessionsOf).
    const own = (session: Session) => !(session instanceof RemoteSession);
    this.detach.push(
      hooks.on("session/bound", ({ session }) => record("bind", this.bind(session))),
      hooks.on("session/changed", ({ session }) => own(session) && record("presence", this.directory.update(session.jid.full, entryOf(this.nodeId, session)))),
      hooks.on("session/closed", ({ session }) => own(session) && record("unbind", this.directory.unbind(session.jid.full, session.id))),
      hooks.on("cache/changed", ({ cache, user }) =>
        record("invalidation", this.redis.publish(this.keys.invalidationChannel(), JSON.stringify({ node: this.nodeId, cache, user })))),
    );
    this.log.info({ stage: "cluster", node: this.nodeId }, "joined the cluster");
  }

  /**
   * Other nodes' "cache/changed" become "cache/stale" here. Pub/sub loses what is published while
   * the connection is down, so after a reconnect every cache is stale.
   */
  private async watchCaches(hooks: HookBus): Promise<void> {
    const channel = this.keys.invalidationChannel();
    this.subscriber.on("message", (from: string, message: string) => {
      if (from !== channel) return;
      try {
        const { node, cache, user } = JSON.parse(message) as { node: string; cache: CacheName; user: string };
        if (node !== this.nodeId) void hooks.emit("cache/stale", { cache, user });
      } catch {
        this.log.warn({ stage: "cluster" }, "cache invalidation not understood; dropped");
      }
    });
    afterReconnect(this.subscriber, () => {
      for (const cache of CACHES) void hooks.emit("cache/stale", { cache });
    });
    await this.subscriber.subscribe(channel);
  }

  /** After Redis comes back (it may have lost everything), this node's sessions are written again. */
  private watchReconnects(): void {
    afterReconnect(this.redis, () => {
      this.directory.reconnected();
      const sessions = [...this.sessions.all()];
      this.log.info({ stage: "cluster", sessions: sessions.length }, "Redis connection back: directory entries written again");
      for (const session of sessions) {
        this.directory.reassert(session.jid.full, entryOf(this.nodeId, session))
          .catch((err) => this.log.error({ err, stage: "cluster" }, "writing a directory entry again failed"));
      }
    });
  }

  /**
   * XEP-0198 §5 for a session another node holds (docs/CLUSTER.md, "Resumption on another node"):
   * asked of the node the user's directory entry names; its answer is restored synchronously, so
   * what that node forwards behind it finds the session here.
   */
  take(user: string, smId: string, restore: (state: SessionState | undefined) => void): void {
    const holder = holderOf(this.replica.ofUser(user), smId);
    if (holder === undefined) return restore(undefined);
    this.bus.askHandover(holder, user, smId, (answer) => {
      if (answer === undefined) return restore(undefined);
      const state = decodeSessionState(answer, (id) => (ok) => this.bus.confirmed(holder, id, ok));
      if (!state) this.log.error({ stage: "cluster", node: holder }, "a handed-over session does not decode; lost");
      restore(state);
    });
  }

  /**
   * The other side: this node's copy of the session ends (registry.handOver), and its state goes
   * to `to` under a new session id, so that the directory entry this node removes (compare-and-
   * delete on the old id) and the one `to` writes never touch each other. Stanzas routed here
   * afterwards follow it: the replica names `to` until `to`'s own entry arrives; the bus carries
   * them behind the state. Each stanza waiting for its client's acknowledgement here is answered
   * by `to` (a `confirmed` entry), or fails if `to` dies: its durable copy stays.
   */
  private async handOver(user: string, smId: string, to: string, reply: (state: string | undefined) => void): Promise<void> {
    // A session never moves to the node it is on (the replica holds no entry of this node, so only a forged entry asks that).
    const state = to === this.nodeId ? undefined : await this.hibernated?.handOver(smId, user);
    if (!state) return reply(undefined);
    const oldSid = state.sid;
    const moved: SessionState = { ...state, sid: randomBytes(12).toString("base64url") };
    // Issued in this order on one connection: the old entry goes before `to` can bind, the state
    // is in `to`'s inbox before anything forwarded behind it.
    this.directory.unbind(state.jid, oldSid).catch((err) => this.log.error({ err, stage: "cluster" }, "session directory write failed"));
    reply(encodeSessionState(moved, (confirm) => this.bus.awaitConfirmation(to, confirm)));
    this.replica.apply({ op: "set", full: moved.jid, entry: forwardingEntry(moved, to) });
    this.log.info({ stage: "sm", jid: moved.jid, node: to, held: moved.queue.length }, "session handed over to another node");
  }

  status(): ClusterStatus {
    return {
      node: this.nodeId, remoteSessions: this.replica.countByNode(), awaitingConfirmation: this.bus.awaitingConfirmation,
      sent: { ...this.bus.sent }, hostedRooms: this.rooms.hostedRooms(),
    };
  }

  /** Leaves the cluster after this node's sessions have ended (their entries are gone then). */
  async stop(): Promise<void> {
    for (const off of this.detach.splice(0)) off();
    await this.directory.stop();
    await this.rooms.stop();
    await this.bus.stop();
    // The heartbeat goes now rather than at its expiry: within one tick a survivor takes over
    // what reached the inbox after the last read, and removes the node.
    await this.redis.del(this.keys.heartbeat(this.nodeId)).catch(() => undefined);
    await this.disconnect();
  }

  private async disconnect(): Promise<void> {
    await Promise.all([this.redis, this.subscriber, this.reader].map((c) => c.quit().catch(() => c.disconnect())));
  }

  /** RFC 6120 §7.7.2.2 across nodes: the new session wins; the old one, on another node, gets <conflict/>. */
  private async bind(session: Session): Promise<void> {
    const replaced = await this.directory.bind(session.jid.full, entryOf(this.nodeId, session));
    if (replaced && replaced.node !== this.nodeId) {
      this.log.info({ stage: "bind", jid: session.jid.full, node: replaced.node }, "session on another node replaced");
      this.bus.kick(replaced.node, session.jid.full, replaced.sid, "conflict");
    }
  }

  private receiver(): BusReceiver {
    const parse = (xml: string): Element | undefined => {
      try {
        return parseElement(xml);
      } catch (err) {
        this.log.error({ err, stage: "cluster" }, "stanza from another node does not parse; dropped");
        return undefined;
      }
    };
    const target = (to: string, sid: string) => {
      const session = this.sessions.local(to);
      return session && session.id === sid ? session : undefined;
    };
    return {
      stanza: (to, sid, xml) => {
        const stanza = parse(xml);
        if (!stanza) return;
        const session = target(to, sid);
        // The session it was chosen for is gone: routed again as addressed, like a stanza for
        // a resource that is not connected (RFC 6121 §8.5.3.2).
        if (session) this.router!.deliver(session, stanza);
        else void this.router!.route(stanza);
      },
      confirm: async (to, sid, xml) => {
        const stanza = parse(xml);
        const session = target(to, sid);
        // Whoever asked keeps the durable copy: false sends it to the user's other resources or storage.
        if (!stanza || !session) return false;
        return (await this.router!.deliverConfirmed(session, stanza)) ?? true;
      },
      room: async (xml) => {
        const stanza = parse(xml);
        if (stanza) await this.router!.route(stanza);
      },
      fanout: (xml, recipients) => this.rooms.deliverFanout(xml, recipients),
      unreachable: (node, xml) => {
        // Dead here at once (the heartbeat check says so within a tick): otherwise routing
        // again would pick the same remote session, or host.
        this.bus.nodeDied(node);
        this.replica.nodeDied(node);
        void this.rooms.nodeDied(node, false);
        if (xml !== undefined) this.reroute(xml);
      },
      handover: (user, smId, to, reply) => {
        let replied = false;
        const once = (state: string | undefined) => {
          replied = true;
          reply(state);
        };
        this.handOver(user, smId, to, once).catch((err) => {
          this.log.error({ err, stage: "cluster" }, "handing a session over failed");
          if (!replied) reply(undefined);
        });
      },
      // Routed here as it would have been had the session been on this node: it settles the request.
      reply: (xml) => {
        const stanza = parse(xml);
        if (stanza) void this.router!.route(stanza);
      },
      kick: (to, sid, condition) => {
        const session = target(to, sid);
        if (!session) return;
        session.close(condition ? new StreamError(condition as StreamErrorCondition, condition === "conflict" ? "Replaced by a new session on another node" : undefined) : undefined);
      },
    };
  }

  /**
   * The sessions of a dead node end here, as that node would have ended them (RFC 6121 §4.5.3
   * / §4.6.3: contacts get unavailable presence, last activity is written), by the handlers of
   * "session/closed" on this node. Directed presence was known to the dead node only: it is lost.
   */
  private async endSessionsOf(sessions: Array<[string, DirectoryEntry]>): Promise<void> {
    for (const [full, entry] of sessions) {
      const session = new RemoteSession(parseJid(full), entry, this.replica, this.bus);
      await this.hooks?.emit("session/closed", { session, reason: "node died" });
    }
  }

  private reroute(xml: string): void {
    try {
      void this.router?.route(parseElement(xml));
    } catch (err) {
      this.log.error({ err, stage: "cluster" }, "re-routing a dead node's stanza failed");
    }
  }
}

/** A Redis URL fit for a log line or an error message. */
function withoutPassword(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return parsed.toString();
  } catch {
    return "(unparsable URL)";
  }
}

function entryOf(node: string, session: Session): DirectoryEntry {
  return {
    node, sid: session.id, priority: session.priority, transport: session.transport,
    ...(session.presence ? { presence: session.presence.toString() } : {}),
    ...(session.flags.size ? { flags: [...session.flags].sort() } : {}),
    ...(session.resumeId !== undefined ? { resume: session.resumeId } : {}),
    ...(session.interested ? { interested: true as const } : {}),
  };
}


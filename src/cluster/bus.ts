/**
 * Traffic between cluster nodes (docs/CLUSTER.md, "Between nodes"): one Redis Stream per node,
 * read through a consumer group, so that an entry survives its reader's disconnects and a dead
 * node's unread entries can be taken over. The bus carries a stanza to a session another node
 * chose, and the answers about it; it decides nothing about where stanzas go.
 */
import type { Redis } from "ioredis";
import type { Logger } from "../log.js";
import type { ClusterKeys } from "./directory.js";
import { script } from "./script.js";

const GROUP = "parley";
/**
 * XADD unless the destination was reaped (KEYS[1], set by its reaper before it reads the inbox
 * KEYS[2] once and deletes it): nothing is added behind the reaper's back. A heartbeat that is
 * merely missing (Redis restarted empty) does not refuse anything.
 */
const ADD_UNLESS_REAPED = script(`if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('XADD', KEYS[2], '*', unpack(ARGV))
return 1`);
const READ_COUNT = 100;
const BLOCK_MS = 1000;

/** What arrives in a node's inbox. */
export type BusEntry =
  | { kind: "stanza"; to: string; sid: string; xml: string }
  | { kind: "confirm"; to: string; sid: string; xml: string; replyTo: string; id: string }
  | { kind: "confirmed"; id: string; ok: boolean }
  | { kind: "kick"; to: string; sid: string; condition: string }
  /** XEP-0198 §5 on another node: give up the session `smId` of `user` (./resumption.ts). */
  | { kind: "handover"; user: string; smId: string; replyTo: string; id: string }
  /** The answer: the session's state (./resumption.ts encodeSessionState), or none. */
  | { kind: "handed"; id: string; state: string | undefined }
  /** An IQ result or error for a request this node sent (it reached the node of the session that answered). */
  | { kind: "reply"; xml: string }
  /** A stanza (from, to set) for a group chat room the destination hosts (docs/CLUSTER.md, "Rooms"). */
  | { kind: "room"; room: string; xml: string }
  /** One room broadcast for the destination's occupants: the stanza once, without 'to', and who gets a copy. */
  | { kind: "fanout"; xml: string; to: string[] };

export type BusEntryKind = BusEntry["kind"];

/** The flat field list of a stream entry. */
export function encodeBusEntry(entry: BusEntry): string[] {
  switch (entry.kind) {
    case "stanza": return ["k", "stanza", "to", entry.to, "sid", entry.sid, "x", entry.xml];
    case "confirm": return ["k", "confirm", "to", entry.to, "sid", entry.sid, "x", entry.xml, "r", entry.replyTo, "id", entry.id];
    case "confirmed": return ["k", "confirmed", "id", entry.id, "ok", entry.ok ? "1" : "0"];
    case "kick": return ["k", "kick", "to", entry.to, "sid", entry.sid, "c", entry.condition];
    case "handover": return ["k", "handover", "u", entry.user, "sm", entry.smId, "r", entry.replyTo, "id", entry.id];
    case "handed": return ["k", "handed", "id", entry.id, ...(entry.state !== undefined ? ["x", entry.state] : [])];
    case "reply": return ["k", "reply", "x", entry.xml];
    case "room": return ["k", "room", "to", entry.room, "x", entry.xml];
    case "fanout": return ["k", "fanout", "x", entry.xml, "to", JSON.stringify(entry.to)];
  }
}

export function decodeBusEntry(fields: readonly string[]): BusEntry | undefined {
  const f = new Map<string, string>();
  for (let i = 0; i + 1 < fields.length; i += 2) f.set(fields[i]!, fields[i + 1]!);
  const to = f.get("to") ?? "";
  const sid = f.get("sid") ?? "";
  switch (f.get("k")) {
    case "stanza": return f.has("x") ? { kind: "stanza", to, sid, xml: f.get("x")! } : undefined;
    case "confirm": return f.has("x") && f.has("r") && f.has("id") ? { kind: "confirm", to, sid, xml: f.get("x")!, replyTo: f.get("r")!, id: f.get("id")! } : undefined;
    case "confirmed": return f.has("id") ? { kind: "confirmed", id: f.get("id")!, ok: f.get("ok") === "1" } : undefined;
    case "kick": return { kind: "kick", to, sid, condition: f.get("c") ?? "" };
    case "handover": return f.has("u") && f.has("sm") && f.has("r") && f.has("id") ? { kind: "handover", user: f.get("u")!, smId: f.get("sm")!, replyTo: f.get("r")!, id: f.get("id")! } : undefined;
    case "handed": return f.has("id") ? { kind: "handed", id: f.get("id")!, state: f.get("x") } : undefined;
    case "reply": return f.has("x") ? { kind: "reply", xml: f.get("x")! } : undefined;
    case "room": return f.has("x") && to ? { kind: "room", room: to, xml: f.get("x")! } : undefined;
    case "fanout": {
      const recipients = recipientList(to);
      return f.has("x") && recipients ? { kind: "fanout", xml: f.get("x")!, to: recipients } : undefined;
    }
    default: return undefined;
  }
}

function recipientList(json: string): string[] | undefined {
  try {
    const list: unknown = JSON.parse(json);
    return Array.isArray(list) && list.every((x) => typeof x === "string") ? list : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Answers this node waits for, by the node that will answer: each settles once, synchronously,
 * with the answer, or with `failed` when that node is found dead (for a delivery confirmation:
 * false, and whoever asked keeps its durable copy).
 */
export class PendingAnswers<T> {
  private readonly byId = new Map<string, { node: string; resolve: (answer: T) => void }>();
  private seq = 0;

  /** `prefix` makes the ids unique across the cluster (the node id, and a letter per kind of answer). */
  constructor(private readonly prefix: string, private readonly failed: T) {}

  add(node: string, resolve: (answer: T) => void): string {
    const id = `${this.prefix}:${(this.seq++).toString(36)}`;
    this.byId.set(id, { node, resolve });
    return id;
  }

  settle(id: string, answer: T): boolean {
    const pending = this.byId.get(id);
    if (!pending) return false;
    this.byId.delete(id);
    pending.resolve(answer);
    return true;
  }

  /** Every answer waited for from `node` fails; returns how many. */
  failNode(node: string): number {
    let failed = 0;
    for (const [id, pending] of this.byId) {
      if (pending.node !== node) continue;
      this.byId.delete(id);
      pending.resolve(this.failed);
      failed++;
    }
    return failed;
  }

  get size(): number {
    return this.byId.size;
  }
}

/** What the node does with what arrives (the cluster node's routing glue). */
export interface BusReceiver {
  /** Deliver to the local session `sid` of `to`, or route the stanza again when it is gone. */
  stanza(to: string, sid: string, xml: string): void;
  /** Deliver to that session and report its client's acknowledgement (false when the session is gone). */
  confirm(to: string, sid: string, xml: string): Promise<boolean>;
  /** Close that session with a stream error condition ("" for a clean close). */
  kick(to: string, sid: string, condition: string): void;
  /** An answer to one of this node's IQ requests, received on another node. */
  reply(xml: string): void;
  /**
   * Hand the hibernated session `smId` of `user` over to node `to`: `reply` sends the state (or
   * undefined), and whatever the receiver sends to `to` after calling it arrives behind it.
   */
  handover(user: string, smId: string, to: string, reply: (state: string | undefined) => void): void;
  /** A stanza for a room this node hosts (or takes, or passes on to the host it finds); resolves once handled. */
  room(xml: string): Promise<void>;
  /** A room broadcast: a copy for each recipient that has a session here. */
  fanout(xml: string, recipients: readonly string[]): void;
  /**
   * Something could not be sent because its node was reaped: the node is dead for this node
   * from now on, and a stanza (`xml`) is routed again (it finds the user's other resources or storage).
   */
  unreachable(node: string, xml: string | undefined): void;
}

export interface NodeBusOptions {
  node: string;
  keys: ClusterKeys;
  /** Commands. */
  redis: Redis;
  /** A connection of its own for the blocking reads. */
  reader: Redis;
  receiver: BusReceiver;
  log: Logger;
}

export class NodeBus {
  private readonly pending: PendingAnswers<boolean>;
  private readonly handovers: PendingAnswers<string | undefined>;
  private running = false;
  private loop: Promise<void> | undefined;
  /**
   * Each room's stanzas are handled one after the other, in the order they arrived (a join before
   * the message that follows it); different rooms' at the same time.
   */
  private readonly rooms = new Map<string, Promise<void>>();
  /** Entries added to other nodes' inboxes, by kind (for `parley status`, tests and benchmarks). */
  readonly sent: Record<BusEntryKind, number> = { stanza: 0, confirm: 0, confirmed: 0, kick: 0, handover: 0, handed: 0, reply: 0, room: 0, fanout: 0 };

  constructor(private readonly o: NodeBusOptions) {
    this.pending = new PendingAnswers(o.node, false);
    this.handovers = new PendingAnswers<string | undefined>(`${o.node}:h`, undefined);
  }

  get awaitingConfirmation(): number {
    return this.pending.size;
  }

  async start(): Promise<void> {
    await this.createGroup();
    this.running = true;
    this.loop = this.readLoop();
  }

  /** From the stream's start: a restarted node reads what was sent to it while it was away. */
  private async createGroup(): Promise<void> {
    const { redis, keys, node } = this.o;
    try {
      await redis.xgroup("CREATE", keys.inbox(node), GROUP, "0", "MKSTREAM");
    } catch (err) {
      if (!String((err as Error).message).includes("BUSYGROUP")) throw err;
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  send(node: string, to: string, sid: string, xml: string): void {
    this.add(node, { kind: "stanza", to, sid, xml });
  }

  sendConfirmed(node: string, to: string, sid: string, xml: string): Promise<boolean> {
    return new Promise((resolve) => {
      const id = this.pending.add(node, resolve);
      this.add(node, { kind: "confirm", to, sid, xml, replyTo: this.o.node, id });
    });
  }

  /**
   * A confirmation `node` will send as a `confirmed` entry, without a `confirm` entry first: a
   * stanza of a session handed over to `node` (./resumption.ts). Returns the id it answers.
   */
  awaitConfirmation(node: string, resolve: (acknowledged: boolean) => void): string {
    return this.pending.add(node, resolve);
  }

  /** Answers a confirmation `node` waits for (see awaitConfirmation). */
  confirmed(node: string, id: string, ok: boolean): void {
    this.add(node, { kind: "confirmed", id, ok });
  }

  kick(node: string, to: string, sid: string, condition: string): void {
    this.add(node, { kind: "kick", to, sid, condition });
  }

  /** Asks `node` for a hibernated session; `answer` runs synchronously when the reply is read (undefined if `node` dies first). */
  askHandover(node: string, user: string, smId: string, answer: (state: string | undefined) => void): void {
    const id = this.handovers.add(node, answer);
    this.add(node, { kind: "handover", user, smId, replyTo: this.o.node, id });
  }

  /** An IQ answer goes to the node whose request it answers. */
  reply(node: string, xml: string): void {
    this.add(node, { kind: "reply", xml });
  }

  /** A stanza for the room `room` (a bare JID), which `node` hosts. */
  toRoom(node: string, room: string, xml: string): void {
    this.add(node, { kind: "room", room, xml });
  }

  /** One room broadcast to `node`, for its sessions `recipients`. */
  fanout(node: string, xml: string, recipients: string[]): void {
    this.add(node, { kind: "fanout", xml, to: recipients });
  }

  /** `node` is dead: the confirmations and handovers it owed are failed. */
  nodeDied(node: string): number {
    return this.pending.failNode(node) + this.handovers.failNode(node);
  }

  /**
   * Takes over a dead node's inbox: every entry still in it was never acknowledged (entries are
   * deleted when they are), so its stanzas for sessions are handed to `reroute` and those for rooms
   * are handled here (the room is hosted here now, or passed on to its host);
   * confirmations it owed are failed on the nodes that asked (they found it dead too); broadcasts
   * for its sessions have nobody to reach. Then the stream goes.
   */
  async takeOver(node: string, reroute: (xml: string) => void): Promise<number> {
    const { redis, keys } = this.o;
    const inbox = keys.inbox(node);
    let taken = 0;
    let start = "-";
    for (;;) {
      const batch = await redis.xrange(inbox, start, "+", "COUNT", READ_COUNT);
      for (const [, fields] of batch) {
        const entry = decodeBusEntry(fields);
        if (entry?.kind === "stanza") reroute(entry.xml);
        // Handled here as if sent here, each room's in stream order: this node took the dead node's rooms first.
        else if (entry?.kind === "room") void this.inOrder(entry.room, () => this.o.receiver.room(entry.xml));
        else continue;
        taken++;
      }
      if (batch.length < READ_COUNT) break;
      start = `(${batch[batch.length - 1]![0]}`;
    }
    await redis.del(inbox);
    return taken;
  }

  private add(node: string, entry: BusEntry): void {
    const { redis, keys, log, receiver } = this.o;
    this.sent[entry.kind]++;
    ADD_UNLESS_REAPED(redis, [keys.reaped(node), keys.inbox(node)], encodeBusEntry(entry)).then((added) => {
      if (added === 1) return;
      log.info({ stage: "cluster", node, kind: entry.kind }, "not sent: the node was reaped");
      // Dead first, so that whoever hears of the failed confirmation no longer picks that node;
      // answers and kicks for a dead node have nobody to reach.
      receiver.unreachable(node, entry.kind === "stanza" || entry.kind === "room" ? entry.xml : undefined);
      if (entry.kind === "confirm") this.pending.settle(entry.id, false);
      if (entry.kind === "handover") this.handovers.settle(entry.id, undefined);
    }, (err) => log.error({ err, stage: "cluster", node, kind: entry.kind }, "sending to another node failed"));
  }

  private async readLoop(): Promise<void> {
    const { reader, redis, keys, node, log } = this.o;
    const inbox = keys.inbox(node);
    // First what this node read in a previous run and never acknowledged, then new entries.
    let cursor = "0";
    while (this.running) {
      let reply: Array<[string, Array<[string, string[] | null]>]> | null;
      try {
        reply = (await reader.xreadgroup("GROUP", GROUP, node, "COUNT", READ_COUNT, "BLOCK", BLOCK_MS, "STREAMS", inbox, cursor)) as typeof reply;
      } catch (err) {
        if (!this.running) break;
        // A node taken for dead had its inbox removed: it makes a new one and goes on.
        if (String((err as Error).message).includes("NOGROUP")) await this.createGroup().catch(() => undefined);
        else log.error({ err, stage: "cluster" }, "reading the node inbox failed");
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      const entries = reply?.[0]?.[1] ?? [];
      if (cursor !== ">") {
        if (entries.length === 0) {
          cursor = ">";
          continue;
        }
        cursor = entries[entries.length - 1]![0];
      }
      if (entries.length === 0) continue;
      const ids: string[] = [];
      const handling: Array<Promise<void>> = [];
      for (const [id, fields] of entries) {
        ids.push(id);
        const handled = this.receive(fields ?? []);
        if (handled) handling.push(handled);
      }
      // A room stanza is acknowledged once its room handled it: if this node dies before, the
      // reaper routes it again (at least once: a message broadcast but not acknowledged yet is sent twice).
      await Promise.all(handling);
      // Acknowledged once handed to the sessions (or routed again); deleted so the stream stays short.
      try {
        await redis.pipeline().xack(inbox, GROUP, ...ids).xdel(inbox, ...ids).exec();
      } catch (err) {
        log.error({ err, stage: "cluster" }, "acknowledging inbox entries failed");
      }
    }
  }

  /** A promise for a room stanza: settled once its room handled it. */
  private receive(fields: string[]): Promise<void> | undefined {
    const entry = decodeBusEntry(fields);
    const { receiver, log } = this.o;
    if (!entry) {
      log.warn({ stage: "cluster" }, "inbox entry not understood; dropped");
      return;
    }
    try {
      switch (entry.kind) {
        case "stanza":
          receiver.stanza(entry.to, entry.sid, entry.xml);
          return;
        case "confirm":
          void receiver.confirm(entry.to, entry.sid, entry.xml).catch(() => false)
            .then((ok) => this.add(entry.replyTo, { kind: "confirmed", id: entry.id, ok }));
          return;
        case "confirmed":
          this.pending.settle(entry.id, entry.ok);
          return;
        case "kick":
          receiver.kick(entry.to, entry.sid, entry.condition);
          return;
        case "handover":
          receiver.handover(entry.user, entry.smId, entry.replyTo, (state) => this.add(entry.replyTo, { kind: "handed", id: entry.id, state }));
          return;
        case "handed":
          // Too late (this node took the holder for dead): the state has nobody to restore it.
          if (!this.handovers.settle(entry.id, entry.state) && entry.state !== undefined) log.error({ stage: "cluster" }, "a handed-over session arrived after its resumption failed; lost");
          return;
        case "reply":
          receiver.reply(entry.xml);
          return;
        case "room":
          return this.inOrder(entry.room, () => receiver.room(entry.xml));
        case "fanout":
          receiver.fanout(entry.xml, entry.to);
          return;
      }
    } catch (err) {
      log.error({ err, stage: "cluster", kind: entry.kind }, "handling an inbox entry failed");
    }
    return undefined;
  }

  private inOrder(room: string, handle: () => Promise<void>): Promise<void> {
    const { log } = this.o;
    const done = (this.rooms.get(room) ?? Promise.resolve()).then(handle)
      .catch((err) => log.error({ err, stage: "cluster", kind: "room" }, "handling a room stanza failed"))
      .finally(() => { if (this.rooms.get(room) === done) this.rooms.delete(room); });
    this.rooms.set(room, done);
    return done;
  }
}

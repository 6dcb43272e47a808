/**
 * XEP-0160 Best Practices for Handling Offline Messages 1.0.1, with XEP-0203 delay stamps and the
 * XEP-0334 hints no-store / store. A queued message is an entry of its message record (the one
 * its archive entries share, docs/STORAGE.md); it leaves the queue only once the client has shown
 * it read it (HARDENING §1.3 P2): with stream management, when its <a h/> covers it; without, when
 * it answers a XEP-0199 ping sent after it (the stream is ordered). Then the user's watermark
 * moves over it. A session that ends first gets it again at its next login — a duplicate at
 * worst, never a loss.
 *
 * Strangers (senders not in the recipient's roster) share a small part of the queue, and each of
 * them a smaller part of that, so nobody outside the roster can fill it and make contacts'
 * messages bounce (ejabberd, Prosody and Openfire have one per-user limit only). A message that
 * does not fit gets service-unavailable back to its sender (XEP-0160 §3) — never a silent drop.
 */
import { z } from "zod";
import { defineModule } from "../module.js";
import { el, findChild, type Element } from "../xmpp/xml.js";
import { tryParseJid, type Jid } from "../xmpp/jid.js";
import { NS } from "../xmpp/ns.js";
import { HANDLED, handledOnceWritten } from "../hooks.js";
import { StanzaError } from "../errors.js";
import { parseElement } from "../xmpp/xml-parse.js";
import type { Session } from "../xmpp/sessions.js";
import { BoundedMap } from "../bounded-map.js";
import { openRecord, withOfflineDelay } from "./message-record.js";
import type { Routed } from "../hooks.js";

/** What strangers have in one user's queue; rebuilt from storage when not cached. */
interface StrangerTally {
  total: number;
  bySender: Map<string, number>;
}
const TALLY_CACHE_LIMIT = 10_000;
const TALLY_KEY = "offline-strangers";
const TALLY_NS = "urn:parley:offline:strangers";
/**
 * How long a changed tally waits before it is written. Written at every stored message, it was a
 * SQLite commit of its own on the event loop next to the record's group commit. Waiting folds a
 * user's changes into one write. A kill -9 forgets at most this much counting (strangers may then
 * queue that many more); a clean stop writes what is pending. Bench S4, two alternated pairs: the
 * highest rate with ack p99 < 50 ms went 3,000 → 3,000 and 3,000 → 3,500 msg/s; server CPU at
 * equal rates did not move beyond the noise.
 */
const TALLY_WRITE_DELAY_MS = 1000;

declare module "../hooks.js" {
  interface Events {
    /** A message was committed to a user's offline queue (the metrics count it). */
    "offline/stored": { user: string };
  }
}

export const offline = defineModule({
  name: "offline",
  implements: [{ spec: "XEP-0160", version: "1.0.1" }, { spec: "XEP-0203", version: "2.0" }],
  dependsOn: ["message"],
  options: z.strictObject({
    /** Per-user queue limit; over it the sender gets service-unavailable (XEP-0160 §3). */
    maxPerUser: z.number().int().min(1).default(10000),
    /** Of those, how many may come from senders not in the recipient's roster, all together. */
    maxFromStrangers: z.number().int().min(0).default(1000),
    /** And how many from any one of them. */
    maxPerStranger: z.number().int().min(0).default(100),
    /** Messages per flush batch. */
    flushBatch: z.number().int().min(1).default(500),
    ackTimeoutSeconds: z.number().positive().default(60),
    /** Keep a durable copy of messages delivered to sessions with stream management until they acknowledge them. */
    durableLiveDelivery: z.boolean().default(true),
  }),
  start(ctx) {
    const { storage, router } = ctx;
    ctx.feature("host", NS.OFFLINE);
    const inFlight = new Map<string, Set<number>>();

    /** XEP-0160 §3 and XEP-0334: what is kept. */
    const storable = (stanza: Element): boolean => {
      const type = stanza.attrs.type ?? "normal";
      if (type !== "chat" && type !== "normal") return false;
      if (findChild(stanza, "no-store", NS.HINTS)) return false;
      // XEP-0160 §3: a chat message that carries only a chat state is not stored.
      let elements = 0;
      let chatStates = 0;
      for (const c of stanza.children) {
        if (typeof c === "string") continue;
        elements++;
        if (c.getNS() === NS.CHATSTATES) chatStates++;
      }
      const onlyChatState = elements > 0 && chatStates === elements;
      return !onlyChatState || findChild(stanza, "store", NS.HINTS) !== undefined;
    };

    /**
     * Queues the routed message as an entry of its record. The record keeps the stanza as routed
     * (MAM has just serialized it when it added the recipient's entry); the XEP-0203 stamp is
     * added when the entry is delivered (withOfflineDelay).
     */
    const enqueue = (routed: Routed, user: string): Promise<number | undefined> => openRecord(routed, storage, (record) => {
      if (!record.recipient) record.stanza = routed.stanza.toString();
      record.queue = { owner: user, limit: ctx.options.maxPerUser };
    }).written;

    // ── the strangers' share ─────────────────────────────────────────────────────────────────
    // Kept as a document of the user (counts per stranger), so a restart or a cache eviction does
    // not hand strangers a fresh share; the cache saves reading it for every message. A cached
    // tally is reset to zero whenever the user's queue is found empty, so drift heals at a drain.
    // Changed tallies are written together, TALLY_WRITE_DELAY_MS after the first change.
    const tallies = new BoundedMap<string, StrangerTally>(TALLY_CACHE_LIMIT);
    const loading = new Map<string, Promise<StrangerTally>>();
    const changed = new Map<string, StrangerTally>();
    let writeTimer: ReturnType<typeof setTimeout> | undefined;
    let tallyWrites: Promise<void> = Promise.resolve();
    let stopped = false;
    /** Whether `sender` is outside `user`'s roster (the user itself and servers are not strangers). */
    const isStranger = async (user: string, sender: Jid): Promise<boolean> =>
      sender.local !== "" && sender.bare !== user && (await storage.roster.getItem(user, sender.bare)) === undefined;
    const tallyOf = (user: string): Promise<StrangerTally> => {
      const known = tallies.get(user);
      if (known) return Promise.resolve(known);
      let pending = loading.get(user);
      if (!pending) {
        pending = (async () => {
          const xml = await storage.documents.get(user, TALLY_KEY);
          const tally: StrangerTally = { total: 0, bySender: new Map() };
          for (const s of xml ? parseElement(xml).getChildren("sender") : []) count(tally, s.attrs.jid ?? "", Number(s.attrs.count) || 0);
          tallies.set(user, tally);
          return tally;
        })().finally(() => loading.delete(user));
        loading.set(user, pending);
      }
      return pending;
    };
    const count = (tally: StrangerTally, sender: string, delta: number) => {
      const before = tally.bySender.get(sender) ?? 0;
      const n = Math.max(0, before + delta);
      tally.total += n - before;
      if (n === 0) tally.bySender.delete(sender);
      else tally.bySender.set(sender, n);
    };
    /** Marks the user's tally for the next write. */
    const persist = (user: string, tally: StrangerTally) => {
      changed.set(user, tally);
      if (!writeTimer && !stopped) writeTimer = setTimeout(() => void writeChanged(), TALLY_WRITE_DELAY_MS);
    };
    /**
     * Takes the changed tallies and writes them together (one transaction), each with its state
     * when the run starts; chained after the previous run, so one user's writes land in order.
     */
    const writeChanged = (): Promise<void> => {
      writeTimer = undefined;
      const batch = [...changed];
      changed.clear();
      tallyWrites = tallyWrites.then(async () => {
        try {
          await storage.documents.setMany(batch.map(([user, tally]) => ({
            owner: user, key: TALLY_KEY,
            xml: tally.total === 0 ? undefined : el("strangers", { xmlns: TALLY_NS },
              ...[...tally.bySender].map(([jid, n]) => el("sender", { jid, count: n }))).toString(),
          })));
        } catch (err) {
          ctx.log.error({ err, stage: "offline" }, "saving the strangers' share failed");
        }
      });
      return tallyWrites;
    };
    ctx.onStop(async () => {
      stopped = true;
      if (writeTimer) clearTimeout(writeTimer);
      await writeChanged();
    });
    /** Rows left the queue: what strangers had there shrinks (rows of senders not counted change nothing). */
    const forgetRows = async (user: string, senders: readonly string[]) => {
      const tally = await tallyOf(user);
      const counted = senders.filter((sender) => tally.bySender.has(sender));
      for (const sender of counted) count(tally, sender, -1);
      if (counted.length) persist(user, tally);
    };
    /** Heals drift (a crash between a removal and its count): a cached tally of an empty queue is zero. */
    const queueEmpty = (user: string) => {
      const tally = tallies.get(user);
      if (!tally || tally.total === 0) return;
      tally.bySender.clear();
      tally.total = 0;
      persist(user, tally);
    };
    ctx.on("user/deleted", ({ jid }) => { tallies.delete(jid.bare); });

    ctx.chain("message/offline", async (routed) => {
      const { stanza, from, to, origin } = routed;
      if (!storable(stanza)) return undefined;
      const user = to.bare;
      // Checked and counted in one synchronous step after the lookups, so concurrent messages
      // cannot all squeeze into the last place.
      const tally = (await isStranger(user, from)) ? await tallyOf(user) : undefined;
      if (tally) {
        const mine = tally.bySender.get(from.bare) ?? 0;
        if (mine >= ctx.options.maxPerStranger || tally.total >= ctx.options.maxFromStrangers) {
          ctx.log.debug({ stage: "offline", tag: "message" }, "strangers' share of the offline queue full");
          await router.bounce(stanza, new StanzaError("service-unavailable", "The recipient's offline storage has no room for more messages from you"), origin);
          return HANDLED;
        }
        count(tally, from.bare, 1);
      }
      // In the recipient's queue, in order, once enqueue returns; only the commit is pending.
      const stored = enqueue(routed, user).then((id) => {
        if (id === undefined) {
          if (tally) count(tally, from.bare, -1);
          return router.bounce(stanza, new StanzaError("service-unavailable", "The recipient's offline queue is full"), origin);
        }
        if (tally) persist(user, tally);
        ctx.log.debug({ stage: "offline", tag: "message" }, "stored offline");
        void ctx.emit("offline/stored", { user: to.bare });
        // XEP-0160 §4: stored messages go out on available presence. A presence that arrived while
        // this write was being committed started a flush that could not see it; flush again.
        for (const s of ctx.sessions.available(user)) flushDetached(s);
        return undefined;
      }, (err: unknown) => {
        if (tally) count(tally, from.bare, -1);
        throw err;
      });
      return handledOnceWritten(routed, stored);
    });

    /**
     * Durable live delivery (HARDENING §1.3, the crash window of P1): a message for sessions that
     * can acknowledge (XEP-0198) is written to them at once and also queued (an entry of its
     * record), committed before the sender's 'h' covers it; the user's watermark moves over it when
     * a recipient acknowledges the message. After a crash (kill -9) it is still there and reaches the user at the next login;
     * if every recipient session ends without acknowledging, the user's other resources get it.
     */
    ctx.chain("message/live", (routed) => {
      const { stanza, to, sessions: targets } = routed;
      if (!ctx.options.durableLiveDelivery || !storable(stanza) || !targets.every((s) => s.confirmsDelivery)) return undefined;
      const user = to.bare;
      const row = enqueue(routed, user);
      const confirm = (s: Session) => router.deliverConfirmed(s, stanza) ?? Promise.resolve(false);
      // One session is the common case: its confirmation as it is, without Promise.all.
      const acked = targets.length === 1 ? confirm(targets[0]!) : Promise.all(targets.map(confirm)).then((all) => all.some(Boolean));
      return handledOnceWritten(routed, row.then((id) => {
        if (id === undefined) return; // queue full: delivered live, without a durable copy
        takenFor(user).add(id);
        void acked.then((yes) => {
          release(user, [id]);
          return yes ? storage.offline.acknowledge(user, [id]) : flushAvailable(user);
        }).catch((err) => ctx.log.error({ err, stage: "offline" }, "settling a durable delivery failed"));
      }, (err) => {
        // Already written to the live sessions; only the durable copy is missing.
        ctx.log.error({ err, stage: "offline" }, "durable copy of a live message failed");
      }));
    });

    /** Unacknowledged by the sessions it was written to: the user's available ones get it from the queue. */
    const flushAvailable = async (user: string): Promise<void> => {
      for (const s of ctx.sessions.available(user)) await flush(s);
    };

    const takenFor = (user: string): Set<number> => {
      let taken = inFlight.get(user);
      if (!taken) inFlight.set(user, (taken = new Set()));
      return taken;
    };
    const release = (user: string, ids: readonly number[]) => {
      const taken = inFlight.get(user);
      if (!taken) return;
      for (const id of ids) taken.delete(id);
      if (taken.size === 0) inFlight.delete(user);
    };

    const live = (session: Session) => ctx.sessions.get(session.jid.full) === session;

    const flush = async (session: Session): Promise<void> => {
      // XEP-0160 §4: deliver on available presence with non-negative priority.
      if (session.priority < 0 || !live(session)) return;
      const user = session.jid.bare;
      const taken = takenFor(user);
      const listed = await storage.offline.list(user, ctx.options.flushBatch + taken.size);
      if (listed.length === 0) return queueEmpty(user);
      const rows = listed.filter((r) => !taken.has(r.id)).slice(0, ctx.options.flushBatch);
      if (rows.length === 0) return;
      // Taken before the first await below, so that a flush running at the same time (another
      // presence, a message stored meanwhile) does not deliver these rows too.
      for (const row of rows) taken.add(row.id);
      const ids: number[] = [];
      const senders = new Map<number, string>();
      const confirmations: Array<Promise<boolean> | undefined> = [];
      for (const row of rows) {
        let stanza;
        try {
          stanza = parseElement(row.stanza);
        } catch (err) {
          ctx.log.error({ err, stage: "offline", id: row.id }, "stored stanza does not parse; left in storage");
          continue;
        }
        senders.set(row.id, tryParseJid(stanza.attrs.from)?.bare ?? "");
        withOfflineDelay(stanza, session.jid.domain, row.storedAt);
        stanza.attrs.to = session.jid.full;
        ids.push(row.id);
        confirmations.push(router.deliverConfirmed(session, stanza));
        // A batch can be far larger than what a session may buffer: wait while the client reads.
        const room = session.writable();
        if (room) await room;
      }
      let read: number[] = [];
      try {
        read = await readByClient(session, ids, confirmations);
        await storage.offline.acknowledge(user, read);
        await forgetRows(user, read.map((id) => senders.get(id)!));
      } catch (err) {
        ctx.log.error({ err, stage: "offline" }, "removing delivered offline messages failed");
      } finally {
        release(user, rows.map((r) => r.id));
      }
      if (!live(session)) {
        // The session ended before its client read everything: the user's other resources get
        // the rest now, not at their next login (issue 22 item 3).
        if (read.length < ids.length) for (const other of ctx.sessions.available(user)) await flush(other);
        return;
      }
      if (rows.length === ctx.options.flushBatch && session.presence !== undefined) await flush(session);
    };

    /** A flush nobody waits for: its failure is logged. */
    const flushDetached = (session: Session) => {
      flush(session).catch((err) => ctx.log.error({ err, stage: "offline" }, "offline flush failed"));
    };

    /**
     * Which rows the client has shown it read. With stream management, exactly those its <a h/>
     * covered; without, all of them once it answers a ping sent after them (any answer, even an
     * error, proves it read what came before), none if it does not answer.
     */
    const readByClient = async (session: Session, ids: number[], confirmations: Array<Promise<boolean> | undefined>): Promise<number[]> => {
      if (confirmations.every((c) => c !== undefined)) {
        const acked = await Promise.all(confirmations);
        return ids.filter((_, i) => acked[i]);
      }
      const ping = el("iq", { type: "get", from: session.jid.domain, to: session.jid.full }, el("ping", { xmlns: NS.PING }));
      try {
        await router.request(ping, ctx.options.ackTimeoutSeconds * 1000);
        return ids;
      } catch (err) {
        // An error reply counts only from the client itself: once its session is gone, the
        // server answers for it, and that proves nothing.
        return err instanceof StanzaError && err.condition !== "remote-server-timeout" && live(session) ? ids : [];
      }
    };
    // Detached: waiting for the client's acknowledgement must not hold up the presence that
    // triggered the flush (the client's answer is routed after it, in order).
    ctx.on("session/available", ({ session }) => flushDetached(session));
  },
});

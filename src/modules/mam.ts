/**
 * XEP-0313 Message Archive Management 1.1.1 (urn:xmpp:mam:2, with #extended) for user archives,
 * XEP-0441 archive preferences, XEP-0059 Result Set Management paging and XEP-0359 stanza ids.
 *
 * What is archived follows Prosody's rule set (a body, a XEP-0334 <store/> hint, encryption,
 * receipts, chat markers, invitations, XEP-0353 call signalling); headline, error and groupchat
 * messages and <no-store/>/<no-permanent-store/> ones are not. A message between two local users
 * is one message record (docs/STORAGE.md) that both archives refer to, under one id.
 *
 * Ids are the archive clock: milliseconds × 1024 plus a counter, so they increase with time and a
 * time range is an id range. Their decimal form is the XEP-0359 stanza-id.
 */
import { z } from "zod";
import { defineModule } from "../module.js";
import { el, childElements, settle, type Element } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { sameJid, tryParseJid, type Jid } from "../xmpp/jid.js";
import { StanzaError } from "../errors.js";
import { parseElement } from "../xmpp/xml-parse.js";
import { buildForm } from "../xmpp/forms.js";
import { MAM, RSM, idAt, parseArchiveQuery, timeOfId } from "./mam-query.js";

export { MAM, idAt, timeOfId };
import type { ArchivedMessage, ArchiveQuery, ArchiveEntry, Storage } from "../storage/index.js";
import type { Logger } from "../log.js";
import type { IqRequest } from "../xmpp/router.js";
import type { Session } from "../xmpp/sessions.js";
import { BoundedMap } from "../bounded-map.js";
import { Priority } from "../hooks.js";
import { andThen } from "../maybe-async.js";
import { openRecord, type OpenRecord } from "./message-record.js";
import { PrunePacer } from "./prune-pacer.js";
import type { Routed } from "../hooks.js";

const MAM_EXTENDED = "urn:xmpp:mam:2#extended";
export const STANZA_ID = "urn:xmpp:sid:0";
const FORWARD = "urn:xmpp:forward:0";
const PREFS_KEY = "mam:prefs";
const PREFS_CACHE_LIMIT = 50_000;
const DAY_MS = 86_400_000;

type DefaultRule = "always" | "never" | "roster";
interface Prefs { default: DefaultRule; always: Set<string>; never: Set<string> }

/**
 * Archive ids increasing with time, unique within this process (and across restarts, as the clock
 * moves on). Two lanes — even ids for user archives, odd for room archives — so the two clocks
 * never hand out the same id.
 */
export function archiveClock(lane: 0 | 1, now: () => number = Date.now): () => number {
  let last = -1;
  return () => {
    last = Math.max(last + 2, idAt(now()) + lane);
    return last;
  };
}

/**
 * Prosody's should_store, which clients have been built against. One pass over the children, no
 * getChild (each call of which builds an array): this runs twice for every 1:1 message. A hint
 * against storing, or a wrapper of our own (carbons, archive results, never archived again), wins
 * over anything worth keeping, wherever it stands.
 */
export function archivable(stanza: Element): boolean {
  const type = stanza.attrs.type ?? "normal";
  if (type !== "chat" && type !== "normal") return false;
  let worth = false;
  for (const c of stanza.children) {
    if (typeof c === "string") continue;
    const name = c.getName();
    const ns = c.getNS();
    if (ns === NS.HINTS && (name === "no-store" || name === "no-permanent-store")) return false;
    if ((ns === NS.CARBONS && (name === "sent" || name === "received")) || (ns === MAM && name === "result")) return false;
    worth ||= worthKeeping(c, name, ns);
  }
  return worth;
}

function worthKeeping(c: Element, name: string, ns: string | undefined): boolean {
  if (name === "body" || name === "subject" || (ns === NS.HINTS && name === "store")) return true;
  if ((name === "encryption" && ns === "urn:xmpp:eme:0") || (name === "x" && ns === "jabber:x:conference")) return true;
  return ns === "urn:xmpp:receipts" || ns === "urn:xmpp:chat-markers:0" || ns === "urn:xmpp:jingle-message:0"
    || ns === "urn:xmpp:jingle-message:1" || ns === "eu.siacs.conversations.axolotl" || ns === "urn:xmpp:omemo:2"
    || (name === "x" && ns === "http://jabber.org/protocol/muc#user" && c.getChild("invite") !== undefined);
}

export const mam = defineModule({
  name: "mam",
  implements: [
    { spec: "XEP-0313", version: "1.1.1", note: "user archives; RSM <count/> and <index/> are not given" },
    { spec: "XEP-0441", version: "0.2.0" },
    { spec: "XEP-0359", version: "0.7.0" },
    { spec: "XEP-0059", version: "1.0.0" },
  ],
  dependsOn: ["message", "roster"],
  options: z.strictObject({
    /** Days a message stays in the archive; 0 turns archiving off (store-until-delivered only). */
    retentionDays: z.number().min(0).default(14),
    /** What a user's archive keeps until they set preferences (XEP-0441). */
    defaultRule: z.enum(["always", "never", "roster"]).default("always"),
    defaultPageSize: z.number().int().min(1).default(50),
    /** Larger 'max' values are clamped to this (RSM paging continues). */
    maxPageSize: z.number().int().min(1).default(250),
    pruneIntervalMinutes: z.number().positive().default(60),
  }),
  start(ctx) {
    const { storage, router } = ctx;
    const { retentionDays } = ctx.options;
    const nextId = archiveClock(0);
    /** The stanza-id elements this process stamped, which the forgery filter leaves alone. */
    const stamped = new WeakSet<Element>();
    /** Whether the stanza carries a stanza-id of ours (only those are in `stamped`); no array per message. */
    const stampedHere = (stanza: Element) => {
      for (const c of stanza.children) if (typeof c !== "string" && stamped.has(c)) return true;
      return false;
    };

    // XEP-0359 §4: "the server MUST [strip] any <stanza-id/> element with a 'by' attribute" naming an
    // entity it stamps for, so nobody can forge our ids — whether or not archiving is on.
    ctx.filter("stanza/in", (routed) => {
      const { stanza, to, origin } = routed;
      // Archive results come only from this server (HARDENING §5, the MAM variant of CVE-2020-26547).
      if (origin && stanza.name === "message") for (const forged of stanza.getChildren("result", MAM)) stanza.remove(forged);
      if (stanza.name === "message" && to.local && router.isLocalDomain(to.domain)) {
        // Compared as JIDs (RFC 7622): 'USER@LOCALHOST' and 'user@localhost.' are this archive too.
        for (const sid of stanza.getChildren("stanza-id", STANZA_ID)) if (!stamped.has(sid) && sameJid(sid.attrs.by, to.bare)) stanza.remove(sid);
      }
      return routed;
    });
    ctx.feature("account", STANZA_ID);
    if (retentionDays === 0) return;
    // XEP-0313 §7 asks for the account's bare JID; clients such as Profanity look at the server's own
    // disco#info instead, and Prosody and ejabberd answer there too.
    for (const target of ["account", "host"] as const) {
      ctx.feature(target, MAM);
      ctx.feature(target, MAM_EXTENDED);
    }

    // ── preferences (XEP-0441) ───────────────────────────────────────────────────────────────
    const prefsCache = new BoundedMap<string, Prefs>(PREFS_CACHE_LIMIT);
    const defaultPrefs = (): Prefs => ({ default: ctx.options.defaultRule, always: new Set(), never: new Set() });
    const readPrefs = (node: Element): Prefs => {
      const rule = node.attrs.default;
      if (rule !== "always" && rule !== "never" && rule !== "roster") throw new StanzaError("bad-request", "default must be always, never or roster");
      const list = (name: string) => new Set((node.getChild(name)?.getChildren("jid") ?? []).map((j) => {
        const jid = tryParseJid(j.text());
        if (!jid) throw new StanzaError("jid-malformed");
        return jid.bare;
      }));
      return { default: rule, always: list("always"), never: list("never") };
    };
    const prefsElement = (p: Prefs) => el("prefs", { xmlns: MAM, default: p.default },
      el("always", {}, ...[...p.always].map((j) => el("jid", {}, j))),
      el("never", {}, ...[...p.never].map((j) => el("jid", {}, j))));
    const loadPrefs = (user: string): Prefs | Promise<Prefs> => {
      const hit = prefsCache.get(user);
      if (hit) return hit;
      return storage.documents.get(user, PREFS_KEY).then((xml) => {
        const prefs = xml ? readPrefs(parseElement(xml)) : defaultPrefs();
        prefsCache.set(user, prefs);
        return prefs;
      });
    };
    /** XEP-0441 §3: explicit lists first, then the default rule. */
    const keeps = (user: string, other: string, prefs: Prefs): boolean | Promise<boolean> => {
      if (prefs.always.has(other)) return true;
      if (prefs.never.has(other)) return false;
      if (prefs.default !== "roster") return prefs.default === "always";
      return storage.roster.getItem(user, other).then((item) => item !== undefined);
    };
    /** Runs `archive` at once when the preferences are at hand, else once they are loaded. */
    const whenKept = (user: string, other: string, archive: () => void): undefined | Promise<undefined> => {
      const pending = andThen(andThen(loadPrefs(user), (prefs) => keeps(user, other, prefs)), (kept) => { if (kept) archive(); return undefined; });
      // Archiving is a copy: when it fails, delivery goes on.
      return pending?.catch((err) => { ctx.log.error({ err, stage: "mam" }, "archive preferences failed"); return undefined; });
    };

    /**
     * The last archive write handed to the store. Messages do not wait for their archive write
     * (that would let later, unarchived stanzas overtake them), so a client can hold a stanza-id
     * before it is committed: its queries wait for the last write first, and an id it has seen is
     * always found. Group commits settle in order, so the last write stands for every earlier one,
     * whoever's archive it went to; a query waits at most for the commit in flight. One variable and
     * not a map of owners: a map written and cleared for every message reallocated its table every
     * few messages, and each table it dropped kept what its entries pointed to through scavenges.
     */
    let lastWrite: Promise<void> = Promise.resolve();
    const track = (open: OpenRecord) => {
      lastWrite = open.written.then(() => undefined, (err) => ctx.log.error({ err, stage: "mam", tag: "message" }, "archiving failed"));
    };
    const entry = (owner: string, other: Jid): ArchiveEntry => ({ owner, withBare: other.bare, withResource: other.resource });

    // ── archiving ────────────────────────────────────────────────────────────────────────────
    // Outgoing: what a user's client sends is an entry in the sender's archive (to itself: archived
    // once, below). It opens the message's record; the recipient's entry joins it when the message
    // reaches a local recipient in the same turn.
    ctx.filter("stanza/in", (routed) => {
      const { stanza, origin, to, from } = routed;
      if (origin && stanza.name === "message" && to.bare !== from.bare && archivable(stanza)) {
        void whenKept(from.bare, to.bare, () => {
          const open = openRecord(routed, storage, (record) => {
            record.id ??= nextId();
            record.sender = entry(from.bare, to);
          });
          // Serialized once this turn's routing is done: when the message reaches a local
          // recipient in the same turn, the recipient's part has serialized it with its stanza-id
          // and the sender's entry shares that text. The store takes a record no earlier than the
          // next event-loop turn (GroupCommit), after every microtask of this one.
          queueMicrotask(() => { if (!open.record.stanza) open.record.stanza = stanza.toString(); });
          return track(open);
        });
      }
      return routed;
    });
    // Incoming: an entry in the recipient's archive, and the stanza stamped with the record's id
    // before it is written to a session or queued, so live, carbon and offline copies all carry
    // it. A message that already carries our id was archived when it first arrived (it is being
    // re-routed from a session that ended).
    const receive = (routed: Routed): undefined | Promise<undefined> => {
      const { stanza, to, from } = routed;
      const user = to.bare;
      if (!archivable(stanza) || stampedHere(stanza)) return undefined;
      return whenKept(user, from.bare, () => track(openRecord(routed, storage, (record) => {
        record.id ??= nextId();
        const sid = el("stanza-id", { xmlns: STANZA_ID, id: String(record.id), by: user });
        stamped.add(sid);
        stanza.cnode(sid);
        record.recipient = entry(user, from);
        // From here on the stanza is as every copy gets it: live, carbons and the queue.
        record.stanza = settle(stanza);
      })));
    };
    // Before offline's handlers, which queue the same record.
    ctx.chain("message/live", receive, Priority.RECORD);
    ctx.chain("message/offline", receive, Priority.RECORD);

    // ── queries ──────────────────────────────────────────────────────────────────────────────
    // XEP-0313 §4: a user queries their own archive at their bare JID (or with no 'to'). Sent to the
    // user's own server, where MAM is advertised as well, the query means the same archive (ejabberd's
    // reading); nobody reaches another user's archive either way (§8: forbidden).
    const ownArchive = async ({ origin, self, from, to }: IqRequest): Promise<Session> => {
      if (!origin || !(self || (!to.local && to.domain === from.domain))) throw new StanzaError("forbidden");
      await lastWrite;
      return origin;
    };
    const querySet = async (request: IqRequest) => {
      const origin = await ownArchive(request);
      const { payload, from } = request;
      if (payload.name === "prefs") {
        const prefs = readPrefs(payload);
        await storage.documents.set(from.bare, PREFS_KEY, prefsElement(prefs).toString());
        prefsCache.set(from.bare, prefs);
        return prefsElement(prefs);
      }
      if (payload.name !== "query") throw new StanzaError("bad-request");
      return answerArchiveQuery({ storage, log: ctx.log, pageSize: ctx.options }, from.bare, payload, (m) => router.deliver(origin, m), origin.jid.full);
    };
    const queryGet = async (request: IqRequest) => {
      await ownArchive(request);
      const { payload, from } = request;
      if (payload.name === "query") return el("query", { xmlns: MAM }, archiveQueryForm());
      if (payload.name === "prefs") return prefsElement(await loadPrefs(from.bare));
      if (payload.name === "metadata") {
        // XEP-0313 §5: the first and last message of the archive, for a client to plan its sync.
        const bounds = await storage.archive.bounds(from.bare);
        const mark = (name: string, id: number) => el(name, { id: String(id), timestamp: new Date(timeOfId(id)).toISOString() });
        return el("metadata", { xmlns: MAM }, bounds && mark("start", bounds.first), bounds && mark("end", bounds.last));
      }
      throw new StanzaError("bad-request");
    };
    for (const target of ["account", "host"] as const) {
      ctx.iq(target, "set", MAM, querySet);
      ctx.iq(target, "get", MAM, queryGet);
    }

    ctx.on("user/deleted", ({ jid }) => { prefsCache.delete(jid.bare); });

    // ── retention ────────────────────────────────────────────────────────────────────────────
    // Batches sized and spaced by PrunePacer (prune-pacer.ts), so a large backlog never holds up
    // traffic for more than a few milliseconds at a time.
    let pruning: Promise<void> | undefined;
    let stopping = false;
    const prune = () => {
      if (pruning) return;
      pruning = (async () => {
        const cutoff = idAt(Date.now() - retentionDays * DAY_MS);
        const pacer = new PrunePacer();
        let total = 0;
        while (!stopping) {
          const asked = pacer.batch;
          const started = performance.now();
          const n = await storage.archive.prune(cutoff, asked);
          total += n;
          const pauseMs = pacer.took(performance.now() - started);
          if (n < asked) break; // the backlog is gone
          await new Promise((r) => setTimeout(r, pauseMs));
        }
        if (total > 0) ctx.log.info({ stage: "mam", pruned: total }, "expired archive messages removed");
      })().catch((err) => ctx.log.error({ err, stage: "mam" }, "archive pruning failed")).finally(() => { pruning = undefined; });
    };
    prune();
    ctx.interval(ctx.options.pruneIntervalMinutes * 60_000, prune);
    ctx.onStop(async () => {
      stopping = true;
      await pruning;
    });
  },
});

/** XEP-0313 §4.1.1: the fields a query may use. */
export const archiveQueryForm = () => {
  const form = buildForm("form", MAM, [
    { var: "with", type: "jid-single" },
    { var: "start", type: "text-single" },
    { var: "end", type: "text-single" },
    { var: "before-id", type: "text-single" },
    { var: "after-id", type: "text-single" },
    { var: "ids", type: "list-multi" },
  ]);
  // §4.1.5: 'ids' "is of type 'list-multi' … the server MUST include a XEP-0122 <validate/>
  // element that signals the list is open to arbitrary values provided by the client".
  form.getChildren("field").find((f) => f.attrs.var === "ids")!
    .cnode(el("validate", { xmlns: "http://jabber.org/protocol/xdata-validate", datatype: "xs:string" }, el("open")));
  return form;
};

const mustExist = async (storage: Storage, user: string, ids: Array<number | undefined>) => {
  const wanted = ids.filter((id): id is number => id !== undefined);
  if (wanted.length === 0) return;
  const found = new Set((await storage.archive.get(user, wanted)).map((m) => m.id));
  // XEP-0313 §4.1.3 / XEP-0059 §2.5: an id that is not in the archive is item-not-found.
  const missing = wanted.find((id) => !found.has(id));
  if (missing !== undefined) throw new StanzaError("item-not-found", `No message with id '${missing}' in the archive`);
};
type Range = Omit<ArchiveQuery, "newestFirst" | "limit">;
const inRange = (m: ArchivedMessage, r: Range) => (r.afterId === undefined || m.id > r.afterId) && (r.beforeId === undefined || m.id < r.beforeId)
  && (r.withBare === undefined || (m.withBare === r.withBare && (r.withResource === undefined || m.withResource === r.withResource)));

/**
 * The messages named in a query's 'ids' field that are also in its range, at most `limit` of them
 * (the newest when paging backwards), oldest first. §4.1.3: "If any UID requested by the client in
 * any of the 'before-id', 'after-id' or 'ids' form fields is not present in the archive, the server
 * MUST return an item-not-found error". The ids are checked `batch` at a time, so a long list never
 * holds more than one batch of messages in memory.
 */
async function pickIds(storage: Storage, owner: string, ids: number[], range: Range, newestFirst: boolean, limit: number, batch: number): Promise<ArchivedMessage[]> {
  const wanted = [...new Set(ids)].sort((a, b) => a - b);
  const matching: number[] = [];
  for (let i = 0; i < wanted.length; i += batch) {
    const part = wanted.slice(i, i + batch);
    const found = await storage.archive.get(owner, part);
    const have = new Set(found.map((m) => m.id));
    const missing = part.find((id) => !have.has(id));
    if (missing !== undefined) throw new StanzaError("item-not-found", `No message with id '${missing}' in the archive`);
    for (const m of found) if (inRange(m, range)) matching.push(m.id);
  }
  const pageIds = newestFirst ? matching.slice(-limit) : matching.slice(0, limit);
  return pageIds.length === 0 ? [] : storage.archive.get(owner, pageIds);
}

/**
 * Runs one XEP-0313 query against `owner`'s archive (a user's or a room's): sends each result
 * through `deliver`, in order, and returns the <fin/> for the IQ result.
 */
export async function answerArchiveQuery(
  deps: { storage: Storage; log: Logger; pageSize: { defaultPageSize: number; maxPageSize: number } },
  owner: string, payload: Element, deliver: (message: Element) => void, requester: string,
): Promise<Element> {
  const { storage } = deps;
  const user = owner;
  const query = parseArchiveQuery(payload, deps.pageSize);
  await mustExist(storage, user, query.referencedIds);
  const { range, newestFirst, pageSize } = query;
  // One more than the page, to know whether the page is the last one. Every way of asking is paged
  // alike: the 'ids' field narrows the query, it does not lift the page limit.
  const rows = query.ids
    ? await pickIds(storage, user, query.ids, range, newestFirst, pageSize + 1, deps.pageSize.maxPageSize)
    : await storage.archive.query(user, { ...range, newestFirst, limit: pageSize + 1 });
  const complete = rows.length <= pageSize;
  const page = complete ? rows : newestFirst ? rows.slice(1) : rows.slice(0, pageSize);

  const queryid = payload.attrs.queryid;
  const results = page.map((m) => {
    let forwarded: Element;
    try {
      forwarded = parseElement(m.stanza);
    } catch (err) {
      deps.log.error({ err, stage: "mam", id: m.id }, "archived stanza does not parse; left out of the results");
      return undefined;
    }
    forwarded.attrs.xmlns = NS.CLIENT;
    return el("message", { from: user, to: requester, id: `mam-${m.id}` },
      el("result", { xmlns: MAM, queryid, id: String(m.id) },
        el("forwarded", { xmlns: FORWARD },
          el("delay", { xmlns: NS.DELAY, stamp: new Date(timeOfId(m.id)).toISOString() }),
          forwarded)));
  });
  // XEP-0313 §4.3 <flip-page/>: the page's messages in reverse order.
  if (query.flipPage) results.reverse();
  // The results go out before the IQ result, on the same ordered stream.
  for (const r of results) if (r) deliver(r);
  const first = page[0];
  const last = page[page.length - 1];
  return el("fin", { xmlns: MAM, complete: complete ? "true" : undefined },
    el("set", { xmlns: RSM },
      first && el("first", {}, String(first.id)),
      last && el("last", {}, String(last.id))));
}

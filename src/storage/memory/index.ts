/** The reference driver: plain maps, no persistence. Used by fast tests; its semantics define the contract. */
import { GroupCommit } from "../group-commit.js";
import { advanceMark, byOwner } from "../watermark.js";
import { domainOf, type ArchiveEntry, type MessageRecord, type StoredAbuseReport, type Device, type UploadRecord, type RoomRecord, type RoomAffiliation, type Account, type ArchivedMessage, type PubSubItem, type LastActivity, type OfflineMessage, type OutboxEntry, type RosterItem, type Storage } from "../index.js";

export function createMemoryStorage(): Storage {
  const accounts = new Map<string, Account>();
  const rosters = new Map<string, { version: number; items: Map<string, RosterItem> }>();
  const requests = new Map<string, Map<string, string>>();
  /** The message records (docs/STORAGE.md) by seq, in commit order. */
  const records = new Map<number, StoredRecord>();
  /** owner → their archive entries, by id. */
  const archives = new Map<string, ArchiveRef[]>();
  /** owner → the queued records above their watermark, in seq order. */
  const queues = new Map<string, StoredRecord[]>();
  const marks = new Map<string, { mark: number; held: Set<number> }>();
  const documents = new Map<string, Map<string, string>>();
  const setDocument = (owner: string, key: string, xml: string) => {
    let m = documents.get(owner);
    if (!m) documents.set(owner, (m = new Map()));
    m.set(key, xml);
  };
  const last = new Map<string, LastActivity>();
  const blocked = new Map<string, Set<string>>();
  /** owner → node → { config, items oldest first } */
  const pubsub = new Map<string, Map<string, { config: string; items: PubSubItem[] }>>();
  const nodeOf = (owner: string, node: string) => pubsub.get(owner)?.get(node);
  const reports: StoredAbuseReport[] = [];
  let reportSeq = 0;
  const uploads = new Map<string, UploadRecord>();
  const rooms = new Map<string, RoomRecord>();
  const roomAffiliations = new Map<string, Map<string, RoomAffiliation>>();
  /** owner → user-agent id → device */
  const devices = new Map<string, Map<string, Device>>();
  /** Insertion order is id order. */
  const outbox = new Map<number, OutboxEntry & { owner: string }>();
  let outboxSeq = 0;
  let recordSeq = 0;

  const listOf = <V>(map: Map<string, V[]>, owner: string): V[] => {
    let list = map.get(owner);
    if (!list) map.set(owner, (list = []));
    return list;
  };
  const enter = (owner: string, rec: StoredRecord, side: "sender" | "recipient") => {
    const list = listOf(archives, owner);
    let at = list.length;
    while (at > 0 && list[at - 1]!.rec.id! > rec.id!) at--;
    list.splice(at, 0, { rec, side });
  };
  /** A record goes when nothing refers to it any more. */
  const collect = (rec: StoredRecord) => {
    if (!rec.sender && !rec.recipient && !rec.queueOwner) records.delete(rec.seq);
  };
  const leaveArchive = (owner: string) => {
    for (const { rec, side } of archives.get(owner) ?? []) { rec[side] = undefined; collect(rec); }
    archives.delete(owner);
  };
  const leaveQueue = (owner: string) => {
    for (const rec of queues.get(owner) ?? []) { rec.queueOwner = undefined; collect(rec); }
    queues.delete(owner);
    marks.delete(owner);
  };
  const queued = (owner: string) => {
    const held = marks.get(owner)?.held;
    return (queues.get(owner) ?? []).filter((r) => !held?.has(r.seq));
  };
  const toArchived = ({ rec, side }: ArchiveRef): ArchivedMessage =>
    ({ id: rec.id!, withBare: rec[side]!.withBare, withResource: rec[side]!.withResource, stanza: rec.stanza });

  // Commits like the SQL drivers do (one turn later, sealing the record then), so the modules'
  // assembly of a record behaves alike on every driver.
  const writes = new GroupCommit((batch: MessageRecord[]) => batch.map((r) => {
    r.sealed = true;
    const queue = r.queue && queued(r.queue.owner).length < r.queue.limit ? r.queue.owner : undefined;
    if (!r.sender && !r.recipient && !queue) return undefined;
    const rec: StoredRecord = { seq: ++recordSeq, id: r.id, stanza: r.stanza, storedAt: r.storedAt,
      sender: r.sender && { ...r.sender }, recipient: r.recipient && { ...r.recipient }, queueOwner: queue };
    records.set(rec.seq, rec);
    if (rec.sender) enter(rec.sender.owner, rec, "sender");
    if (rec.recipient) enter(rec.recipient.owner, rec, "recipient");
    if (queue) listOf(queues, queue).push(rec);
    return queue ? rec.seq : undefined;
  }));
  const acknowledgements = new GroupCommit((batch: Array<{ owner: string; ids: readonly number[] }>) => {
    for (const [owner, ids] of byOwner(batch)) {
      const queue = queues.get(owner) ?? [];
      const state = marks.get(owner) ?? { mark: 0, held: new Set<number>() };
      const next = advanceMark(state.mark, queue.map((r) => r.seq), [...state.held, ...ids]);
      while (queue.length > 0 && queue[0]!.seq <= next.mark) {
        const rec = queue.shift()!;
        rec.queueOwner = undefined;
        collect(rec);
      }
      marks.set(owner, { mark: next.mark, held: new Set(next.held) });
    }
    return batch.map(() => undefined);
  });

  const rosterOf = (owner: string) => {
    let r = rosters.get(owner);
    if (!r) rosters.set(owner, (r = { version: 0, items: new Map() }));
    return r;
  };
  const copyItem = (i: RosterItem): RosterItem => ({ ...i, groups: [...i.groups] });
  const copyAccount = (a: Account): Account => structuredClone(a);
  const copyAccountOut = (a: Account): Account => ({ ...structuredClone(a), disabled: a.disabled === true });

  return {
    driver: "memory",
    accounts: {
      async create(account) {
        if (accounts.has(account.jid)) return false;
        accounts.set(account.jid, copyAccount(account));
        return true;
      },
      async get(jid) {
        const a = accounts.get(jid);
        return a && copyAccountOut(a);
      },
      async exists(jid) { return accounts.has(jid); },
      async setCredentials(jid, credentials) {
        const a = accounts.get(jid);
        if (!a) return false;
        a.credentials = structuredClone(credentials);
        return true;
      },
      async setDisabled(jid, disabled) {
        const a = accounts.get(jid);
        if (!a) return false;
        a.disabled = disabled;
        return true;
      },
      async delete(jid) {
        if (!accounts.delete(jid)) return false;
        rosters.delete(jid); requests.delete(jid); leaveQueue(jid); documents.delete(jid); last.delete(jid); blocked.delete(jid); leaveArchive(jid); pubsub.delete(jid); devices.delete(jid);
        for (const [id, u] of uploads) if (u.owner === jid) uploads.delete(id);
        return true;
      },
      async list(domain) {
        return [...accounts.keys()].filter((j) => domain === undefined || domainOf(j) === domain).sort();
      },
    },
    roster: {
      async get(owner) {
        const r = rosters.get(owner);
        return { version: r?.version ?? 0, items: r ? [...r.items.values()].map(copyItem).sort((a, b) => (a.jid < b.jid ? -1 : 1)) : [] };
      },
      async getItem(owner, contact) {
        const i = rosters.get(owner)?.items.get(contact);
        return i && copyItem(i);
      },
      async put(owner, item) {
        const r = rosterOf(owner);
        r.items.set(item.jid, copyItem(item));
        return ++r.version;
      },
      async remove(owner, contact) {
        const r = rosters.get(owner);
        if (!r || !r.items.delete(contact)) return undefined;
        return ++r.version;
      },
    },
    subscriptionRequests: {
      async put(owner, contact, stanza) {
        let m = requests.get(owner);
        if (!m) requests.set(owner, (m = new Map()));
        m.set(contact, stanza);
      },
      async list(owner) {
        return [...(requests.get(owner) ?? new Map<string, string>()).entries()].map(([contact, stanza]) => ({ contact, stanza }))
          .sort((a, b) => (a.contact < b.contact ? -1 : a.contact > b.contact ? 1 : 0));
      },
      async has(owner, contact) { return requests.get(owner)?.has(contact) ?? false; },
      async remove(owner, contact) { requests.get(owner)?.delete(contact); },
    },
    offline: {
      append(owner, stanza, storedAt, limit) { return writes.add({ stanza, storedAt, queue: { owner, limit } }); },
      async list(owner, max) {
        const q = queued(owner);
        return (max === undefined ? q : q.slice(0, max)).map((r): OfflineMessage => ({ id: r.seq, stanza: r.stanza, storedAt: r.storedAt }));
      },
      async acknowledge(owner, ids) { await acknowledgements.add({ owner, ids }); },
      async count(owner) { return queued(owner).length; },
      async total() {
        let n = 0;
        for (const owner of queues.keys()) n += queued(owner).length;
        return n;
      },
    },
    s2sOutbox: {
      async append(owner, local, remote, stanza, queuedAt) {
        const id = ++outboxSeq;
        outbox.set(id, { id, owner, local, remote, stanza, queuedAt });
        return id;
      },
      async list(owner) { return [...outbox.values()].filter((e) => e.owner === owner).map(({ owner: _, ...e }) => e); },
      async claim(from, to) {
        const rows = [...outbox.values()].filter((e) => e.owner === from);
        for (const row of rows) row.owner = to;
        return rows.map(({ owner: _, ...e }) => e);
      },
      async remove(ids) { for (const id of ids) outbox.delete(id); },
    },
    messages: {
      write(record) { return writes.add(record); },
    },
    documents: {
      async get(owner, key) { return documents.get(owner)?.get(key); },
      async set(owner, key, xml) { setDocument(owner, key, xml); },
      async delete(owner, key) { documents.get(owner)?.delete(key); },
      async setMany(entries) {
        for (const { owner, key, xml } of entries) {
          if (xml === undefined) documents.get(owner)?.delete(key);
          else setDocument(owner, key, xml);
        }
      },
      async keys(owner, prefix) { return [...(documents.get(owner)?.keys() ?? [])].filter((k) => k.startsWith(prefix)).sort(); },
    },
    lastActivity: {
      async set(owner, activity) { last.set(owner, { ...activity }); },
      async get(owner) { const a = last.get(owner); return a && { ...a }; },
    },
    blocklist: {
      async list(owner) { return [...(blocked.get(owner) ?? [])].sort(); },
      async add(owner, jids) {
        let set = blocked.get(owner);
        if (!set) blocked.set(owner, (set = new Set()));
        for (const j of jids) set.add(j);
      },
      async remove(owner, jids) {
        if (jids === undefined) blocked.delete(owner);
        else for (const j of jids) blocked.get(owner)?.delete(j);
      },
    },
    archive: {
      async append(owner, message) {
        await writes.add({ id: message.id, stanza: message.stanza, storedAt: Date.now(),
          recipient: { owner, withBare: message.withBare, withResource: message.withResource } });
      },
      async query(owner, query) {
        const inRange = (archives.get(owner) ?? []).map(toArchived).filter((m) =>
          (query.withBare === undefined || m.withBare === query.withBare)
          && (query.withResource === undefined || m.withResource === query.withResource)
          && (query.afterId === undefined || m.id > query.afterId)
          && (query.beforeId === undefined || m.id < query.beforeId));
        return query.newestFirst ? inRange.slice(Math.max(0, inRange.length - query.limit)) : inRange.slice(0, query.limit);
      },
      async get(owner, ids) {
        const wanted = new Set(ids);
        return (archives.get(owner) ?? []).filter((e) => wanted.has(e.rec.id!)).map(toArchived);
      },
      async removeOwner(owner) { leaveArchive(owner); },
      async replace(owner, id, stanza) {
        const entry = archives.get(owner)?.find((e) => e.rec.id === id);
        if (entry) entry.rec.stanza = stanza;
        return entry !== undefined;
      },
      async bounds(owner) {
        const list = archives.get(owner);
        return list?.length ? { first: list[0]!.rec.id!, last: list[list.length - 1]!.rec.id! } : undefined;
      },
      async prune(beforeId, limit) {
        // Oldest first across all owners; a record still in an undelivered queue stays.
        const old = [...records.values()].filter((r) => r.id !== undefined && r.id < beforeId && !r.queueOwner && (r.sender || r.recipient))
          .sort((x, y) => x.id! - y.id!).slice(0, limit);
        for (const rec of old) {
          for (const side of ["sender", "recipient"] as const) {
            const owner = rec[side]?.owner;
            if (owner === undefined) continue;
            const list = archives.get(owner)!.filter((e) => e.rec !== rec);
            if (list.length) archives.set(owner, list);
            else archives.delete(owner);
          }
          records.delete(rec.seq);
        }
        return old.length;
      },
    },
    pubsub: {
      async nodes(owner) { return [...(pubsub.get(owner)?.keys() ?? [])].sort(); },
      async getConfig(owner, node) { return nodeOf(owner, node)?.config; },
      async createNode(owner, node, config) {
        let nodes = pubsub.get(owner);
        if (!nodes) pubsub.set(owner, (nodes = new Map()));
        if (nodes.has(node)) return false;
        nodes.set(node, { config, items: [] });
        return true;
      },
      async setConfig(owner, node, config) { const n = nodeOf(owner, node); if (n) n.config = config; },
      async deleteNode(owner, node) { return pubsub.get(owner)?.delete(node) ?? false; },
      async publish(owner, node, item, maxItems) {
        const n = nodeOf(owner, node);
        if (!n) throw new Error(`no node ${node}`);
        n.items = n.items.filter((i) => i.id !== item.id);
        n.items.push({ ...item });
        const removed = n.items.splice(0, Math.max(0, n.items.length - maxItems));
        return removed.map((i) => i.id);
      },
      async items(owner, node, query = {}) {
        let list = [...(nodeOf(owner, node)?.items ?? [])].reverse();
        if (query.ids) list = list.filter((i) => query.ids!.includes(i.id));
        if (query.max !== undefined) list = list.slice(0, query.max);
        return list.map((i) => ({ ...i }));
      },
      async retract(owner, node, id) {
        const n = nodeOf(owner, node);
        const before = n?.items.length ?? 0;
        if (n) n.items = n.items.filter((i) => i.id !== id);
        return (n?.items.length ?? 0) < before;
      },
      async purge(owner, node) { const n = nodeOf(owner, node); if (n) n.items = []; },
    },
    devices: {
      async get(owner, id) {
        const d = devices.get(owner)?.get(id);
        return d && structuredClone(d);
      },
      async put(d) {
        let mine = devices.get(d.owner);
        if (!mine) devices.set(d.owner, (mine = new Map()));
        mine.set(d.id, structuredClone(d));
      },
      async list(owner) {
        return [...(devices.get(owner)?.values() ?? [])].sort((a, b) => b.lastSeen - a.lastSeen || (a.id < b.id ? -1 : 1)).map((d) => structuredClone(d));
      },
      async delete(owner, id) {
        if (id === undefined) devices.delete(owner);
        else devices.get(owner)?.delete(id);
      },
    },
    reports: {
      async add(report) { reports.push({ ...structuredClone(report), id: ++reportSeq }); },
      async list(limit) { return reports.slice(-limit).reverse().map((r) => structuredClone(r)); },
      async remove(id) {
        const at = reports.findIndex((r) => r.id === id);
        if (at === -1) return false;
        reports.splice(at, 1);
        return true;
      },
    },
    uploads: {
      async add(r) { uploads.set(r.id, { ...r }); },
      async get(id) { const r = uploads.get(id); return r && { ...r }; },
      async remove(id) { uploads.delete(id); },
      async usage(owner, since) {
        const mine = [...uploads.values()].filter((u) => u.owner === owner);
        return { files: mine.length, bytes: mine.reduce((n, u) => n + u.size, 0), bytesSince: mine.filter((u) => u.createdAt >= since).reduce((n, u) => n + u.size, 0) };
      },
      async expired(before, limit) {
        return [...uploads.values()].filter((u) => u.expires && u.createdAt < before).sort((a, b) => a.createdAt - b.createdAt).slice(0, limit).map((u) => ({ ...u }));
      },
      async ofOwner(owner) { return [...uploads.values()].filter((u) => u.owner === owner).sort((a, b) => a.createdAt - b.createdAt).map((u) => ({ ...u })); },
      async totals() {
        const by = new Map<string, { owner: string; files: number; bytes: number }>();
        for (const u of uploads.values()) {
          const t = by.get(u.owner) ?? { owner: u.owner, files: 0, bytes: 0 };
          t.files++;
          t.bytes += u.size;
          by.set(u.owner, t);
        }
        return [...by.values()].sort((a, b) => (a.owner < b.owner ? -1 : 1));
      },
    },
    rooms: {
      async get(jid) { const r = rooms.get(jid); return r && { ...r }; },
      async put(room) { rooms.set(room.jid, { ...room }); },
      async delete(jid) { rooms.delete(jid); roomAffiliations.delete(jid); },
      async list(service) { return [...rooms.values()].filter((r) => domainOf(r.jid) === service).sort((a, b) => (a.jid < b.jid ? -1 : 1)).map((r) => ({ ...r })); },
      async affiliations(room) { return [...(roomAffiliations.get(room)?.values() ?? [])].sort((a, b) => (a.jid < b.jid ? -1 : 1)).map((a) => ({ ...a })); },
      async setAffiliation(room, a) {
        let m = roomAffiliations.get(room);
        if (!m) roomAffiliations.set(room, (m = new Map()));
        if (a.affiliation === "none") m.delete(a.jid);
        else m.set(a.jid, { ...a });
      },
    },
    async close() {
      await writes.drain();
      await acknowledgements.drain();
    },
  };
}

interface StoredRecord {
  seq: number;
  id: number | undefined;
  stanza: string;
  storedAt: number;
  sender: ArchiveEntry | undefined;
  recipient: ArchiveEntry | undefined;
  /** Whose undelivered queue holds it, until their watermark passes it. */
  queueOwner: string | undefined;
}

/** An entry of an owner's archive: the record and which of its sides is the owner's. */
interface ArchiveRef { rec: StoredRecord; side: "sender" | "recipient" }

/**
 * The embedded default driver: better-sqlite3 in WAL mode.
 *
 * Durability: WAL with synchronous=NORMAL survives a process crash (kill -9) — a committed
 * transaction is in the WAL file before the call returns — but may lose the last transactions on
 * power loss or an OS crash. `synchronous: full` closes that window at the cost of an fsync per
 * commit. better-sqlite3 is synchronous; the async interface resolves immediately.
 */
import Database from "better-sqlite3";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { SQLITE_MIGRATIONS } from "./migrations.js";
import { GroupCommit } from "../group-commit.js";
import { BackgroundCheckpointer, HOLD_AT_FRAMES } from "./checkpointer.js";
import { QueueSizes } from "./queue-sizes.js";
import { ARCHIVE_INDEX_DEFAULTS, ArchiveIndexer, type ArchiveIndexOptions } from "./archive-index.js";
import { advanceMark, byOwner } from "../watermark.js";
import { andThen } from "../../maybe-async.js";
import { domainOf, deviceFromRow, deviceToRow, mergeSides } from "../index.js";
import type { MessageRecord, StoredAbuseReport, DeviceRow, UploadRecord, RoomAffiliation, RoomRecord, Account, ArchivedMessage, ArchiveQuery, OutboxEntry, PubSubItem, RosterItem, Storage, Subscription } from "../index.js";

export interface SqliteOptions {
  /** File path, or ":memory:". */
  path: string;
  synchronous?: "normal" | "full";
  /** Where a failed background checkpoint is reported (default: a process warning). */
  onBackgroundError?: (message: string) => void;
  /** When the archive's per-owner entries are indexed (archive-index.ts); tests make the steps small. */
  archiveIndex?: ArchiveIndexOptions;
}

export function migrate(db: Database.Database): number {
  db.exec("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
  const row = db.prepare("SELECT version FROM schema_version").get() as { version: number } | undefined;
  let version = row?.version ?? 0;
  if (!row) db.prepare("INSERT INTO schema_version (version) VALUES (0)").run();
  for (; version < SQLITE_MIGRATIONS.length; version++) {
    db.transaction(() => {
      db.exec(SQLITE_MIGRATIONS[version]!);
      db.prepare("UPDATE schema_version SET version = ?").run(version + 1);
    })();
  }
  return version;
}

interface RosterRow { contact: string; name: string | null; groups: string; subscription: string; ask: number; approved: number }

/** Columns of an archive query's filters: in `archive_entries` joined to its record, or in the tail's records. */
interface ArchiveColumns { id: string; withBare: string; withResource: string }

/**
 * The WHERE terms of an archive query after the owner's. The tail's columns are written `+id`:
 * SQLite then scans the tail by seq instead of walking the id index from the bound to the end.
 */
function archiveFilters(query: ArchiveQuery & { ids?: readonly number[] }, c: ArchiveColumns): { where: string[]; values: unknown[] } {
  const where: string[] = [];
  const values: unknown[] = [];
  if (query.withBare !== undefined) { where.push(`${c.withBare} = ?`); values.push(query.withBare); }
  if (query.withBare !== undefined && query.withResource !== undefined) { where.push(`${c.withResource} = ?`); values.push(query.withResource); }
  if (query.afterId !== undefined) { where.push(`${c.id} > ?`); values.push(query.afterId); }
  if (query.beforeId !== undefined) { where.push(`${c.id} < ?`); values.push(query.beforeId); }
  if (query.ids !== undefined) { where.push(`${c.id} IN (SELECT value FROM json_each(?))`); values.push(JSON.stringify(query.ids)); }
  return { where, values };
}

const SIDES = ["sender", "recipient"] as const;
/**
 * An owner's records of one side (0 sender, 1 recipient): those their entries point to, and those
 * in the tail (@through: archive-index.ts). Each statement that needs them runs once per part.
 */
const OWNER_RECORDS: ReadonlyArray<(side: number) => string> = [
  (side) => `seq IN (SELECT seq FROM archive_entries WHERE owner = @owner AND side = ${side})`,
  () => "seq > @through",
];

export function createSqliteStorage(options: SqliteOptions): Storage {
  if (options.path !== ":memory:") mkdirSync(dirname(options.path), { recursive: true });
  const db = new Database(options.path);
  db.pragma("journal_mode = WAL");
  db.pragma(`synchronous = ${options.synchronous === "full" ? "FULL" : "NORMAL"}`);
  db.pragma("foreign_keys = ON");
  db.pragma("busy_timeout = 5000");
  // A WAL that grew in a burst is cut back to this size when it restarts: twice the size at which
  // the checkpointer restarts it, so that under steady load it keeps reusing its own blocks.
  db.pragma(`journal_size_limit = ${2 * HOLD_AT_FRAMES * 4096}`);
  const checkpointer = options.path === ":memory:" ? undefined
    : new BackgroundCheckpointer(db, options.path, options.onBackgroundError ?? ((m) => process.emitWarning(`SQLite checkpoint: ${m}`)));
  migrate(db);
  const archiveIndex = new ArchiveIndexer(db, options.archiveIndex ?? ARCHIVE_INDEX_DEFAULTS, () => checkpointer?.commitsHeld,
    options.onBackgroundError ?? ((m) => process.emitWarning(`SQLite archive index: ${m}`)));

  const q = {
    accountInsert: db.prepare("INSERT OR IGNORE INTO accounts (jid, created_at, credentials, disabled) VALUES (?, ?, ?, ?)"),
    accountGet: db.prepare("SELECT jid, created_at, credentials, disabled FROM accounts WHERE jid = ?"),
    accountExists: db.prepare("SELECT 1 FROM accounts WHERE jid = ?").pluck(),
    accountSetCred: db.prepare("UPDATE accounts SET credentials = ? WHERE jid = ?"),
    accountSetDisabled: db.prepare("UPDATE accounts SET disabled = ? WHERE jid = ?"),
    accountList: db.prepare("SELECT jid FROM accounts ORDER BY jid").pluck(),
    accountListDomain: db.prepare("SELECT jid FROM accounts WHERE jid LIKE ? ESCAPE '\\' ORDER BY jid").pluck(),
    rosterVersion: db.prepare("SELECT version FROM roster_versions WHERE owner = ?").pluck(),
    rosterBump: db.prepare("INSERT INTO roster_versions (owner, version) VALUES (?, 1) ON CONFLICT(owner) DO UPDATE SET version = version + 1 RETURNING version").pluck(),
    rosterItems: db.prepare("SELECT contact, name, groups, subscription, ask, approved FROM roster_items WHERE owner = ? ORDER BY contact"),
    rosterItem: db.prepare("SELECT contact, name, groups, subscription, ask, approved FROM roster_items WHERE owner = ? AND contact = ?"),
    rosterPut: db.prepare("INSERT OR REPLACE INTO roster_items (owner, contact, name, groups, subscription, ask, approved) VALUES (?, ?, ?, ?, ?, ?, ?)"),
    rosterRemove: db.prepare("DELETE FROM roster_items WHERE owner = ? AND contact = ?"),
    reqPut: db.prepare("INSERT OR REPLACE INTO subscription_requests (owner, contact, stanza) VALUES (?, ?, ?)"),
    reqList: db.prepare("SELECT contact, stanza FROM subscription_requests WHERE owner = ? ORDER BY contact"),
    reqHas: db.prepare("SELECT 1 FROM subscription_requests WHERE owner = ? AND contact = ?").pluck(),
    reqRemove: db.prepare("DELETE FROM subscription_requests WHERE owner = ? AND contact = ?"),
    outboxInsert: db.prepare("INSERT INTO s2s_outbox (owner, local, remote, stanza, queued_at) VALUES (?, ?, ?, ?, ?)"),
    outboxList: db.prepare("SELECT id, local, remote, stanza, queued_at AS queuedAt FROM s2s_outbox WHERE owner = ? ORDER BY id"),
    outboxClaim: db.prepare("UPDATE s2s_outbox SET owner = ? WHERE owner = ? RETURNING id, local, remote, stanza, queued_at AS queuedAt"),
    outboxRemove: db.prepare("DELETE FROM s2s_outbox WHERE id = ?"),
    // The undelivered queue: the owner's queued records above their watermark, less those held
    // acknowledged above a gap (docs/STORAGE.md).
    queueMark: db.prepare("SELECT acked_seq FROM queue_marks WHERE owner = ?").pluck(),
    queueAbove: db.prepare("SELECT seq FROM messages WHERE queue_owner = ? AND seq > ? AND seq <= ? ORDER BY seq").pluck(),
    queueHeld: db.prepare("SELECT seq FROM queue_acks WHERE owner = ? ORDER BY seq").pluck(),
    queueSetMark: db.prepare("INSERT INTO queue_marks (owner, acked_seq) VALUES (?, ?) ON CONFLICT (owner) DO UPDATE SET acked_seq = excluded.acked_seq"),
    queueClearHeld: db.prepare("DELETE FROM queue_acks WHERE owner = ?"),
    queueHold: db.prepare("INSERT OR IGNORE INTO queue_acks (owner, seq) VALUES (?, ?)"),
    // Records only the queue referred to go when the watermark passes them.
    queueCollect: db.prepare("DELETE FROM messages WHERE queue_owner = ? AND seq > ? AND seq <= ? AND sender_owner IS NULL AND recipient_owner IS NULL"),
    queueCount: db.prepare(`SELECT (SELECT count(*) FROM messages WHERE queue_owner = @owner AND seq > coalesce((SELECT acked_seq FROM queue_marks WHERE owner = @owner), 0))
      - (SELECT count(*) FROM queue_acks WHERE owner = @owner)`).pluck(),
    queueTotal: db.prepare(`SELECT (SELECT count(*) FROM messages m WHERE queue_owner IS NOT NULL
        AND seq > coalesce((SELECT acked_seq FROM queue_marks k WHERE k.owner = m.queue_owner), 0))
      - (SELECT count(*) FROM queue_acks)`).pluck(),
    queueList: db.prepare(`SELECT seq AS id, stanza, stored_at AS storedAt FROM messages
      WHERE queue_owner = @owner AND seq > coalesce((SELECT acked_seq FROM queue_marks WHERE owner = @owner), 0)
        AND seq NOT IN (SELECT seq FROM queue_acks WHERE owner = @owner)
      ORDER BY seq LIMIT @max`),
    recordInsert: db.prepare(`INSERT INTO messages (id, stanza, stored_at, sender_owner, sender_with, sender_resource,
      recipient_owner, recipient_with, recipient_resource, queue_owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
    docGet: db.prepare("SELECT xml FROM documents WHERE owner = ? AND key = ?").pluck(),
    docSet: db.prepare("INSERT OR REPLACE INTO documents (owner, key, xml) VALUES (?, ?, ?)"),
    docDelete: db.prepare("DELETE FROM documents WHERE owner = ? AND key = ?"),
    // substr, not LIKE: a key may hold '%' or '_'.
    docKeys: db.prepare("SELECT key FROM documents WHERE owner = ? AND substr(key, 1, length(?)) = ? ORDER BY key").pluck(),
    lastSet: db.prepare("INSERT OR REPLACE INTO last_activity (owner, at, status) VALUES (?, ?, ?)"),
    lastGet: db.prepare("SELECT at, status FROM last_activity WHERE owner = ?"),
    blockList: db.prepare("SELECT jid FROM blocklist WHERE owner = ? ORDER BY jid").pluck(),
    blockAdd: db.prepare("INSERT OR IGNORE INTO blocklist (owner, jid) VALUES (?, ?)"),
    blockRemove: db.prepare("DELETE FROM blocklist WHERE owner = ? AND jid = ?"),
    blockClear: db.prepare("DELETE FROM blocklist WHERE owner = ?"),
    archiveRemoveSide: OWNER_RECORDS.flatMap((records) => SIDES.map((side, n) => db.prepare(
      `UPDATE messages SET ${side}_owner = NULL, ${side}_with = NULL, ${side}_resource = NULL WHERE ${records(n)} AND ${side}_owner = @owner`))),
    queueRemoveOwner: db.prepare("UPDATE messages SET queue_owner = NULL WHERE queue_owner = ?"),
    // The owner's records nobody else refers to, found through the owner's entries and the tail
    // (@queue: the owner's queue entries go too).
    recordsOnlyOf: [
      ...OWNER_RECORDS.flatMap((records) => [
        `${records(0)} AND sender_owner = @owner AND recipient_owner IS NULL AND (queue_owner IS NULL OR (@queue AND queue_owner = @owner))`,
        `${records(1)} AND recipient_owner = @owner AND sender_owner IS NULL AND (queue_owner IS NULL OR (@queue AND queue_owner = @owner))`,
      ]),
      "queue_owner = @owner AND @queue AND sender_owner IS NULL AND recipient_owner IS NULL",
    ].map((where) => db.prepare(`DELETE FROM messages WHERE ${where}`)),
    archiveReplace: db.prepare("UPDATE messages SET stanza = @stanza WHERE id = @id AND (sender_owner = @owner OR recipient_owner = @owner)"),
    archiveBounds: db.prepare(`SELECT min(first) AS first, max(last) AS last FROM (
      SELECT (SELECT id FROM archive_entries WHERE owner = @owner ORDER BY id LIMIT 1) AS first,
        (SELECT id FROM archive_entries WHERE owner = @owner ORDER BY id DESC LIMIT 1) AS last
      UNION ALL SELECT min(+id), max(+id) FROM messages WHERE seq > @through AND sender_owner = @owner
      UNION ALL SELECT min(+id), max(+id) FROM messages WHERE seq > @through AND recipient_owner = @owner)`),
    // Oldest first; a record an undelivered queue still holds (above its owner's watermark) stays.
    archivePrune: db.prepare(`DELETE FROM messages WHERE seq IN (SELECT seq FROM messages m WHERE id < ?
      AND (sender_owner IS NOT NULL OR recipient_owner IS NOT NULL)
      AND (queue_owner IS NULL OR seq <= coalesce((SELECT acked_seq FROM queue_marks k WHERE k.owner = m.queue_owner), 0))
      ORDER BY id LIMIT ?)`),
  };
  const UPLOAD_COLUMNS = "id, owner, filename, size, content_type AS contentType, created_at AS createdAt, expires";
  const up = {
    add: db.prepare("INSERT INTO uploads (id, owner, filename, size, content_type, created_at, expires) VALUES (?, ?, ?, ?, ?, ?, ?)"),
    get: db.prepare(`SELECT ${UPLOAD_COLUMNS} FROM uploads WHERE id = ?`),
    remove: db.prepare("DELETE FROM uploads WHERE id = ?"),
    usage: db.prepare("SELECT count(*) AS files, coalesce(sum(size), 0) AS bytes, coalesce(sum(CASE WHEN created_at >= ? THEN size ELSE 0 END), 0) AS bytesSince FROM uploads WHERE owner = ?"),
    expired: db.prepare(`SELECT ${UPLOAD_COLUMNS} FROM uploads WHERE expires = 1 AND created_at < ? ORDER BY created_at LIMIT ?`),
    ofOwner: db.prepare(`SELECT ${UPLOAD_COLUMNS} FROM uploads WHERE owner = ? ORDER BY created_at`),
    totals: db.prepare("SELECT owner, count(*) AS files, sum(size) AS bytes FROM uploads GROUP BY owner ORDER BY owner"),
  };
  const toUpload = (r: Omit<UploadRecord, "expires"> & { expires: number }): UploadRecord => ({ ...r, expires: r.expires === 1 });
  const rm = {
    get: db.prepare("SELECT jid, config, subject, created_at AS createdAt FROM rooms WHERE jid = ?"),
    put: db.prepare("INSERT OR REPLACE INTO rooms (jid, service, config, subject, created_at) VALUES (?, ?, ?, ?, ?)"),
    delete: db.prepare("DELETE FROM rooms WHERE jid = ?"),
    deleteAffiliations: db.prepare("DELETE FROM room_affiliations WHERE room = ?"),
    list: db.prepare("SELECT jid, config, subject, created_at AS createdAt FROM rooms WHERE service = ? ORDER BY jid"),
    affiliations: db.prepare("SELECT jid, affiliation, nick, reason FROM room_affiliations WHERE room = ? ORDER BY jid"),
    setAffiliation: db.prepare("INSERT OR REPLACE INTO room_affiliations (room, jid, affiliation, nick, reason) VALUES (?, ?, ?, ?, ?)"),
    removeAffiliation: db.prepare("DELETE FROM room_affiliations WHERE room = ? AND jid = ?"),
  };
  const deleteRoom = db.transaction((jid: string) => { rm.deleteAffiliations.run(jid); rm.delete.run(jid); });
  const dev = {
    get: db.prepare("SELECT * FROM devices WHERE owner = ? AND id = ?"),
    // An upsert (as the Postgres driver does), not INSERT OR REPLACE, which deletes and re-inserts
    // the row: 68 against 177 µs here, and every SASL2 login with a user-agent writes its device.
    put: db.prepare(`INSERT INTO devices (owner, id, software, name, first_seen, last_seen, tokens) VALUES (?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT (owner, id) DO UPDATE SET software = excluded.software, name = excluded.name, first_seen = excluded.first_seen,
        last_seen = excluded.last_seen, tokens = excluded.tokens`),
    list: db.prepare("SELECT * FROM devices WHERE owner = ? ORDER BY last_seen DESC, id"),
    deleteOne: db.prepare("DELETE FROM devices WHERE owner = ? AND id = ?"),
    deleteAll: db.prepare("DELETE FROM devices WHERE owner = ?"),
  };
  const reportAdd = db.prepare("INSERT INTO abuse_reports (at, reporter, reported, reason, text, stanza_ids) VALUES (?, ?, ?, ?, ?, ?)");
  const reportList = db.prepare("SELECT id, at, reporter, reported, reason, text, stanza_ids AS stanzaIds FROM abuse_reports ORDER BY id DESC LIMIT ?");
  const reportRemove = db.prepare("DELETE FROM abuse_reports WHERE id = ?");
  const ITEM_COLUMNS = "item_id AS id, publisher, payload, published_at AS publishedAt";
  const ps = {
    nodes: db.prepare("SELECT node FROM pubsub_nodes WHERE owner = ? ORDER BY node").pluck(),
    getConfig: db.prepare("SELECT config FROM pubsub_nodes WHERE owner = ? AND node = ?").pluck(),
    create: db.prepare("INSERT OR IGNORE INTO pubsub_nodes (owner, node, config) VALUES (?, ?, ?)"),
    setConfig: db.prepare("UPDATE pubsub_nodes SET config = ? WHERE owner = ? AND node = ?"),
    deleteNode: db.prepare("DELETE FROM pubsub_nodes WHERE owner = ? AND node = ?"),
    purge: db.prepare("DELETE FROM pubsub_items WHERE owner = ? AND node = ?"),
    retract: db.prepare("DELETE FROM pubsub_items WHERE owner = ? AND node = ? AND item_id = ?"),
    insert: db.prepare("INSERT INTO pubsub_items (owner, node, item_id, publisher, payload, published_at) VALUES (?, ?, ?, ?, ?, ?)"),
    beyond: db.prepare("SELECT item_id FROM pubsub_items WHERE owner = ? AND node = ? ORDER BY seq DESC LIMIT -1 OFFSET ?").pluck(),
    items: db.prepare(`SELECT ${ITEM_COLUMNS} FROM pubsub_items WHERE owner = ? AND node = ? ORDER BY seq DESC LIMIT ?`),
    itemsById: db.prepare(`SELECT ${ITEM_COLUMNS} FROM pubsub_items WHERE owner = ? AND node = ? AND item_id IN (SELECT value FROM json_each(?)) ORDER BY seq DESC LIMIT ?`),
  };
  const publishItem = db.transaction((owner: string, node: string, item: PubSubItem, maxItems: number) => {
    ps.retract.run(owner, node, item.id);
    ps.insert.run(owner, node, item.id, item.publisher, item.payload, item.publishedAt);
    const removed = ps.beyond.all(owner, node, maxItems) as string[];
    for (const id of removed) ps.retract.run(owner, node, id);
    return removed;
  });
  const deleteNode = db.transaction((owner: string, node: string) => {
    ps.purge.run(owner, node);
    return ps.deleteNode.run(owner, node).changes > 0;
  });
  // Archive queries: an owner's archive is their range of archive_entries and the records above
  // their mark (the tail, by side), each read with the same bounds and limit and merged by id. One
  // prepared statement per part and combination of filters, made on first use.
  const archiveQueries = new Map<string, Database.Statement>();
  const archivePart = (select: string, columns: ArchiveColumns, head: unknown[], query: ArchiveQuery & { ids?: readonly number[] }): ArchivedMessage[] => {
    const { where, values } = archiveFilters(query, columns);
    const sql = `${select}${where.map((w) => ` AND ${w}`).join("")} ORDER BY ${columns.id} ${query.newestFirst ? "DESC" : "ASC"} LIMIT ?`;
    let stmt = archiveQueries.get(sql);
    if (!stmt) archiveQueries.set(sql, (stmt = db.prepare(sql)));
    return stmt.all(...head, ...values, query.limit) as ArchivedMessage[];
  };
  const ENTRY_RESOURCE = "CASE e.side WHEN 0 THEN m.sender_resource ELSE m.recipient_resource END";
  const archiveQuery = (owner: string, query: ArchiveQuery & { ids?: readonly number[] }): ArchivedMessage[] => {
    const through = archiveIndex.through(owner);
    const indexed = archivePart(`SELECT e.id, e.correspondent AS withBare, ${ENTRY_RESOURCE} AS withResource, m.stanza
      FROM archive_entries e JOIN messages m ON m.seq = e.seq WHERE e.owner = ?`,
    { id: "e.id", withBare: "e.correspondent", withResource: ENTRY_RESOURCE }, [owner], query);
    const tail = SIDES.flatMap((side) => archivePart(`SELECT id, ${side}_with AS withBare, ${side}_resource AS withResource, stanza
      FROM messages WHERE seq > ? AND ${side}_owner = ?`, { id: "+id", withBare: `${side}_with`, withResource: `${side}_resource` }, [through, owner], query));
    return mergeSides(indexed, tail, query);
  };
  const deleteUser = ["accounts", "roster_versions", "roster_items", "subscription_requests", "documents", "last_activity", "blocklist", "pubsub_nodes", "pubsub_items", "uploads", "devices", "queue_marks", "queue_acks"]
    .map((t) => db.prepare(`DELETE FROM ${t} WHERE ${t === "accounts" ? "jid" : "owner"} = ?`));

  const toItem = (r: RosterRow): RosterItem => ({
    jid: r.contact,
    ...(r.name !== null ? { name: r.name } : {}),
    groups: JSON.parse(r.groups) as string[],
    subscription: r.subscription as Subscription,
    ask: r.ask === 1,
    approved: r.approved === 1,
  });

  // A group commit waits while the checkpointer copies the WAL's tail, so that the WAL can restart.
  const afterHold = <T, R>(commit: (batch: T[]) => R[]) => (batch: T[]) => andThen(checkpointer?.commitsHeld, () => commit(batch));
  // Group commit: records written in one event-loop turn share one transaction (one WAL commit,
  // one fsync with synchronous=full); each promise resolves only after that commit.
  const queueSizes = new QueueSizes((owner) => q.queueCount.get({ owner }) as number, () => db.pragma("data_version", { simple: true }) as number);
  let newestSeq = 0;
  const writeRecords = db.transaction((batch: MessageRecord[]) => {
    queueSizes.check();
    return batch.map((r) => {
      r.sealed = true;
      const queue = r.queue && queueSizes.of(r.queue.owner) < r.queue.limit ? r.queue.owner : undefined;
      if (!r.sender && !r.recipient && !queue) return undefined;
      const seq = Number(q.recordInsert.run(r.id ?? null, r.stanza, r.storedAt, r.sender?.owner ?? null, r.sender?.withBare ?? null, r.sender?.withResource ?? null,
        r.recipient?.owner ?? null, r.recipient?.withBare ?? null, r.recipient?.withResource ?? null, queue ?? null).lastInsertRowid);
      newestSeq = seq;
      if (!queue) return undefined;
      queueSizes.added(queue);
      return seq;
    });
  });
  const writes = new GroupCommit(afterHold((batch: MessageRecord[]) => {
    try {
      const queued = writeRecords(batch);
      archiveIndex.written(newestSeq);
      return queued;
    } catch (err) {
      queueSizes.forgetAll();
      throw err;
    }
  }));
  const outboxAppends = new GroupCommit(afterHold(db.transaction((batch: Array<{ owner: string; local: string; remote: string; stanza: string; queuedAt: number }>) =>
    batch.map((e) => Number(q.outboxInsert.run(e.owner, e.local, e.remote, e.stanza, e.queuedAt).lastInsertRowid)))));
  const removeOutbox = db.transaction((ids: readonly number[]) => { for (const id of ids) q.outboxRemove.run(id); });
  const acknowledgements = new GroupCommit(afterHold(db.transaction((batch: Array<{ owner: string; ids: readonly number[] }>) => {
    for (const [owner, ids] of byOwner(batch)) {
      queueSizes.forget(owner);
      const mark = (q.queueMark.get(owner) as number | undefined) ?? 0;
      const held = q.queueHeld.all(owner) as number[];
      const acked = [...held, ...ids];
      const next = advanceMark(mark, q.queueAbove.all(owner, mark, Math.max(...acked)) as number[], acked);
      if (next.mark !== mark) {
        q.queueSetMark.run(owner, next.mark);
        q.queueCollect.run(owner, mark, next.mark);
      }
      if (held.length > 0) q.queueClearHeld.run(owner);
      for (const seq of next.held) q.queueHold.run(owner, seq);
    }
    return batch.map(() => undefined);
  })));
  const putRoster = db.transaction((owner: string, item: RosterItem) => {
    q.rosterPut.run(owner, item.jid, item.name ?? null, JSON.stringify(item.groups), item.subscription, item.ask ? 1 : 0, item.approved ? 1 : 0);
    return q.rosterBump.get(owner) as number;
  });
  const removeRoster = db.transaction((owner: string, contact: string) => {
    if (q.rosterRemove.run(owner, contact).changes === 0) return undefined;
    return q.rosterBump.get(owner) as number;
  });
  const getRoster = db.transaction((owner: string) => ({
    version: (q.rosterVersion.get(owner) as number | undefined) ?? 0,
    items: (q.rosterItems.all(owner) as RosterRow[]).map(toItem),
  }));
  const setDocuments = db.transaction((entries: ReadonlyArray<{ owner: string; key: string; xml: string | undefined }>) => {
    for (const { owner, key, xml } of entries) {
      if (xml === undefined) q.docDelete.run(owner, key);
      else q.docSet.run(owner, key, xml);
    }
  });
  const blockAdd = db.transaction((owner: string, jids: readonly string[]) => { for (const j of jids) q.blockAdd.run(owner, j); });
  const blockRemove = db.transaction((owner: string, jids: readonly string[]) => { for (const j of jids) q.blockRemove.run(owner, j); });
  /** Clears an owner's side of the records they share and deletes the records nobody refers to any more. */
  const leaveRecords = db.transaction((owner: string, queueToo: boolean) => {
    if (queueToo) queueSizes.forget(owner);
    const through = archiveIndex.through(owner);
    for (const stmt of q.recordsOnlyOf) stmt.run({ owner, through, queue: queueToo ? 1 : 0 });
    for (const stmt of q.archiveRemoveSide) stmt.run({ owner, through });
    if (queueToo) q.queueRemoveOwner.run(owner);
  });
  const deleteAccount = db.transaction((jid: string) => {
    const existed = q.accountExists.get(jid) !== undefined;
    for (const stmt of deleteUser) stmt.run(jid);
    leaveRecords(jid, true);
    return existed;
  });

  return {
    driver: "sqlite",
    accounts: {
      async create(account: Account) {
        return q.accountInsert.run(account.jid, account.createdAt, JSON.stringify(account.credentials), account.disabled ? 1 : 0).changes === 1;
      },
      async get(jid) {
        const row = q.accountGet.get(jid) as { jid: string; created_at: number; credentials: string; disabled: number } | undefined;
        return row && { jid: row.jid, createdAt: row.created_at, credentials: JSON.parse(row.credentials), disabled: row.disabled === 1 };
      },
      async exists(jid) { return q.accountExists.get(jid) !== undefined; },
      async setCredentials(jid, credentials) {
        return q.accountSetCred.run(JSON.stringify(credentials), jid).changes === 1;
      },
      async setDisabled(jid, disabled) {
        return q.accountSetDisabled.run(disabled ? 1 : 0, jid).changes === 1;
      },
      async delete(jid) { return deleteAccount(jid); },
      async list(domain) {
        if (domain === undefined) return q.accountList.all() as string[];
        return q.accountListDomain.all(`%@${domain.replace(/[\\%_]/g, (c) => `\\${c}`)}`) as string[];
      },
    },
    roster: {
      async get(owner) { return getRoster(owner); },
      async getItem(owner, contact) {
        const row = q.rosterItem.get(owner, contact) as RosterRow | undefined;
        return row && toItem(row);
      },
      async put(owner, item) { return putRoster(owner, item); },
      async remove(owner, contact) { return removeRoster(owner, contact); },
    },
    subscriptionRequests: {
      async put(owner, contact, stanza) { q.reqPut.run(owner, contact, stanza); },
      async list(owner) { return q.reqList.all(owner) as Array<{ contact: string; stanza: string }>; },
      async has(owner, contact) { return q.reqHas.get(owner, contact) !== undefined; },
      async remove(owner, contact) { q.reqRemove.run(owner, contact); },
    },
    offline: {
      append(owner, stanza, storedAt, limit) { return writes.add({ stanza, storedAt, queue: { owner, limit } }); },
      async list(owner, max) { return q.queueList.all({ owner, max: max ?? -1 }) as Array<{ id: number; stanza: string; storedAt: number }>; },
      async acknowledge(owner, ids) { await acknowledgements.add({ owner, ids }); },
      async count(owner) { queueSizes.check(); return queueSizes.of(owner); },
      async total() { return q.queueTotal.get() as number; },
    },
    messages: {
      write(record) { return writes.add(record); },
    },
    s2sOutbox: {
      append(owner, local, remote, stanza, queuedAt) { return outboxAppends.add({ owner, local, remote, stanza, queuedAt }); },
      async list(owner) { return q.outboxList.all(owner) as OutboxEntry[]; },
      async claim(from, to) { return (q.outboxClaim.all(to, from) as OutboxEntry[]).sort((x, y) => x.id - y.id); },
      async remove(ids) { removeOutbox(ids); },
    },
    documents: {
      async get(owner, key) { return q.docGet.get(owner, key) as string | undefined; },
      async set(owner, key, xml) { q.docSet.run(owner, key, xml); },
      async delete(owner, key) { q.docDelete.run(owner, key); },
      async setMany(entries) { setDocuments(entries); },
      async keys(owner, prefix) { return q.docKeys.all(owner, prefix, prefix) as string[]; },
    },
    lastActivity: {
      async set(owner, activity) { q.lastSet.run(owner, activity.at, activity.status); },
      async get(owner) { return q.lastGet.get(owner) as { at: number; status: string } | undefined; },
    },
    blocklist: {
      async list(owner) { return q.blockList.all(owner) as string[]; },
      async add(owner, jids) { blockAdd(owner, jids); },
      async remove(owner, jids) {
        if (jids === undefined) q.blockClear.run(owner);
        else blockRemove(owner, jids);
      },
    },
    archive: {
      async append(owner, m) {
        await writes.add({ id: m.id, stanza: m.stanza, storedAt: Date.now(), recipient: { owner, withBare: m.withBare, withResource: m.withResource } });
      },
      async query(owner, query) { return archiveQuery(owner, query); },
      async get(owner, ids) { return archiveQuery(owner, { ids, newestFirst: false, limit: ids.length }); },
      async removeOwner(owner) { leaveRecords(owner, false); },
      async replace(owner, id, stanza) { return q.archiveReplace.run({ stanza, id, owner }).changes > 0; },
      async bounds(owner) {
        const row = q.archiveBounds.get({ owner, through: archiveIndex.through(owner) }) as { first: number | null; last: number | null };
        return row.first === null ? undefined : { first: row.first, last: row.last! };
      },
      // After a hold, as group commits: back-to-back deletes would keep the WAL from restarting
      // (it reached 16 GB while 1 million expired records went).
      async prune(beforeId, limit) {
        await checkpointer?.commitsHeld;
        return q.archivePrune.run(beforeId, limit).changes;
      },
    },
    pubsub: {
      async nodes(owner) { return ps.nodes.all(owner) as string[]; },
      async getConfig(owner, node) { return ps.getConfig.get(owner, node) as string | undefined; },
      async createNode(owner, node, config) { return ps.create.run(owner, node, config).changes === 1; },
      async setConfig(owner, node, config) { ps.setConfig.run(config, owner, node); },
      async deleteNode(owner, node) { return deleteNode(owner, node); },
      async publish(owner, node, item, maxItems) { return publishItem(owner, node, item, maxItems); },
      async items(owner, node, query = {}) {
        const max = query.max ?? -1;
        return (query.ids ? ps.itemsById.all(owner, node, JSON.stringify(query.ids), max) : ps.items.all(owner, node, max)) as PubSubItem[];
      },
      async retract(owner, node, id) { return ps.retract.run(owner, node, id).changes > 0; },
      async purge(owner, node) { ps.purge.run(owner, node); },
    },
    uploads: {
      async add(r) { up.add.run(r.id, r.owner, r.filename, r.size, r.contentType, r.createdAt, r.expires ? 1 : 0); },
      async get(id) { const r = up.get.get(id) as Parameters<typeof toUpload>[0] | undefined; return r && toUpload(r); },
      async remove(id) { up.remove.run(id); },
      async usage(owner, since) { return up.usage.get(since, owner) as { files: number; bytes: number; bytesSince: number }; },
      async expired(before, limit) { return (up.expired.all(before, limit) as Array<Parameters<typeof toUpload>[0]>).map(toUpload); },
      async ofOwner(owner) { return (up.ofOwner.all(owner) as Array<Parameters<typeof toUpload>[0]>).map(toUpload); },
      async totals() { return up.totals.all() as Array<{ owner: string; files: number; bytes: number }>; },
    },
    rooms: {
      async get(jid) { return rm.get.get(jid) as RoomRecord | undefined; },
      async put(r) { rm.put.run(r.jid, domainOf(r.jid), r.config, r.subject, r.createdAt); },
      async delete(jid) { deleteRoom(jid); },
      async list(service) { return rm.list.all(service) as RoomRecord[]; },
      async affiliations(room) { return rm.affiliations.all(room) as RoomAffiliation[]; },
      async setAffiliation(room, a) {
        if (a.affiliation === "none") rm.removeAffiliation.run(room, a.jid);
        else rm.setAffiliation.run(room, a.jid, a.affiliation, a.nick, a.reason);
      },
    },
    devices: {
      async get(owner, id) {
        const row = dev.get.get(owner, id) as DeviceRow | undefined;
        return row && deviceFromRow(row);
      },
      async put(d) {
        const r = deviceToRow(d);
        dev.put.run(r.owner, r.id, r.software, r.name, r.first_seen, r.last_seen, r.tokens);
      },
      async list(owner) { return (dev.list.all(owner) as DeviceRow[]).map(deviceFromRow); },
      async delete(owner, id) {
        if (id === undefined) dev.deleteAll.run(owner);
        else dev.deleteOne.run(owner, id);
      },
    },
    reports: {
      async add(r) { reportAdd.run(r.at, r.reporter, r.reported, r.reason, r.text, JSON.stringify(r.stanzaIds)); },
      async list(limit) {
        return (reportList.all(limit) as Array<StoredAbuseReport & { stanzaIds: string }>).map((r) => ({ ...r, stanzaIds: JSON.parse(r.stanzaIds) as string[] }));
      },
      async remove(id) { return reportRemove.run(id).changes === 1; },
    },
    async close() {
      await writes.drain();
      await acknowledgements.drain();
      await outboxAppends.drain();
      await archiveIndex.stop();
      await checkpointer?.stop();
      db.close();
    },
  };
}

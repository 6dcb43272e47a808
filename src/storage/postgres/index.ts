/**
 * The scale-out driver: PostgreSQL through pg's connection pool.
 *
 * Durability: every write commits with synchronous_commit on (Postgres' default, enforced per
 * connection here), so a resolved promise means the row survives a database crash. Offline
 * appends are group-committed: appends that arrive while a commit is in flight are written
 * together in the next transaction — one WAL flush for many messages — and none of them
 * resolves before its own commit.
 */
import pg from "pg";
import { POSTGRES_MIGRATIONS } from "./migrations.js";
import { GroupCommit } from "../group-commit.js";
import { advanceMark, byOwner } from "../watermark.js";
import { domainOf, deviceFromRow, deviceToRow, mergeSides } from "../index.js";
import type { MessageRecord, OutboxEntry, Account, DeviceRow, UploadRecord, RoomAffiliation, RoomRecord, ArchivedMessage, ArchiveQuery, PubSubItem, RosterItem, Storage, Subscription } from "../index.js";

export interface PostgresOptions {
  url: string;
  /** Schema for all tables (created if missing); default "public". */
  schema?: string;
  poolSize?: number;
  /** Shown in pg_stat_activity. */
  applicationName?: string;
  /** How long offline writes keep retrying while the database is unreachable (default 30 s). */
  retryForMs?: number;
}

const MIGRATION_LOCK = 0x7061726c; // "parl": one migrator at a time across nodes

export async function migratePostgres(client: pg.PoolClient): Promise<number> {
  await client.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK]);
  try {
    await client.query("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)");
    const row = await client.query<{ version: number }>("SELECT version FROM schema_version");
    let version = row.rows[0]?.version ?? 0;
    if (row.rowCount === 0) await client.query("INSERT INTO schema_version (version) VALUES (0)");
    for (; version < POSTGRES_MIGRATIONS.length; version++) {
      await client.query("BEGIN");
      try {
        await client.query(POSTGRES_MIGRATIONS[version]!);
        await client.query("UPDATE schema_version SET version = $1", [version + 1]);
        await client.query("COMMIT");
      } catch (err) {
        await client.query("ROLLBACK");
        throw err;
      }
    }
    return version;
  } finally {
    await client.query("SELECT pg_advisory_unlock($1)", [MIGRATION_LOCK]);
  }
}

interface RosterRow { contact: string; name: string | null; groups: string[]; subscription: string; ask: boolean; approved: boolean }

const quoteIdent = (name: string) => `"${name.replace(/"/g, '""')}"`;

/** The connection is gone (57P01 admin_shutdown, 57P02/57P03, or a socket error), not the query at fault. */
function isConnectionLoss(err: unknown): boolean {
  const code = (err as { code?: string }).code ?? "";
  return code.startsWith("57P") || code === "ECONNRESET" || code === "EPIPE" || code === "ECONNREFUSED"
    || /Connection terminated|not queryable|timeout exceeded when trying to connect/i.test(String((err as Error).message));
}

/**
 * A record's two parties (the sender's bare JID and the recipient's), as messages_conversation
 * (migration 14) indexes their LEAST and GREATEST: a record's two archive entries are the two ends
 * of one conversation.
 */
export const ARCHIVE_PARTIES = "coalesce(sender_owner, recipient_with), coalesce(sender_with, recipient_owner)";

export async function createPostgresStorage(options: PostgresOptions): Promise<Storage> {
  const schema = options.schema ?? "public";
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.poolSize ?? 10,
    application_name: options.applicationName ?? "parley",
    options: `-c search_path=${quoteIdent(schema)} -c synchronous_commit=on`,
  });
  pool.on("error", () => { /* an idle client died; the pool replaces it */ });
  const setup = await pool.connect();
  setup.on("error", () => { /* reported by the failing query */ });
  try {
    await setup.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`);
    await migratePostgres(setup);
  } finally {
    setup.release();
  }

  const q = <R extends pg.QueryResultRow>(text: string, values?: unknown[]) => pool.query<R>(text, values);
  /**
   * While the database is unreachable or restarting, offline writes and reads wait and retry (up to
   * options.retryForMs) instead of failing: nothing is acknowledged meanwhile, and the senders'
   * 'h' resumes once the database is back. A commit whose answer was lost may be written twice —
   * a duplicate, never a loss. Past the deadline the error goes back to the senders.
   */
  const retryOnConnectionLoss = async <T>(work: () => Promise<T>): Promise<T> => {
    const deadline = Date.now() + (options.retryForMs ?? 30_000);
    for (let attempt = 1; ; attempt++) {
      try {
        return await work();
      } catch (err) {
        if (!isConnectionLoss(err) || Date.now() >= deadline || closing) throw err;
        await new Promise((r) => setTimeout(r, Math.min(2000, 100 * attempt)));
      }
    }
  };
  let closing = false;

  /** Reads are safe to repeat, so they retry like offline writes when the connection is lost. */
  const read = <R extends pg.QueryResultRow>(text: string, values?: unknown[]) =>
    retryOnConnectionLoss(() => pool.query<R>(text, values));
  const tx = async <T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> => {
    const c = await pool.connect();
    let broken: Error | undefined;
    // A connection that dies between two of our queries emits 'error' on the checked-out client;
    // without a listener that would be an uncaught exception. The next query fails and says so.
    const onError = (err: Error) => { broken = err; };
    c.on("error", onError);
    try {
      await c.query("BEGIN");
      const r = await fn(c);
      await c.query("COMMIT");
      return r;
    } catch (err) {
      await c.query("ROLLBACK").catch(() => {});
      broken = isConnectionLoss(err) ? (err as Error) : undefined;
      throw err;
    } finally {
      // A client whose connection died is destroyed, not returned to the pool.
      c.off("error", onError);
      c.release(broken);
    }
  };

  /**
   * Point reads that arrive in one event-loop turn go to the database as one query. The first
   * messages to many users each read that user's settings (documents, blocklist, roster item,
   * whether the account exists); one query per read made such a burst queue for the pool's
   * connections, and the acknowledgements waited behind it (bench S4 on Postgres).
   */
  const batchedReads = <K, R>(query: (keys: K[]) => Promise<R[]>) =>
    new GroupCommit<K, R>((keys) => retryOnConnectionLoss(() => query(keys)));
  /** The rows of a batched read keyed by their request's ordinal (1-based, WITH ORDINALITY). */
  const byOrdinal = <T extends { n: string }>(rows: T[]) => new Map(rows.map((r) => [Number(r.n), r]));
  const documentReads = batchedReads(async (keys: Array<{ owner: string; key: string }>) => {
    const found = byOrdinal((await pool.query<{ n: string; xml: string }>(
      `SELECT k.n, d.xml FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(owner, key, n)
         JOIN documents d ON d.owner = k.owner AND d.key = k.key`, [keys.map((k) => k.owner), keys.map((k) => k.key)])).rows);
    return keys.map((_, i) => found.get(i + 1)?.xml);
  });
  const accountChecks = batchedReads(async (jids: string[]) => {
    const found = new Set((await pool.query<{ jid: string }>("SELECT jid FROM accounts WHERE jid = ANY($1::text[])", [jids])).rows.map((r) => r.jid));
    return jids.map((jid) => found.has(jid));
  });
  const rosterItemReads = batchedReads(async (keys: Array<{ owner: string; contact: string }>) => {
    const found = byOrdinal((await pool.query<RosterRow & { n: string }>(
      `SELECT k.n, r.contact, r.name, r.groups, r.subscription, r.ask, r.approved FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(owner, contact, n)
         JOIN roster_items r ON r.owner = k.owner AND r.contact = k.contact`, [keys.map((k) => k.owner), keys.map((k) => k.contact)])).rows);
    return keys.map((_, i) => { const row = found.get(i + 1); return row && toItem(row); });
  });
  const blocklistReads = batchedReads(async (owners: string[]) => {
    const lists = new Map<string, string[]>();
    for (const r of (await pool.query<{ owner: string; jid: string }>(
      "SELECT owner, jid FROM blocklist WHERE owner = ANY($1::text[]) ORDER BY jid COLLATE \"C\"", [owners])).rows) {
      const list = lists.get(r.owner);
      if (list) list.push(r.jid);
      else lists.set(r.owner, [r.jid]);
    }
    return owners.map((owner) => [...(lists.get(owner) ?? [])]);
  });

  const toItem = (r: RosterRow): RosterItem => ({
    jid: r.contact,
    ...(r.name !== null ? { name: r.name } : {}),
    groups: r.groups,
    subscription: r.subscription as Subscription,
    ask: r.ask,
    approved: r.approved,
  });
  const bump = async (c: pg.PoolClient, owner: string) =>
    Number((await c.query<{ version: string }>(
      "INSERT INTO roster_versions (owner, version) VALUES ($1, 1) ON CONFLICT (owner) DO UPDATE SET version = roster_versions.version + 1 RETURNING version", [owner])).rows[0]!.version);

  /**
   * Several nodes may write and acknowledge one user's queue. Both take a transaction-scoped lock
   * on the owner first (in sorted order: no deadlock), so an entry's seq is drawn and committed
   * while no acknowledgement of that owner runs: none can move the watermark past an entry that is
   * not yet visible (docs/STORAGE.md).
   */
  const lockQueues = (c: pg.PoolClient, owners: string[]) =>
    c.query("SELECT parley_lock_queues($1, $2::text[])", [MIGRATION_LOCK, owners]);
  const QUEUE_MARK = "coalesce((SELECT acked_seq FROM queue_marks k WHERE k.owner = m.queue_owner), 0)";

  // Group commit of message records: everything queued while a commit is in flight goes into the
  // next call. The call is one statement, so one transaction and one round trip for the whole
  // batch, whatever its size (migration 13, parley_write_messages); each write resolves after it.
  const writes = new GroupCommit((batch: MessageRecord[]) => {
    for (const r of batch) r.sealed = true;
    const col = <T>(f: (r: MessageRecord) => T) => batch.map(f);
    return retryOnConnectionLoss(async () => {
      const written = (await q<{ queued: number[]; seqs: string[]; seq_ids: Array<string | null> }>(
        `SELECT queued, seqs, seq_ids FROM parley_write_messages($1, $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[],
           $8::text[], $9::text[], $10::text[], $11::text[], $12::int[])`,
        [MIGRATION_LOCK, col((r) => r.id ?? null), col((r) => r.stanza), col((r) => r.storedAt),
          col((r) => r.sender?.owner ?? null), col((r) => r.sender?.withBare ?? null), col((r) => r.sender?.withResource ?? null),
          col((r) => r.recipient?.owner ?? null), col((r) => r.recipient?.withBare ?? null), col((r) => r.recipient?.withResource ?? null),
          col((r) => r.queue?.owner ?? null), col((r) => r.queue?.limit ?? null)])).rows[0]!;
      // Records with an id are matched by it. Those without (only queued) take the rest of the
      // seqs, which one sequence hands out in insertion order.
      const byId = new Map<number, number>();
      const unnamed: number[] = [];
      written.seqs.forEach((seq, i) => {
        const id = written.seq_ids[i];
        if (id === null || id === undefined) unnamed.push(Number(seq));
        else byId.set(Number(id), Number(seq));
      });
      unnamed.sort((x, y) => x - y);
      const queued = new Set(written.queued);
      let next = 0;
      return batch.map((r, i) => {
        const entry = queued.has(i + 1);
        if (r.id !== undefined) return entry ? byId.get(r.id) : undefined;
        return entry ? unnamed[next++] : undefined;
      });
    });
  });
  const acknowledgements = new GroupCommit((batch: Array<{ owner: string; ids: readonly number[] }>) => retryOnConnectionLoss(() => tx(async (c) => {
    const wanted = byOwner(batch);
    const owners = [...wanted.keys()];
    if (owners.length === 0) return batch.map(() => undefined);
    await lockQueues(c, owners);
    for (const owner of owners) {
      const mark = Number((await c.query<{ acked_seq: string }>("SELECT acked_seq FROM queue_marks WHERE owner = $1", [owner])).rows[0]?.acked_seq ?? 0);
      const held = (await c.query<{ seq: string }>("SELECT seq FROM queue_acks WHERE owner = $1", [owner])).rows.map((r) => Number(r.seq));
      const acked = [...held, ...wanted.get(owner)!];
      const above = (await c.query<{ seq: string }>("SELECT seq FROM messages WHERE queue_owner = $1 AND seq > $2 AND seq <= $3 ORDER BY seq",
        [owner, mark, Math.max(...acked)])).rows.map((r) => Number(r.seq));
      const next = advanceMark(mark, above, acked);
      if (next.mark !== mark) {
        await c.query("INSERT INTO queue_marks (owner, acked_seq) VALUES ($1, $2) ON CONFLICT (owner) DO UPDATE SET acked_seq = EXCLUDED.acked_seq", [owner, next.mark]);
        // Records only the queue referred to go when the watermark passes them.
        await c.query("DELETE FROM messages WHERE queue_owner = $1 AND seq > $2 AND seq <= $3 AND sender_owner IS NULL AND recipient_owner IS NULL", [owner, mark, next.mark]);
      }
      if (held.length > 0) await c.query("DELETE FROM queue_acks WHERE owner = $1", [owner]);
      if (next.held.length > 0) await c.query("INSERT INTO queue_acks (owner, seq) SELECT $1, unnest($2::bigint[])", [owner, next.held]);
    }
    return batch.map(() => undefined);
  })));
  /** Clears an owner's side of the records they share and deletes the records nobody refers to any more. */
  const leaveRecords = async (c: pg.PoolClient, owner: string, queueToo: boolean) => {
    // First the owner's records nobody else refers to, found through the owner's own indexes.
    for (const where of [
      "sender_owner = $1 AND recipient_owner IS NULL AND (queue_owner IS NULL OR ($2 AND queue_owner = $1))",
      "recipient_owner = $1 AND sender_owner IS NULL AND (queue_owner IS NULL OR ($2 AND queue_owner = $1))",
      "queue_owner = $1 AND $2 AND sender_owner IS NULL AND recipient_owner IS NULL",
    ]) await c.query(`DELETE FROM messages WHERE ${where}`, [owner, queueToo]);
    for (const side of ["sender", "recipient"]) {
      await c.query(`UPDATE messages SET ${side}_owner = NULL, ${side}_with = NULL, ${side}_resource = NULL WHERE ${side}_owner = $1`, [owner]);
    }
    if (queueToo) await c.query("UPDATE messages SET queue_owner = NULL WHERE queue_owner = $1", [owner]);
  };

  interface UploadRow { id: string; owner: string; filename: string; size: string; contentType: string; createdAt: string; expires: boolean }
  const UPLOAD_COLUMNS = `id, owner, filename, size, content_type AS "contentType", created_at AS "createdAt", expires`;
  const toUpload = (r: UploadRow): UploadRecord => ({ ...r, size: Number(r.size), createdAt: Number(r.createdAt) });
  interface ArchiveRow { id: string; withBare: string; withResource: string; stanza: string }
  const toArchived = (r: ArchiveRow): ArchivedMessage => ({ ...r, id: Number(r.id) });
  /**
   * An owner's archive is two index ranges of the records (their sender entries and their
   * recipient entries), each read with the same bounds and limit and merged by id.
   */
  const archiveQuery = async (owner: string, query: ArchiveQuery & { ids?: readonly number[] }): Promise<ArchivedMessage[]> => {
    const side = async (name: "sender" | "recipient") => {
      const where = [`${name}_owner = $1`];
      const values: unknown[] = [owner];
      const bind = (sql: string, value: unknown) => { values.push(value); where.push(sql.replace("?", `$${values.length}`)); };
      if (query.withBare !== undefined) {
        // Through the conversation's index (migration 14): its two parties, then the side's own.
        values.push(query.withBare);
        const other = `$${values.length}::text`;
        where.push(`LEAST(${ARCHIVE_PARTIES}) = LEAST($1::text, ${other})`, `GREATEST(${ARCHIVE_PARTIES}) = GREATEST($1::text, ${other})`,
          "(sender_owner IS NOT NULL OR recipient_owner IS NOT NULL)", `${name}_with = ${other}`);
      }
      if (query.withBare !== undefined && query.withResource !== undefined) bind(`${name}_resource = ?`, query.withResource);
      if (query.afterId !== undefined) bind("id > ?", query.afterId);
      if (query.beforeId !== undefined) bind("id < ?", query.beforeId);
      if (query.ids !== undefined) bind("id = ANY(?::bigint[])", query.ids);
      values.push(query.limit);
      return (await read<ArchiveRow>(`SELECT id, ${name}_with AS "withBare", ${name}_resource AS "withResource", stanza FROM messages
        WHERE ${where.join(" AND ")} ORDER BY id ${query.newestFirst ? "DESC" : "ASC"} LIMIT $${values.length}`, values)).rows.map(toArchived);
    };
    const [sent, received] = await Promise.all([side("sender"), side("recipient")]);
    return mergeSides(sent, received, query);
  };

  // Group commit of outbox appends: one multi-row insert per transaction.
  interface OutboxAppend { owner: string; local: string; remote: string; stanza: string; queuedAt: number }
  const outboxAppends = new GroupCommit(async (batch: OutboxAppend[]) => {
    const inserted = await retryOnConnectionLoss(() => q<{ id: string }>(
      `INSERT INTO s2s_outbox (owner, local, remote, stanza, queued_at)
       SELECT owner, local, remote, stanza, queued_at FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) WITH ORDINALITY AS t(owner, local, remote, stanza, queued_at, n)
       ORDER BY n RETURNING id`,
      [batch.map((e) => e.owner), batch.map((e) => e.local), batch.map((e) => e.remote), batch.map((e) => e.stanza), batch.map((e) => e.queuedAt)]));
    // Ids come from one sequence in insertion order, so ascending ids match the rows in order.
    return inserted.rows.map((r) => Number(r.id)).sort((x, y) => x - y);
  });

  interface OutboxRow { id: string; local: string; remote: string; stanza: string; queued_at: string }
  const toOutboxEntry = (r: OutboxRow): OutboxEntry => ({ id: Number(r.id), local: r.local, remote: r.remote, stanza: r.stanza, queuedAt: Number(r.queued_at) });

  const ITEM_COLUMNS = `item_id AS id, publisher, payload, published_at AS "publishedAt"`;
  const toPubSubItem = (r: PubSubItem & { publishedAt: string | number }): PubSubItem => ({ ...r, publishedAt: Number(r.publishedAt) });

  return {
    driver: "postgres",
    accounts: {
      async create(account: Account) {
        const r = await q("INSERT INTO accounts (jid, created_at, credentials, disabled) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
          [account.jid, account.createdAt, JSON.stringify(account.credentials), account.disabled === true]);
        return r.rowCount === 1;
      },
      async get(jid) {
        const r = await read<{ jid: string; created_at: string; credentials: Account["credentials"]; disabled: boolean }>(
          "SELECT jid, created_at, credentials, disabled FROM accounts WHERE jid = $1", [jid]);
        const row = r.rows[0];
        return row && { jid: row.jid, createdAt: Number(row.created_at), credentials: row.credentials, disabled: row.disabled };
      },
      exists(jid) { return accountChecks.add(jid); },
      async setCredentials(jid, credentials) {
        return (await q("UPDATE accounts SET credentials = $1 WHERE jid = $2", [JSON.stringify(credentials), jid])).rowCount === 1;
      },
      async setDisabled(jid, disabled) {
        return (await q("UPDATE accounts SET disabled = $1 WHERE jid = $2", [disabled, jid])).rowCount === 1;
      },
      async delete(jid) {
        return tx(async (c) => {
          const existed = ((await c.query("DELETE FROM accounts WHERE jid = $1", [jid])).rowCount ?? 0) > 0;
          for (const t of ["roster_versions", "roster_items", "subscription_requests", "documents", "last_activity", "blocklist", "pubsub_nodes", "pubsub_items", "uploads", "devices", "queue_marks", "queue_acks"]) {
            await c.query(`DELETE FROM ${t} WHERE owner = $1`, [jid]);
          }
          await leaveRecords(c, jid, true);
          return existed;
        });
      },
      async list(domain) {
        const r = domain === undefined
          ? await read<{ jid: string }>("SELECT jid FROM accounts ORDER BY jid COLLATE \"C\"")
          : await read<{ jid: string }>("SELECT jid FROM accounts WHERE jid LIKE $1 ESCAPE '\\' ORDER BY jid COLLATE \"C\"", [`%@${domain.replace(/[\\%_]/g, (ch) => `\\${ch}`)}`]);
        return r.rows.map((row) => row.jid);
      },
    },
    roster: {
      async get(owner) {
        const [v, items] = await Promise.all([
          read<{ version: string }>("SELECT version FROM roster_versions WHERE owner = $1", [owner]),
          read<RosterRow>("SELECT contact, name, groups, subscription, ask, approved FROM roster_items WHERE owner = $1 ORDER BY contact COLLATE \"C\"", [owner]),
        ]);
        return { version: Number(v.rows[0]?.version ?? 0), items: items.rows.map(toItem) };
      },
      getItem(owner, contact) { return rosterItemReads.add({ owner, contact }); },
      async put(owner, item) {
        return tx(async (c) => {
          await c.query(
            `INSERT INTO roster_items (owner, contact, name, groups, subscription, ask, approved) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (owner, contact) DO UPDATE SET name = EXCLUDED.name, groups = EXCLUDED.groups, subscription = EXCLUDED.subscription, ask = EXCLUDED.ask, approved = EXCLUDED.approved`,
            [owner, item.jid, item.name ?? null, item.groups, item.subscription, item.ask, item.approved]);
          return bump(c, owner);
        });
      },
      async remove(owner, contact) {
        return tx(async (c) => {
          if (((await c.query("DELETE FROM roster_items WHERE owner = $1 AND contact = $2", [owner, contact])).rowCount ?? 0) === 0) return undefined;
          return bump(c, owner);
        });
      },
    },
    subscriptionRequests: {
      async put(owner, contact, stanza) {
        await q("INSERT INTO subscription_requests (owner, contact, stanza) VALUES ($1, $2, $3) ON CONFLICT (owner, contact) DO UPDATE SET stanza = EXCLUDED.stanza", [owner, contact, stanza]);
      },
      async list(owner) {
        return (await read<{ contact: string; stanza: string }>("SELECT contact, stanza FROM subscription_requests WHERE owner = $1 ORDER BY contact COLLATE \"C\"", [owner])).rows;
      },
      async has(owner, contact) { return ((await read("SELECT 1 FROM subscription_requests WHERE owner = $1 AND contact = $2", [owner, contact])).rowCount ?? 0) > 0; },
      async remove(owner, contact) { await q("DELETE FROM subscription_requests WHERE owner = $1 AND contact = $2", [owner, contact]); },
    },
    offline: {
      append(owner, stanza, storedAt, limit) { return writes.add({ stanza, storedAt, queue: { owner, limit } }); },
      async list(owner, max) {
        const r = await read<{ id: string; stanza: string; stored_at: string }>(
          `SELECT seq AS id, stanza, stored_at FROM messages m WHERE queue_owner = $1 AND seq > ${QUEUE_MARK}
             AND seq NOT IN (SELECT seq FROM queue_acks WHERE owner = $1) ORDER BY seq LIMIT $2`, [owner, max ?? null]);
        return r.rows.map((row) => ({ id: Number(row.id), stanza: row.stanza, storedAt: Number(row.stored_at) }));
      },
      async acknowledge(owner, ids) { await acknowledgements.add({ owner, ids }); },
      async count(owner) {
        return Number((await read<{ n: string }>("SELECT parley_queue_length($1) AS n", [owner])).rows[0]!.n);
      },
      async total() {
        return Number((await read<{ n: string }>(`SELECT (SELECT count(*) FROM messages m WHERE queue_owner IS NOT NULL AND seq > ${QUEUE_MARK})
          - (SELECT count(*) FROM queue_acks) AS n`)).rows[0]!.n);
      },
    },
    messages: {
      write(record) { return writes.add(record); },
    },
    s2sOutbox: {
      append(owner, local, remote, stanza, queuedAt) { return outboxAppends.add({ owner, local, remote, stanza, queuedAt }); },
      async list(owner) {
        const rows = (await read<OutboxRow>("SELECT id, local, remote, stanza, queued_at FROM s2s_outbox WHERE owner = $1 ORDER BY id", [owner])).rows;
        return rows.map(toOutboxEntry);
      },
      async claim(from, to) {
        const rows = (await retryOnConnectionLoss(() => q<OutboxRow>(
          "UPDATE s2s_outbox SET owner = $2 WHERE owner = $1 RETURNING id, local, remote, stanza, queued_at", [from, to]))).rows;
        return rows.map(toOutboxEntry).sort((x, y) => x.id - y.id);
      },
      async remove(ids) {
        if (ids.length) await retryOnConnectionLoss(() => q("DELETE FROM s2s_outbox WHERE id = ANY($1::bigint[])", [ids]));
      },
    },
    documents: {
      get(owner, key) { return documentReads.add({ owner, key }); },
      async set(owner, key, xml) {
        await q("INSERT INTO documents (owner, key, xml) VALUES ($1, $2, $3) ON CONFLICT (owner, key) DO UPDATE SET xml = EXCLUDED.xml", [owner, key, xml]);
      },
      async delete(owner, key) { await q("DELETE FROM documents WHERE owner = $1 AND key = $2", [owner, key]); },
      async setMany(entries) {
        if (entries.length === 0) return;
        // One statement: the deletions and the upserts, each side as arrays (a key appears once per call).
        const gone = entries.filter((e) => e.xml === undefined);
        const kept = entries.filter((e) => e.xml !== undefined);
        await q(`WITH gone AS (DELETE FROM documents d USING unnest($1::text[], $2::text[]) AS g(owner, key) WHERE d.owner = g.owner AND d.key = g.key)
          INSERT INTO documents (owner, key, xml) SELECT * FROM unnest($3::text[], $4::text[], $5::text[])
          ON CONFLICT (owner, key) DO UPDATE SET xml = EXCLUDED.xml`,
        [gone.map((e) => e.owner), gone.map((e) => e.key), kept.map((e) => e.owner), kept.map((e) => e.key), kept.map((e) => e.xml)]);
      },
      async keys(owner, prefix) {
        // left(), not LIKE: a key may hold '%' or '_'; COLLATE "C" sorts by code point, as the other drivers do.
        const r = await read<{ key: string }>(`SELECT key FROM documents WHERE owner = $1 AND left(key, length($2)) = $2 ORDER BY key COLLATE "C"`, [owner, prefix]);
        return r.rows.map((row) => row.key);
      },
    },
    lastActivity: {
      async set(owner, activity) {
        await q("INSERT INTO last_activity (owner, at, status) VALUES ($1, $2, $3) ON CONFLICT (owner) DO UPDATE SET at = EXCLUDED.at, status = EXCLUDED.status", [owner, activity.at, activity.status]);
      },
      async get(owner) {
        const row = (await read<{ at: string; status: string }>("SELECT at, status FROM last_activity WHERE owner = $1", [owner])).rows[0];
        return row && { at: Number(row.at), status: row.status };
      },
    },
    blocklist: {
      list(owner) { return blocklistReads.add(owner); },
      async add(owner, jids) {
        if (jids.length) await q("INSERT INTO blocklist (owner, jid) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING", [owner, jids]);
      },
      async remove(owner, jids) {
        if (jids === undefined) await q("DELETE FROM blocklist WHERE owner = $1", [owner]);
        else if (jids.length) await q("DELETE FROM blocklist WHERE owner = $1 AND jid = ANY($2::text[])", [owner, jids]);
      },
    },
    archive: {
      async append(owner, m) {
        await writes.add({ id: m.id, stanza: m.stanza, storedAt: Date.now(), recipient: { owner, withBare: m.withBare, withResource: m.withResource } });
      },
      query: archiveQuery,
      async get(owner, ids) { return archiveQuery(owner, { ids, newestFirst: false, limit: ids.length }); },
      async removeOwner(owner) { await tx((c) => leaveRecords(c, owner, false)); },
      async replace(owner, id, stanza) {
        return ((await q("UPDATE messages SET stanza = $1 WHERE id = $2 AND (sender_owner = $3 OR recipient_owner = $3)", [stanza, id, owner])).rowCount ?? 0) > 0;
      },
      async bounds(owner) {
        const row = (await read<{ first: string | null; last: string | null }>(`SELECT min(first) AS first, max(last) AS last FROM (
          SELECT min(id) AS first, max(id) AS last FROM messages WHERE sender_owner = $1
          UNION ALL SELECT min(id), max(id) FROM messages WHERE recipient_owner = $1) AS sides`, [owner])).rows[0]!;
        return row.first === null ? undefined : { first: Number(row.first), last: Number(row.last) };
      },
      async prune(beforeId, limit) {
        // Oldest first; a record an undelivered queue still holds (above its owner's watermark) stays.
        return (await q(`DELETE FROM messages WHERE seq IN (SELECT seq FROM messages m WHERE id < $1
          AND (sender_owner IS NOT NULL OR recipient_owner IS NOT NULL) AND (queue_owner IS NULL OR seq <= ${QUEUE_MARK})
          ORDER BY id LIMIT $2)`, [beforeId, limit])).rowCount ?? 0;
      },
    },
    pubsub: {
      async nodes(owner) {
        return (await read<{ node: string }>(`SELECT node FROM pubsub_nodes WHERE owner = $1 ORDER BY node COLLATE "C"`, [owner])).rows.map((r) => r.node);
      },
      async getConfig(owner, node) {
        return (await read<{ config: string }>("SELECT config FROM pubsub_nodes WHERE owner = $1 AND node = $2", [owner, node])).rows[0]?.config;
      },
      async createNode(owner, node, config) {
        return ((await q("INSERT INTO pubsub_nodes (owner, node, config) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", [owner, node, config])).rowCount ?? 0) === 1;
      },
      async setConfig(owner, node, config) { await q("UPDATE pubsub_nodes SET config = $1 WHERE owner = $2 AND node = $3", [config, owner, node]); },
      async deleteNode(owner, node) {
        return tx(async (c) => {
          await c.query("DELETE FROM pubsub_items WHERE owner = $1 AND node = $2", [owner, node]);
          return ((await c.query("DELETE FROM pubsub_nodes WHERE owner = $1 AND node = $2", [owner, node])).rowCount ?? 0) > 0;
        });
      },
      async publish(owner, node, item, maxItems) {
        return tx(async (c) => {
          await c.query("DELETE FROM pubsub_items WHERE owner = $1 AND node = $2 AND item_id = $3", [owner, node, item.id]);
          await c.query("INSERT INTO pubsub_items (owner, node, item_id, publisher, payload, published_at) VALUES ($1, $2, $3, $4, $5, $6)",
            [owner, node, item.id, item.publisher, item.payload, item.publishedAt]);
          const removed = (await c.query<{ item_id: string }>(
            "DELETE FROM pubsub_items WHERE seq IN (SELECT seq FROM pubsub_items WHERE owner = $1 AND node = $2 ORDER BY seq DESC OFFSET $3) RETURNING item_id",
            [owner, node, maxItems])).rows.map((r) => r.item_id);
          return removed;
        });
      },
      async items(owner, node, query = {}) {
        const values: unknown[] = [owner, node];
        let sql = `SELECT ${ITEM_COLUMNS} FROM pubsub_items WHERE owner = $1 AND node = $2`;
        if (query.ids) { values.push(query.ids); sql += ` AND item_id = ANY($${values.length}::text[])`; }
        sql += " ORDER BY seq DESC";
        if (query.max !== undefined) { values.push(query.max); sql += ` LIMIT $${values.length}`; }
        return (await read<PubSubItem & { publishedAt: string }>(sql, values)).rows.map(toPubSubItem);
      },
      async retract(owner, node, id) {
        return ((await q("DELETE FROM pubsub_items WHERE owner = $1 AND node = $2 AND item_id = $3", [owner, node, id])).rowCount ?? 0) > 0;
      },
      async purge(owner, node) { await q("DELETE FROM pubsub_items WHERE owner = $1 AND node = $2", [owner, node]); },
    },
    uploads: {
      async add(r) {
        await q("INSERT INTO uploads (id, owner, filename, size, content_type, created_at, expires) VALUES ($1, $2, $3, $4, $5, $6, $7)",
          [r.id, r.owner, r.filename, r.size, r.contentType, r.createdAt, r.expires]);
      },
      async get(id) { return (await read<UploadRow>(`SELECT ${UPLOAD_COLUMNS} FROM uploads WHERE id = $1`, [id])).rows.map(toUpload)[0]; },
      async remove(id) { await q("DELETE FROM uploads WHERE id = $1", [id]); },
      async usage(owner, since) {
        const r = (await read<{ files: string; bytes: string; bytes_since: string }>(
          "SELECT count(*) AS files, coalesce(sum(size), 0) AS bytes, coalesce(sum(CASE WHEN created_at >= $1 THEN size ELSE 0 END), 0) AS bytes_since FROM uploads WHERE owner = $2",
          [since, owner])).rows[0]!;
        return { files: Number(r.files), bytes: Number(r.bytes), bytesSince: Number(r.bytes_since) };
      },
      async expired(before, limit) {
        return (await read<UploadRow>(`SELECT ${UPLOAD_COLUMNS} FROM uploads WHERE expires AND created_at < $1 ORDER BY created_at LIMIT $2`, [before, limit])).rows.map(toUpload);
      },
      async ofOwner(owner) { return (await read<UploadRow>(`SELECT ${UPLOAD_COLUMNS} FROM uploads WHERE owner = $1 ORDER BY created_at`, [owner])).rows.map(toUpload); },
      async totals() {
        return (await read<{ owner: string; files: string; bytes: string }>(`SELECT owner, count(*) AS files, sum(size) AS bytes FROM uploads GROUP BY owner ORDER BY owner COLLATE "C"`)).rows
          .map((r) => ({ owner: r.owner, files: Number(r.files), bytes: Number(r.bytes) }));
      },
    },
    rooms: {
      async get(jid) {
        const r = (await read<RoomRecord & { createdAt: string }>(`SELECT jid, config, subject, created_at AS "createdAt" FROM rooms WHERE jid = $1`, [jid])).rows[0];
        return r && { ...r, createdAt: Number(r.createdAt) };
      },
      async put(r) {
        await q(`INSERT INTO rooms (jid, service, config, subject, created_at) VALUES ($1, $2, $3, $4, $5)
          ON CONFLICT (jid) DO UPDATE SET config = EXCLUDED.config, subject = EXCLUDED.subject`, [r.jid, domainOf(r.jid), r.config, r.subject, r.createdAt]);
      },
      async delete(jid) {
        await tx(async (c) => {
          await c.query("DELETE FROM room_affiliations WHERE room = $1", [jid]);
          await c.query("DELETE FROM rooms WHERE jid = $1", [jid]);
        });
      },
      async list(service) {
        return (await read<RoomRecord & { createdAt: string }>(`SELECT jid, config, subject, created_at AS "createdAt" FROM rooms WHERE service = $1 ORDER BY jid COLLATE "C"`, [service])).rows
          .map((r) => ({ ...r, createdAt: Number(r.createdAt) }));
      },
      async affiliations(room) {
        return (await read<RoomAffiliation>(`SELECT jid, affiliation, nick, reason FROM room_affiliations WHERE room = $1 ORDER BY jid COLLATE "C"`, [room])).rows;
      },
      async setAffiliation(room, a) {
        if (a.affiliation === "none") await q("DELETE FROM room_affiliations WHERE room = $1 AND jid = $2", [room, a.jid]);
        else await q(`INSERT INTO room_affiliations (room, jid, affiliation, nick, reason) VALUES ($1, $2, $3, $4, $5)
          ON CONFLICT (room, jid) DO UPDATE SET affiliation = EXCLUDED.affiliation, nick = EXCLUDED.nick, reason = EXCLUDED.reason`, [room, a.jid, a.affiliation, a.nick, a.reason]);
      },
    },
    devices: {
      async get(owner, id) {
        const row = (await read<DeviceRow>("SELECT * FROM devices WHERE owner = $1 AND id = $2", [owner, id])).rows[0];
        return row && deviceFromRow(row);
      },
      async put(d) {
        const r = deviceToRow(d);
        await q(`INSERT INTO devices (owner, id, software, name, first_seen, last_seen, tokens) VALUES ($1, $2, $3, $4, $5, $6, $7)
          ON CONFLICT (owner, id) DO UPDATE SET software = EXCLUDED.software, name = EXCLUDED.name, first_seen = EXCLUDED.first_seen,
          last_seen = EXCLUDED.last_seen, tokens = EXCLUDED.tokens`, [r.owner, r.id, r.software, r.name, r.first_seen, r.last_seen, r.tokens]);
      },
      async list(owner) {
        return (await read<DeviceRow>("SELECT * FROM devices WHERE owner = $1 ORDER BY last_seen DESC, id COLLATE \"C\"", [owner])).rows.map(deviceFromRow);
      },
      async delete(owner, id) {
        if (id === undefined) await q("DELETE FROM devices WHERE owner = $1", [owner]);
        else await q("DELETE FROM devices WHERE owner = $1 AND id = $2", [owner, id]);
      },
    },
    reports: {
      async add(r) {
        await q("INSERT INTO abuse_reports (at, reporter, reported, reason, text, stanza_ids) VALUES ($1, $2, $3, $4, $5, $6)",
          [r.at, r.reporter, r.reported, r.reason, r.text, JSON.stringify(r.stanzaIds)]);
      },
      async list(limit) {
        const rows = (await read<{ id: string; at: string; reporter: string; reported: string; reason: string; text: string; stanza_ids: string }>(
          "SELECT id, at, reporter, reported, reason, text, stanza_ids FROM abuse_reports ORDER BY id DESC LIMIT $1", [limit])).rows;
        return rows.map((r) => ({ id: Number(r.id), at: Number(r.at), reporter: r.reporter, reported: r.reported, reason: r.reason, text: r.text, stanzaIds: JSON.parse(r.stanza_ids) as string[] }));
      },
      async remove(id) { return (await q("DELETE FROM abuse_reports WHERE id = $1", [id])).rowCount === 1; },
    },
    async close() {
      closing = true;
      await writes.drain();
      await acknowledgements.drain();
      await outboxAppends.drain();
      await pool.end();
    },
  };
}

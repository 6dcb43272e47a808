/** Versioned schema for the Postgres driver. Append new steps; never edit a released one. */
export const POSTGRES_MIGRATIONS: readonly string[] = [
  // 1: core tables
  `
  CREATE TABLE accounts (
    jid TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL,
    credentials JSONB NOT NULL
  );
  CREATE TABLE roster_versions (
    owner TEXT PRIMARY KEY,
    version BIGINT NOT NULL
  );
  CREATE TABLE roster_items (
    owner TEXT NOT NULL,
    contact TEXT NOT NULL,
    name TEXT,
    groups TEXT[] NOT NULL,
    subscription TEXT NOT NULL,
    ask BOOLEAN NOT NULL,
    approved BOOLEAN NOT NULL,
    PRIMARY KEY (owner, contact)
  );
  CREATE TABLE subscription_requests (
    owner TEXT NOT NULL,
    contact TEXT NOT NULL,
    stanza TEXT NOT NULL,
    PRIMARY KEY (owner, contact)
  );
  CREATE TABLE offline_messages (
    id BIGSERIAL PRIMARY KEY,
    owner TEXT NOT NULL,
    stanza TEXT NOT NULL,
    stored_at BIGINT NOT NULL
  );
  CREATE INDEX offline_messages_owner ON offline_messages (owner, id);
  CREATE TABLE documents (
    owner TEXT NOT NULL,
    key TEXT NOT NULL,
    xml TEXT NOT NULL,
    PRIMARY KEY (owner, key)
  );
  CREATE TABLE last_activity (
    owner TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    status TEXT NOT NULL
  );
  `,
  // 2: XEP-0191 blocklists
  `
  CREATE TABLE blocklist (
    owner TEXT NOT NULL,
    jid TEXT NOT NULL,
    PRIMARY KEY (owner, jid)
  );
  `,
  // 3: XEP-0313 message archives; ids are unique per server and increase with time
  `
  CREATE TABLE archive (
    id BIGINT PRIMARY KEY,
    owner TEXT NOT NULL,
    with_bare TEXT NOT NULL,
    with_resource TEXT NOT NULL,
    stanza TEXT NOT NULL
  );
  CREATE INDEX archive_owner ON archive (owner, id);
  CREATE INDEX archive_owner_with ON archive (owner, with_bare, id);
  `,
  // 4: pubsub nodes and items (PEP, XEP-0163)
  `
  CREATE TABLE pubsub_nodes (
    owner TEXT NOT NULL,
    node TEXT NOT NULL,
    config TEXT NOT NULL,
    PRIMARY KEY (owner, node)
  );
  CREATE TABLE pubsub_items (
    seq BIGSERIAL PRIMARY KEY,
    owner TEXT NOT NULL,
    node TEXT NOT NULL,
    item_id TEXT NOT NULL,
    publisher TEXT NOT NULL,
    payload TEXT NOT NULL,
    published_at BIGINT NOT NULL,
    UNIQUE (owner, node, item_id)
  );
  CREATE INDEX pubsub_items_node ON pubsub_items (owner, node, seq);
  `,
  // 5: XEP-0377 abuse reports (kept when the reporter's account is deleted: they are the admins')
  `
  CREATE TABLE abuse_reports (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    reporter TEXT NOT NULL,
    reported TEXT NOT NULL,
    reason TEXT NOT NULL,
    text TEXT NOT NULL,
    stanza_ids TEXT NOT NULL
  );
  `,
  // 6: XEP-0363 uploads (the bytes are in the file store)
  `
  CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    filename TEXT NOT NULL,
    size BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires BOOLEAN NOT NULL
  );
  CREATE INDEX uploads_owner ON uploads (owner, created_at);
  CREATE INDEX uploads_created ON uploads (created_at);
  `,
  // 7: XEP-0045 rooms and affiliations
  `
  CREATE TABLE rooms (
    jid TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    config TEXT NOT NULL,
    subject TEXT NOT NULL,
    created_at BIGINT NOT NULL
  );
  CREATE INDEX rooms_service ON rooms (service, jid);
  CREATE TABLE room_affiliations (
    room TEXT NOT NULL,
    jid TEXT NOT NULL,
    affiliation TEXT NOT NULL,
    nick TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (room, jid)
  );
  `,
  // 8: disabled accounts (XEP-0133 disable-user): they keep their data but cannot log in
  `
  ALTER TABLE accounts ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT FALSE;
  `,
  // 9: XEP-0388 user agents with their XEP-0484 FAST tokens (JSON, hashed)
  `
  CREATE TABLE devices (
    owner TEXT NOT NULL,
    id TEXT NOT NULL,
    software TEXT NOT NULL,
    name TEXT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    tokens TEXT NOT NULL,
    PRIMARY KEY (owner, id)
  );
  `,
  // 10: the durable outgoing federation queue (src/xmpp/s2s/pool.ts)
  `
  CREATE TABLE s2s_outbox (
    id BIGSERIAL PRIMARY KEY,
    local TEXT NOT NULL,
    remote TEXT NOT NULL,
    stanza TEXT NOT NULL,
    queued_at BIGINT NOT NULL
  );
  `,
  // 11: one message record per message (docs/STORAGE.md): both archives' entries and the
  // undelivered queue refer to it; acknowledgements move a per-user watermark. Moves the old
  // archive rows (one recipient entry each, as they were one row each) and offline rows (queued,
  // in their order).
  `
  CREATE TABLE messages (
    seq BIGSERIAL PRIMARY KEY,
    id BIGINT,
    stanza TEXT NOT NULL,
    stored_at BIGINT NOT NULL,
    sender_owner TEXT,
    sender_with TEXT,
    sender_resource TEXT,
    recipient_owner TEXT,
    recipient_with TEXT,
    recipient_resource TEXT,
    queue_owner TEXT
  );
  CREATE UNIQUE INDEX messages_id ON messages (id) WHERE id IS NOT NULL;
  CREATE INDEX messages_sender ON messages (sender_owner, id) WHERE sender_owner IS NOT NULL;
  CREATE INDEX messages_sender_with ON messages (sender_owner, sender_with, id) WHERE sender_owner IS NOT NULL;
  CREATE INDEX messages_recipient ON messages (recipient_owner, id) WHERE recipient_owner IS NOT NULL;
  CREATE INDEX messages_recipient_with ON messages (recipient_owner, recipient_with, id) WHERE recipient_owner IS NOT NULL;
  CREATE INDEX messages_queue ON messages (queue_owner, seq) WHERE queue_owner IS NOT NULL;
  CREATE TABLE queue_marks (
    owner TEXT PRIMARY KEY,
    acked_seq BIGINT NOT NULL
  );
  CREATE TABLE queue_acks (
    owner TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (owner, seq)
  );
  INSERT INTO messages (id, stanza, stored_at, recipient_owner, recipient_with, recipient_resource)
    SELECT id, stanza, id / 1024, owner, with_bare, with_resource FROM archive ORDER BY id;
  INSERT INTO messages (stanza, stored_at, queue_owner)
    SELECT stanza, stored_at, owner FROM offline_messages ORDER BY id;
  DROP TABLE archive;
  DROP TABLE offline_messages;
  `,
  // 12: s2s outbox rows belong to the cluster node that queued them ("" off a cluster): only that
  // node restores them at start, or the reaper of a dead one (docs/CLUSTER.md)
  `
  ALTER TABLE s2s_outbox ADD COLUMN owner TEXT NOT NULL DEFAULT '';
  CREATE INDEX s2s_outbox_owner ON s2s_outbox (owner, id);
  `,
  // 13: one group commit of message records as one call (src/storage/postgres/index.ts): the
  // queue owners' locks, their queue lengths, the per-user limits in arrival order and the insert
  // run inside the database, one round trip instead of five. A VOLATILE PL/pgSQL function takes a
  // fresh snapshot for each statement, so the lengths are counted after the locks are held, as
  // they were in the transaction it replaces. Returns the ordinals (1-based) of the records that
  // got a queue entry, and the seq and id of every written record, those a retried commit had
  // already written among them.
  // The owners' locks and a queue's length are functions of their own: the acknowledgement
  // transaction takes the same locks, and offline.count reports the same length.
  `
  CREATE FUNCTION parley_lock_queues(lock_class int, owners text[]) RETURNS void
  LANGUAGE plpgsql AS $$
  BEGIN
    -- In sorted order, so that two writers of overlapping owners never deadlock.
    PERFORM pg_advisory_xact_lock(lock_class, hashtext(o)) FROM unnest(owners) AS o ORDER BY o;
  END;
  $$;
  -- The entries above the owner's watermark, less those acknowledged out of order above it.
  CREATE FUNCTION parley_queue_length(queue text) RETURNS bigint
  LANGUAGE sql STABLE AS $$
    SELECT (SELECT count(*) FROM messages m WHERE m.queue_owner = queue
        AND m.seq > coalesce((SELECT acked_seq FROM queue_marks k WHERE k.owner = queue), 0))
      - (SELECT count(*) FROM queue_acks a WHERE a.owner = queue)
  $$;
  CREATE FUNCTION parley_write_messages(lock_class int, ids bigint[], stanzas text[], stored bigint[],
      so text[], sw text[], sr text[], ro text[], rw text[], rr text[], qo text[], qlimit int[],
      OUT queued int[], OUT seqs bigint[], OUT seq_ids bigint[])
  LANGUAGE plpgsql AS $$
  DECLARE
    owners text[];
    lengths bigint[];
    entries text[] := '{}';
    k int;
  BEGIN
    queued := '{}';
    SELECT array_agg(DISTINCT o ORDER BY o) INTO owners FROM unnest(qo) AS o WHERE o IS NOT NULL;
    IF owners IS NOT NULL THEN
      PERFORM parley_lock_queues(lock_class, owners);
      SELECT array_agg(parley_queue_length(o.owner) ORDER BY o.ord) INTO lengths FROM unnest(owners) WITH ORDINALITY AS o(owner, ord);
    END IF;
    FOR i IN 1 .. coalesce(array_length(stanzas, 1), 0) LOOP
      -- Every position is assigned, NULL where the record gets no queue entry: assigning only
      -- entries[2] to an empty array would make a one-element array starting at 2, which unnest
      -- would pair with the first record.
      entries[i] := NULL;
      IF qo[i] IS NOT NULL THEN
        k := array_position(owners, qo[i]);
        IF lengths[k] < qlimit[i] THEN
          lengths[k] := lengths[k] + 1;
          entries[i] := qo[i];
          queued := queued || i;
        END IF;
      END IF;
    END LOOP;
    WITH written AS (
      INSERT INTO messages (id, stanza, stored_at, sender_owner, sender_with, sender_resource, recipient_owner, recipient_with, recipient_resource, queue_owner)
      SELECT t.id, t.stanza, t.stored_at, t.so, t.sw, t.sr, t.ro, t.rw, t.rr, t.qo
      FROM unnest(ids, stanzas, stored, so, sw, sr, ro, rw, rr, entries) WITH ORDINALITY AS t(id, stanza, stored_at, so, sw, sr, ro, rw, rr, qo, n)
      WHERE t.so IS NOT NULL OR t.ro IS NOT NULL OR t.qo IS NOT NULL
      ORDER BY t.n ON CONFLICT (id) WHERE id IS NOT NULL DO NOTHING RETURNING messages.seq, messages.id)
    SELECT coalesce(array_agg(w.seq), '{}'), coalesce(array_agg(w.id), '{}') INTO seqs, seq_ids FROM written w;
    SELECT seqs || coalesce(array_agg(m.seq), '{}'), seq_ids || coalesce(array_agg(m.id), '{}') INTO seqs, seq_ids
      FROM messages m WHERE m.id = ANY(ids) AND m.id <> ALL(array_remove(seq_ids, NULL));
  END;
  $$;
  `,
  // 14: as SQLite's migration 13, the archive's queries by correspondent read one index of the
  // conversation (its two parties, the lesser first) instead of one per side: a record adds three
  // per-owner index entries instead of four. The expressions are ARCHIVE_PARTIES in index.ts.
  `
  CREATE INDEX messages_conversation ON messages (
    LEAST(coalesce(sender_owner, recipient_with), coalesce(sender_with, recipient_owner)),
    GREATEST(coalesce(sender_owner, recipient_with), coalesce(sender_with, recipient_owner)), id)
    WHERE sender_owner IS NOT NULL OR recipient_owner IS NOT NULL;
  DROP INDEX messages_sender_with;
  DROP INDEX messages_recipient_with;
  `,
];

/** Versioned schema for the SQLite driver. Append new steps; never edit a released one. */
export const SQLITE_MIGRATIONS: readonly string[] = [
  // 1: core tables
  `
  CREATE TABLE accounts (
    jid TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL,
    credentials TEXT NOT NULL
  ) WITHOUT ROWID;
  CREATE TABLE roster_versions (
    owner TEXT PRIMARY KEY,
    version INTEGER NOT NULL
  ) WITHOUT ROWID;
  CREATE TABLE roster_items (
    owner TEXT NOT NULL,
    contact TEXT NOT NULL,
    name TEXT,
    groups TEXT NOT NULL,
    subscription TEXT NOT NULL,
    ask INTEGER NOT NULL,
    approved INTEGER NOT NULL,
    PRIMARY KEY (owner, contact)
  ) WITHOUT ROWID;
  CREATE TABLE subscription_requests (
    owner TEXT NOT NULL,
    contact TEXT NOT NULL,
    stanza TEXT NOT NULL,
    PRIMARY KEY (owner, contact)
  ) WITHOUT ROWID;
  CREATE TABLE offline_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    stanza TEXT NOT NULL,
    stored_at INTEGER NOT NULL
  );
  CREATE INDEX offline_messages_owner ON offline_messages (owner, id);
  CREATE TABLE documents (
    owner TEXT NOT NULL,
    key TEXT NOT NULL,
    xml TEXT NOT NULL,
    PRIMARY KEY (owner, key)
  ) WITHOUT ROWID;
  CREATE TABLE last_activity (
    owner TEXT PRIMARY KEY,
    at INTEGER NOT NULL,
    status TEXT NOT NULL
  ) WITHOUT ROWID;
  `,
  // 2: XEP-0191 blocklists
  `
  CREATE TABLE blocklist (
    owner TEXT NOT NULL,
    jid TEXT NOT NULL,
    PRIMARY KEY (owner, jid)
  ) WITHOUT ROWID;
  `,
  // 3: XEP-0313 message archives; ids are unique per server and increase with time
  `
  CREATE TABLE archive (
    id INTEGER PRIMARY KEY,
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
  ) WITHOUT ROWID;
  CREATE TABLE pubsub_items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
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
    id INTEGER PRIMARY KEY AUTOINCREMENT,
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
    expires INTEGER NOT NULL
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
  ALTER TABLE accounts ADD COLUMN disabled INTEGER NOT NULL DEFAULT 0;
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
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    local TEXT NOT NULL,
    remote TEXT NOT NULL,
    stanza TEXT NOT NULL,
    queued_at BIGINT NOT NULL
  );
  `,
  // 11: one message record per message (docs/STORAGE.md): both archives' entries and the
  // undelivered queue refer to it; acknowledgements move a per-user watermark. Moves the old
  // archive rows (one recipient entry each, as they were one row each) and offline rows (queued,
  // in their order). AUTOINCREMENT: a seq is never handed out twice, even after the newest record
  // was deleted, so no new entry can land below a watermark.
  `
  CREATE TABLE messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id INTEGER,
    stanza TEXT NOT NULL,
    stored_at INTEGER NOT NULL,
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
    acked_seq INTEGER NOT NULL
  ) WITHOUT ROWID;
  CREATE TABLE queue_acks (
    owner TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (owner, seq)
  ) WITHOUT ROWID;
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
  // 13: the archive's queries by correspondent read one index of the conversation (its two
  // parties, the lesser first) instead of one index per side. A record's archive entries are of
  // one conversation whichever side they are on, so it adds three per-owner index entries instead
  // of four: each lands on a page of its own owner, and a commit writes every page it dirtied
  // whole (docs/PERFORMANCE.md, "What an archived message costs SQLite"). The queries repeated the
  // expressions word for word, until migration 14 replaced the index.
  `
  CREATE INDEX messages_conversation ON messages (
    min(coalesce(sender_owner, recipient_with), coalesce(sender_with, recipient_owner)),
    max(coalesce(sender_owner, recipient_with), coalesce(sender_with, recipient_owner)), id)
    WHERE sender_owner IS NOT NULL OR recipient_owner IS NOT NULL;
  DROP INDEX messages_sender_with;
  DROP INDEX messages_recipient_with;
  `,
  // 14: the archive's per-owner entries in their own table, written in sorted bulk steps instead of
  // with each record (archive-index.ts says why and how). side: 0 the sender's entry, 1 the
  // recipient's. archive_index: owners below step_done_below have their entries up to step_to,
  // the others up to indexed_through. The triggers take an entry away with its record or side.
  `
  CREATE TABLE archive_entries (
    owner TEXT NOT NULL,
    id INTEGER NOT NULL,
    side INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    correspondent TEXT,
    PRIMARY KEY (owner, id, side)
  ) WITHOUT ROWID;
  CREATE INDEX archive_entries_with ON archive_entries (owner, correspondent, id, seq);
  CREATE TABLE archive_index (
    indexed_through INTEGER NOT NULL,
    step_to INTEGER NOT NULL,
    step_done_below TEXT
  );
  INSERT INTO archive_entries (owner, id, side, seq, correspondent)
    SELECT owner, id, side, seq, correspondent FROM (
      SELECT sender_owner AS owner, id, 0 AS side, seq, sender_with AS correspondent FROM messages WHERE sender_owner IS NOT NULL AND id IS NOT NULL
      UNION ALL SELECT recipient_owner, id, 1, seq, recipient_with FROM messages WHERE recipient_owner IS NOT NULL AND id IS NOT NULL)
    ORDER BY owner, id;
  INSERT INTO archive_index (indexed_through, step_to) SELECT coalesce(max(seq), 0), coalesce(max(seq), 0) FROM messages;
  CREATE TRIGGER archive_entries_record_gone AFTER DELETE ON messages
    WHEN old.sender_owner IS NOT NULL OR old.recipient_owner IS NOT NULL BEGIN
    DELETE FROM archive_entries WHERE owner = old.sender_owner AND id = old.id AND side = 0;
    DELETE FROM archive_entries WHERE owner = old.recipient_owner AND id = old.id AND side = 1;
  END;
  CREATE TRIGGER archive_entries_sender_gone AFTER UPDATE OF sender_owner ON messages
    WHEN old.sender_owner IS NOT NULL AND new.sender_owner IS NOT old.sender_owner BEGIN
    DELETE FROM archive_entries WHERE owner = old.sender_owner AND id = old.id AND side = 0;
  END;
  CREATE TRIGGER archive_entries_recipient_gone AFTER UPDATE OF recipient_owner ON messages
    WHEN old.recipient_owner IS NOT NULL AND new.recipient_owner IS NOT old.recipient_owner BEGIN
    DELETE FROM archive_entries WHERE owner = old.recipient_owner AND id = old.id AND side = 1;
  END;
  DROP INDEX messages_sender;
  DROP INDEX messages_recipient;
  DROP INDEX messages_conversation;
  `,
];

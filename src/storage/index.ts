/**
 * The storage boundary. One interface made of small stores per concern; drivers implement all
 * of it and pass one contract suite (test/storage/contract.ts). Stanzas cross this boundary as
 * serialized XML strings: no driver imports XML code. Users are keyed by their bare JID string.
 */

/** SCRAM salted-password material (RFC 5802 §3); the password itself is never stored. */
export interface ScramCredential {
  iterations: number;
  /** base64 */
  salt: string;
  /** base64 H(ClientKey) */
  storedKey: string;
  /** base64 HMAC(SaltedPassword, "Server Key") */
  serverKey: string;
}

export type ScramHash = "SHA-1" | "SHA-256";

/**
 * Keys per SCRAM hash. Accounts made here have both; an account imported from another server
 * (XEP-0227) may have only SCRAM-SHA-1 keys until its next PLAIN login derives the rest.
 */
export type ScramCredentials = Partial<Record<ScramHash, ScramCredential>>;

export interface Account {
  jid: string;
  createdAt: number;
  credentials: ScramCredentials;
  /**
   * A disabled account keeps its data but cannot log in (XEP-0133 "disable user"; SASL answers
   * account-disabled). Absent on creation means enabled; `get` always says which.
   */
  disabled?: boolean;
}

export interface AccountStore {
  /** false when the account already exists. */
  create(account: Account): Promise<boolean>;
  get(jid: string): Promise<Account | undefined>;
  exists(jid: string): Promise<boolean>;
  /** false when there is no such account. */
  setCredentials(jid: string, credentials: ScramCredentials): Promise<boolean>;
  /** false when there is no such account. */
  setDisabled(jid: string, disabled: boolean): Promise<boolean>;
  /** Removes the account and every row any store keeps for it; false when there was none. */
  delete(jid: string): Promise<boolean>;
  /** Bare JIDs, sorted; only those of one domain when given. */
  list(domain?: string): Promise<string[]>;
}

export type Subscription = "none" | "to" | "from" | "both";

export interface RosterItem {
  jid: string;
  name?: string;
  groups: string[];
  subscription: Subscription;
  /** An outbound subscription request is pending ("Pending Out", RFC 6121 §3.1.2). */
  ask: boolean;
  /** The user pre-approved the contact's subscription request (RFC 6121 §3.4). */
  approved: boolean;
}

export interface Roster {
  /** Increases with every change (RFC 6121 §2.6 roster versioning). */
  version: number;
  items: RosterItem[];
}

export interface RosterStore {
  get(owner: string): Promise<Roster>;
  getItem(owner: string, contact: string): Promise<RosterItem | undefined>;
  /** Insert or replace; returns the roster's new version. */
  put(owner: string, item: RosterItem): Promise<number>;
  /** Returns the new version, or undefined when there was no such item. */
  remove(owner: string, contact: string): Promise<number | undefined>;
}

/** Inbound subscription requests waiting for the user's answer ("Pending In", RFC 6121 §3.1.3). */
export interface SubscriptionRequestStore {
  /** Keeps one request per (owner, contact): a repeated request replaces the stored stanza. */
  put(owner: string, contact: string, stanza: string): Promise<void>;
  list(owner: string): Promise<Array<{ contact: string; stanza: string }>>;
  has(owner: string, contact: string): Promise<boolean>;
  remove(owner: string, contact: string): Promise<void>;
}

export interface OfflineMessage {
  /** The entry's place in the queue (commit order). */
  id: number;
  /** The message record's stanza: without the offline delay stamp, which the reader adds. */
  stanza: string;
  storedAt: number;
}

/**
 * A user's undelivered queue: the message records queued for them above their watermark
 * (docs/STORAGE.md). Entries are positions in commit order.
 */
export interface OfflineStore {
  /** Appends a record queued for `owner` only (no archive entry); undefined when the queue holds `limit`. */
  append(owner: string, stanza: string, storedAt: number, limit: number): Promise<number | undefined>;
  /** Oldest first. */
  list(owner: string, max?: number): Promise<OfflineMessage[]>;
  /**
   * The recipient has these entries: the owner's watermark moves over every contiguous run of
   * acknowledged entries (one small write, no row deleted unless nothing else refers to the
   * record); acknowledgements above a gap are kept until it closes. Resolves once committed;
   * acknowledgements close together share one commit. Another owner's entries are not touched.
   */
  acknowledge(owner: string, ids: readonly number[]): Promise<void>;
  count(owner: string): Promise<number>;
  /** Messages stored for all owners together (the metrics gauge). */
  total(): Promise<number>;
}

/** A stanza on its way to a remote server (RFC 6120 server-to-server), kept until that server has it or it bounced. */
export interface OutboxEntry {
  id: number;
  /** Our domain it is sent from, and the remote domain it goes to: the stream it waits for. */
  local: string;
  remote: string;
  stanza: string;
  /** When it was first queued: its bounce deadline counts from here, across restarts. */
  queuedAt: number;
}

/**
 * The durable part of the outgoing federation queue (src/xmpp/s2s/pool.ts). Each row has an owner:
 * the cluster node that queued it ("" for a server that is no cluster node), the only one that
 * sends it, until a reaper of that node claims it (docs/CLUSTER.md).
 */
export interface S2SOutboxStore {
  /** Appends a stanza; resolves with its id once committed. */
  append(owner: string, local: string, remote: string, stanza: string, queuedAt: number): Promise<number>;
  /** Every stanza waiting for this owner, oldest first (read when the server starts). */
  list(owner: string): Promise<OutboxEntry[]>;
  /** The rows of owner `from` become `to`'s, in one statement; returns them, oldest first. */
  claim(from: string, to: string): Promise<OutboxEntry[]>;
  /** The remote server has them, or they bounced. Unknown ids are ignored. */
  remove(ids: readonly number[]): Promise<void>;
}

/** Small per-user XML documents: vcard-temp, private XML (XEP-0049), … keyed by a name. */
export interface DocumentStore {
  get(owner: string, key: string): Promise<string | undefined>;
  set(owner: string, key: string, xml: string): Promise<void>;
  delete(owner: string, key: string): Promise<void>;
  /**
   * Several documents at once, in one transaction (one commit, one round trip on Postgres): an
   * `xml` of undefined deletes. For writes that pile up, as the offline module's tallies do.
   */
  setMany(entries: ReadonlyArray<{ owner: string; key: string; xml: string | undefined }>): Promise<void>;
  /** The owner's keys that start with `prefix`, sorted (export walks private XML this way). */
  keys(owner: string, prefix: string): Promise<string[]>;
}

export interface LastActivity {
  /** Unix milliseconds of the last unavailable presence. */
  at: number;
  status: string;
}

export interface LastActivityStore {
  set(owner: string, activity: LastActivity): Promise<void>;
  get(owner: string): Promise<LastActivity | undefined>;
}

/** Blocked JIDs per user (XEP-0191): bare, full or domain JIDs as strings. */
export interface BlocklistStore {
  /** Sorted. */
  list(owner: string): Promise<string[]>;
  add(owner: string, jids: readonly string[]): Promise<void>;
  /** Removes the given JIDs, or every entry when none are given. */
  remove(owner: string, jids?: readonly string[]): Promise<void>;
}

/**
 * One message in a message archive (XEP-0313). The owner is a user's bare JID (or, later, a room's).
 * Ids are unique per server and increase with time — the archiving module derives them from the
 * clock — so ordering and time ranges are both id ranges.
 */
export interface ArchivedMessage {
  id: number;
  /** Bare JID of the other party. */
  withBare: string;
  /** The other party's resource, "" when the message carried none. */
  withResource: string;
  stanza: string;
}

export interface ArchiveQuery {
  withBare?: string;
  /** Only with `withBare`: messages to/from exactly that full JID. */
  withResource?: string;
  /** Exclusive bounds. */
  afterId?: number;
  beforeId?: number;
  /** The newest `limit` messages in range instead of the oldest (RSM <before/>); still returned oldest first. */
  newestFirst: boolean;
  limit: number;
}

export interface ArchiveStore {
  /** A record in `owner`'s archive only (a room's); resolves once committed, appends close together share one commit. */
  append(owner: string, message: ArchivedMessage): Promise<void>;
  /** Oldest first. */
  query(owner: string, query: ArchiveQuery): Promise<ArchivedMessage[]>;
  /** The given ids that exist, oldest first. */
  get(owner: string, ids: readonly number[]): Promise<ArchivedMessage[]>;
  /** Removes an owner's whole archive (a destroyed room's): its entries, and records nobody else refers to. */
  removeOwner(owner: string): Promise<void>;
  /** Replaces a stored message (a moderated one becomes a tombstone); false when there is no such id. */
  replace(owner: string, id: number, stanza: string): Promise<boolean>;
  /** Ids of the oldest and newest message, or undefined for an empty archive. */
  bounds(owner: string): Promise<{ first: number; last: number } | undefined>;
  /**
   * Deletes at most `limit` records of any owner with an id below `beforeId` that no undelivered
   * queue still holds; returns how many it deleted.
   */
  prune(beforeId: number, limit: number): Promise<number>;
}

/** One side's entry in an archive: whose archive, and the other party. */
export interface ArchiveEntry {
  owner: string;
  /** Bare JID of the other party. */
  withBare: string;
  /** The other party's resource, "" for none. */
  withResource: string;
}

/**
 * One message, written once, that the sender's archive, the recipient's archive and the
 * recipient's undelivered queue all refer to (docs/STORAGE.md). The modules fill it in while the
 * stanza is routed; the store reads it when its commit takes it and then sets `sealed`: a part
 * added after that is not written (the caller writes a record of its own instead).
 */
export interface MessageRecord {
  /** The archive id (XEP-0359 stanza-id); required when either archive entry is present. */
  id?: number;
  stanza: string;
  storedAt: number;
  /**
   * The two archive entries are the two ends of one conversation: with both present, each one's
   * `withBare` is the other's `owner` (the Postgres driver finds both through one index of the conversation).
   */
  sender?: ArchiveEntry;
  recipient?: ArchiveEntry;
  /** An entry in this user's undelivered queue, unless it already holds `limit`. */
  queue?: { owner: string; limit: number };
  sealed?: boolean;
}

/**
 * An owner's page from the two sides of the records (each already bounded and limited alike, in
 * the query's direction): merged by id, cut to the limit, oldest first.
 */
export function mergeSides(sender: readonly ArchivedMessage[], recipient: readonly ArchivedMessage[], query: Pick<ArchiveQuery, "newestFirst" | "limit">): ArchivedMessage[] {
  const merged = [...sender, ...recipient].sort((a, b) => a.id - b.id);
  return query.newestFirst ? merged.slice(Math.max(0, merged.length - query.limit)) : merged.slice(0, query.limit);
}

export interface MessageStore {
  /**
   * Writes the record in the next group commit; resolves after that commit with the queue entry,
   * or undefined when the record asked for none or the queue was full (its archive entries are
   * written either way; a record with nothing left to refer to it is not written).
   */
  write(record: MessageRecord): Promise<number | undefined>;
}

export interface PubSubItem {
  id: string;
  /** Bare or full JID of the publisher. */
  publisher: string;
  /** The item's payload, serialized XML ("" for an item without payload). */
  payload: string;
  /** Unix ms of the (last) publication. */
  publishedAt: number;
}

/**
 * Pubsub nodes and items of a pubsub service — for PEP (XEP-0163) the service is an account and
 * `owner` its bare JID. A node's configuration is an opaque string (the module's JSON).
 */
export interface PubSubStore {
  /** Node names, sorted. */
  nodes(owner: string): Promise<string[]>;
  getConfig(owner: string, node: string): Promise<string | undefined>;
  /** false when the node exists already. */
  createNode(owner: string, node: string, config: string): Promise<boolean>;
  setConfig(owner: string, node: string, config: string): Promise<void>;
  /** Removes the node and its items; false when there was none. */
  deleteNode(owner: string, node: string): Promise<boolean>;
  /**
   * Stores an item — a new id, or a new version of an existing one, which becomes the newest — and
   * keeps only the newest `maxItems` items of the node. Returns the ids it removed to make room.
   */
  publish(owner: string, node: string, item: PubSubItem, maxItems: number): Promise<string[]>;
  /** Newest first; only the given ids when `ids` is set; at most `max`. */
  items(owner: string, node: string, query?: { ids?: readonly string[]; max?: number }): Promise<PubSubItem[]>;
  /** false when there was no such item. */
  retract(owner: string, node: string, id: string): Promise<boolean>;
  purge(owner: string, node: string): Promise<void>;
}

/** A XEP-0377 spam/abuse report a user filed while blocking someone, kept for the admins. */
export interface AbuseReport {
  at: number;
  reporter: string;
  reported: string;
  /** "spam" or "abuse" (the XEP-0377 reason, without its namespace prefix). */
  reason: string;
  text: string;
  /** XEP-0359 ids of the reported messages. */
  stanzaIds: string[];
}

export interface StoredAbuseReport extends AbuseReport {
  /** Assigned by the store; increases with every report. */
  id: number;
}

export interface AbuseReportStore {
  add(report: AbuseReport): Promise<void>;
  /** Newest first. */
  list(limit: number): Promise<StoredAbuseReport[]>;
  /** false when there was no such report. */
  remove(id: number): Promise<boolean>;
}

/** A file uploaded through XEP-0363; the bytes live in a file store, this is what is known of them. */
export interface UploadRecord {
  /** The slot id: unguessable, part of the URL. */
  id: string;
  owner: string;
  filename: string;
  size: number;
  contentType: string;
  createdAt: number;
  /** false for uploads kept until deleted (XEP-0363 purpose profile/permanent). */
  expires: boolean;
}

export interface UploadStore {
  add(record: UploadRecord): Promise<void>;
  get(id: string): Promise<UploadRecord | undefined>;
  remove(id: string): Promise<void>;
  /** An owner's files and bytes, and the bytes uploaded since `since` (ms). */
  usage(owner: string, since: number): Promise<{ files: number; bytes: number; bytesSince: number }>;
  /** Expiring uploads created before `before`, oldest first. */
  expired(before: number, limit: number): Promise<UploadRecord[]>;
  ofOwner(owner: string): Promise<UploadRecord[]>;
  /** Per owner, sorted by owner. */
  totals(): Promise<Array<{ owner: string; files: number; bytes: number }>>;
}

/** A persistent multi-user chat room (XEP-0045); its configuration is the module's JSON. */
export interface RoomRecord {
  /** Bare room JID. */
  jid: string;
  config: string;
  /** The last subject message, serialized ("" for none). */
  subject: string;
  createdAt: number;
}

export interface RoomAffiliation {
  /** Bare JID of the user. */
  jid: string;
  affiliation: "owner" | "admin" | "member" | "outcast";
  /** A reserved nickname, "" for none. */
  nick: string;
  reason: string;
}

export interface RoomStore {
  get(jid: string): Promise<RoomRecord | undefined>;
  /** Insert or replace. */
  put(room: RoomRecord): Promise<void>;
  /** Removes the room and its affiliations. */
  delete(jid: string): Promise<void>;
  /** Rooms whose JID is at this service domain, sorted. */
  list(service: string): Promise<RoomRecord[]>;
  affiliations(room: string): Promise<RoomAffiliation[]>;
  /** "none" removes the user's affiliation. */
  setAffiliation(room: string, affiliation: RoomAffiliation | { jid: string; affiliation: "none" }): Promise<void>;
}

/**
 * A XEP-0484 FAST token, stored hashed: `hash` is SHA-256 of the token's bytes. Tokens are longer
 * than SHA-256's block, so HMAC (RFC 2104 §2) keys with that hash anyway: the HT-* mechanisms
 * verify with it, and the token itself is never kept.
 */
export interface FastToken {
  /** base64 */
  hash: string;
  /** The mechanism it was issued for; it works with that one only. */
  mechanism: string;
  expiresAt: number;
  /** The highest XEP-0484 'count' accepted for it; 0 before any. */
  count: number;
}

/** A client installation of a user, known by its XEP-0388 <user-agent id>, and its FAST tokens. */
export interface Device {
  owner: string;
  /** The user-agent id (a UUID). */
  id: string;
  software: string;
  name: string;
  firstSeen: number;
  lastSeen: number;
  /** XEP-0484 §6.1: the token in use, and a newer one issued but not yet used. */
  current?: FastToken;
  next?: FastToken;
}

/** The columns SQL drivers keep a device in: its tokens as one JSON text. */
export interface DeviceRow {
  owner: string;
  id: string;
  software: string;
  name: string;
  first_seen: number | string;
  last_seen: number | string;
  tokens: string;
}

export function deviceToRow(d: Device): DeviceRow {
  return { owner: d.owner, id: d.id, software: d.software, name: d.name, first_seen: d.firstSeen, last_seen: d.lastSeen,
    tokens: JSON.stringify({ current: d.current, next: d.next }) };
}

export function deviceFromRow(r: DeviceRow): Device {
  const tokens = JSON.parse(r.tokens) as { current?: FastToken; next?: FastToken };
  return { owner: r.owner, id: r.id, software: r.software, name: r.name, firstSeen: Number(r.first_seen), lastSeen: Number(r.last_seen),
    ...(tokens.current ? { current: tokens.current } : {}), ...(tokens.next ? { next: tokens.next } : {}) };
}

export interface DeviceStore {
  get(owner: string, id: string): Promise<Device | undefined>;
  /** Insert or replace. */
  put(device: Device): Promise<void>;
  /** Most recently seen first. */
  list(owner: string): Promise<Device[]>;
  /** One device, or every device of the owner. */
  delete(owner: string, id?: string): Promise<void>;
}

export interface Storage {
  readonly driver: string;
  readonly accounts: AccountStore;
  readonly roster: RosterStore;
  readonly subscriptionRequests: SubscriptionRequestStore;
  readonly offline: OfflineStore;
  readonly s2sOutbox: S2SOutboxStore;
  readonly messages: MessageStore;
  readonly documents: DocumentStore;
  readonly lastActivity: LastActivityStore;
  readonly blocklist: BlocklistStore;
  readonly archive: ArchiveStore;
  readonly pubsub: PubSubStore;
  readonly reports: AbuseReportStore;
  readonly uploads: UploadStore;
  readonly rooms: RoomStore;
  readonly devices: DeviceStore;
  close(): Promise<void>;
}

export function domainOf(bareJid: string): string {
  const at = bareJid.indexOf("@");
  return at === -1 ? bareJid : bareJid.slice(at + 1);
}

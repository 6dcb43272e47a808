/**
 * `parley import`: XEP-0227 (Portable Import/Export Format for XMPP-IM Servers) 1.1 into storage.
 *
 * All or nothing, as far as storage allows: every file is read and every user checked — JIDs,
 * credentials, roster items, stanzas, PEP nodes — into a plan before the first write; an account
 * that exists already refuses the import; and if a write fails half-way, the accounts written so
 * far are deleted again (the account store's delete removes every row any store keeps for them).
 *
 * XEP-0227, File format: "An importing server that encounters a namespace that it doesn't understand, or
 * otherwise is unable to import all given data, SHOULD ignore the unknown data, SHOULD notify the
 * operator, and MAY offer to terminate the process." Parley terminates — a migration that drops
 * data silently is worse than one that stops — naming the element; `skipUnknown` ignores such
 * elements instead and reports each one. Known data Parley does not keep (MAM archives, PEP
 * subscriptions) is reported as skipped either way.
 */
import { deriveCredentials, MIN_ITERATIONS } from "../auth/scram.js";
import type { PubSubItem, RosterItem, ScramCredentials, ScramHash, Storage, Subscription } from "../storage/index.js";
import { childElements, el, type Element } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { parseJid, prepLocal, type Jid } from "../xmpp/jid.js";
import { VCARD_KEY } from "../modules/vcard.js";
import { privateKey } from "../modules/private.js";
import { defaultNodeConfig, type NodeConfig } from "../modules/pep-config.js";
import { ImportError, NS_PIE, NS_PIE_OLD, readPieFiles, type ReadLimits, type ReadResult } from "./reader.js";
import { NS_PARLEY_MUC, roomPlans, type RoomPlan } from "./muc.js";

export const NS_PIE_SCRAM = "urn:xmpp:pie:0#scram";
export const NS_PIE_MAM = "urn:xmpp:pie:0#mam";
export const NS_PUBSUB = "http://jabber.org/protocol/pubsub";
export const NS_PUBSUB_OWNER = "http://jabber.org/protocol/pubsub#owner";
/** Parley's extension: <disabled/> in a user marks an account that cannot log in (XEP-0133 "disable user"). */
export const NS_PARLEY_ACCOUNT = "urn:parley:pie:account:0";
const NS_NODE_CONFIG = "http://jabber.org/protocol/pubsub#node_config";
/** Ids another server's archive gave a message: meaningless here, so they are not kept. */
const FOREIGN_IDS = new Set(["urn:xmpp:sid:0", "urn:xmpp:mam:tmp"]);
const SUBSCRIPTIONS: readonly Subscription[] = ["none", "to", "from", "both"];

export interface ImportOptions {
  hosts: readonly string[];
  /** The MUC service domains of this server (rooms may only come for these). */
  mucServices: readonly string[];
  iterations: number;
  /** Ignore (and report) elements of unknown namespaces instead of refusing the file. */
  skipUnknown: boolean;
  /** Read and check everything, including accounts that exist already, but write nothing. */
  checkOnly?: boolean;
  /** The largest PEP node Parley keeps (pep's maxItems). */
  maxPepItems: number;
  limits?: ReadLimits;
}

interface UserPlan {
  jid: string;
  where: string;
  credentials: ScramCredentials;
  disabled: boolean;
  roster: RosterItem[];
  pendingIn: Array<{ contact: string; stanza: string }>;
  documents: Array<{ key: string; xml: string }>;
  offline: Array<{ stanza: string; storedAt: number }>;
  nodes: Map<string, { config: NodeConfig; items: PubSubItem[] }>;
}

export interface ImportReport {
  users: number;
  rosterItems: number;
  offlineMessages: number;
  pepNodes: number;
  rooms: number;
  /** What was read but not imported, each with where it was. */
  skipped: string[];
}

/** Reads, checks and writes; throws ImportError (nothing written) or the storage error (rolled back). */
export async function importPie(storage: Storage, paths: readonly string[], options: ImportOptions): Promise<ImportReport> {
  const read = await readPieFiles(paths, options.limits);
  const skipped: string[] = [];
  const { users: plans, rooms } = await plan(read, options, skipped);
  for (const p of plans) {
    if (await storage.accounts.exists(p.jid)) throw new ImportError(p.where, `${p.jid} exists already on this server: nothing was imported`);
  }
  for (const r of rooms) {
    if (await storage.rooms.get(r.record.jid)) throw new ImportError(r.where, `room ${r.record.jid} exists already on this server: nothing was imported`);
  }
  if (!options.checkOnly) await write(storage, plans, rooms);
  return {
    users: plans.length,
    rosterItems: plans.reduce((n, p) => n + p.roster.length, 0),
    offlineMessages: plans.reduce((n, p) => n + p.offline.length, 0),
    pepNodes: plans.reduce((n, p) => n + p.nodes.size, 0),
    rooms: rooms.length,
    skipped,
  };
}

async function write(storage: Storage, plans: readonly UserPlan[], rooms: readonly RoomPlan[]): Promise<void> {
  const created: string[] = [];
  const createdRooms: string[] = [];
  try {
    for (const p of plans) {
      if (!(await storage.accounts.create({ jid: p.jid, createdAt: Date.now(), credentials: p.credentials, disabled: p.disabled }))) {
        throw new ImportError(p.where, `${p.jid} was created meanwhile by someone else`);
      }
      created.push(p.jid);
      for (const item of p.roster) await storage.roster.put(p.jid, item);
      for (const r of p.pendingIn) await storage.subscriptionRequests.put(p.jid, r.contact, r.stanza);
      for (const d of p.documents) await storage.documents.set(p.jid, d.key, d.xml);
      for (const m of p.offline) await storage.offline.append(p.jid, m.stanza, m.storedAt, Number.MAX_SAFE_INTEGER);
      for (const [node, { config, items }] of p.nodes) {
        await storage.pubsub.createNode(p.jid, node, JSON.stringify(config));
        // Oldest first, so the newest item ends up newest here too.
        for (const item of [...items].reverse()) await storage.pubsub.publish(p.jid, node, item, config.max_items);
      }
    }
    for (const r of rooms) {
      createdRooms.push(r.record.jid);
      await storage.rooms.put(r.record);
      for (const a of r.affiliations) await storage.rooms.setAffiliation(r.record.jid, a);
    }
  } catch (err) {
    for (const jid of created) await storage.accounts.delete(jid);
    for (const jid of createdRooms) await storage.rooms.delete(jid);
    throw err;
  }
}

async function plan(read: ReadResult, options: ImportOptions, skipped: string[]): Promise<{ users: UserPlan[]; rooms: RoomPlan[] }> {
  const at = (unit: { file: string }, e: Element) => `${unit.file}:${read.lines.get(e) ?? "?"} ${label(e)}`;
  for (const [host, where] of read.hosts) {
    // XEP-0227, Hosts: "An importing server MAY automatically adjust its list of virtual hosts to fit
    // the ones present in the data being imported. If it does not, it SHOULD notify the operator
    // about any mismatch." Parley does not: a host it does not serve stops the import.
    let domain: Jid;
    try {
      domain = parseJid(host);
    } catch (err) {
      throw new ImportError(where, `<host jid='${host}'>: not a valid JID (${(err as Error).message})`);
    }
    if (domain.local || domain.resource) throw new ImportError(where, `<host jid='${host}'>: a host is a domain`);
    if (!options.hosts.includes(domain.domain)) {
      throw new ImportError(where, `<host jid='${host}'>: not a host of this server (hosts: ${options.hosts.join(", ")})`);
    }
  }
  const plans = new Map<string, UserPlan>();
  const rooms = new Map<string, RoomPlan>();
  for (const unit of read.units) {
    const e = unit.element;
    const where = at(unit, e);
    const ns = e.getNS();
    if (ns === NS_PARLEY_MUC && e.name === "rooms") {
      for (const r of roomPlans(e, options.mucServices, (x) => at(unit, x))) {
        if (rooms.has(r.record.jid)) throw new ImportError(r.where, `room ${r.record.jid} appears twice`);
        rooms.set(r.record.jid, r);
      }
      continue;
    }
    if (!(ns === NS_PIE || ns === NS_PIE_OLD) || e.name !== "user") {
      unknown(where, `<${e.name} xmlns='${ns}'> in a host`, options, skipped);
      continue;
    }
    const host = parseJid(unit.host).domain;
    const p = await userPlan(e, host, options, skipped, (x) => at(unit, x));
    if (plans.has(p.jid)) throw new ImportError(where, `${p.jid} appears twice`);
    plans.set(p.jid, p);
  }
  return { users: [...plans.values()], rooms: [...rooms.values()] };
}

function unknown(where: string, what: string, options: ImportOptions, skipped: string[]): void {
  if (!options.skipUnknown) throw new ImportError(where, `${what}: unknown namespace or element (pass --skip-unknown to import without it)`);
  skipped.push(`${where}: ${what} (unknown, skipped)`);
}

function label(e: Element): string {
  const shown = ["name", "jid", "node", "id", "mechanism", "xmlns"].filter((a) => e.attrs[a] !== undefined).map((a) => ` ${a}='${e.attrs[a]}'`);
  return `<${e.name}${shown.join("")}>`;
}

function bareJid(value: string | undefined, where: string, what: string): string {
  let jid: Jid;
  try {
    jid = parseJid(value ?? "");
  } catch (err) {
    throw new ImportError(where, `${what} '${value ?? ""}' is not a valid JID (${(err as Error).message})`);
  }
  if (jid.resource) throw new ImportError(where, `${what} '${value}' must be a bare JID`);
  return jid.bare;
}

async function userPlan(user: Element, host: string, options: ImportOptions, skipped: string[], at: (e: Element) => string): Promise<UserPlan> {
  const where = at(user);
  let local: string;
  try {
    local = prepLocal(user.attrs.name ?? "");
  } catch (err) {
    throw new ImportError(where, `user name '${user.attrs.name ?? ""}' is not a valid localpart (${(err as Error).message})`);
  }
  if (!local) throw new ImportError(where, "a <user> needs a name");
  const jid = `${local}@${host}`;
  const p: UserPlan = { jid, where, credentials: {}, disabled: false, roster: [], pendingIn: [], documents: [], offline: [], nodes: new Map() };
  const password = user.attrs.password;
  if (password !== undefined) {
    try {
      p.credentials = await deriveCredentials(password, options.iterations);
    } catch {
      throw new ImportError(where, "the password is empty or has characters SASLprep prohibits");
    }
  }
  const configs = new Map<string, NodeConfig>();
  const items = new Map<string, PubSubItem[]>();
  for (const child of childElements(user)) {
    const ns = child.getNS();
    const w = at(child);
    if (ns === NS_PIE_SCRAM && child.name === "scram-credentials") {
      const [hash, credential] = scram(child, w);
      // Keys derived from a plain password are as good; keys given explicitly win for their hash.
      p.credentials[hash] = credential;
    } else if (ns === NS_PARLEY_ACCOUNT && child.name === "disabled") {
      p.disabled = true;
    } else if (ns === NS.ROSTER && child.name === "query") {
      p.roster = roster(child, jid, at);
    } else if (child.name === "presence" && (ns === NS.CLIENT || ns === NS_PIE)) {
      // An inbound subscription request waiting for the user (ejabberd writes jabber:client;
      // Prosody 0.12 writes <presence/> without a namespace, so it lands in the pie namespace).
      if (child.attrs.type !== "subscribe") throw new ImportError(w, "only presence of type 'subscribe' (a pending request) is stored");
      const contact = bareJid(child.attrs.from, w, "from");
      p.pendingIn.push({ contact, stanza: el("presence", { xmlns: NS.CLIENT, from: contact, to: jid, type: "subscribe" }).toString() });
    } else if (ns === NS.VCARD && child.name === "vCard") {
      p.documents.push({ key: VCARD_KEY, xml: serialize(child, NS.VCARD) });
    } else if (ns === NS.PRIVATE && child.name === "query") {
      for (const stored of childElements(child)) {
        const sns = stored.getNS();
        // XEP-0049 §3: "jabber:" and "http://jabber.org/" namespaces are reserved (as the private module refuses them).
        if (!sns || sns.startsWith("jabber:") || sns.startsWith("http://jabber.org/") || sns === NS.VCARD) {
          throw new ImportError(at(stored), "private XML in a reserved or missing namespace");
        }
        p.documents.push({ key: privateKey(stored.name, sns), xml: serialize(stored, sns) });
      }
    } else if ((ns === NS_PIE || ns === NS_PIE_OLD) && child.name === "offline-messages") {
      for (const m of childElements(child)) p.offline.push(offlineMessage(m, jid, at(m)));
    } else if (ns === NS_PUBSUB_OWNER && child.name === "pubsub") {
      for (const op of childElements(child)) {
        const node = op.attrs.node;
        if (!node) throw new ImportError(at(op), "a pubsub owner element needs a node");
        if (op.name === "configure") configs.set(node, nodeConfig(op, options, at));
        else if (op.name === "affiliations" || op.name === "subscriptions") {
          skipped.push(`${at(op)}: PEP ${op.name} (Parley's PEP has the owner only and presence-based subscriptions)`);
        } else unknown(at(op), `<${op.name}> in pubsub#owner`, options, skipped);
      }
    } else if (ns === NS_PUBSUB && child.name === "pubsub") {
      for (const list of childElements(child)) {
        const node = list.attrs.node;
        if (list.name !== "items" || !node) throw new ImportError(at(list), "pubsub holds <items node='…'> elements");
        items.set(node, pubsubItems(list, jid, at));
      }
    } else if (ns === NS_PIE_MAM && child.name === "archive") {
      skipped.push(`${w}: the message archive (MAM) is not imported`);
    } else {
      unknown(w, `<${child.name} xmlns='${ns}'> in a user`, options, skipped);
    }
  }
  if (!p.credentials["SHA-1"] && !p.credentials["SHA-256"]) {
    throw new ImportError(where, "no password and no SCRAM-SHA-1/SCRAM-SHA-256 credentials: the account could never log in");
  }
  for (const node of new Set([...configs.keys(), ...items.keys()])) {
    const config = configs.get(node) ?? defaultNodeConfig();
    let list = items.get(node) ?? [];
    if (!config.persist_items && list.length) {
      skipped.push(`${where}: ${list.length} items of PEP node ${node}, which does not persist items`);
      list = [];
    }
    if (list.length > options.maxPepItems) {
      skipped.push(`${where}: the oldest ${list.length - options.maxPepItems} items of PEP node ${node} (this server keeps ${options.maxPepItems} per node)`);
      list = list.slice(0, options.maxPepItems);
    }
    if (list.length > config.max_items) config.max_items = list.length;
    p.nodes.set(node, { config, items: list });
  }
  return p;
}

/** XEP-0227 1.1 SCRAM data: <scram-credentials mechanism='SCRAM-SHA-1'> with iter-count, salt, server-key, stored-key (base64). */
function scram(e: Element, where: string): [ScramHash, { iterations: number; salt: string; storedKey: string; serverKey: string }] {
  const mechanism = e.attrs.mechanism;
  const hash: ScramHash | undefined = mechanism === "SCRAM-SHA-1" ? "SHA-1" : mechanism === "SCRAM-SHA-256" ? "SHA-256" : undefined;
  if (!hash) throw new ImportError(where, `SCRAM mechanism '${mechanism ?? ""}' is not one Parley offers (SCRAM-SHA-1, SCRAM-SHA-256)`);
  for (const c of childElements(e)) {
    if (!["iter-count", "salt", "server-key", "stored-key"].includes(c.name) || c.getNS() !== NS_PIE_SCRAM) {
      throw new ImportError(where, `<${c.name} xmlns='${c.getNS()}'> in scram-credentials`);
    }
  }
  const text = (name: string) => {
    const c = e.getChild(name);
    if (!c) throw new ImportError(where, `<${name}> is missing`);
    return c.text().trim();
  };
  const iterations = Number(text("iter-count"));
  if (!Number.isInteger(iterations) || iterations < MIN_ITERATIONS || iterations > 10_000_000) {
    throw new ImportError(where, `iter-count must be an integer from ${MIN_ITERATIONS}`);
  }
  const size = hash === "SHA-1" ? 20 : 32;
  const b64 = (name: string, bytes?: number) => {
    const value = text(name);
    const decoded = Buffer.from(value, "base64");
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(value) || decoded.toString("base64").replace(/=+$/, "") !== value.replace(/=+$/, "")) {
      throw new ImportError(where, `<${name}> is not base64`);
    }
    if (bytes !== undefined && decoded.length !== bytes) throw new ImportError(where, `<${name}> must be ${bytes} bytes for ${mechanism}`);
    if (decoded.length === 0) throw new ImportError(where, `<${name}> is empty`);
    return decoded.toString("base64");
  };
  return [hash, { iterations, salt: b64("salt"), storedKey: b64("stored-key", size), serverKey: b64("server-key", size) }];
}

/** XEP-0227, Rosters: "in the same format as when retrieving the roster from the server" (RFC 6121 §2.1.2 items). */
function roster(query: Element, owner: string, at: (e: Element) => string): RosterItem[] {
  const out = new Map<string, RosterItem>();
  for (const item of childElements(query)) {
    const w = at(item);
    if (item.name !== "item" || item.getNS() !== NS.ROSTER) throw new ImportError(w, `<${item.name} xmlns='${item.getNS()}'> in a roster`);
    const jid = bareJid(item.attrs.jid, w, "roster item jid");
    if (jid === owner) continue; // Prosody skips self-contacts too
    const subscription = (item.attrs.subscription ?? "none") as Subscription;
    if (!SUBSCRIPTIONS.includes(subscription)) throw new ImportError(w, `subscription '${item.attrs.subscription}' is not one of ${SUBSCRIPTIONS.join(", ")}`);
    if (item.attrs.ask !== undefined && item.attrs.ask !== "subscribe") throw new ImportError(w, `ask '${item.attrs.ask}' is not 'subscribe'`);
    const groups: string[] = [];
    for (const g of childElements(item)) {
      if (g.name !== "group" || g.getNS() !== NS.ROSTER) throw new ImportError(at(g), `<${g.name} xmlns='${g.getNS()}'> in a roster item`);
      const name = g.text();
      if (name && !groups.includes(name)) groups.push(name);
    }
    if (out.has(jid)) throw new ImportError(w, `${jid} is in the roster twice`);
    out.set(jid, {
      jid, groups, subscription, ask: item.attrs.ask === "subscribe", approved: item.attrs.approved === "true",
      ...(item.attrs.name ? { name: item.attrs.name } : {}),
    });
  }
  return [...out.values()];
}

/** XEP-0227, Offline Messages: "<message/> elements qualified by the 'jabber:client' namespace, starting with the oldest". */
function offlineMessage(m: Element, owner: string, where: string): { stanza: string; storedAt: number } {
  if (m.name !== "message" || m.getNS() !== NS.CLIENT) throw new ImportError(where, `<${m.name} xmlns='${m.getNS()}'> in offline messages (only jabber:client messages)`);
  if (m.attrs.from !== undefined) parseOrFail(m.attrs.from, where, "from");
  if (m.attrs.to !== undefined && parseOrFail(m.attrs.to, where, "to").bare !== owner) throw new ImportError(where, `an offline message of ${owner} addressed to ${m.attrs.to}`);
  const copy = el("message", { ...m.attrs, xmlns: NS.CLIENT });
  let storedAt = Date.now();
  for (const c of m.children) {
    if (typeof c === "string") { copy.t(c); continue; }
    const ns = c.getNS() ?? "";
    if (FOREIGN_IDS.has(ns) && c.attrs.by === owner) continue;
    if (ns === NS.DELAY && c.name === "delay") {
      const t = Date.parse(c.attrs.stamp ?? "");
      if (Number.isNaN(t)) throw new ImportError(where, `delay stamp '${c.attrs.stamp ?? ""}' is not a date`);
      storedAt = t;
    }
    c.attrs.xmlns = ns;
    copy.cnode(c);
  }
  return { stanza: copy.toString(), storedAt };
}

function parseOrFail(value: string, where: string, what: string): Jid {
  try {
    return parseJid(value);
  } catch (err) {
    throw new ImportError(where, `${what} '${value}' is not a valid JID (${(err as Error).message})`);
  }
}

/** The pubsub#node_config form of a <configure/> (XEP-0060 §16.4), mapped as the pep module maps a configure form. */
function nodeConfig(configure: Element, options: ImportOptions, at: (e: Element) => string): NodeConfig {
  const config = defaultNodeConfig();
  const form = configure.getChild("x", NS.DATA_FORMS);
  if (!form) return config;
  for (const field of childElements(form)) {
    if (field.name !== "field") continue;
    const name = field.attrs.var ?? "";
    const values = childElements(field).filter((v) => v.name === "value").map((v) => v.text());
    const value = values[0];
    if (value === undefined || (value === "" && name !== "pubsub#title")) continue; // Prosody lists unset fields without a value
    const w = at(field);
    const bool = () => {
      if (value === "1" || value === "true") return true;
      if (value === "0" || value === "false") return false;
      throw new ImportError(w, `${name} takes a boolean, got '${value}'`);
    };
    switch (name) {
      case "pubsub#access_model":
        if (!["open", "presence", "roster", "whitelist"].includes(value)) throw new ImportError(w, `access model '${value}' is not one Parley has`);
        config.access_model = value as NodeConfig["access_model"];
        break;
      case "pubsub#roster_groups_allowed": config.roster_groups_allowed = values; break;
      case "pubsub#persist_items": config.persist_items = bool(); break;
      case "pubsub#max_items": {
        const n = value === "max" ? options.maxPepItems : Number(value);
        if (!Number.isInteger(n) || n < 1) throw new ImportError(w, `max_items '${value}' is not a positive integer or 'max'`);
        config.max_items = Math.min(n, options.maxPepItems);
        break;
      }
      case "pubsub#send_last_published_item":
        if (!["never", "on_sub", "on_sub_and_presence"].includes(value)) throw new ImportError(w, `send_last_published_item '${value}' is unknown`);
        config.send_last_published_item = value as NodeConfig["send_last_published_item"];
        break;
      case "pubsub#notify_retract": config.notify_retract = bool(); break;
      case "pubsub#notify_delete": config.notify_delete = bool(); break;
      case "pubsub#title": config.title = value; break;
      default: break; // XEP-0060 §16.4: unknown configuration fields are ignored (FORM_TYPE, publish_model, …).
    }
  }
  if (form.getChild("field")?.attrs.var === "FORM_TYPE" && form.getChild("field")!.getChildText("value") !== NS_NODE_CONFIG) {
    throw new ImportError(at(form), "a node configuration form must be pubsub#node_config");
  }
  return config;
}

/** XEP-0227 1.1 PEP data: <items node='…'><item id='…' publisher='…'>payload</item></items>, newest first as a pubsub items result lists them. */
function pubsubItems(list: Element, owner: string, at: (e: Element) => string): PubSubItem[] {
  const out: PubSubItem[] = [];
  const ids = new Set<string>();
  for (const item of childElements(list)) {
    const w = at(item);
    if (item.name !== "item" || item.getNS() !== NS_PUBSUB) throw new ImportError(w, `<${item.name} xmlns='${item.getNS()}'> in pubsub items`);
    const id = item.attrs.id;
    if (!id) throw new ImportError(w, "a PEP item needs an id");
    if (ids.has(id)) throw new ImportError(w, `item id '${id}' appears twice`);
    ids.add(id);
    const payloads = childElements(item);
    if (payloads.length > 1) throw new ImportError(w, "a PEP item holds one payload element");
    const payload = payloads[0];
    out.push({
      id, publisher: item.attrs.publisher ? parseOrFail(item.attrs.publisher, w, "publisher").toString() : owner,
      payload: payload ? serialize(payload, payload.getNS() ?? "") : "", publishedAt: Date.now(),
    });
  }
  return out;
}

/** Self-contained XML for the document store: the namespace declared on the element itself. */
function serialize(e: Element, ns: string): string {
  e.attrs.xmlns = ns;
  e.parent = null;
  return e.toString();
}

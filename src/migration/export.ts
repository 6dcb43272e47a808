/**
 * `parley export`: storage into one XEP-0227 (Portable Import/Export Format for XMPP-IM
 * Servers) 1.1 file — per host its users with SCRAM keys (never a password: Parley keeps none),
 * roster, pending subscription requests, vCard, private XML, offline messages and PEP nodes.
 *
 * XEP-0227, Security Considerations: "An exporting server SHOULD make sure that the generated file is not accessible
 * to unauthorized persons, e.g. by enforcing strict file permissions." The file is created with
 * mode 0600, written beside its final name and renamed into place when complete.
 */
import { open, rename, unlink } from "node:fs/promises";
import { domainOf, type Storage } from "../storage/index.js";
import { SCRAM_HASHES } from "../auth/scram.js";
import { el, escapeXML, type Element } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { parseElement } from "../xmpp/xml-parse.js";
import { VCARD_KEY } from "../modules/vcard.js";
import { loadNodeConfig, nodeConfigForm } from "../modules/pep-config.js";
import { withOfflineDelay } from "../modules/message-record.js";
import { NS_PIE } from "./reader.js";
import { NS_PARLEY_ACCOUNT, NS_PIE_SCRAM, NS_PUBSUB, NS_PUBSUB_OWNER } from "./import.js";
import { NS_PARLEY_MUC, roomElement } from "./muc.js";

export interface ExportReport {
  users: number;
  rooms: number;
}

/**
 * Writes every account of `hosts` to `path`, and the persistent rooms of each host's MUC
 * service (`mucService(host)`) in Parley's extension (see muc.ts).
 */
export async function exportPie(storage: Storage, hosts: readonly string[], path: string, mucService: (host: string) => string): Promise<ExportReport> {
  const temp = `${path}.partial`;
  const file = await open(temp, "wx", 0o600);
  let users = 0;
  let rooms = 0;
  try {
    await file.write(`<?xml version='1.0' encoding='UTF-8'?>\n<server-data xmlns='${NS_PIE}'>\n`);
    for (const host of hosts) {
      await file.write(`<host jid='${escapeXML(host)}'>\n`);
      for (const jid of await storage.accounts.list(host)) {
        const user = await exportUser(storage, jid);
        if (!user) continue; // deleted while we read
        await file.write(`${user.toString()}\n`);
        users++;
      }
      const list = await storage.rooms.list(mucService(host));
      if (list.length) {
        const element = el("rooms", { xmlns: NS_PARLEY_MUC });
        for (const room of list) element.cnode(roomElement(room, await storage.rooms.affiliations(room.jid)));
        await file.write(`${element.toString()}\n`);
        rooms += list.length;
      }
      await file.write("</host>\n");
    }
    await file.write("</server-data>\n");
    await file.sync();
    await file.close();
    await rename(temp, path);
  } catch (err) {
    await file.close().catch(() => {});
    await unlink(temp).catch(() => {});
    throw err;
  }
  return { users, rooms };
}

async function exportUser(storage: Storage, jid: string): Promise<Element | undefined> {
  const account = await storage.accounts.get(jid);
  if (!account) return undefined;
  const user = el("user", { name: jid.slice(0, jid.indexOf("@")) });
  // XEP-0227 1.1 SCRAM data: one <scram-credentials/> per mechanism the account has keys for.
  for (const hash of SCRAM_HASHES) {
    const c = account.credentials[hash];
    if (!c) continue;
    user.cnode(el("scram-credentials", { xmlns: NS_PIE_SCRAM, mechanism: `SCRAM-${hash}` },
      el("iter-count", {}, String(c.iterations)), el("salt", {}, c.salt), el("server-key", {}, c.serverKey), el("stored-key", {}, c.storedKey)));
  }
  if (account.disabled) user.cnode(el("disabled", { xmlns: NS_PARLEY_ACCOUNT }));
  const roster = await storage.roster.get(jid);
  user.cnode(el("query", { xmlns: NS.ROSTER },
    ...roster.items.map((i) => el("item", { jid: i.jid, name: i.name, subscription: i.subscription, ask: i.ask ? "subscribe" : undefined, approved: i.approved ? "true" : undefined },
      ...i.groups.map((g) => el("group", {}, g))))));
  for (const r of await storage.subscriptionRequests.list(jid)) user.cnode(el("presence", { xmlns: NS.CLIENT, from: r.contact, type: "subscribe" }));
  const vcard = await storage.documents.get(jid, VCARD_KEY);
  if (vcard) user.cnode(parseElement(vcard));
  const privateKeys = await storage.documents.keys(jid, "private:");
  if (privateKeys.length) {
    const query = el("query", { xmlns: NS.PRIVATE });
    for (const key of privateKeys) {
      const xml = await storage.documents.get(jid, key);
      if (xml) query.cnode(parseElement(xml));
    }
    user.cnode(query);
  }
  const offline = await storage.offline.list(jid);
  if (offline.length) user.cnode(el("offline-messages", {}, ...offline.map((m) => withOfflineDelay(parseElement(m.stanza), domainOf(jid), m.storedAt))));
  const nodes = await storage.pubsub.nodes(jid);
  if (nodes.length) {
    const owner = el("pubsub", { xmlns: NS_PUBSUB_OWNER });
    const items = el("pubsub", { xmlns: NS_PUBSUB });
    for (const node of nodes) {
      const config = await loadNodeConfig(storage, jid, node);
      if (config === undefined) continue;
      owner.cnode(el("configure", { node }, nodeConfigForm("submit", config)));
      const list = await storage.pubsub.items(jid, node);
      if (list.length) {
        items.cnode(el("items", { node }, ...list.map((i) => el("item", { id: i.id, publisher: i.publisher }, i.payload ? parseElement(i.payload) : undefined))));
      }
    }
    user.cnode(owner);
    if (items.children.length) user.cnode(items);
  }
  return user;
}


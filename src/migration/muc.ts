/**
 * Persistent MUC rooms (XEP-0045 1.35) in a XEP-0227 file. XEP-0227 1.1 has no format for
 * rooms and neither ejabberd 23.01's export_piefxis nor Prosody 0.12's xep0227 store writes any,
 * so this is Parley's extension, in XEP-0045's own vocabulary — XEP-0227, File format: "At any point in the
 * file, an exporting server may put elements qualified by a namespace not mentioned in this
 * specification." A <host/> may hold:
 *
 *   <rooms xmlns='urn:parley:pie:muc:0'>
 *     <room jid='team@conference.example.org' created='2026-12-01T10:00:00Z'>
 *       <x xmlns='jabber:x:data' type='submit'>…the muc#roomconfig fields of a room configuration form…</x>
 *       <item xmlns='http://jabber.org/protocol/muc#admin' jid='…' affiliation='owner' nick='…'><reason/></item>
 *       <subject><message xmlns='jabber:client' …><subject>…</subject></message></subject>
 *     </room>
 *   </rooms>
 */
import type { RoomAffiliation, RoomRecord } from "../storage/index.js";
import type { RoomConfig } from "../modules/muc/room.js";
import { childElements, el, type Element } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { parseJid } from "../xmpp/jid.js";
import { buildForm } from "../xmpp/forms.js";
import { parseElement } from "../xmpp/xml-parse.js";
import { ImportError } from "./reader.js";

export const NS_PARLEY_MUC = "urn:parley:pie:muc:0";
const ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig";
const MUC_ADMIN = "http://jabber.org/protocol/muc#admin";
const AFFILIATIONS: ReadonlyArray<RoomAffiliation["affiliation"]> = ["owner", "admin", "member", "outcast"];

export interface RoomPlan {
  record: RoomRecord;
  affiliations: RoomAffiliation[];
  where: string;
}

export function roomElement(room: RoomRecord, affiliations: readonly RoomAffiliation[]): Element {
  const c = JSON.parse(room.config) as Partial<RoomConfig>;
  const field = (v: string, value: string | number | boolean | undefined) => (value === undefined ? undefined : { var: v, values: [String(value)] });
  const fields = [
    field("muc#roomconfig_roomname", c.name), field("muc#roomconfig_roomdesc", c.description),
    field("muc#roomconfig_persistentroom", c.persistent), field("muc#roomconfig_publicroom", c.public),
    field("muc#roomconfig_membersonly", c.membersOnly), field("muc#roomconfig_moderatedroom", c.moderated),
    field("muc#roomconfig_roomsecret", c.password), field("muc#roomconfig_whois", c.whois),
    field("muc#roomconfig_maxusers", c.maxUsers), field("muc#roomconfig_changesubject", c.changeSubject),
    field("muc#roomconfig_allowinvites", c.allowInvites), field("muc#roomconfig_enablearchiving", c.archiving),
  ].filter((f) => f !== undefined);
  return el("room", { jid: room.jid, created: new Date(room.createdAt).toISOString() },
    buildForm("submit", ROOMCONFIG, fields),
    ...affiliations.map((a) => el("item", { xmlns: MUC_ADMIN, jid: a.jid, affiliation: a.affiliation, nick: a.nick || undefined }, a.reason ? el("reason", {}, a.reason) : undefined)),
    room.subject ? el("subject", {}, parseElement(room.subject)) : undefined);
}

/** The rooms of one <rooms/> element, checked; `services` are the MUC domains this server runs. */
export function roomPlans(rooms: Element, services: readonly string[], at: (e: Element) => string): RoomPlan[] {
  const out: RoomPlan[] = [];
  for (const room of childElements(rooms)) {
    const where = at(room);
    if (room.name !== "room" || room.getNS() !== NS_PARLEY_MUC) throw new ImportError(where, `<${room.name} xmlns='${room.getNS()}'> in rooms`);
    let jid;
    try {
      jid = parseJid(room.attrs.jid ?? "");
    } catch (err) {
      throw new ImportError(where, `room jid '${room.attrs.jid ?? ""}' is not a valid JID (${(err as Error).message})`);
    }
    if (!jid.local || jid.resource) throw new ImportError(where, "a room JID is room@service");
    if (!services.includes(jid.domain)) throw new ImportError(where, `${jid.domain} is not a MUC service of this server (${services.join(", ")})`);
    const created = room.attrs.created === undefined ? Date.now() : Date.parse(room.attrs.created);
    if (Number.isNaN(created)) throw new ImportError(where, `created '${room.attrs.created}' is not a date`);
    const config: Partial<RoomConfig> = {};
    const affiliations = new Map<string, RoomAffiliation>();
    let subject = "";
    for (const child of childElements(room)) {
      const w = at(child);
      const ns = child.getNS();
      if (child.name === "x" && ns === NS.DATA_FORMS) Object.assign(config, roomConfig(child, w));
      else if (child.name === "item" && ns === MUC_ADMIN) {
        const a = child.attrs.affiliation as RoomAffiliation["affiliation"];
        if (!AFFILIATIONS.includes(a)) throw new ImportError(w, `affiliation '${child.attrs.affiliation ?? ""}' is not one of ${AFFILIATIONS.join(", ")}`);
        let user;
        try {
          user = parseJid(child.attrs.jid ?? "");
        } catch (err) {
          throw new ImportError(w, `affiliated jid '${child.attrs.jid ?? ""}' is not a valid JID (${(err as Error).message})`);
        }
        if (user.resource) throw new ImportError(w, "an affiliation is for a bare JID");
        affiliations.set(user.bare, { jid: user.bare, affiliation: a, nick: child.attrs.nick ?? "", reason: child.getChildText("reason") ?? "" });
      } else if (child.name === "subject" && ns === NS_PARLEY_MUC) {
        const message = childElements(child)[0];
        if (!message || message.name !== "message" || message.getNS() !== NS.CLIENT) throw new ImportError(w, "a room subject is a jabber:client <message/>");
        message.attrs.xmlns = NS.CLIENT;
        message.parent = null;
        subject = message.toString();
      } else throw new ImportError(w, `<${child.name} xmlns='${ns}'> in a room`);
    }
    // Storage keeps persistent rooms only: a room that comes over is one that persisted.
    config.persistent = true;
    out.push({ record: { jid: jid.bare, config: JSON.stringify(config), subject, createdAt: created }, affiliations: [...affiliations.values()], where });
  }
  return out;
}

function roomConfig(form: Element, where: string): Partial<RoomConfig> {
  const c: Partial<RoomConfig> = {};
  for (const field of childElements(form)) {
    if (field.name !== "field") continue;
    const name = field.attrs.var ?? "";
    const value = field.getChildText("value");
    if (value === null || value === undefined) continue;
    const bool = () => {
      if (value === "1" || value === "true") return true;
      if (value === "0" || value === "false") return false;
      throw new ImportError(where, `${name} takes a boolean, got '${value}'`);
    };
    switch (name) {
      case "FORM_TYPE": if (value !== ROOMCONFIG) throw new ImportError(where, `FORM_TYPE must be ${ROOMCONFIG}`); break;
      case "muc#roomconfig_roomname": c.name = value; break;
      case "muc#roomconfig_roomdesc": c.description = value; break;
      case "muc#roomconfig_persistentroom": c.persistent = bool(); break;
      case "muc#roomconfig_publicroom": c.public = bool(); break;
      case "muc#roomconfig_membersonly": c.membersOnly = bool(); break;
      case "muc#roomconfig_moderatedroom": c.moderated = bool(); break;
      case "muc#roomconfig_roomsecret": c.password = value; break;
      case "muc#roomconfig_whois":
        if (value !== "anyone" && value !== "moderators") throw new ImportError(where, `whois '${value}' is not anyone or moderators`);
        c.whois = value;
        break;
      case "muc#roomconfig_maxusers": {
        const n = Number(value);
        if (!Number.isInteger(n) || n < 1) throw new ImportError(where, `maxusers '${value}' is not a positive integer`);
        c.maxUsers = n;
        break;
      }
      case "muc#roomconfig_changesubject": c.changeSubject = bool(); break;
      case "muc#roomconfig_allowinvites": c.allowInvites = bool(); break;
      case "muc#roomconfig_enablearchiving": c.archiving = bool(); break;
      default: break; // XEP-0004: a field this server does not know changes nothing
    }
  }
  return c;
}

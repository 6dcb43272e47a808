/**
 * XEP-0045 1.35 §10.2: the room configuration form (muc#roomconfig), shown to owners and read
 * back from what they submit, as pure functions of the configuration.
 */
import type { Element } from "../../xmpp/xml.js";
import { StanzaError } from "../../errors.js";
import { buildForm, readForm, singleValue, parseBoolean } from "../../xmpp/forms.js";
import { ROOMCONFIG, type RoomConfig } from "./room.js";

export function configForm(config: RoomConfig): Element {
  return buildForm("form", ROOMCONFIG, [
    { var: "muc#roomconfig_roomname", type: "text-single", label: "Name", values: [config.name] },
    { var: "muc#roomconfig_roomdesc", type: "text-single", label: "Description", values: [config.description] },
    { var: "muc#roomconfig_persistentroom", type: "boolean", label: "Persistent", values: [String(config.persistent)] },
    { var: "muc#roomconfig_publicroom", type: "boolean", label: "Listed in the directory", values: [String(config.public)] },
    { var: "muc#roomconfig_membersonly", type: "boolean", label: "Members only", values: [String(config.membersOnly)] },
    { var: "muc#roomconfig_moderatedroom", type: "boolean", label: "Moderated", values: [String(config.moderated)] },
    { var: "muc#roomconfig_passwordprotectedroom", type: "boolean", label: "Password protected", values: [String(config.password !== "")] },
    { var: "muc#roomconfig_roomsecret", type: "text-private", label: "Password", values: [config.password] },
    { var: "muc#roomconfig_whois", type: "list-single", label: "Who sees real JIDs", values: [config.whois],
      options: [{ label: "Moderators", value: "moderators" }, { label: "Anyone", value: "anyone" }] },
    { var: "muc#roomconfig_maxusers", type: "text-single", label: "Maximum occupants", values: [String(config.maxUsers)] },
    { var: "muc#roomconfig_changesubject", type: "boolean", label: "Participants may change the subject", values: [String(config.changeSubject)] },
    { var: "muc#roomconfig_allowinvites", type: "boolean", label: "Members may invite", values: [String(config.allowInvites)] },
    { var: "mam", type: "boolean", label: "Archive messages", values: [String(config.archiving)] },
  ]);
}

/**
 * A submitted configuration applied to the current one: the new configuration, and the status
 * codes (§10.2.1: 170–173) its changes announce to the occupants. Throws the StanzaError for a
 * form the room does not accept, changing nothing.
 */
export function applyConfigForm(current: RoomConfig, form: Element, maxOccupants: number): { config: RoomConfig; changes: string[] } {
  const f = readForm(form);
  if (f.formType !== undefined && f.formType !== ROOMCONFIG) throw new StanzaError("bad-request", `FORM_TYPE must be ${ROOMCONFIG}`);
  const c = { ...current };
  const bool = (name: string) => { const v = singleValue(f, name); return v === undefined ? undefined : parseBoolean(v, name); };
  const changes: string[] = [];
  c.name = singleValue(f, "muc#roomconfig_roomname") ?? c.name;
  c.description = singleValue(f, "muc#roomconfig_roomdesc") ?? c.description;
  c.persistent = bool("muc#roomconfig_persistentroom") ?? c.persistent;
  c.public = bool("muc#roomconfig_publicroom") ?? c.public;
  c.membersOnly = bool("muc#roomconfig_membersonly") ?? c.membersOnly;
  c.moderated = bool("muc#roomconfig_moderatedroom") ?? c.moderated;
  const secret = singleValue(f, "muc#roomconfig_roomsecret");
  const protectedRoom = bool("muc#roomconfig_passwordprotectedroom");
  if (secret !== undefined) c.password = secret;
  if (protectedRoom === false) c.password = "";
  const whois = singleValue(f, "muc#roomconfig_whois");
  if (whois !== undefined) {
    if (whois !== "anyone" && whois !== "moderators") throw new StanzaError("not-acceptable", "whois is anyone or moderators");
    if (whois !== c.whois) changes.push(whois === "anyone" ? "172" : "173");
    c.whois = whois;
  }
  const max = singleValue(f, "muc#roomconfig_maxusers");
  if (max !== undefined) {
    const n = Number(max);
    if (!Number.isInteger(n) || n < 1) throw new StanzaError("not-acceptable", "maxusers must be a positive integer");
    c.maxUsers = Math.min(n, maxOccupants);
  }
  c.changeSubject = bool("muc#roomconfig_changesubject") ?? c.changeSubject;
  c.allowInvites = bool("muc#roomconfig_allowinvites") ?? c.allowInvites;
  const archiving = bool("mam") ?? bool("muc#roomconfig_enablearchiving");
  if (archiving !== undefined && archiving !== c.archiving) changes.push(archiving ? "170" : "171");
  c.archiving = archiving ?? c.archiving;
  return { config: c, changes };
}

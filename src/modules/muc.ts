/**
 * XEP-0045 Multi-User Chat 1.35 on conference.<host>, with XEP-0421 occupant ids, XEP-0359 stanza
 * ids stamped by the room, XEP-0313 archives on room JIDs, XEP-0410 self-ping, XEP-0425 moderation
 * and XEP-0486 room avatars. Who may do what is decided in muc-rules.ts.
 *
 * Rooms live in memory while they have occupants; persistent rooms (and their affiliations) are in
 * storage and loaded when addressed, so an idle room costs nothing. A new room is locked (status
 * 201) until its owner accepts the default configuration or submits one. Every room message is
 * archived before it is broadcast and serialized once for all occupants.
 */
import { createHmac } from "node:crypto";
import { z } from "zod";
import { defineModule } from "../module.js";
import { el, childElements, cloneElement, shareChildren, type Element } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { tryParseJid, prepResource, type Jid } from "../xmpp/jid.js";
import { HANDLED, type Routed } from "../hooks.js";
import { StanzaError } from "../errors.js";
import { buildForm, readForm, singleValue, parseBoolean } from "../xmpp/forms.js";
import { parseElement } from "../xmpp/xml-parse.js";
import type { RoomAffiliation } from "../storage/index.js";
import { MAM, STANZA_ID, answerArchiveQuery, archiveClock, archiveQueryForm, idAt, timeOfId } from "./mam.js";
import { VCARD_KEY, vcardPhoto } from "./vcard.js";
import { AFFILIATIONS, RANK, ROLES, admission, affiliationChange, defaultRole, listAccess, roleChange, type Actor, type Affiliation, type Role } from "./muc-rules.js";

const MUC = "http://jabber.org/protocol/muc";
const MUC_USER = `${MUC}#user`;
const MUC_ADMIN = `${MUC}#admin`;
const MUC_OWNER = `${MUC}#owner`;
const OCCUPANT_ID = "urn:xmpp:occupant-id:0";
const ROOMCONFIG = `${MUC}#roomconfig`;
const MODERATE = "urn:xmpp:message-moderate:1";
const RETRACT = "urn:xmpp:message-retract:1";

/** A room's configuration as stored (the JSON of RoomRecord.config); exported for XEP-0227 import and export. */
export interface RoomConfig {
  name: string;
  description: string;
  persistent: boolean;
  public: boolean;
  membersOnly: boolean;
  moderated: boolean;
  password: string;
  /** Who sees occupants' real JIDs. */
  whois: "anyone" | "moderators";
  maxUsers: number;
  /** Participants (not only moderators) may change the subject. */
  changeSubject: boolean;
  allowInvites: boolean;
  archiving: boolean;
}

interface Occupant {
  nick: string;
  /** Real full JID. */
  jid: Jid;
  role: Role;
  /** The occupant's last presence, without its muc elements. */
  presence: Element;
  occupantId: string;
}

interface Room {
  jid: string;
  config: RoomConfig;
  subject: Element | undefined;
  locked: boolean;
  createdAt: number;
  occupants: Map<string, Occupant>;
  /** Real full JID → nick. */
  nicks: Map<string, string>;
  affiliations: Map<string, RoomAffiliation>;
  /** SHA-1 (hex) of the room avatar, "" for none (XEP-0486). */
  avatarHash: string;
}

declare module "../hooks.js" {
  interface Events {
    /** A room message for a member who is not in the room (push wakes their phone). */
    "muc/missed": { user: string; room: string; sender: string; message: Element };
  }
}

export const muc = defineModule({
  name: "muc",
  implements: [
    { spec: "XEP-0045", version: "1.35", note: "no voice requests, no registration, no room nick reservation" },
    { spec: "XEP-0421", version: "1.0.1" }, { spec: "XEP-0410", version: "1.1.0" }, { spec: "XEP-0425", version: "0.3.0", note: "retraction only; offered in rooms with an archive" },
    { spec: "XEP-0486", version: "0.1.0" },
  ],
  dependsOn: ["disco", "mam"],
  options: z.strictObject({
    domain: z.string().default("conference.{host}"),
    /** Who may create rooms: users of this server, or anyone. */
    createRooms: z.enum(["local", "anyone"]).default("local"),
    maxOccupants: z.number().int().min(2).default(1000),
    /** Beyond this many occupants, presence changes of others are not broadcast (joins and leaves of moderators still are). */
    presenceBroadcastLimit: z.number().int().min(2).default(256),
    /** Messages of history a join gets, and the most a client's <history maxstanzas/> can ask for. */
    historyMessages: z.number().int().min(0).default(20),
    defaultPageSize: z.number().int().min(1).default(50),
    maxPageSize: z.number().int().min(1).default(250),
  }),
  start(ctx) {
    const o = ctx.options;
    const { storage, router } = ctx;
    const services = new Set(ctx.hosts.map((h) => o.domain.replace("{host}", h)));
    for (const d of services) ctx.addDomain(d);
    const rooms = new Map<string, Room>();
    const nextId = archiveClock(1);
    const idKey = ctx.secret("occupant ids");

    const defaults = (): RoomConfig => ({
      name: "", description: "", persistent: false, public: true, membersOnly: false, moderated: false, password: "",
      whois: "moderators", maxUsers: o.maxOccupants, changeSubject: false, allowInvites: true, archiving: true,
    });

    // ── rooms in memory and in storage ────────────────────────────────────────────────────────
    const load = async (jid: string): Promise<Room | undefined> => {
      const live = rooms.get(jid);
      if (live) return live;
      const stored = await storage.rooms.get(jid);
      if (!stored) return undefined;
      const again = rooms.get(jid); // loaded meanwhile
      if (again) return again;
      const room: Room = {
        jid, config: { ...defaults(), ...(JSON.parse(stored.config) as Partial<RoomConfig>) },
        subject: stored.subject ? parseElement(stored.subject) : undefined, locked: false, createdAt: stored.createdAt,
        occupants: new Map(), nicks: new Map(),
        affiliations: new Map((await storage.rooms.affiliations(jid)).map((a) => [a.jid, a])),
        avatarHash: photoHash(await storage.documents.get(jid, VCARD_KEY)),
      };
      rooms.set(jid, room);
      return room;
    };
    const save = async (room: Room) => {
      if (!room.config.persistent) return;
      await storage.rooms.put({ jid: room.jid, config: JSON.stringify(room.config), subject: room.subject?.toString() ?? "", createdAt: room.createdAt });
    };
    /** Everything stored for a room that ends: a new room of the same name starts empty. */
    const forget = async (jid: string) => {
      await storage.rooms.delete(jid);
      await storage.archive.removeOwner(jid);
      await storage.documents.delete(jid, VCARD_KEY);
    };
    /** A room nobody is in leaves memory; a temporary one is gone. */
    const unloadIfEmpty = async (room: Room) => {
      if (room.occupants.size > 0) return;
      rooms.delete(room.jid);
      if (!room.config.persistent) await forget(room.jid);
    };

    const photoHash = (vcard: string | undefined): string => (vcard ? vcardPhoto(parseElement(vcard))?.hash : undefined) ?? "";
    /** §9.1 "an implementation SHOULD match JIDs in the following order: <user@domain>, <domain>": a banned domain bans its users. */
    const affiliationOf = (room: Room, user: string): Affiliation => room.affiliations.get(user)?.affiliation
      ?? (room.affiliations.get(user.slice(user.indexOf("@") + 1))?.affiliation === "outcast" ? "outcast" : "none");
    const actorIn = (room: Room, from: Jid): Actor => {
      const nick = room.nicks.get(from.full);
      return { affiliation: affiliationOf(room, from.bare), role: (nick && room.occupants.get(nick)?.role) || "none" };
    };
    /** Someone of this user, on any of their resources, is in the room (and so gave its password). */
    const isPresent = (room: Room, user: string) => [...room.occupants.values()].some((x) => x.jid.bare === user);
    /** XEP-0421 §3: stable per room and real bare JID, opaque. */
    const occupantId = (room: Room, real: Jid) => createHmac("sha256", idKey).update(`${room.jid}\n${real.bare}`).digest("base64url").slice(0, 22);
    const seesJids = (room: Room, viewer: Occupant | undefined) => room.config.whois === "anyone" || viewer?.role === "moderator";

    // ── sending ──────────────────────────────────────────────────────────────────────────────
    const send = (stanza: Element) => void router.route(stanza);
    const mucUser = (room: Room, subject: Occupant, viewer: Occupant | undefined, extra: { codes?: number[]; item?: Record<string, string | undefined>; children?: Element[] } = {}) =>
      el("x", { xmlns: MUC_USER },
        el("item", {
          affiliation: affiliationOf(room, subject.jid.bare), role: subject.role,
          jid: seesJids(room, viewer) ? subject.jid.full : undefined, ...extra.item,
        }, ...(extra.children ?? [])),
        ...(extra.codes ?? []).map((code) => el("status", { code })));
    const presenceOf = (room: Room, subject: Occupant, viewer: Occupant, codes: number[] = [], type?: string, item?: Record<string, string | undefined>, children: Element[] = []) => {
      const p = type ? el("presence", { type }) : cloneElement(subject.presence);
      p.attrs.from = `${room.jid}/${subject.nick}`;
      p.attrs.to = viewer.jid.full;
      if (type) delete p.attrs.id;
      p.cnode(mucUser(room, subject, viewer, { codes: viewer === subject ? [...codes, 110] : codes, ...(item ? { item } : {}), children }));
      p.cnode(el("occupant-id", { xmlns: OCCUPANT_ID, id: subject.occupantId }));
      return p;
    };
    /** Large rooms: only the occupant itself and moderators see ordinary occupants' presence changes. */
    const sees = (room: Room, viewer: Occupant, subject: Occupant) => viewer === subject
      || room.occupants.size <= o.presenceBroadcastLimit || viewer.role === "moderator" || subject.role === "moderator";
    const broadcastPresence = (room: Room, subject: Occupant, codes: number[] = [], type?: string, item?: Record<string, string | undefined>, children: Element[] = []) => {
      for (const viewer of room.occupants.values()) {
        if (sees(room, viewer, subject)) send(presenceOf(room, subject, viewer, codes, type, item, children));
      }
    };
    /** The occupant's own presence as the room keeps it: without the muc elements the room adds itself. */
    const ownPresence = (stanza: Element) => {
      const presence = cloneElement(stanza);
      for (const child of [...presence.getChildren("x", MUC), ...presence.getChildren("occupant-id", OCCUPANT_ID)]) presence.remove(child);
      return presence;
    };
    /** One copy per occupant, routed. */
    const toOccupants = (room: Room, stanza: Element) => {
      for (const occupant of room.occupants.values()) {
        const copy = cloneElement(stanza);
        copy.attrs.to = occupant.jid.full;
        send(copy);
      }
    };

    // ── joining, presence, leaving ─────────────────────────────────────────────────────────────
    const join = async (routed: Routed, room: Room | undefined, nick: string) => {
      const { stanza, from, to } = routed;
      const x = stanza.getChild("x", MUC);
      let created = false;
      if (!room) {
        if (o.createRooms === "local" && !ctx.hosts.includes(from.domain)) throw new StanzaError("not-allowed", "Only users of this server may create rooms", "cancel");
        room = { jid: to.bare, config: defaults(), subject: undefined, locked: true, createdAt: Date.now(), occupants: new Map(), nicks: new Map(), affiliations: new Map(), avatarHash: "" };
        room.affiliations.set(from.bare, { jid: from.bare, affiliation: "owner", nick: "", reason: "" });
        rooms.set(room.jid, room);
        created = true;
      }
      const affiliation = affiliationOf(room, from.bare);
      const denied = admission({ locked: room.locked && !created, membersOnly: room.config.membersOnly, password: room.config.password }, affiliation, x?.getChildText("password") ?? undefined);
      if (denied) throw denied;
      // After admission: who may not enter does not learn which nicks are in use (HARDENING: no occupant enumeration).
      const taken = room.occupants.get(nick);
      if (taken && taken.jid.bare !== from.bare) throw new StanzaError("conflict", "That nickname is taken", "cancel");
      if (room.occupants.size >= room.config.maxUsers && RANK[affiliation] < RANK.admin) throw new StanzaError("service-unavailable", "The room is full", "wait");

      const occupant: Occupant = { nick, jid: from, role: defaultRole(affiliation, room.config.moderated), presence: ownPresence(stanza), occupantId: occupantId(room, from) };
      room.occupants.set(nick, occupant);
      room.nicks.set(from.full, nick);
      // Existing occupants first, to the newcomer; then the newcomer to everyone (itself last, with 110).
      for (const other of room.occupants.values()) if (other !== occupant && sees(room, occupant, other)) send(presenceOf(room, other, occupant));
      const codes = [...(room.config.whois === "anyone" ? [100] : []), ...(room.config.archiving ? [170] : []), ...(created ? [201] : [])];
      for (const viewer of room.occupants.values()) if (viewer !== occupant && sees(room, viewer, occupant)) send(presenceOf(room, occupant, viewer));
      send(presenceOf(room, occupant, occupant, codes));
      // A new room has no history yet, but it still ends the join with its (empty) subject: clients
      // such as slixmpp's join_muc_wait() take the subject as the sign that the join is complete.
      if (!created) await sendHistory(room, occupant, x?.getChild("history"));
      // §7.2.15 "After the room has optionally sent the discussion history to the new occupant, it
      // SHALL send the current room subject … If there is no subject set, the room MUST return an
      // empty <subject/> element."
      const subject = room.subject ? cloneElement(room.subject) : el("message", { type: "groupchat", from: room.jid }, el("subject"));
      subject.attrs.to = from.full;
      send(subject);
    };

    const sendHistory = async (room: Room, occupant: Occupant, history: Element | undefined) => {
      if (!room.config.archiving) return;
      // The client may ask for less history than the room keeps, never more (Prosody's max_history_messages).
      const maxStanzas = Math.min(history?.attrs.maxstanzas !== undefined ? Number(history.attrs.maxstanzas) : o.historyMessages, o.historyMessages);
      const maxChars = history?.attrs.maxchars !== undefined ? Number(history.attrs.maxchars) : Infinity;
      const seconds = history?.attrs.seconds !== undefined ? Number(history.attrs.seconds) : undefined;
      const since = history?.attrs.since !== undefined ? Date.parse(history.attrs.since) : undefined;
      if (!(maxStanzas > 0) || maxChars === 0) return;
      const after = Math.max(seconds !== undefined ? Date.now() - seconds * 1000 : 0, since !== undefined && !Number.isNaN(since) ? since : 0);
      const rows = await storage.archive.query(room.jid, { afterId: after > 0 ? idAt(after) : undefined, newestFirst: true, limit: maxStanzas });
      // §7.2.14 maxchars: the newest messages that fit, sent oldest first.
      let chars = 0;
      const out: Element[] = [];
      for (const row of [...rows].reverse()) {
        const m = parseElement(row.stanza);
        // Subject changes are archived, but the join ends with the current subject: one in the
        // history would look to clients like the end of the join (§7.2.15).
        if (m.getChild("subject") && !m.getChild("body")) continue;
        chars += row.stanza.length;
        if (chars > maxChars) break;
        m.attrs.to = occupant.jid.full;
        m.cnode(el("delay", { xmlns: NS.DELAY, from: room.jid, stamp: new Date(timeOfId(row.id)).toISOString() }));
        out.push(m);
      }
      for (const m of out.reverse()) send(m);
    };

    const leave = async (room: Room, occupant: Occupant, status?: Element, codes: number[] = [], item?: Record<string, string | undefined>, children: Element[] = []) => {
      const unavailable = (viewer: Occupant) => {
        const p = presenceOf(room, occupant, viewer, codes, "unavailable", item, children);
        if (status) p.cnode(cloneElement(status));
        return p;
      };
      for (const viewer of room.occupants.values()) if (sees(room, viewer, occupant)) send(unavailable(viewer));
      room.occupants.delete(occupant.nick);
      room.nicks.delete(occupant.jid.full);
      await unloadIfEmpty(room);
    };

    const onPresence = async (routed: Routed) => {
      const { stanza, from, to } = routed;
      if (!to.local) return; // presence to the service itself: nothing to do
      const nick = to.resource;
      const type = stanza.attrs.type;
      if (type === "error") {
        // §7.2.x: an occupant whose client bounces presence is gone.
        const room = rooms.get(to.bare);
        const current = room?.nicks.get(from.full);
        if (room && current) await leave(room, room.occupants.get(current)!);
        return;
      }
      if (!nick) {
        if (type === undefined) throw new StanzaError("jid-malformed", "A nickname is required", "modify");
        return;
      }
      let safeNick: string;
      try {
        safeNick = prepResource(nick);
      } catch {
        throw new StanzaError("jid-malformed", "Not a valid nickname", "modify");
      }
      const room = await load(to.bare);
      const current = room?.nicks.get(from.full);
      if (type === "unavailable") {
        if (room && current) await leave(room, room.occupants.get(current)!, stanza.getChild("status") ?? undefined);
        return;
      }
      if (type !== undefined) return;
      if (!room || !current) return join(routed, room, safeNick);
      const occupant = room.occupants.get(current)!;
      if (current !== safeNick) {
        // §7.6: nickname change — unavailable with 303 and the new nick, then available under it.
        if (room.occupants.has(safeNick)) throw new StanzaError("conflict", "That nickname is taken", "cancel");
        for (const viewer of room.occupants.values()) send(presenceOf(room, occupant, viewer, [303], "unavailable", { nick: safeNick }));
        room.occupants.delete(current);
        occupant.nick = safeNick;
        room.occupants.set(safeNick, occupant);
        room.nicks.set(from.full, safeNick);
      }
      occupant.presence = ownPresence(stanza);
      broadcastPresence(room, occupant);
    };

    // ── messages ─────────────────────────────────────────────────────────────────────────────
    const onMessage = async (routed: Routed) => {
      const { stanza, from, to } = routed;
      if (stanza.attrs.type === "error") return;
      const room = await load(to.bare);
      if (!room) throw new StanzaError("item-not-found", "No such room", "cancel");
      const nick = room.nicks.get(from.full);
      const sender = nick ? room.occupants.get(nick) : undefined;
      const invite = stanza.getChild("x", MUC_USER)?.getChild("invite");
      if (invite && !to.resource) return mediatedInvite(room, sender, from, invite);
      if (!sender) throw new StanzaError("not-acceptable", "Only occupants may send messages to the room", "cancel");
      if (to.resource) {
        // §7.5: a private message to one occupant, from the sender's occupant JID.
        const target = room.occupants.get(to.resource);
        if (!target) throw new StanzaError("item-not-found", "No such occupant", "cancel");
        if (stanza.attrs.type === "groupchat") throw new StanzaError("bad-request", "Private messages are not groupchat", "modify");
        const pm = cloneElement(stanza);
        pm.attrs.from = `${room.jid}/${sender.nick}`;
        pm.attrs.to = target.jid.full;
        // XEP-0421 §4: "The <occupant-id> element MUST be attached to every message … sent by a MUC",
        // replacing one the sender made up; likewise the muc#user element is the room's.
        for (const c of [...pm.getChildren("occupant-id", OCCUPANT_ID), ...pm.getChildren("x", MUC_USER)]) pm.remove(c);
        pm.cnode(el("x", { xmlns: MUC_USER }));
        pm.cnode(el("occupant-id", { xmlns: OCCUPANT_ID, id: sender.occupantId }));
        send(pm);
        return;
      }
      if (stanza.attrs.type !== "groupchat") throw new StanzaError("bad-request", "Messages to the room are groupchat", "modify");
      const subject = stanza.getChild("subject");
      if (subject && !stanza.getChild("body")) {
        if (sender.role !== "moderator" && !(room.config.changeSubject && sender.role === "participant")) throw new StanzaError("forbidden", "You may not change the subject", "auth");
      } else if (sender.role === "visitor") {
        throw new StanzaError("forbidden", "Visitors may not speak in this moderated room", "auth");
      }
      const message = cloneElement(stanza);
      message.attrs.from = `${room.jid}/${sender.nick}`;
      delete message.attrs.to;
      // The room's ids and occupant ids only: whatever a client put there is removed (XEP-0359 §4, XEP-0421 §4).
      for (const c of [...message.getChildren("stanza-id", STANZA_ID), ...message.getChildren("occupant-id", OCCUPANT_ID), ...message.getChildren("x", MUC_USER)]) message.remove(c);
      message.cnode(el("occupant-id", { xmlns: OCCUPANT_ID, id: sender.occupantId }));
      if (subject && !stanza.getChild("body")) {
        // §7.2.15: the subject a newcomer gets "SHOULD be stamped with XEP-0203 information … its
        // 'from' attribute MUST be set to the JID of the room itself" — the time it was set.
        room.subject = cloneElement(message);
        room.subject.cnode(el("delay", { xmlns: NS.DELAY, from: room.jid, stamp: new Date().toISOString() }));
        await save(room);
      }
      if (room.config.archiving && (message.getChild("body") || message.getChild("subject"))) {
        const id = nextId();
        // Archived before the broadcast: what occupants see is already in the room's history.
        await storage.archive.append(room.jid, { id, withBare: room.jid, withResource: sender.nick, stanza: message.toString() });
        message.cnode(el("stanza-id", { xmlns: STANZA_ID, id: String(id), by: room.jid }));
      }
      // Serialized once: each occupant gets the same bytes with its own 'to', written straight to
      // its session (a groupchat copy has nothing for the message chains to do).
      const copyFor = shareChildren(message);
      for (const occupant of room.occupants.values()) {
        const copy = copyFor({ ...message.attrs, to: occupant.jid.full });
        const session = ctx.sessions.get(occupant.jid.full);
        if (session) router.deliver(session, copy);
        else send(copy);
      }
      // Members are members whether or not they are joined: the absent ones catch up from the
      // archive, and their phones hear about it.
      if (message.getChild("body")) {
        const present = new Set([...room.occupants.values()].map((x) => x.jid.bare));
        for (const a of room.affiliations.values()) {
          if (RANK[a.affiliation] >= RANK.member && !present.has(a.jid)) {
            void ctx.emit("muc/missed", { user: a.jid, room: room.jid, sender: `${room.jid}/${sender.nick}`, message });
          }
        }
      }
    };

    const mediatedInvite = (room: Room, sender: Occupant | undefined, from: Jid, invite: Element) => {
      // §7.8.2: occupants invite (members-only rooms: admins/owners unless invites are allowed).
      if (!sender) throw new StanzaError("not-acceptable", "Only occupants may invite", "cancel");
      const aff = affiliationOf(room, from.bare);
      if (room.config.membersOnly && !room.config.allowInvites && RANK[aff] < RANK.admin) throw new StanzaError("forbidden", "Only admins may invite here", "auth");
      const invitee = tryParseJid(invite.attrs.to);
      if (!invitee) throw new StanzaError("jid-malformed");
      if (room.config.membersOnly && affiliationOf(room, invitee.bare) === "none") {
        room.affiliations.set(invitee.bare, { jid: invitee.bare, affiliation: "member", nick: "", reason: "invited" });
        void storage.rooms.setAffiliation(room.jid, { jid: invitee.bare, affiliation: "member", nick: "", reason: "invited" });
      }
      send(el("message", { from: room.jid, to: invitee.full },
        el("x", { xmlns: MUC_USER },
          el("invite", { from: from.bare }, invite.getChildText("reason") ? el("reason", {}, invite.getChildText("reason")!) : undefined),
          room.config.password ? el("password", {}, room.config.password) : undefined)));
    };

    // ── admin and owner ──────────────────────────────────────────────────────────────────────
    /** A nick from an attribute, prepared as the room keeps nicks (RFC 7622 resourcepart). */
    const nickOf = (raw: string | undefined) => {
      try { return raw === undefined ? undefined : prepResource(raw); } catch { return undefined; }
    };
    const itemsOfAffiliation = (room: Room, affiliation: Affiliation) => [...room.affiliations.values()].filter((a) => a.affiliation === affiliation)
      .map((a) => el("item", { affiliation: a.affiliation, jid: a.jid, nick: a.nick || undefined }, a.reason ? el("reason", {}, a.reason) : undefined));

    const admin = async (room: Room, from: Jid, type: "get" | "set", query: Element) => {
      const actor = actorIn(room, from);
      const actorNick = room.nicks.get(from.full);
      const items = query.getChildren("item");
      if (type === "get") {
        const wanted = items[0];
        const affiliation = AFFILIATIONS.find((a) => a === wanted?.attrs.affiliation);
        const role = ROLES.find((r) => r === wanted?.attrs.role);
        if (affiliation) {
          const denied = listAccess(actor, { affiliation });
          if (denied) throw denied;
          return el("query", { xmlns: MUC_ADMIN }, ...itemsOfAffiliation(room, affiliation));
        }
        if (role) {
          const denied = listAccess(actor, { role });
          if (denied) throw denied;
          return el("query", { xmlns: MUC_ADMIN }, ...[...room.occupants.values()].filter((x) => x.role === role)
            .map((x) => el("item", { nick: x.nick, role: x.role, affiliation: affiliationOf(room, x.jid.bare), jid: x.jid.full })));
        }
        throw new StanzaError("bad-request");
      }
      // Every item is checked before any is applied — "the service SHOULD NOT apply any of the
      // requested changes" when one is refused (§9.2) — each against the room as the items before it leave it.
      type Change = { target: Occupant; role: Role; reason: Element | undefined } | { jid: string; affiliation: Affiliation; nick: string; reason: Element | undefined };
      const changes: Change[] = [];
      const newRoles = new Map<Occupant, Role>();
      const newAffiliations = new Map<string, Affiliation>();
      const affiliationNow = (jid: string) => newAffiliations.get(jid) ?? affiliationOf(room, jid);
      const ownersBesides = (jid: string) => [...new Set([...room.affiliations.keys(), ...newAffiliations.keys()])]
        .filter((j) => j !== jid && affiliationNow(j) === "owner").length;
      for (const item of items) {
        const reason = item.getChild("reason") ?? undefined;
        const actorNow: Actor = { affiliation: affiliationNow(from.bare), role: actor.role };
        // §17.4 "if a moderator, admin, or owner attempts to modify both the affiliation and role of
        // the same item in the same IQ set, the service MUST return a bad-request error".
        if ((item.attrs.role === undefined) === (item.attrs.affiliation === undefined)) throw new StanzaError("bad-request", "An item changes either a role or an affiliation");
        if (item.attrs.role !== undefined) {
          const role = ROLES.find((r) => r === item.attrs.role);
          if (!role) throw new StanzaError("bad-request", "Unknown role");
          const nick = nickOf(item.attrs.nick);
          const target = nick === undefined ? undefined : room.occupants.get(nick);
          const denied = roleChange(actorNow, target && { affiliation: affiliationNow(target.jid.bare), role: newRoles.get(target) ?? target.role }, role);
          if (denied) throw denied;
          newRoles.set(target!, role);
          changes.push({ target: target!, role, reason });
          continue;
        }
        const affiliation = AFFILIATIONS.find((a) => a === item.attrs.affiliation);
        const jid = tryParseJid(item.attrs.jid);
        if (!affiliation || !jid) throw new StanzaError("bad-request");
        const denied = affiliationChange(actorNow.affiliation, { affiliation: affiliationNow(jid.bare), self: jid.bare === from.bare }, affiliation, ownersBesides(jid.bare));
        if (denied) throw denied;
        newAffiliations.set(jid.bare, affiliation);
        changes.push({ jid: jid.bare, affiliation, nick: item.attrs.nick ?? "", reason });
      }
      const actorElement = () => el("actor", { nick: actorNick });
      for (const change of changes) {
        const reasonElements = change.reason ? [cloneElement(change.reason)] : [];
        if ("target" in change) {
          const { target, role } = change;
          if (room.occupants.get(target.nick) !== target) continue; // gone meanwhile (kicked by an earlier item)
          if (role === "none") {
            await leave(room, target, undefined, [307], { role: "none", affiliation: affiliationOf(room, target.jid.bare), jid: undefined }, [actorElement(), ...reasonElements]);
          } else {
            target.role = role;
            broadcastPresence(room, target);
          }
          continue;
        }
        const { jid, affiliation } = change;
        const record = affiliation === "none" ? { jid, affiliation: "none" as const } : { jid, affiliation, nick: change.nick, reason: change.reason?.text() ?? "" };
        if (record.affiliation === "none") room.affiliations.delete(jid);
        else room.affiliations.set(jid, record as RoomAffiliation);
        if (room.config.persistent) await storage.rooms.setAffiliation(room.jid, record);
        // The user's occupants, and for a banned domain every occupant from it without an affiliation of its own.
        const affected = [...room.occupants.values()].filter((x) => x.jid.bare === jid || (x.jid.domain === jid && affiliationOf(room, x.jid.bare) === "outcast"));
        for (const occupant of affected) {
          const now = affiliationOf(room, occupant.jid.bare);
          if (now === "outcast") {
            await leave(room, occupant, undefined, [301], { affiliation: "outcast", role: "none" }, [actorElement(), ...reasonElements]);
          } else if (room.config.membersOnly && RANK[now] < RANK.member) {
            await leave(room, occupant, undefined, [321], { affiliation: now, role: "none" });
          } else {
            occupant.role = defaultRole(now, room.config.moderated);
            broadcastPresence(room, occupant);
          }
        }
      }
      return undefined;
    };

    const configForm = (room: Room) => buildForm("form", ROOMCONFIG, [
      { var: "muc#roomconfig_roomname", type: "text-single", label: "Name", values: [room.config.name] },
      { var: "muc#roomconfig_roomdesc", type: "text-single", label: "Description", values: [room.config.description] },
      { var: "muc#roomconfig_persistentroom", type: "boolean", label: "Persistent", values: [String(room.config.persistent)] },
      { var: "muc#roomconfig_publicroom", type: "boolean", label: "Listed in the directory", values: [String(room.config.public)] },
      { var: "muc#roomconfig_membersonly", type: "boolean", label: "Members only", values: [String(room.config.membersOnly)] },
      { var: "muc#roomconfig_moderatedroom", type: "boolean", label: "Moderated", values: [String(room.config.moderated)] },
      { var: "muc#roomconfig_passwordprotectedroom", type: "boolean", label: "Password protected", values: [String(room.config.password !== "")] },
      { var: "muc#roomconfig_roomsecret", type: "text-private", label: "Password", values: [room.config.password] },
      { var: "muc#roomconfig_whois", type: "list-single", label: "Who sees real JIDs", values: [room.config.whois],
        options: [{ label: "Moderators", value: "moderators" }, { label: "Anyone", value: "anyone" }] },
      { var: "muc#roomconfig_maxusers", type: "text-single", label: "Maximum occupants", values: [String(room.config.maxUsers)] },
      { var: "muc#roomconfig_changesubject", type: "boolean", label: "Participants may change the subject", values: [String(room.config.changeSubject)] },
      { var: "muc#roomconfig_allowinvites", type: "boolean", label: "Members may invite", values: [String(room.config.allowInvites)] },
      { var: "mam", type: "boolean", label: "Archive messages", values: [String(room.config.archiving)] },
    ]);
    const applyConfig = (room: Room, form: Element): string[] => {
      const f = readForm(form);
      if (f.formType !== undefined && f.formType !== ROOMCONFIG) throw new StanzaError("bad-request", `FORM_TYPE must be ${ROOMCONFIG}`);
      const c = { ...room.config };
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
        c.maxUsers = Math.min(n, o.maxOccupants);
      }
      c.changeSubject = bool("muc#roomconfig_changesubject") ?? c.changeSubject;
      c.allowInvites = bool("muc#roomconfig_allowinvites") ?? c.allowInvites;
      const archiving = bool("mam") ?? bool("muc#roomconfig_enablearchiving");
      if (archiving !== undefined && archiving !== c.archiving) changes.push(archiving ? "170" : "171");
      c.archiving = archiving ?? c.archiving;
      room.config = c;
      return changes;
    };

    const owner = async (room: Room, from: Jid, type: "get" | "set", query: Element) => {
      if (affiliationOf(room, from.bare) !== "owner") throw new StanzaError("forbidden", "Only owners configure the room", "auth");
      if (type === "get") return el("query", { xmlns: MUC_OWNER }, configForm(room));
      const destroy = query.getChild("destroy");
      if (destroy) {
        // §10.9: every occupant gets unavailable with the destroy element (alternate venue, reason).
        for (const occupant of [...room.occupants.values()]) {
          send(presenceOf(room, occupant, occupant, [], "unavailable", { affiliation: "none", role: "none" }));
          const p = el("presence", { type: "unavailable", from: `${room.jid}/${occupant.nick}`, to: occupant.jid.full },
            el("x", { xmlns: MUC_USER }, el("item", { affiliation: "none", role: "none" }), cloneElement(destroy)));
          send(p);
        }
        room.occupants.clear();
        room.nicks.clear();
        rooms.delete(room.jid);
        await forget(room.jid);
        return undefined;
      }
      const x = query.getChild("x", NS.DATA_FORMS);
      if (!x) throw new StanzaError("bad-request");
      if (x.attrs.type === "cancel") {
        // §10.1.3: cancelling the configuration of a new room destroys it.
        if (room.locked) {
          for (const occupant of [...room.occupants.values()]) await leave(room, occupant);
          rooms.delete(room.jid);
        }
        return undefined;
      }
      const wasMembersOnly = room.config.membersOnly;
      const changes = applyConfig(room, x);
      room.locked = false;
      await save(room);
      if (room.config.persistent) for (const a of room.affiliations.values()) await storage.rooms.setAffiliation(room.jid, a);
      else await storage.rooms.delete(room.jid);
      if (changes.length) {
        toOccupants(room, el("message", { type: "groupchat", from: room.jid }, el("x", { xmlns: MUC_USER }, ...changes.map((code) => el("status", { code })))));
      }
      if (!wasMembersOnly && room.config.membersOnly) {
        for (const occupant of [...room.occupants.values()]) {
          if (RANK[affiliationOf(room, occupant.jid.bare)] < RANK.member) await leave(room, occupant, undefined, [322], { role: "none" });
        }
      }
      return undefined;
    };

    // ── room avatar: a vCard on the room JID (XEP-0054/0153), announced as in XEP-0486 ──────────
    const roomVcard = async (room: Room, from: Jid, type: "get" | "set", payload: Element) => {
      if (type === "get") {
        const stored = await storage.documents.get(room.jid, VCARD_KEY);
        return stored ? parseElement(stored) : el("vCard", { xmlns: NS.VCARD });
      }
      if (affiliationOf(room, from.bare) !== "owner") throw new StanzaError("forbidden", "Only owners change the room's vCard", "auth");
      if (payload.name !== "vCard") throw new StanzaError("bad-request");
      const xml = payload.toString();
      if (xml.length > 256 * 1024) throw new StanzaError("not-acceptable", "vCard too large");
      await storage.documents.set(room.jid, VCARD_KEY, xml);
      room.avatarHash = photoHash(xml);
      for (const occupant of room.occupants.values()) {
        send(el("presence", { from: room.jid, to: occupant.jid.full }, el("x", { xmlns: "vcard-temp:x:update" }, el("photo", {}, room.avatarHash || undefined))));
      }
      return undefined;
    };

    // ── XEP-0425: a moderator retracts a message for everyone, and the archive keeps a tombstone ─
    const moderate = async (room: Room, from: Jid, request: Element) => {
      const nick = room.nicks.get(from.full);
      const moderator = nick ? room.occupants.get(nick) : undefined;
      if (moderator?.role !== "moderator") throw new StanzaError("forbidden", "Only moderators retract messages", "auth");
      if (!request.getChild("retract", RETRACT)) throw new StanzaError("bad-request", "Only retraction is supported");
      const id = request.attrs.id ?? "";
      const [original] = /^\d{1,16}$/.test(id) ? await storage.archive.get(room.jid, [Number(id)]) : [];
      if (!original) throw new StanzaError("item-not-found", "No message with that id in the room's archive", "cancel");
      const reason = request.getChildText("reason") ?? undefined;
      const moderated = () => el("moderated", { xmlns: MODERATE, by: `${room.jid}/${moderator.nick}` },
        el("occupant-id", { xmlns: OCCUPANT_ID, id: moderator.occupantId }));
      // The original's content is gone from the archive; who sent it and when stays.
      const kept = parseElement(original.stanza);
      const tombstone = el("message", { type: "groupchat", from: kept.attrs.from, id: kept.attrs.id },
        el("retracted", { xmlns: RETRACT, stamp: new Date().toISOString() }, moderated(), reason ? el("reason", {}, reason) : undefined),
        ...kept.getChildren("occupant-id", OCCUPANT_ID).map((c) => cloneElement(c)));
      await storage.archive.replace(room.jid, original.id, tombstone.toString());
      const announcement = el("message", { type: "groupchat", from: room.jid, id: `moderate-${original.id}` },
        el("retract", { xmlns: RETRACT, id }, moderated(), reason ? el("reason", {}, reason) : undefined));
      if (room.config.archiving) {
        const aid = nextId();
        await storage.archive.append(room.jid, { id: aid, withBare: room.jid, withResource: "", stanza: announcement.toString() });
        announcement.cnode(el("stanza-id", { xmlns: STANZA_ID, id: String(aid), by: room.jid }));
      }
      toOccupants(room, announcement);
      return undefined;
    };

    // ── IQs ──────────────────────────────────────────────────────────────────────────────────
    const roomInfo = (room: Room) => el("query", { xmlns: NS.DISCO_INFO },
      el("identity", { category: "conference", type: "text", name: room.config.name || room.jid.split("@")[0] }),
      ...[MUC, MUC_USER, MAM, STANZA_ID, OCCUPANT_ID, NS.VCARD, MODERATE, "http://jabber.org/protocol/disco#info",
        room.config.persistent ? "muc_persistent" : "muc_temporary", room.config.public ? "muc_public" : "muc_hidden",
        room.config.membersOnly ? "muc_membersonly" : "muc_open", room.config.moderated ? "muc_moderated" : "muc_unmoderated",
        room.config.password ? "muc_passwordprotected" : "muc_unsecured", room.config.whois === "anyone" ? "muc_nonanonymous" : "muc_semianonymous",
      // Moderation names messages by the stanza-ids the archive gives them: without one, nothing to moderate.
      ].filter((f) => (f !== MAM && f !== MODERATE) || room.config.archiving).map((v) => el("feature", { var: v })),
      buildForm("result", `${MUC}#roominfo`, [
        // XEP-0486 §3: the avatar's hash, so clients know when to fetch the room's vCard.
        ...(room.avatarHash ? [{ var: "muc#roominfo_avatarhash", values: [room.avatarHash] }] : []),
        { var: "muc#roominfo_description", values: [room.config.description] },
        { var: "muc#roominfo_occupants", values: [String(room.occupants.size)] },
        { var: "muc#roomconfig_roomname", values: [room.config.name] },
      ]));

    const onIq = async (routed: Routed): Promise<Element | undefined> => {
      const { stanza, from, to } = routed;
      const type = stanza.attrs.type as "get" | "set";
      const payload = childElements(stanza)[0];
      if (!payload) throw new StanzaError("bad-request");
      const ns = payload.getNS();
      if (!to.local) {
        // The service itself.
        if (type === "get" && ns === NS.DISCO_INFO && payload.attrs.node === undefined) {
          return el("query", { xmlns: NS.DISCO_INFO }, el("identity", { category: "conference", type: "text", name: "Chatrooms" }),
            ...[MUC, NS.DISCO_INFO, NS.DISCO_ITEMS, OCCUPANT_ID, STANZA_ID].map((v) => el("feature", { var: v })));
        }
        if (type === "get" && ns === NS.DISCO_ITEMS && payload.attrs.node === undefined) {
          const listed = (await storage.rooms.list(to.domain)).map((r) => ({ jid: r.jid, config: { ...defaults(), ...(JSON.parse(r.config) as Partial<RoomConfig>) } }));
          for (const r of rooms.values()) if (r.jid.endsWith(`@${to.domain}`) && !listed.some((l) => l.jid === r.jid)) listed.push({ jid: r.jid, config: r.config });
          return el("query", { xmlns: NS.DISCO_ITEMS }, ...listed.filter((r) => r.config.public && !rooms.get(r.jid)?.locked)
            .map((r) => el("item", { jid: r.jid, name: r.config.name || undefined })));
        }
        throw new StanzaError("service-unavailable");
      }
      const room = await load(to.bare);
      if (to.resource) {
        // §17.4 / XEP-0410: IQs to an occupant are passed on for occupants only; a ping to one's own
        // occupant JID is answered by the room. Who is not in the room gets the same answer whether
        // or not the nick is taken, so it cannot find out who is there (§6.6: disco "MUST return a
        // bad-request error" to a non-occupant).
        const self = room?.nicks.get(from.full);
        if (!room || !self) {
          if (ns === NS.DISCO_INFO || ns === NS.DISCO_ITEMS) throw new StanzaError("bad-request", "Not an occupant", "modify");
          throw new StanzaError("not-acceptable", "Only occupants may send IQs to occupants", "cancel");
        }
        if (ns === "urn:xmpp:ping" && type === "get" && self === to.resource) return undefined;
        const occupant = room.occupants.get(to.resource);
        if (!occupant) throw new StanzaError("item-not-found", undefined, "cancel");
        const forwarded = cloneElement(stanza);
        forwarded.attrs.from = `${room.jid}/${self}`;
        forwarded.attrs.to = occupant.jid.full;
        const reply = await router.request(forwarded, 30_000);
        const answer = childElements(reply)[0];
        if (reply.attrs.type === "error") throw new StanzaError("service-unavailable");
        return answer;
      }
      if (!room) {
        if (type === "get" && ns === NS.DISCO_INFO) throw new StanzaError("item-not-found", "No such room", "cancel");
        throw new StanzaError("item-not-found", "No such room", "cancel");
      }
      if (type === "get" && ns === NS.DISCO_INFO) return roomInfo(room);
      if (ns === NS.VCARD) return roomVcard(room, from, type, payload);
      if (ns === MODERATE && type === "set" && payload.name === "moderate") return moderate(room, from, payload);
      if (type === "get" && ns === NS.DISCO_ITEMS) return el("query", { xmlns: NS.DISCO_ITEMS });
      if (ns === MUC_ADMIN) return admin(room, from, type, payload);
      if (ns === MUC_OWNER) return owner(room, from, type, payload);
      if (ns === MAM) {
        // XEP-0313 §6.1.2: "A MUC archive MUST check that the user requesting the archive has the right
        // to enter it at the time of the query": the rules of joining, where being in the room (on
        // any resource) proves the password, as a query carries none. §8: the error "SHOULD be 'forbidden'".
        const denied = admission({ locked: room.locked, membersOnly: room.config.membersOnly, password: room.config.password },
          affiliationOf(room, from.bare), isPresent(room, from.bare) || undefined);
        if (denied) throw new StanzaError("forbidden", denied.text, "auth");
        if (!room.config.archiving) throw new StanzaError("forbidden", "This room keeps no archive", "auth");
        if (type === "get") return el("query", { xmlns: MAM }, archiveQueryForm());
        if (payload.name !== "query") throw new StanzaError("bad-request");
        return answerArchiveQuery({ storage, log: ctx.log, pageSize: o }, room.jid, payload, (m) => send(m), from.full);
      }
      throw new StanzaError("service-unavailable");
    };

    // ── routing ──────────────────────────────────────────────────────────────────────────────
    const handle = (work: (routed: Routed) => Promise<Element | undefined | void>, answersIq = false) => (routed: Routed) => {
      if (!services.has(routed.to.domain)) return undefined;
      return work(routed).then((result) => {
        if (answersIq) send(el("iq", { type: "result", id: routed.stanza.attrs.id, from: routed.to.full, to: routed.from.full }, result ?? undefined));
        return HANDLED;
      }, async (err) => {
        if (!(err instanceof StanzaError)) ctx.log.error({ err, stage: "muc", tag: routed.stanza.name }, "room stanza failed");
        await router.bounce(routed.stanza, err instanceof StanzaError ? err : new StanzaError("internal-server-error"), routed.origin);
        return HANDLED;
      });
    };
    const iqHandler = (routed: Routed) => {
      const type = routed.stanza.attrs.type;
      if (!services.has(routed.to.domain)) return undefined;
      if (type === "result" || type === "error") return undefined; // answers to the room's own requests are settled by the router
      return handle(onIq, true)(routed);
    };
    for (const chain of ["presence/bare", "presence/full"] as const) ctx.chain(chain, handle(async (r) => onPresence(r)), 90);
    for (const chain of ["message/bare", "message/full"] as const) ctx.chain(chain, handle(async (r) => onMessage(r)), 90);
    for (const chain of ["iq/bare", "iq/full", "iq/host"] as const) ctx.chain(chain, iqHandler, 90);

    ctx.discoItems("host", ({ owner: host, node }) => {
      if (node !== undefined) return undefined;
      const d = o.domain.replace("{host}", host);
      return services.has(d) ? [el("item", { jid: d, name: "Chatrooms" })] : [];
    });

    // §7.2 status 332: the service is going down; everyone is out, told why.
    ctx.on("server/stopping", () => {
      for (const room of rooms.values()) {
        for (const occupant of room.occupants.values()) send(presenceOf(room, occupant, occupant, [332], "unavailable", { role: "none" }));
        room.occupants.clear();
        room.nicks.clear();
      }
      rooms.clear();
    });
    // A client that goes away leaves its rooms.
    ctx.on("session/closed", async ({ session }) => {
      for (const room of [...rooms.values()]) {
        const nick = room.nicks.get(session.jid.full);
        if (nick) await leave(room, room.occupants.get(nick)!);
      }
    });
  },
});

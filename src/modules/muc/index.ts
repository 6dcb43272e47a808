/**
 * XEP-0045 Multi-User Chat 1.35 on conference.<host>, with XEP-0421 occupant ids, XEP-0359 stanza
 * ids stamped by the room, XEP-0313 archives on room JIDs, XEP-0410 self-ping, XEP-0425 moderation
 * and XEP-0486 room avatars: the handlers. Room state is in room.ts, who may do what in rules.ts
 * (XEP-0045's tables as pure functions), the presence about an occupant in occupant-presence.ts
 * and the configuration form in config-form.ts.
 *
 * A new room is locked (status 201) until its owner accepts the default configuration or submits
 * one. Every room message is archived before it is broadcast and serialized once for all occupants.
 *
 * Which node handles a room is the placement's answer (ctx.placement, src/placement.ts): always
 * this one on a single node; on a cluster the room's host, to which stanzas for the room are
 * passed on (docs/CLUSTER.md, "Rooms").
 */
import { createHmac } from "node:crypto";
import { z } from "zod";
import { defineModule } from "../../module.js";
import { el, childElements, cloneElement, type Element } from "../../xmpp/xml.js";
import { NS } from "../../xmpp/ns.js";
import { tryParseJid, prepResource, type Jid } from "../../xmpp/jid.js";
import { Priority, HANDLED, type ChainResult, type Routed } from "../../hooks.js";
import { StanzaError } from "../../errors.js";
import { buildForm } from "../../xmpp/forms.js";
import { parseElement } from "../../xmpp/xml-parse.js";
import { andThen, type MaybePromise } from "../../maybe-async.js";
import type { RoomAffiliation } from "../../storage/index.js";
import type { IqRequest } from "../../xmpp/router.js";
import { MAM, STANZA_ID, answerArchiveQuery, archiveClock, archiveQueryForm, idAt, timeOfId } from "../mam.js";
import { VCARD_KEY } from "../vcard.js";
import { AFFILIATIONS, RANK, ROLES, admission, affiliationChange, defaultRole, listAccess, roleChange, type Actor, type Affiliation, type Role } from "./rules.js";
import { MUC, MUC_ADMIN, MUC_OWNER, MUC_USER, MODERATE, OCCUPANT_ID, RETRACT, RoomDirectory, actorIn, affiliationOf, encodeOccupant, isPresent, occupantOf, photoHash, type Occupant, type Room } from "./room.js";
import { occupantPresence, ownPresence, seesPresence, type PresenceExtras } from "./occupant-presence.js";
import { applyConfigForm, configForm } from "./config-form.js";

declare module "../../hooks.js" {
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
    const { storage, router, placement } = ctx;
    const services = new Set(ctx.hosts.map((h) => o.domain.replace("{host}", h)));
    for (const d of services) ctx.addDomain(d);
    // A previous host's occupants whose sessions are gone (they were on the node that died) leave.
    const vanished = async (room: Room) => {
      for (const occupant of [...room.occupants.values()]) if (!ctx.sessions.get(occupant.jid.full)) await leave(room, occupant);
    };
    const rooms = new RoomDirectory(storage, o.maxOccupants, placement, vanished);
    const nextId = archiveClock(1);
    const idKey = ctx.secret("occupant ids");
    /** XEP-0421 §3: stable per room and real bare JID, opaque. */
    const occupantId = (room: Room, real: Jid) => createHmac("sha256", idKey).update(`${room.jid}\n${real.bare}`).digest("base64url").slice(0, 22);

    // ── sending ──────────────────────────────────────────────────────────────────────────────
    const send = (stanza: Element) => void router.route(stanza);
    const sees = (room: Room, viewer: Occupant, subject: Occupant) => seesPresence(room, viewer, subject, o.presenceBroadcastLimit);
    /** The presence about `subject` to every occupant who sees it. */
    const broadcastPresence = (room: Room, subject: Occupant, extras: PresenceExtras = {}) => {
      recorded(room, subject);
      for (const viewer of room.occupants.values()) {
        if (sees(room, viewer, subject)) send(occupantPresence(room, subject, viewer, extras));
      }
    };
    /** One copy per occupant (by their real full JIDs, the keys of `nicks`), each with its 'to'. */
    const toOccupants = (room: Room, stanza: Element) => placement.broadcast(stanza, room.nicks.keys());
    /** The occupant as it is now, for the node that may host the room next. */
    const recorded = (room: Room, occupant: Occupant) => {
      if (placement.shared) placement.recordOccupant(room.jid, occupant.nick, encodeOccupant(occupant));
    };

    // ── joining, presence, leaving ─────────────────────────────────────────────────────────────
    const join = async (routed: Routed, room: Room | undefined, nick: string) => {
      const { stanza, from, to } = routed;
      const x = stanza.getChild("x", MUC);
      let created = false;
      if (!room) {
        if (o.createRooms === "local" && !ctx.hosts.includes(from.domain)) throw new StanzaError("not-allowed", "Only users of this server may create rooms", "cancel");
        room = rooms.create(to.bare, from.bare);
        created = true;
        if (placement.shared) await rooms.share(room);
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
      recorded(room, occupant);
      // Existing occupants first, to the newcomer; then the newcomer to everyone (itself last, with 110).
      for (const other of room.occupants.values()) if (other !== occupant && sees(room, occupant, other)) send(occupantPresence(room, other, occupant));
      const codes = [...(room.config.whois === "anyone" ? [100] : []), ...(room.config.archiving ? [170] : []), ...(created ? [201] : [])];
      for (const viewer of room.occupants.values()) if (viewer !== occupant && sees(room, viewer, occupant)) send(occupantPresence(room, occupant, viewer));
      send(occupantPresence(room, occupant, occupant, { codes }));
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

    /** The occupant is out (left, kicked, banned); `status` is the <status/> text it left with. */
    const leave = async (room: Room, occupant: Occupant, why: { status?: Element; codes?: number[]; item?: Record<string, string | undefined>; children?: Element[] } = {}) => {
      const { status, ...extras } = why;
      const unavailable = (viewer: Occupant) => {
        const p = occupantPresence(room, occupant, viewer, { ...extras, type: "unavailable" });
        if (status) p.cnode(cloneElement(status));
        return p;
      };
      for (const viewer of room.occupants.values()) if (sees(room, viewer, occupant)) send(unavailable(viewer));
      room.occupants.delete(occupant.nick);
      room.nicks.delete(occupant.jid.full);
      placement.forgetOccupant(room.jid, occupant.nick);
      await rooms.unloadIfEmpty(room);
    };

    const onPresence = async (routed: Routed) => {
      const { stanza, from, to } = routed;
      if (!to.local) return; // presence to the service itself: nothing to do
      const nick = to.resource;
      const type = stanza.attrs.type;
      if (type === "error") {
        // §7.2.x: an occupant whose client bounces presence is gone.
        const room = rooms.inMemory(to.bare);
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
      const room = await rooms.load(to.bare);
      const current = room?.nicks.get(from.full);
      if (type === "unavailable") {
        if (room && current) await leave(room, room.occupants.get(current)!, { status: stanza.getChild("status") ?? undefined });
        return;
      }
      if (type !== undefined) return;
      if (!room || !current) return join(routed, room, safeNick);
      const occupant = room.occupants.get(current)!;
      if (current !== safeNick) {
        // §7.6: nickname change — unavailable with 303 and the new nick, then available under it.
        if (room.occupants.has(safeNick)) throw new StanzaError("conflict", "That nickname is taken", "cancel");
        for (const viewer of room.occupants.values()) send(occupantPresence(room, occupant, viewer, { codes: [303], type: "unavailable", item: { nick: safeNick } }));
        room.occupants.delete(current);
        placement.forgetOccupant(room.jid, current);
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
      const room = await rooms.load(to.bare);
      if (!room) throw new StanzaError("item-not-found", "No such room", "cancel");
      const sender = occupantOf(room, from);
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
        await rooms.save(room);
      }
      if (room.config.archiving && (message.getChild("body") || message.getChild("subject"))) {
        const id = nextId();
        // Archived before the broadcast: what occupants see is already in the room's history.
        await storage.archive.append(room.jid, { id, withBare: room.jid, withResource: sender.nick, stanza: message.toString() });
        message.cnode(el("stanza-id", { xmlns: STANZA_ID, id: String(id), by: room.jid }));
      }
      // Serialized once, each occupant's copy with its own 'to' (on a cluster: once per node).
      toOccupants(room, message);
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
            await leave(room, target, { codes: [307], item: { role: "none", affiliation: affiliationOf(room, target.jid.bare), jid: undefined }, children: [actorElement(), ...reasonElements] });
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
        if (rooms.stored(room)) await storage.rooms.setAffiliation(room.jid, record);
        // The user's occupants, and for a banned domain every occupant from it without an affiliation of its own.
        const affected = [...room.occupants.values()].filter((x) => x.jid.bare === jid || (x.jid.domain === jid && affiliationOf(room, x.jid.bare) === "outcast"));
        for (const occupant of affected) {
          const now = affiliationOf(room, occupant.jid.bare);
          if (now === "outcast") {
            await leave(room, occupant, { codes: [301], item: { affiliation: "outcast", role: "none" }, children: [actorElement(), ...reasonElements] });
          } else if (room.config.membersOnly && RANK[now] < RANK.member) {
            await leave(room, occupant, { codes: [321], item: { affiliation: now, role: "none" } });
          } else {
            occupant.role = defaultRole(now, room.config.moderated);
            broadcastPresence(room, occupant);
          }
        }
      }
      return undefined;
    };

    const owner = async (room: Room, from: Jid, type: "get" | "set", query: Element) => {
      if (affiliationOf(room, from.bare) !== "owner") throw new StanzaError("forbidden", "Only owners configure the room", "auth");
      if (type === "get") return el("query", { xmlns: MUC_OWNER }, configForm(room.config));
      const destroy = query.getChild("destroy");
      if (destroy) {
        // §10.9: every occupant gets unavailable with the destroy element (alternate venue, reason).
        for (const occupant of [...room.occupants.values()]) {
          send(occupantPresence(room, occupant, occupant, { type: "unavailable", item: { affiliation: "none", role: "none" } }));
          const p = el("presence", { type: "unavailable", from: `${room.jid}/${occupant.nick}`, to: occupant.jid.full },
            el("x", { xmlns: MUC_USER }, el("item", { affiliation: "none", role: "none" }), cloneElement(destroy)));
          send(p);
        }
        room.occupants.clear();
        room.nicks.clear();
        await rooms.forget(room.jid);
        return undefined;
      }
      const x = query.getChild("x", NS.DATA_FORMS);
      if (!x) throw new StanzaError("bad-request");
      if (x.attrs.type === "cancel") {
        // §10.1.3: cancelling the configuration of a new room destroys it.
        if (room.locked) {
          for (const occupant of [...room.occupants.values()]) await leave(room, occupant);
          await rooms.forget(room.jid);
        }
        return undefined;
      }
      const wasMembersOnly = room.config.membersOnly;
      const { config, changes } = applyConfigForm(room.config, x, o.maxOccupants);
      room.config = config;
      room.locked = false;
      await rooms.save(room);
      if (rooms.stored(room)) for (const a of room.affiliations.values()) await storage.rooms.setAffiliation(room.jid, a);
      else await storage.rooms.delete(room.jid);
      if (changes.length) {
        toOccupants(room, el("message", { type: "groupchat", from: room.jid }, el("x", { xmlns: MUC_USER }, ...changes.map((code) => el("status", { code })))));
      }
      if (!wasMembersOnly && room.config.membersOnly) {
        for (const occupant of [...room.occupants.values()]) {
          if (RANK[affiliationOf(room, occupant.jid.bare)] < RANK.member) await leave(room, occupant, { codes: [322], item: { role: "none" } });
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
      const moderator = occupantOf(room, from);
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

    // ── IQs: the service and its rooms answer through the server's IQ dispatcher ─────────────
    ctx.iqEntity("muc-service", (to) => services.has(to.domain) && !to.local);
    ctx.iqEntity("muc-room", (to) => services.has(to.domain) && !!to.local && to.isBare);
    ctx.iq("muc-service", "get", NS.DISCO_INFO, ({ payload }) => {
      if (payload.attrs.node !== undefined) throw new StanzaError("service-unavailable");
      return el("query", { xmlns: NS.DISCO_INFO }, el("identity", { category: "conference", type: "text", name: "Chatrooms" }),
        ...[MUC, NS.DISCO_INFO, NS.DISCO_ITEMS, OCCUPANT_ID, STANZA_ID].map((v) => el("feature", { var: v })));
    });
    ctx.iq("muc-service", "get", NS.DISCO_ITEMS, async ({ payload, to }) => {
      if (payload.attrs.node !== undefined) throw new StanzaError("service-unavailable");
      const listed = await rooms.list(to.domain);
      return el("query", { xmlns: NS.DISCO_ITEMS }, ...listed.filter((r) => r.config.public && !r.locked)
        .map((r) => el("item", { jid: r.jid, name: r.config.name || undefined })));
    });

    /** A room IQ handler: the room addressed, loaded, or item-not-found. */
    const inRoom = (handler: (room: Room, request: IqRequest) => Element | undefined | Promise<Element | undefined>) => async (request: IqRequest) => {
      const room = await rooms.load(request.to.bare);
      if (!room) throw new StanzaError("item-not-found", "No such room", "cancel");
      return handler(room, request);
    };
    ctx.iq("muc-room", "get", NS.DISCO_INFO, inRoom((room) => roomInfo(room)));
    ctx.iq("muc-room", "get", NS.DISCO_ITEMS, inRoom(() => el("query", { xmlns: NS.DISCO_ITEMS })));
    for (const type of ["get", "set"] as const) {
      ctx.iq("muc-room", type, NS.VCARD, inRoom((room, { from, payload }) => roomVcard(room, from, type, payload)));
      ctx.iq("muc-room", type, MUC_ADMIN, inRoom((room, { from, payload }) => admin(room, from, type, payload)));
      ctx.iq("muc-room", type, MUC_OWNER, inRoom((room, { from, payload }) => owner(room, from, type, payload)));
      ctx.iq("muc-room", type, MAM, inRoom((room, { from, payload }) => {
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
      }));
    }
    ctx.iq("muc-room", "set", MODERATE, inRoom((room, { from, payload }) => {
      if (payload.name !== "moderate") throw new StanzaError("bad-request");
      return moderate(room, from, payload);
    }));

    /**
     * §17.4 / XEP-0410: IQs to an occupant are passed on, for occupants only; a ping to one's own
     * occupant JID is answered by the room. Who is not in the room gets the same answer whether or
     * not the nick is taken, so it cannot find out who is there (§6.6: disco "MUST return a
     * bad-request error" to a non-occupant). This is routing, not answering: the occupant's
     * client answers, and the sender's routing does not wait for it.
     */
    const toOccupant = async ({ stanza, from, to }: Routed): Promise<Element | undefined> => {
      const ns = childElements(stanza)[0]?.getNS();
      const room = await rooms.load(to.bare);
      const self = room?.nicks.get(from.full);
      if (!room || !self) {
        if (ns === NS.DISCO_INFO || ns === NS.DISCO_ITEMS) throw new StanzaError("bad-request", "Not an occupant", "modify");
        throw new StanzaError("not-acceptable", "Only occupants may send IQs to occupants", "cancel");
      }
      if (ns === "urn:xmpp:ping" && stanza.attrs.type === "get" && self === to.resource) return undefined;
      const occupant = room.occupants.get(to.resource);
      if (!occupant) throw new StanzaError("item-not-found", undefined, "cancel");
      const forwarded = cloneElement(stanza);
      forwarded.attrs.from = `${room.jid}/${self}`;
      forwarded.attrs.to = occupant.jid.full;
      const reply = await router.request(forwarded, 30_000);
      if (reply.attrs.type === "error") throw new StanzaError("service-unavailable");
      return childElements(reply)[0];
    };

    // ── routing ──────────────────────────────────────────────────────────────────────────────
    /**
     * `then` when this node handles the room addressed (or the service itself); HANDLED when the
     * placement passed the stanza on to the room's host.
     */
    const hosted = (routed: Routed, then: () => MaybePromise<ChainResult>): MaybePromise<ChainResult> => {
      if (!routed.to.local) return then();
      const here = placement.admit(routed.to.bare, routed.stanza);
      return here === true ? then() : andThen(here, (admitted) => (admitted ? then() : HANDLED));
    };
    const handle = (work: (routed: Routed) => Promise<Element | undefined | void>, answersIq = false) => (routed: Routed) => {
      if (!services.has(routed.to.domain)) return undefined;
      return hosted(routed, () => run(work, answersIq, routed));
    };
    const run = (work: (routed: Routed) => Promise<Element | undefined | void>, answersIq: boolean, routed: Routed) => {
      return work(routed).then((result) => {
        if (answersIq) send(el("iq", { type: "result", id: routed.stanza.attrs.id, from: routed.to.full, to: routed.from.full }, result ?? undefined));
        return HANDLED;
      }, async (err) => {
        if (!(err instanceof StanzaError)) ctx.log.error({ err, stage: "muc", tag: routed.stanza.name }, "room stanza failed");
        await router.bounce(routed.stanza, err instanceof StanzaError ? err : new StanzaError("internal-server-error"), routed.origin);
        return HANDLED;
      });
    };
    const occupantIq = (routed: Routed) => {
      const type = routed.stanza.attrs.type;
      if (!services.has(routed.to.domain)) return undefined;
      // Answers to the room's own requests are settled by the router of the room's host.
      if (type === "result" || type === "error") return hosted(routed, () => undefined);
      return hosted(routed, () => {
        // Not awaited: the occupant may take up to the request timeout to answer.
        void run(toOccupant, true, routed);
        return HANDLED;
      });
    };
    for (const chain of ["presence/bare", "presence/full"] as const) ctx.chain(chain, handle(async (r) => onPresence(r)), Priority.ADDRESSEE);
    for (const chain of ["message/bare", "message/full"] as const) ctx.chain(chain, handle(async (r) => onMessage(r)), Priority.ADDRESSEE);
    ctx.chain("iq/full", occupantIq, Priority.ADDRESSEE);
    // IQs to a room are answered by the IQ dispatcher on the room's host: elsewhere they are passed on first.
    if (placement.shared) ctx.chain("iq/bare", (routed) => (services.has(routed.to.domain) ? hosted(routed, () => undefined) : undefined), Priority.ADDRESSEE);

    ctx.discoItems("host", ({ owner: host, node }) => {
      if (node !== undefined) return undefined;
      const d = o.domain.replace("{host}", host);
      return services.has(d) ? [el("item", { jid: d, name: "Chatrooms" })] : [];
    });

    // §7.2 status 332: the service is going down; everyone is out, told why. On a cluster only
    // this node stops: its rooms go to other nodes with their occupants (the reaper adopts them
    // and this node's occupants, whose sessions end now, leave there).
    ctx.on("server/stopping", () => {
      if (placement.shared) return rooms.clear();
      for (const room of rooms.occupied()) {
        for (const occupant of room.occupants.values()) send(occupantPresence(room, occupant, occupant, { codes: [332], type: "unavailable", item: { role: "none" } }));
        room.occupants.clear();
        room.nicks.clear();
      }
      rooms.clear();
    });
    // A client that goes away leaves its rooms: one of this node, or (on a cluster) of another.
    const gone = async (full: string) => {
      for (const room of rooms.occupied()) {
        const nick = room.nicks.get(full);
        if (nick) await leave(room, room.occupants.get(nick)!);
      }
    };
    ctx.on("session/closed", ({ session }) => gone(session.jid.full));
    placement.watch({
      adopted: async (jid) => { await rooms.load(jid); },
      lost: (jid) => rooms.evict(jid),
      sessionGone: (full) => void gone(full).catch((err) => ctx.log.error({ err, stage: "muc" }, "removing a departed occupant failed")),
    });
  },
});

/**
 * XEP-0045 1.35 §7.2: the presence a room sends about one occupant to another, as pure functions
 * of the room's state: the muc#user item (with the real JID only for those who may see it, §7.2.4),
 * status codes (110 for the occupant itself), and the XEP-0421 occupant id.
 */
import { el, cloneElement, type Element } from "../../xmpp/xml.js";
import { MUC, MUC_USER, OCCUPANT_ID, affiliationOf, type Occupant, type Room } from "./room.js";

/** What a presence about an occupant carries besides the occupant's own presence. */
export interface PresenceExtras {
  /** Status codes (§15.6); 110 is added for the occupant itself. */
  codes?: number[];
  /** "unavailable" for a departure; otherwise the occupant's own presence is sent. */
  type?: "unavailable";
  /** Replaces attributes of the muc#user item (a kick's role none, a new nick). */
  item?: Record<string, string | undefined>;
  /** Children of the item: actor, reason. */
  children?: Element[];
}

/** Whether the viewer may see real JIDs in the room (§7.2.4: non-anonymous rooms, or moderators). */
export function seesJids(room: Room, viewer: Occupant | undefined): boolean {
  return room.config.whois === "anyone" || viewer?.role === "moderator";
}

/**
 * Large rooms: only the occupant itself and moderators see ordinary occupants' presence changes,
 * beyond `broadcastLimit` occupants (joins and leaves of moderators are still seen by all).
 */
export function seesPresence(room: Room, viewer: Occupant, subject: Occupant, broadcastLimit: number): boolean {
  return viewer === subject || room.occupants.size <= broadcastLimit || viewer.role === "moderator" || subject.role === "moderator";
}

/** The presence about `subject` that `viewer` gets. */
export function occupantPresence(room: Room, subject: Occupant, viewer: Occupant, extras: PresenceExtras = {}): Element {
  const { codes = [], type, item, children = [] } = extras;
  const p = type ? el("presence", { type }) : cloneElement(subject.presence);
  p.attrs.from = `${room.jid}/${subject.nick}`;
  p.attrs.to = viewer.jid.full;
  if (type) delete p.attrs.id;
  p.cnode(el("x", { xmlns: MUC_USER },
    el("item", {
      affiliation: affiliationOf(room, subject.jid.bare), role: subject.role,
      jid: seesJids(room, viewer) ? subject.jid.full : undefined, ...item,
    }, ...children),
    ...(viewer === subject ? [...codes, 110] : codes).map((code) => el("status", { code }))));
  p.cnode(el("occupant-id", { xmlns: OCCUPANT_ID, id: subject.occupantId }));
  return p;
}

/** The occupant's own presence as the room keeps it: without the muc elements the room adds itself. */
export function ownPresence(stanza: Element): Element {
  const presence = cloneElement(stanza);
  for (const child of [...presence.getChildren("x", MUC), ...presence.getChildren("occupant-id", OCCUPANT_ID)]) presence.remove(child);
  return presence;
}

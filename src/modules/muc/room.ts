/**
 * XEP-0045 1.35 room state: what a room is, who is in it, and where it lives. Rooms are in memory
 * while they have occupants; persistent rooms (and their affiliations) are in storage and loaded
 * when addressed, so an idle room costs nothing. On a cluster (a shared `RoomPlacement`) every
 * room is in storage while it exists and its occupants are recorded, so that the node that takes
 * it over from a dead host has it (docs/CLUSTER.md, "Rooms"). Everything here is about one room's
 * data; the handlers (index.ts) change it, rules.ts says whether they may.
 */
import { parseElement } from "../../xmpp/xml-parse.js";
import type { Element } from "../../xmpp/xml.js";
import { tryParseJid, type Jid } from "../../xmpp/jid.js";
import type { RoomPlacement } from "../../placement.js";
import type { RoomAffiliation, Storage } from "../../storage/index.js";
import { VCARD_KEY, vcardPhoto } from "../vcard.js";
import { ROLES, type Actor, type Affiliation, type Role } from "./rules.js";

export const MUC = "http://jabber.org/protocol/muc";
export const MUC_USER = `${MUC}#user`;
export const MUC_ADMIN = `${MUC}#admin`;
export const MUC_OWNER = `${MUC}#owner`;
export const OCCUPANT_ID = "urn:xmpp:occupant-id:0";
export const ROOMCONFIG = `${MUC}#roomconfig`;
export const MODERATE = "urn:xmpp:message-moderate:1";
export const RETRACT = "urn:xmpp:message-retract:1";

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

export interface Occupant {
  nick: string;
  /** Real full JID. */
  jid: Jid;
  role: Role;
  /** The occupant's last presence, without its muc elements. */
  presence: Element;
  occupantId: string;
}

export interface Room {
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

/** A new room's configuration: public, open, unmoderated, semi-anonymous, archived. */
export function defaultConfig(maxOccupants: number): RoomConfig {
  return {
    name: "", description: "", persistent: false, public: true, membersOnly: false, moderated: false, password: "",
    whois: "moderators", maxUsers: maxOccupants, changeSubject: false, allowInvites: true, archiving: true,
  };
}

/** §9.1 "an implementation SHOULD match JIDs in the following order: <user@domain>, <domain>": a banned domain bans its users. */
export function affiliationOf(room: Room, user: string): Affiliation {
  return room.affiliations.get(user)?.affiliation
    ?? (room.affiliations.get(user.slice(user.indexOf("@") + 1))?.affiliation === "outcast" ? "outcast" : "none");
}

/** The sender's standing in the room, as rules.ts weighs it. */
export function actorIn(room: Room, from: Jid): Actor {
  const nick = room.nicks.get(from.full);
  return { affiliation: affiliationOf(room, from.bare), role: (nick && room.occupants.get(nick)?.role) || "none" };
}

/** Someone of this user, on any of their resources, is in the room (and so gave its password). */
export function isPresent(room: Room, user: string): boolean {
  return [...room.occupants.values()].some((x) => x.jid.bare === user);
}

/** The occupant who sent from this real full JID, if it is in the room. */
export function occupantOf(room: Room, from: Jid): Occupant | undefined {
  const nick = room.nicks.get(from.full);
  return nick === undefined ? undefined : room.occupants.get(nick);
}

/** An occupant as the host records it for the next host (docs/CLUSTER.md, "Rooms"). */
export function encodeOccupant(occupant: Occupant): string {
  return JSON.stringify({ jid: occupant.jid.full, role: occupant.role, presence: occupant.presence.toString(), occupantId: occupant.occupantId });
}

/** undefined for a record that is not an occupant's (corrupt, or written by something else). */
export function decodeOccupant(nick: string, record: string): Occupant | undefined {
  try {
    const r = JSON.parse(record) as Record<string, unknown>;
    const jid = typeof r.jid === "string" ? tryParseJid(r.jid) : undefined;
    const role = ROLES.find((x) => x === r.role);
    if (!jid || !role || typeof r.presence !== "string" || typeof r.occupantId !== "string") return undefined;
    return { nick, jid, role, presence: parseElement(r.presence), occupantId: r.occupantId };
  } catch {
    return undefined;
  }
}

/** The XEP-0153 photo hash of a stored vCard, "" without a photo. */
export function photoHash(vcard: string | undefined): string {
  return (vcard ? vcardPhoto(parseElement(vcard))?.hash : undefined) ?? "";
}

/** The rooms of a service: in memory while occupied, in storage while persistent. */
export class RoomDirectory {
  private readonly live = new Map<string, Room>();

  /**
   * `adopted`: a room loaded with occupants a previous host recorded; those whose sessions are
   * gone leave there (it may empty the room).
   */
  constructor(private readonly storage: Storage, private readonly maxOccupants: number, private readonly placement: RoomPlacement,
    private readonly adopted: (room: Room) => Promise<void>) {}

  /** The room, from memory or storage; undefined when it does not exist. */
  async load(jid: string): Promise<Room | undefined> {
    const live = this.live.get(jid);
    if (live) return live;
    const stored = await this.storage.rooms.get(jid);
    if (!stored) return undefined;
    const again = this.live.get(jid); // loaded meanwhile
    if (again) return again;
    const room: Room = {
      jid, config: this.storedConfig(stored.config),
      subject: stored.subject ? parseElement(stored.subject) : undefined, locked: false, createdAt: stored.createdAt,
      occupants: new Map(), nicks: new Map(),
      affiliations: new Map((await this.storage.rooms.affiliations(jid)).map((a) => [a.jid, a])),
      avatarHash: photoHash(await this.storage.documents.get(jid, VCARD_KEY)),
    };
    const recorded = this.placement.shared ? await this.placement.occupants(jid) : undefined;
    const loaded = this.live.get(jid);
    if (loaded) return loaded;
    this.live.set(jid, room);
    if (!recorded?.size) return room;
    for (const [nick, record] of recorded) {
      const occupant = decodeOccupant(nick, record);
      if (!occupant) continue;
      room.occupants.set(nick, occupant);
      room.nicks.set(occupant.jid.full, nick);
    }
    await this.adopted(room);
    // Everyone recorded may have been gone: the room left memory, and is loaded again as stored.
    return this.live.get(jid) ?? this.load(jid);
  }

  /** Kept in storage while it exists: persistent rooms, and every room of a cluster. */
  stored(room: Room): boolean {
    return room.config.persistent || this.placement.shared;
  }

  /** The room in memory, without a storage lookup. */
  inMemory(jid: string): Room | undefined {
    return this.live.get(jid);
  }

  /** A new room, locked, with its creator as owner (§10.1.1). */
  create(jid: string, owner: string): Room {
    const room: Room = { jid, config: defaultConfig(this.maxOccupants), subject: undefined, locked: true, createdAt: Date.now(), occupants: new Map(), nicks: new Map(), affiliations: new Map(), avatarHash: "" };
    room.affiliations.set(owner, { jid: owner, affiliation: "owner", nick: "", reason: "" });
    this.live.set(jid, room);
    return room;
  }

  async save(room: Room): Promise<void> {
    if (!this.stored(room)) return;
    await this.storage.rooms.put({ jid: room.jid, config: JSON.stringify(room.config), subject: room.subject?.toString() ?? "", createdAt: room.createdAt });
  }

  /** A new room on a cluster is stored at once, with its owner, for a node that takes it over. */
  async share(room: Room): Promise<void> {
    await this.save(room);
    for (const a of room.affiliations.values()) await this.storage.rooms.setAffiliation(room.jid, a);
  }

  /** Out of memory without a word: another node hosts the room now. */
  evict(jid: string): void {
    this.live.delete(jid);
  }

  /** Everything stored for a room that ends: a new room of the same name starts empty. */
  async forget(jid: string): Promise<void> {
    this.live.delete(jid);
    this.placement.release(jid, true);
    await this.storage.rooms.delete(jid);
    await this.storage.archive.removeOwner(jid);
    await this.storage.documents.delete(jid, VCARD_KEY);
  }

  /** A room nobody is in leaves memory; a temporary one is gone. */
  async unloadIfEmpty(room: Room): Promise<void> {
    if (room.occupants.size > 0) return;
    this.live.delete(room.jid);
    if (!room.config.persistent) await this.forget(room.jid);
    else this.placement.release(room.jid, true);
  }

  /** Rooms of a service domain, stored or in memory, for the directory (disco#items). */
  async list(domain: string): Promise<Array<{ jid: string; config: RoomConfig; locked: boolean }>> {
    const listed = (await this.storage.rooms.list(domain)).map((r) => ({ jid: r.jid, config: this.storedConfig(r.config), locked: this.live.get(r.jid)?.locked ?? false }));
    for (const r of this.live.values()) {
      if (r.jid.endsWith(`@${domain}`) && !listed.some((l) => l.jid === r.jid)) listed.push({ jid: r.jid, config: r.config, locked: r.locked });
    }
    return listed;
  }

  /** Every room in memory (the occupied ones). */
  occupied(): Room[] {
    return [...this.live.values()];
  }

  /** Ends every room in memory (the service stops); on a cluster, another node takes them with their occupants. */
  clear(): void {
    for (const jid of this.live.keys()) this.placement.release(jid, false);
    this.live.clear();
  }

  private storedConfig(json: string): RoomConfig {
    return { ...defaultConfig(this.maxOccupants), ...(JSON.parse(json) as Partial<RoomConfig>) };
  }
}

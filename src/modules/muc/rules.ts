/**
 * XEP-0045 Multi-User Chat 1.35: who may do what in a room, as pure decisions. Each function
 * answers with the StanzaError the room sends, or undefined when the action is allowed; muc.ts
 * asks before it changes anything. The tables these follow are §5.1.2 (role privileges), §5.1.3
 * (role changes), §5.2.1 (affiliation privileges), §5.2.2 (affiliation changes), and the rules
 * of §7.2 (entering), §8.2–§8.5 (moderators), §9.1–§9.8 (admins) and §10.6–§10.8 (owners).
 */
import { StanzaError } from "../../errors.js";

export type Affiliation = "owner" | "admin" | "member" | "none" | "outcast";
export type Role = "moderator" | "participant" | "visitor" | "none";

export const AFFILIATIONS: readonly Affiliation[] = ["owner", "admin", "member", "none", "outcast"];
export const ROLES: readonly Role[] = ["moderator", "participant", "visitor", "none"];

/** §5.2.1: "an owner can do anything an admin can do, and an admin can do anything a member can do". */
export const RANK: Record<Affiliation, number> = { owner: 4, admin: 3, member: 2, none: 1, outcast: 0 };

const isAdmin = (a: Affiliation) => a === "owner" || a === "admin";

/** §5.1.2 table 2: the role an occupant enters with. */
export function defaultRole(affiliation: Affiliation, moderated: boolean): Role {
  if (isAdmin(affiliation)) return "moderator";
  return moderated && affiliation !== "member" ? "visitor" : "participant";
}

export interface RoomAccess {
  locked: boolean;
  membersOnly: boolean;
  /** "" when the room has none. */
  password: string;
}

/**
 * §7.2: whether a user may enter (or, XEP-0313 §6.1.2, read the archive of) a room. `password` is what
 * the user gave, or `true` when the user proved it already by being in the room. Admins and
 * owners need no password; a locked room (§7.2.10, §10.1) is there only for its owner.
 */
export function admission(room: RoomAccess, affiliation: Affiliation, password: string | true | undefined): StanzaError | undefined {
  if (room.locked && affiliation !== "owner") return new StanzaError("item-not-found", "The room is locked until its owner configures it", "cancel");
  // §7.2.7 "If the user has been banned from the room …, the service MUST deny access to the room"
  if (affiliation === "outcast") return new StanzaError("forbidden", "You are banned from this room", "auth");
  // §7.2.6 "If the room is members-only but the user is not on the member list, the service MUST deny access"
  if (room.membersOnly && RANK[affiliation] < RANK.member) return new StanzaError("registration-required", "This room is for members only", "auth");
  // §7.2.5 "If the room requires a password and the user did not supply one …, the service MUST deny access"
  if (room.password && !isAdmin(affiliation) && password !== true && password !== room.password) {
    return new StanzaError("not-authorized", "A password is required", "auth");
  }
  return undefined;
}

export interface Actor { affiliation: Affiliation; role: Role }

/**
 * §8.2–§8.5, §9.6–§9.8: may `actor` (an occupant) set `target`'s role to `role`? `target` is
 * undefined when no occupant has the nick asked for.
 *
 * - Only moderators change roles at all (§8: "MUST be denied if … not … one of the moderators", forbidden).
 * - Nobody changes the role of an occupant of higher affiliation (§8.2 not-allowed: "a moderator who
 *   is a member attempts to kick an admin, or a moderator who is a member or admin attempts to kick
 *   an owner"; §5.1.3 footnote *).
 * - Granting or revoking moderator status is for admins and owners (§5.1.3, §5.2.1 "Assign and
 *   Remove Moderator Role", §9.6, §9.7; §9: anyone else gets forbidden). That covers kicking a
 *   moderator too: §5.1.3 "Moderator → None: … be kicked by an admin or owner".
 * - The voice and moderator status of admins and owners is never removed, short of a kick (§8.4 "a
 *   service MUST NOT allow the voice privileges of an admin or owner to be removed by anyone",
 *   §9.7 "MUST NOT be allowed to revoke moderator status from a user whose affiliation is owner or admin").
 * - Nobody revokes the voice of an occupant of higher affiliation (§8.5 "nor from any user with a
 *   higher affiliation than the moderator making the request"; §8.4 says "at or above", which would
 *   leave an unaffiliated moderator unable to silence anyone, and Prosody and ejabberd read it as §8.5).
 */
export function roleChange(actor: Actor, target: Actor | undefined, role: Role): StanzaError | undefined {
  if (actor.role !== "moderator") return new StanzaError("forbidden", "Only moderators change roles", "auth");
  // Only now: who may not change roles does not learn which nicks are in the room.
  if (!target) return new StanzaError("item-not-found", "No such occupant", "cancel");
  if (role === target.role) return undefined;
  if (RANK[target.affiliation] > RANK[actor.affiliation]) return new StanzaError("not-allowed", "That occupant's affiliation is higher than yours", "cancel");
  if ((role === "moderator" || target.role === "moderator") && !isAdmin(actor.affiliation)) {
    return new StanzaError("forbidden", "Only admins and owners grant or revoke moderator status", "auth");
  }
  if (role !== "none" && role !== "moderator" && isAdmin(target.affiliation)) {
    return new StanzaError("not-allowed", "Admins and owners keep their voice and moderator status", "cancel");
  }
  return undefined;
}

/**
 * §9.1–§9.5, §10.6–§10.8 and the §5.2.2 table: may a user of affiliation `actor` change `target`'s
 * affiliation to `affiliation`? `otherOwners` counts the owners besides the target.
 *
 * - Admins and owners only (§9: forbidden otherwise).
 * - Admins move users between outcast, none and member, and only users below admin (§5.2.2; the
 *   owner and admin lists are the owners' (§10.6–§10.8: forbidden); "if an admin attempts to ban an
 *   owner, the service MUST deny the request and return a not-allowed error" (§9.1)).
 * - Nobody bans themselves (§9.1 "MUST deny the request and return a conflict error").
 * - A room keeps an owner (§10.7 "MUST NOT allow an owner to revoke his or her own owner status if
 *   there are no other owners", conflict).
 */
export function affiliationChange(actor: Affiliation, target: { affiliation: Affiliation; self: boolean }, affiliation: Affiliation, otherOwners: number): StanzaError | undefined {
  if (!isAdmin(actor)) return new StanzaError("forbidden", "Only admins and owners change affiliations", "auth");
  if (affiliation === target.affiliation) return undefined;
  if (affiliation === "outcast" && target.self) return new StanzaError("conflict", "You cannot ban yourself", "cancel");
  if (actor === "admin") {
    if (isAdmin(affiliation)) return new StanzaError("forbidden", "Only owners grant admin or owner status", "auth");
    if (isAdmin(target.affiliation)) {
      return affiliation === "outcast"
        ? new StanzaError("not-allowed", "Admins cannot ban admins or owners", "cancel")
        : new StanzaError("forbidden", "Only owners revoke admin or owner status", "auth");
    }
  }
  if (target.affiliation === "owner" && otherOwners === 0) return new StanzaError("conflict", "A room needs an owner", "cancel");
  return undefined;
}

/**
 * §9.2, §9.5, §10.5, §10.8: who may read the lists. Outcasts and members are for admins and
 * owners; admins and owners for owners ("MUST return a forbidden error … in semi-anonymous rooms";
 * we do not open them in non-anonymous rooms either). The voice and moderator lists (§8.5, §9.8)
 * are for moderators.
 */
export function listAccess(actor: Actor, list: { affiliation: Affiliation } | { role: Role }): StanzaError | undefined {
  const allowed = "role" in list ? actor.role === "moderator" : isAdmin(list.affiliation) ? actor.affiliation === "owner" : isAdmin(actor.affiliation);
  return allowed ? undefined : new StanzaError("forbidden", undefined, "auth");
}

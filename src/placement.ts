/**
 * Where a group chat room is handled (docs/CLUSTER.md, "Rooms"). A XEP-0045 room has one state and
 * one order of messages, so one process handles its stanzas at a time: on a single node that is
 * always this one (`LocalRoomPlacement`); on a cluster it is the node holding the room's lease
 * (`ClusterRoomPlacement`, src/cluster/rooms.ts). The MUC module asks this interface and never
 * knows which of the two it has.
 */
import type { MaybePromise } from "./maybe-async.js";
import type { Router } from "./xmpp/router.js";
import type { SessionView } from "./xmpp/sessions.js";
import { shareChildren, type Element } from "./xmpp/xml.js";

/** What the placement tells the rooms module about rooms and occupants it did not see change itself. */
export interface PlacementEvents {
  /** This node took the room over from a host that died: load it (its occupants come from the record). */
  adopted(room: string): Promise<void>;
  /** Another node hosts the room now (this node lost its lease): it leaves memory without a word. */
  lost(room: string): void;
  /** A session on another node ended (unbound, or its node died); an occupant with that JID is gone. */
  sessionGone(full: string): void;
}

export interface RoomPlacement {
  /**
   * Whether rooms and their occupant lists are kept where another node finds them: then a
   * temporary room is stored too while it exists, and occupants are recorded.
   */
  readonly shared: boolean;
  watch(events: PlacementEvents): void;
  /**
   * Whether this node handles a stanza for `room` (a bare room JID): true when it hosts the room
   * or took it now that nobody did; false when the stanza went to the node that hosts it.
   * Synchronous for a room hosted here (always, on a single node).
   */
  admit(room: string, stanza: Element): MaybePromise<boolean>;
  /** A room message (without 'to') to each recipient (full JIDs): the same bytes with each one's 'to'. */
  broadcast(message: Element, recipients: Iterable<string>): void;
  /** The room's occupants as the last host recorded them: nick → record (opaque). */
  occupants(room: string): MaybePromise<ReadonlyMap<string, string>>;
  recordOccupant(room: string, nick: string, record: string): void;
  forgetOccupant(room: string, nick: string): void;
  /** The room left memory: another node may host it next. Its occupant record goes with `forget`. */
  release(room: string, forget: boolean): void;
}

/** One node: every room is here, nothing is recorded, a broadcast is a loop over local sessions. */
export class LocalRoomPlacement implements RoomPlacement {
  readonly shared = false;
  private static readonly none: ReadonlyMap<string, string> = new Map();

  constructor(private readonly sessions: SessionView, private readonly router: Pick<Router, "deliver" | "route">) {}

  watch(): void {}

  admit(): true {
    return true;
  }

  broadcast(message: Element, recipients: Iterable<string>): void {
    deliverCopies(message, recipients, this.sessions, this.router);
  }

  occupants(): ReadonlyMap<string, string> {
    return LocalRoomPlacement.none;
  }

  recordOccupant(): void {}
  forgetOccupant(): void {}
  release(): void {}
}

/**
 * Serialized once: each recipient gets the same bytes with its own 'to', written straight to its
 * session (a groupchat copy has nothing for the message chains to do); one without a session here
 * is routed.
 */
export function deliverCopies(message: Element, recipients: Iterable<string>, sessions: SessionView, router: Pick<Router, "deliver" | "route">): void {
  const copyFor = shareChildren(message);
  for (const to of recipients) {
    const copy = copyFor({ ...message.attrs, to });
    const session = sessions.get(to);
    if (session) router.deliver(session, copy);
    else void router.route(copy);
  }
}

/**
 * XEP-0163 1.2.2 §4 for contacts on other servers: which of their resources are available to a
 * local account owner, and what each wants (+notify, learned from XEP-0115 caps). A local
 * session's interest is known from the session itself; a remote resource's is kept here, from the
 * presence its server sends to the owner's bare JID (§2.4: "the contact's client includes extended
 * XEP-0115 information in the presence notifications it sends to the account owner") and the caps
 * module's answer. Directed presence does not count (§2.3 strongly advises against it "for the
 * purpose of establishing implicit PEP subscriptions").
 *
 * Memory is bounded whatever remote servers send: a fixed number of contacts (oldest first out),
 * of resources per contact and of owners per resource. A resource past a limit is not tracked —
 * it gets no notifications, which is what a contact the service knows nothing of gets anyway.
 */
import { BoundedMap } from "../bounded-map.js";
import type { Jid } from "../xmpp/jid.js";

interface RemoteResource {
  features: ReadonlySet<string> | undefined;
  /** Local bare JIDs this resource sent available presence to. */
  owners: Set<string>;
}

export interface RemoteInterestLimits { contacts: number; resourcesPerContact: number; ownersPerResource: number }

export class RemoteInterest {
  /** Remote bare JID → resource → state. */
  private readonly contacts: BoundedMap<string, Map<string, RemoteResource>>;

  constructor(private readonly limits: RemoteInterestLimits) {
    this.contacts = new BoundedMap(limits.contacts);
  }

  /**
   * `contact` (a full JID) sent available presence to `owner`. Returns its features when this made
   * it newly available to that owner and they are known: the owner's last items are due (§4.3.4).
   */
  available(owner: string, contact: Jid): ReadonlySet<string> | undefined {
    const resource = this.resource(contact);
    if (!resource || resource.owners.has(owner) || resource.owners.size >= this.limits.ownersPerResource) return undefined;
    resource.owners.add(owner);
    return resource.features;
  }

  /** The state of `contact`, made when missing and its contact has room for another resource. */
  private resource(contact: Jid): RemoteResource | undefined {
    let resources = this.contacts.get(contact.bare);
    if (!resources) this.contacts.set(contact.bare, (resources = new Map()));
    let resource = resources.get(contact.resource);
    if (!resource && resources.size < this.limits.resourcesPerContact) resources.set(contact.resource, (resource = { features: undefined, owners: new Set() }));
    return resource;
  }

  unavailable(owner: string, contact: Jid): void {
    const resources = this.contacts.get(contact.bare);
    const resource = resources?.get(contact.resource);
    if (!resources || !resource) return;
    resource.owners.delete(owner);
    if (resource.owners.size === 0) resources.delete(contact.resource);
    if (resources.size === 0) this.contacts.delete(contact.bare);
  }

  /**
   * The caps module learned `contact`'s features (which may come before the presence that showed
   * them is seen here). Returns the owners it is available to that now owe it their last items:
   * all of them the first time, again when it shows a +notify it did not.
   */
  learned(contact: Jid, features: ReadonlySet<string>): string[] {
    const resource = this.resource(contact);
    if (!resource) return [];
    const before = resource.features;
    resource.features = features;
    const grew = before === undefined || [...features].some((f) => f.endsWith("+notify") && !before.has(f));
    return grew ? [...resource.owners] : [];
  }

  /** The full JIDs of `contactBare`'s resources available to `owner` that show `node`+notify. */
  wanting(owner: string, contactBare: string, node: string): string[] {
    const out: string[] = [];
    for (const [name, resource] of this.contacts.get(contactBare) ?? []) {
      if (resource.owners.has(owner) && resource.features?.has(`${node}+notify`)) out.push(`${contactBare}/${name}`);
    }
    return out;
  }
}

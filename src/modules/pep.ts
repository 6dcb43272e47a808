/**
 * XEP-0163 Personal Eventing Protocol 1.2.2: a XEP-0060 Publish-Subscribe 1.26 service on every
 * account, for avatars, nicknames, OMEMO keys, bookmarks and private data (XEP-0223).
 *
 * - The account owner publishes; nodes are created on first publish, with publish-options as their
 *   configuration, and a publish whose options contradict an existing node fails with conflict +
 *   <precondition-not-met/> (XEP-0060 §7.1.5) so the client can reconfigure and retry.
 * - Access models open / presence / roster / whitelist decide who may read (XEP-0060 §4.5).
 * - Notifications follow presence subscriptions and "+notify" interest from entity capabilities
 *   (XEP-0163 §4, via the caps module): the owner's own resources and subscribed contacts with
 *   +notify get each publish; a resource that appears gets the last item of each node it wants.
 *   Contacts on other servers are notified at the full JIDs their presence to the owner came
 *   from (§4.3.1; ./pep-remote.ts keeps them).
 * Explicit subscriptions (XEP-0060 §6.1) are not offered — PEP subscriptions are presence-based.
 */
import { randomBytes } from "node:crypto";
import { z } from "zod";
import { defineModule } from "../module.js";
import { el, childElements, firstChildElement, type Element } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { parseJid, type Jid } from "../xmpp/jid.js";
import { StanzaError } from "../errors.js";
import { buildForm, readForm, type SubmittedForm } from "../xmpp/forms.js";
import { NODE_CONFIG, PUBSUB, applyNodeConfigForm, defaultNodeConfig, loadNodeConfig, nodeConfigForm, nodeReadError, pubsubError, type NodeConfig } from "./pep-config.js";
import { parseElement } from "../xmpp/xml-parse.js";
import type { Session } from "../xmpp/sessions.js";
import type { PubSubItem } from "../storage/index.js";
import { HANDLED, Priority, type Routed } from "../hooks.js";
import { RemoteInterest } from "./pep-remote.js";

declare module "../hooks.js" {
  interface Chains {
    /** The server publishes on a user's behalf (avatar conversion, bookmarks); options as publish-options fields. */
    "pep/publish": { owner: string; node: string; id: string; payload: Element; options: Record<string, string | readonly string[]> };
    "pep/retract": { owner: string; node: string; id: string };
  }
  interface Events {
    /** `byServer`: published through "pep/publish", not by a client. */
    "pep/published": { owner: string; node: string; id: string; payload: Element; byServer: boolean };
    "pep/retracted": { owner: string; node: string; ids: string[] };
    /** A node was created, or its owner changed its configuration (the access model, among others). */
    "pep/configured": { owner: string; node: string };
    "pep/deleted": { owner: string; node: string };
  }
}

const OWNER = `${PUBSUB}#owner`;
export const PUBSUB_EVENT = `${PUBSUB}#event`;
const PUBLISH_OPTIONS = `${PUBSUB}#publish-options`;

/**
 * XEP-0163 §4: a session's "+notify" features as its flags. What the session's flags need to gain
 * and lose so that they hold exactly the "+notify" features among `features` (other flags stay).
 */
export function notifyFlagsChange(flags: ReadonlySet<string>, features: ReadonlySet<string>): { added: string[]; removed: string[] } {
  const added = [...features].filter((f) => f.endsWith("+notify") && !flags.has(f));
  const removed = [...flags].filter((f) => f.endsWith("+notify") && !features.has(f));
  return { added, removed };
}

export const pep = defineModule({
  name: "pep",
  implements: [
    { spec: "XEP-0163", version: "1.2.2" },
    { spec: "XEP-0060", version: "1.26.0", note: "PEP subset: no explicit subscriptions, collections or affiliations management" },
    { spec: "XEP-0223", version: "1.1.1" },
  ],
  dependsOn: ["roster", "presence", "caps", "disco"],
  options: z.strictObject({
    /** What pubsub#max_items 'max' means, and the largest number a node may keep. */
    maxItems: z.number().int().min(1).default(256),
    /** Nodes per account. */
    maxNodes: z.number().int().min(1).default(256),
    /** Contacts on other servers whose available resources are tracked for notifications (oldest first out). */
    maxRemoteContacts: z.number().int().min(1).default(10_000),
  }),
  start(ctx) {
    const { storage, router, sessions } = ctx;
    /** Local sessions whose caps are known (their first "session/caps" sends the last items). */
    const capsKnown = new WeakSet<Session>();
    const remote = new RemoteInterest({ contacts: ctx.options.maxRemoteContacts, resourcesPerContact: 16, ownersPerResource: 1000 });

    ctx.identity("account", { category: "pubsub", type: "pep" });
    for (const f of ["", "#access-open", "#access-presence", "#access-roster", "#access-whitelist", "#auto-create", "#auto-subscribe",
      "#config-node", "#create-and-configure", "#create-nodes", "#delete-items", "#delete-nodes", "#filtered-notifications",
      "#item-ids", "#last-published", "#persistent-items", "#presence-notifications", "#publish", "#publish-options",
      "#purge-nodes", "#retract-items", "#retrieve-default", "#retrieve-items"]) {
      ctx.feature("account", `${PUBSUB}${f}`);
    }

    // ── configuration ────────────────────────────────────────────────────────────────────────
    const loadConfig = (owner: string, node: string) => loadNodeConfig(storage, owner, node);
    const readError = (owner: string, requester: string, config: NodeConfig) => nodeReadError(storage, owner, requester, config);
    const mustExist = async (owner: string, node: string) => {
      const config = await loadConfig(owner, node);
      if (!config) throw new StanzaError("item-not-found", "No such node");
      return config;
    };

    // ── notifications ────────────────────────────────────────────────────────────────────────
    // The +notify features are session flags, so that on a cluster the publisher's node sees a
    // remote session's interest too (docs/CLUSTER.md, "Per-session state").
    const interested = (session: Session, node: string) => session.flags.has(`${node}+notify`);
    /** The full JIDs of a contact's available resources that want this node: sessions here, or remote ones. */
    const wantingResources = (owner: string, contact: string, node: string): string[] =>
      router.isLocalDomain(parseJid(contact).domain)
        ? sessions.available(contact).filter((s) => interested(s, node)).map((s) => s.jid.full)
        : remote.wanting(owner, contact, node);
    /** The owner's resources and its presence subscribers' resources that want this node and may read it. */
    const recipients = async (owner: string, node: string, config: NodeConfig): Promise<string[]> => {
      const out = sessions.available(owner).filter((s) => interested(s, node)).map((s) => s.jid.full);
      if (config.access_model === "whitelist") return out;
      const roster = await storage.roster.get(owner);
      for (const item of roster.items) {
        if (item.subscription !== "from" && item.subscription !== "both") continue;
        const wanting = wantingResources(owner, item.jid, node);
        if (wanting.length && !(await readError(owner, item.jid, config))) out.push(...wanting);
      }
      return out;
    };
    const notify = (owner: string, targets: readonly string[], event: Element) => {
      for (const to of targets) {
        // Routed, not written directly, so blocking and every other rule applies.
        void router.route(el("message", { from: owner, to, type: "headline", id: `pep-${randomBytes(6).toString("base64url")}` },
          el("event", { xmlns: PUBSUB_EVENT }, event)));
      }
    };
    const itemElement = (item: PubSubItem) => {
      const node = el("item", { id: item.id });
      if (item.payload) node.cnode(parseElement(item.payload));
      return node;
    };

    /**
     * XEP-0163 §4.3.4: "a PEP service MUST send the last published item to ... all newly-available
     * resources for each subscriber": `owner`'s last items to the resource `to` (of `reader`) that
     * `wants` their nodes.
     */
    const sendLastItemsOf = async (owner: string, to: string, reader: string, wants: (node: string) => boolean) => {
      for (const node of await storage.pubsub.nodes(owner)) {
        if (!wants(node)) continue;
        const config = await loadConfig(owner, node);
        if (!config || config.send_last_published_item !== "on_sub_and_presence" || await readError(owner, reader, config)) continue;
        const [last] = await storage.pubsub.items(owner, node, { max: 1 });
        if (!last) continue;
        void router.route(el("message", { from: owner, to, type: "headline", id: `pep-${randomBytes(6).toString("base64url")}` },
          el("event", { xmlns: PUBSUB_EVENT }, el("items", { node }, itemElement(last))),
          el("delay", { xmlns: NS.DELAY, from: owner, stamp: new Date(last.publishedAt).toISOString() })));
      }
    };
    /** A local session that shows +notify: its own account's last items, and those of the local contacts it is subscribed to. */
    const sendLastItems = async (session: Session) => {
      const user = session.jid.bare;
      const roster = await storage.roster.get(user);
      const owners = [user, ...roster.items.filter((i) => (i.subscription === "to" || i.subscription === "both") && router.isLocalDomain(i.jid.split("@")[1] ?? "")).map((i) => i.jid)];
      for (const owner of owners) await sendLastItemsOf(owner, session.jid.full, user, (node) => interested(session, node));
    };
    /** A remote contact's resource, newly available to `owner`, with the features its caps showed. */
    const sendLastItemsToContact = (owner: string, contact: Jid, features: ReadonlySet<string>) => {
      const send = async () => {
        // Its presence reaching the owner says only that the owner is subscribed to the contact;
        // the subscribers of §4.3.4 are the contacts subscribed to the owner (§4.1 auto-subscribe).
        const item = await storage.roster.getItem(owner, contact.bare);
        if (item?.subscription !== "from" && item?.subscription !== "both") return;
        await sendLastItemsOf(owner, contact.full, contact.bare, (node) => features.has(`${node}+notify`));
      };
      send().catch((err) => ctx.log.error({ err, stage: "pep" }, "sending last items to a remote contact failed"));
    };
    ctx.on("session/caps", ({ session, features }) => {
      const first = !capsKnown.has(session);
      capsKnown.add(session);
      const change = notifyFlagsChange(session.flags, features);
      for (const flag of change.removed) session.flags.delete(flag);
      for (const flag of change.added) session.flags.add(flag);
      if (change.added.length || change.removed.length) void ctx.emit("session/changed", { session });
      // Sent when interest first becomes known, or when it grows.
      if (first || change.added.length) {
        sendLastItems(session).catch((err) => ctx.log.error({ err, stage: "pep" }, "sending last items failed"));
      }
    });

    // Contacts on other servers: their presence to an owner's bare JID, and what their caps show.
    ctx.chain("presence/bare", ({ stanza, from, to, origin }: Routed) => {
      if (origin || !from.resource || router.isLocalDomain(from.domain)) return undefined;
      const type = stanza.attrs.type;
      if (type === "unavailable") remote.unavailable(to.bare, from);
      else if (type === undefined) {
        const features = remote.available(to.bare, from);
        if (features) sendLastItemsToContact(to.bare, from, features);
      }
      return undefined;
    }, Priority.AMEND);
    ctx.on("contact/caps", ({ contact, features }) => {
      for (const owner of remote.learned(contact, features)) sendLastItemsToContact(owner, contact, features);
    });

    // ── requests ─────────────────────────────────────────────────────────────────────────────
    const nodeOf = (action: Element): string => {
      const node = action.attrs.node;
      if (!node) throw pubsubError("bad-request", "nodeid-required");
      if (node.length > 1024) throw new StanzaError("not-acceptable", "Node name too long");
      return node;
    };
    const optionsOf = (container: Element | undefined, formType: string): SubmittedForm | undefined => {
      const x = container?.getChild("x", NS.DATA_FORMS);
      if (!x) return undefined;
      const form = readForm(x);
      if (form.formType !== undefined && form.formType !== formType) throw new StanzaError("bad-request", `FORM_TYPE must be ${formType}`);
      return form;
    };
    const createNode = async (owner: string, node: string, config: NodeConfig) => {
      if ((await storage.pubsub.nodes(owner)).length >= ctx.options.maxNodes) throw new StanzaError("not-allowed", "Too many nodes", "cancel");
      const created = await storage.pubsub.createNode(owner, node, JSON.stringify(config));
      // Awaited, so what depends on a node's access model knows it before the request is answered.
      if (created) await ctx.emit("pep/configured", { owner, node });
      return created;
    };

    const publish = async (owner: string, publisher: Jid, action: Element, publishOptions: SubmittedForm | undefined, byServer = false) => {
      const node = nodeOf(action);
      const items = action.getChildren("item");
      if (items.length !== 1) throw pubsubError("bad-request", items.length === 0 ? "item-required" : "invalid-payload", "Publish exactly one item");
      const payloads = childElements(items[0]!);
      if (payloads.length !== 1) throw pubsubError("bad-request", payloads.length === 0 ? "payload-required" : "invalid-payload");
      let config = await loadConfig(owner, node);
      if (!config) {
        // XEP-0060 §7.1.4 auto-create, configured by the publish-options.
        config = publishOptions ? applyNodeConfigForm(defaultNodeConfig(), publishOptions, ctx.options.maxItems) : defaultNodeConfig();
        await createNode(owner, node, config);
      } else if (publishOptions) {
        const wanted = applyNodeConfigForm(config, publishOptions, ctx.options.maxItems);
        if (JSON.stringify(wanted) !== JSON.stringify(config)) {
          // XEP-0060 §7.1.5: "the service MUST reject the publication with a <conflict/> error condition".
          throw pubsubError("conflict", "precondition-not-met", "The node's configuration differs from the publish options");
        }
      }
      const item: PubSubItem = { id: items[0]!.attrs.id || randomBytes(12).toString("base64url"), publisher: publisher.bare, payload: payloads[0]!.toString(), publishedAt: Date.now() };
      if (config.persist_items) await storage.pubsub.publish(owner, node, item, config.max_items);
      notify(owner, await recipients(owner, node, config), el("items", { node }, itemElement(item)));
      void ctx.emit("pep/published", { owner, node, id: item.id, payload: payloads[0]!, byServer });
      return el("pubsub", { xmlns: PUBSUB }, el("publish", { node }, el("item", { id: item.id })));
    };

    const retract = async (owner: string, action: Element) => {
      const node = nodeOf(action);
      const config = await mustExist(owner, node);
      const ids = action.getChildren("item").map((i) => i.attrs.id);
      if (ids.length === 0 || ids.some((id) => !id)) throw pubsubError("bad-request", "item-required");
      for (const id of ids) if (!(await storage.pubsub.retract(owner, node, id!))) throw new StanzaError("item-not-found", `No item '${id}'`);
      void ctx.emit("pep/retracted", { owner, node, ids: ids as string[] });
      const wanted = action.attrs.notify === "true" || action.attrs.notify === "1" || config.notify_retract;
      if (wanted) notify(owner, await recipients(owner, node, config), el("items", { node }, ...ids.map((id) => el("retract", { id }))));
      return undefined;
    };

    const retrieve = async (owner: string, requester: Jid, action: Element) => {
      const node = nodeOf(action);
      const config = await mustExist(owner, node);
      const denied = await readError(owner, requester.bare, config);
      if (denied) throw denied;
      const ids = action.getChildren("item").map((i) => i.attrs.id).filter((id): id is string => !!id);
      const max = action.attrs.max_items === undefined ? undefined : Number(action.attrs.max_items);
      if (max !== undefined && (!Number.isInteger(max) || max < 0)) throw new StanzaError("bad-request", "max_items must be a non-negative integer");
      const items = await storage.pubsub.items(owner, node, { ...(ids.length ? { ids } : {}), ...(max !== undefined ? { max } : {}) });
      // Oldest first, as they were published.
      return el("pubsub", { xmlns: PUBSUB }, el("items", { node }, ...items.reverse().map(itemElement)));
    };

    ctx.chain("pep/publish", async ({ owner, node, id, payload, options }) => {
      const action = el("publish", { node }, el("item", { id }, payload));
      const form = readForm(buildForm("submit", PUBLISH_OPTIONS, Object.entries(options).map(([name, value]) => ({ var: name, values: typeof value === "string" ? [value] : value }))));
      await publish(owner, parseJid(owner), action, form, true);
      return HANDLED;
    });

    ctx.chain("pep/retract", async ({ owner, node, id }) => {
      await retract(owner, el("retract", { node, notify: "true" }, el("item", { id })));
      return HANDLED;
    });

    ctx.iq("account", "set", PUBSUB, async ({ payload, self, origin, from, to }) => {
      const action = firstChildElement(payload);
      if (payload.name !== "pubsub" || !action) throw new StanzaError("bad-request");
      // XEP-0163 §3: only the account owner publishes to its PEP service.
      if (!self || !origin) throw new StanzaError("forbidden");
      const owner = to.bare;
      switch (action.name) {
        case "publish":
          return publish(owner, from, action, optionsOf(payload.getChild("publish-options"), PUBLISH_OPTIONS));
        case "retract":
          return retract(owner, action);
        case "create": {
          const node = nodeOf(action);
          const form = optionsOf(payload.getChild("configure"), NODE_CONFIG);
          if (!(await createNode(owner, node, form ? applyNodeConfigForm(defaultNodeConfig(), form, ctx.options.maxItems) : defaultNodeConfig()))) throw new StanzaError("conflict", "The node exists");
          return undefined;
        }
        case "subscribe": case "unsubscribe": case "options":
          throw pubsubError("feature-not-implemented", "unsupported", "PEP subscriptions follow presence subscriptions", { feature: "subscribe" });
        default:
          throw new StanzaError("feature-not-implemented");
      }
    });

    ctx.iq("account", "get", PUBSUB, async ({ payload, from, to }) => {
      const action = firstChildElement(payload);
      if (payload.name !== "pubsub" || !action) throw new StanzaError("bad-request");
      if (action.name === "items") return retrieve(to.bare, from, action);
      if (action.name === "subscriptions" || action.name === "affiliations") {
        throw pubsubError("feature-not-implemented", "unsupported", undefined, { feature: `retrieve-${action.name}` });
      }
      throw new StanzaError("feature-not-implemented");
    });

    ctx.iq("account", "get", OWNER, async ({ payload, self, origin, to }) => {
      const action = firstChildElement(payload);
      if (payload.name !== "pubsub" || !action) throw new StanzaError("bad-request");
      if (!self || !origin) throw new StanzaError("forbidden");
      if (action.name === "default") return el("pubsub", { xmlns: OWNER }, el("default", {}, nodeConfigForm("form", defaultNodeConfig())));
      if (action.name === "configure") {
        const node = nodeOf(action);
        return el("pubsub", { xmlns: OWNER }, el("configure", { node }, nodeConfigForm("form", await mustExist(to.bare, node))));
      }
      throw new StanzaError("feature-not-implemented");
    });

    ctx.iq("account", "set", OWNER, async ({ payload, self, origin, to }) => {
      const action = firstChildElement(payload);
      if (payload.name !== "pubsub" || !action) throw new StanzaError("bad-request");
      if (!self || !origin) throw new StanzaError("forbidden");
      const owner = to.bare;
      const node = nodeOf(action);
      const config = await mustExist(owner, node);
      switch (action.name) {
        case "configure": {
          const form = optionsOf(action, NODE_CONFIG);
          if (!form) throw new StanzaError("bad-request", "A configuration form is required");
          const next = applyNodeConfigForm(config, form, ctx.options.maxItems);
          await storage.pubsub.setConfig(owner, node, JSON.stringify(next));
          // Fewer items allowed: trim now, as a publish would.
          const kept = await storage.pubsub.items(owner, node);
          for (const extra of kept.slice(next.max_items)) await storage.pubsub.retract(owner, node, extra.id);
          if (!next.persist_items) await storage.pubsub.purge(owner, node);
          await ctx.emit("pep/configured", { owner, node });
          return undefined;
        }
        case "delete": {
          const targets = config.notify_delete ? await recipients(owner, node, config) : [];
          await storage.pubsub.deleteNode(owner, node);
          notify(owner, targets, el("delete", { node }));
          await ctx.emit("pep/deleted", { owner, node });
          return undefined;
        }
        case "purge": {
          await storage.pubsub.purge(owner, node);
          if (config.notify_retract) notify(owner, await recipients(owner, node, config), el("purge", { node }));
          return undefined;
        }
        default:
          throw new StanzaError("feature-not-implemented");
      }
    });

    // XEP-0060 §5.2: the nodes a requester may see.
    ctx.discoItems("account", async ({ owner, requester, node: asked }) => {
      if (asked !== undefined) return undefined;
      const visible: Element[] = [];
      for (const node of await storage.pubsub.nodes(owner)) {
        const config = await loadConfig(owner, node);
        if (config && !(await readError(owner, requester.bare, config))) visible.push(el("item", { jid: owner, node }));
      }
      return visible;
    });
  },
});

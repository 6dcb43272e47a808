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
 * Explicit subscriptions (XEP-0060 §6.1) are not offered — PEP subscriptions are presence-based.
 */
import { randomBytes } from "node:crypto";
import { z } from "zod";
import { defineModule } from "../module.js";
import { el, childElements, firstChildElement, type Element } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { parseJid, type Jid } from "../xmpp/jid.js";
import { HANDLED } from "../hooks.js";
import { StanzaError } from "../errors.js";
import { buildForm, parseBoolean, readForm, type FieldSpec, type SubmittedForm } from "../xmpp/forms.js";
import { parseElement } from "../xmpp/xml-parse.js";
import type { Session } from "../xmpp/sessions.js";
import type { PubSubItem, Storage } from "../storage/index.js";

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

export const PUBSUB = "http://jabber.org/protocol/pubsub";
const OWNER = `${PUBSUB}#owner`;
export const PUBSUB_EVENT = `${PUBSUB}#event`;
const ERRORS = `${PUBSUB}#errors`;
const NODE_CONFIG = `${PUBSUB}#node_config`;
const PUBLISH_OPTIONS = `${PUBSUB}#publish-options`;

const ACCESS_MODELS = ["open", "presence", "roster", "whitelist"] as const;
type AccessModel = (typeof ACCESS_MODELS)[number];
const SEND_LAST = ["never", "on_sub", "on_sub_and_presence"] as const;

export interface NodeConfig {
  access_model: AccessModel;
  roster_groups_allowed: string[];
  persist_items: boolean;
  max_items: number;
  send_last_published_item: (typeof SEND_LAST)[number];
  notify_retract: boolean;
  notify_delete: boolean;
  title: string;
}

const pubsubError = (condition: ConstructorParameters<typeof StanzaError>[0], app: string, text?: string, extra: Record<string, string> = {}) =>
  new StanzaError(condition, text, undefined, el(app, { xmlns: ERRORS, ...extra }));

/** A node's configuration before any form changed it. */
export const defaultNodeConfig = (): NodeConfig => ({
  access_model: "presence", roster_groups_allowed: [], persist_items: true, max_items: 1,
  send_last_published_item: "on_sub_and_presence", notify_retract: true, notify_delete: true, title: "",
});

/** A node's configuration, undefined when the node does not exist. */
export async function loadNodeConfig(storage: Storage, owner: string, node: string): Promise<NodeConfig | undefined> {
  const json = await storage.pubsub.getConfig(owner, node);
  return json === undefined ? undefined : { ...defaultNodeConfig(), ...(JSON.parse(json) as Partial<NodeConfig>) };
}

/**
 * XEP-0060 §4.5 and §6.5.9: undefined when `requester` (a bare JID) may read the node's items,
 * else the error to answer. Every reader of PEP data — PEP itself, and the modules that show it
 * through another protocol (avatars in vCards) — asks here.
 */
export async function nodeReadError(storage: Storage, owner: string, requester: string, config: NodeConfig): Promise<StanzaError | undefined> {
  if (requester === owner) return undefined;
  switch (config.access_model) {
    case "open":
      return undefined;
    case "presence": {
      const item = await storage.roster.getItem(owner, requester);
      if (item?.subscription === "from" || item?.subscription === "both") return undefined;
      return pubsubError("not-authorized", "presence-subscription-required");
    }
    case "roster": {
      const item = await storage.roster.getItem(owner, requester);
      if (item && item.groups.some((g) => config.roster_groups_allowed.includes(g))) return undefined;
      return pubsubError("not-authorized", "not-in-roster-group");
    }
    case "whitelist":
      return pubsubError("not-allowed", "closed-node");
  }
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
  }),
  start(ctx) {
    const { storage, router, sessions } = ctx;
    const interests = new WeakMap<Session, ReadonlySet<string>>();

    ctx.identity("account", { category: "pubsub", type: "pep" });
    for (const f of ["", "#access-open", "#access-presence", "#access-roster", "#access-whitelist", "#auto-create", "#auto-subscribe",
      "#config-node", "#create-and-configure", "#create-nodes", "#delete-items", "#delete-nodes", "#filtered-notifications",
      "#item-ids", "#last-published", "#persistent-items", "#presence-notifications", "#publish", "#publish-options",
      "#purge-nodes", "#retract-items", "#retrieve-default", "#retrieve-items"]) {
      ctx.feature("account", `${PUBSUB}${f}`);
    }

    // ── configuration ────────────────────────────────────────────────────────────────────────
    /** Applies the known pubsub#* fields of a form; bad values are not-acceptable (XEP-0060 §8.2.5). */
    const applyForm = (config: NodeConfig, form: SubmittedForm): NodeConfig => {
      const next = { ...config };
      for (const [name, values] of form.fields) {
        const value = values[0] ?? "";
        const bad = () => new StanzaError("not-acceptable", `Unsupported value for ${name}`);
        switch (name) {
          case "pubsub#access_model":
            if (!(ACCESS_MODELS as readonly string[]).includes(value)) throw pubsubError("not-acceptable", "unsupported-access-model");
            next.access_model = value as AccessModel;
            break;
          case "pubsub#roster_groups_allowed": next.roster_groups_allowed = [...values]; break;
          case "pubsub#persist_items": next.persist_items = parseBoolean(value, name); break;
          case "pubsub#max_items": {
            const n = value === "max" ? ctx.options.maxItems : Number(value);
            if (!Number.isInteger(n) || n < 1 || n > ctx.options.maxItems) throw bad();
            next.max_items = n;
            break;
          }
          case "pubsub#send_last_published_item":
            if (!(SEND_LAST as readonly string[]).includes(value)) throw bad();
            next.send_last_published_item = value as NodeConfig["send_last_published_item"];
            break;
          case "pubsub#notify_retract": next.notify_retract = parseBoolean(value, name); break;
          case "pubsub#notify_delete": next.notify_delete = parseBoolean(value, name); break;
          case "pubsub#title": next.title = value; break;
          // Fields that only have one possible value here.
          case "pubsub#deliver_payloads": case "pubsub#deliver_notifications": case "pubsub#presence_based_delivery":
            if (!parseBoolean(value, name)) throw bad();
            break;
          default:
            break; // XEP-0060 §16.4: unknown configuration fields are ignored.
        }
      }
      return next;
    };
    const configForm = (type: "form" | "result", config: NodeConfig) => buildForm(type, NODE_CONFIG, [
      { var: "pubsub#title", type: "text-single", label: "A friendly name for the node", values: [config.title] },
      { var: "pubsub#access_model", type: "list-single", label: "Who may read items", values: [config.access_model],
        options: ACCESS_MODELS.map((value) => ({ value })) },
      { var: "pubsub#roster_groups_allowed", type: "list-multi", label: "Roster groups allowed to read", values: config.roster_groups_allowed },
      { var: "pubsub#persist_items", type: "boolean", label: "Persist items to storage", values: [config.persist_items ? "true" : "false"] },
      { var: "pubsub#max_items", type: "text-single", label: "Max number of items to persist", values: [String(config.max_items)] },
      { var: "pubsub#send_last_published_item", type: "list-single", label: "When to send the last published item",
        values: [config.send_last_published_item], options: SEND_LAST.map((value) => ({ value })) },
      { var: "pubsub#notify_retract", type: "boolean", label: "Notify when items are removed", values: [config.notify_retract ? "true" : "false"] },
      { var: "pubsub#notify_delete", type: "boolean", label: "Notify when the node is deleted", values: [config.notify_delete ? "true" : "false"] },
      { var: "pubsub#deliver_payloads", type: "boolean", values: ["true"] },
      { var: "pubsub#deliver_notifications", type: "boolean", values: ["true"] },
    ] satisfies FieldSpec[]);
    const loadConfig = (owner: string, node: string) => loadNodeConfig(storage, owner, node);
    const readError = (owner: string, requester: string, config: NodeConfig) => nodeReadError(storage, owner, requester, config);
    const mustExist = async (owner: string, node: string) => {
      const config = await loadConfig(owner, node);
      if (!config) throw new StanzaError("item-not-found", "No such node");
      return config;
    };

    // ── notifications ────────────────────────────────────────────────────────────────────────
    const interested = (session: Session, node: string) => interests.get(session)?.has(`${node}+notify`) ?? false;
    /** The owner's resources and its presence subscribers' resources that want this node and may read it. */
    const recipients = async (owner: string, node: string, config: NodeConfig): Promise<Session[]> => {
      const out = sessions.available(owner).filter((s) => interested(s, node));
      if (config.access_model === "whitelist") return out;
      const roster = await storage.roster.get(owner);
      for (const item of roster.items) {
        if (item.subscription !== "from" && item.subscription !== "both") continue;
        const wanting = sessions.available(item.jid).filter((s) => interested(s, node));
        if (wanting.length && !(await readError(owner, item.jid, config))) out.push(...wanting);
      }
      return out;
    };
    const notify = (owner: string, targets: readonly Session[], event: Element) => {
      for (const s of targets) {
        // Routed, not written directly, so blocking and every other rule applies.
        void router.route(el("message", { from: owner, to: s.jid.full, type: "headline", id: `pep-${randomBytes(6).toString("base64url")}` },
          el("event", { xmlns: PUBSUB_EVENT }, event)));
      }
    };
    const itemElement = (item: PubSubItem) => {
      const node = el("item", { id: item.id });
      if (item.payload) node.cnode(parseElement(item.payload));
      return node;
    };

    /** XEP-0163 §4.3.2: a resource that shows +notify gets the last item of the nodes it may read. */
    const sendLastItems = async (session: Session) => {
      const user = session.jid.bare;
      const roster = await storage.roster.get(user);
      const owners = [user, ...roster.items.filter((i) => (i.subscription === "to" || i.subscription === "both") && router.isLocalDomain(i.jid.split("@")[1] ?? "")).map((i) => i.jid)];
      for (const owner of owners) {
        for (const node of await storage.pubsub.nodes(owner)) {
          if (!interested(session, node)) continue;
          const config = await loadConfig(owner, node);
          if (!config || config.send_last_published_item !== "on_sub_and_presence" || await readError(owner, user, config)) continue;
          const [last] = await storage.pubsub.items(owner, node, { max: 1 });
          if (!last) continue;
          void router.route(el("message", { from: owner, to: session.jid.full, type: "headline", id: `pep-${randomBytes(6).toString("base64url")}` },
            el("event", { xmlns: PUBSUB_EVENT }, el("items", { node }, itemElement(last))),
            el("delay", { xmlns: NS.DELAY, from: owner, stamp: new Date(last.publishedAt).toISOString() })));
        }
      }
    };
    ctx.on("session/caps", ({ session, features }) => {
      const first = !interests.has(session);
      const before = interests.get(session);
      interests.set(session, features);
      // Sent when interest first becomes known, or when it grows.
      if (first || [...features].some((f) => f.endsWith("+notify") && !before?.has(f))) {
        sendLastItems(session).catch((err) => ctx.log.error({ err, stage: "pep" }, "sending last items failed"));
      }
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
        config = publishOptions ? applyForm(defaultNodeConfig(), publishOptions) : defaultNodeConfig();
        await createNode(owner, node, config);
      } else if (publishOptions) {
        const wanted = applyForm(config, publishOptions);
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
          if (!(await createNode(owner, node, form ? applyForm(defaultNodeConfig(), form) : defaultNodeConfig()))) throw new StanzaError("conflict", "The node exists");
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
      if (action.name === "default") return el("pubsub", { xmlns: OWNER }, el("default", {}, configForm("form", defaultNodeConfig())));
      if (action.name === "configure") {
        const node = nodeOf(action);
        return el("pubsub", { xmlns: OWNER }, el("configure", { node }, configForm("form", await mustExist(to.bare, node))));
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
          const next = applyForm(config, form);
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

/**
 * XEP-0060 1.26 node configuration for PEP (XEP-0163): the options a node has, the form that
 * shows and changes them (§8.2, publish-options §7.1.5), and who may read a node's items under
 * its access model (§4.5), as functions of the configuration and the owner's roster. PEP
 * (pep.ts) and the modules that show PEP data another way (avatars in vCards) use them.
 */
import { el, type Element } from "../xmpp/xml.js";
import { StanzaError } from "../errors.js";
import { buildForm, parseBoolean, type FieldSpec, type SubmittedForm } from "../xmpp/forms.js";
import type { Storage } from "../storage/index.js";

export const PUBSUB = "http://jabber.org/protocol/pubsub";
const ERRORS = `${PUBSUB}#errors`;
export const NODE_CONFIG = `${PUBSUB}#node_config`;

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

export const pubsubError = (condition: ConstructorParameters<typeof StanzaError>[0], app: string, text?: string, extra: Record<string, string> = {}) =>
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

/** Applies the known pubsub#* fields of a form; bad values are not-acceptable (XEP-0060 §8.2.5). */
export function applyNodeConfigForm(config: NodeConfig, form: SubmittedForm, maxItems: number): NodeConfig {
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
        const n = value === "max" ? maxItems : Number(value);
        if (!Number.isInteger(n) || n < 1 || n > maxItems) throw bad();
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
}

/** The node configuration form (XEP-0060 §8.2) showing `config`; submitted as such in a XEP-0227 export. */
export function nodeConfigForm(type: "form" | "result" | "submit", config: NodeConfig): Element {
  return buildForm(type, NODE_CONFIG, [
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
}

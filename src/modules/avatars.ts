/**
 * XEP-0398 User Avatar to vCard-Based Avatars Conversion 0.3.0 and XEP-0153 vCard-Based Avatars
 * 1.1: one avatar, whichever way a client sets it.
 * - A XEP-0084 avatar published to PEP becomes the vCard PHOTO.
 * - A vCard PHOTO set by a legacy client is published to the XEP-0084 nodes. New nodes are open,
 *   like the vCard itself; nodes that exist keep the access model their owner gave them.
 * - Every available presence a user sends carries the avatar's hash in
 *   <x xmlns='vcard-temp:x:update'><photo/></x>, put there by the server (XEP-0398 §3.2), so
 *   XEP-0153 clients see changes without fetching vCards.
 *
 * The avatar's PEP nodes decide who sees it, in every form (XEP-0398 §6: "XEP-0153 has no access
 * control at all"; we add it). A vCard answered to someone who may not read the avatar nodes has
 * no PHOTO. The hash goes into broadcast presence only when every recipient of that presence may
 * fetch the image: access model open, or presence (broadcast presence reaches exactly the users
 * with a subscription to it). Under roster or whitelist the presence carries an update element
 * without <photo/>, which XEP-0153 §4.3 defines as "nothing to say about the avatar".
 */
import { z } from "zod";
import { defineModule } from "../module.js";
import { el } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { parseElement } from "../xmpp/xml-parse.js";
import { VCARD_KEY, vcardPhoto } from "./vcard.js";
import { loadNodeConfig, nodeReadError, type NodeConfig } from "./pep-config.js";
import { BoundedMap } from "../bounded-map.js";
import { Priority } from "../hooks.js";

const DATA = "urn:xmpp:avatar:data";
const METADATA = "urn:xmpp:avatar:metadata";
const AVATAR_NODES: readonly string[] = [DATA, METADATA];
const UPDATE = "vcard-temp:x:update";
const CACHE_LIMIT = 50_000;
/** Access models under which everyone who gets a user's broadcast presence may fetch the avatar. */
const READABLE_BY_SUBSCRIBERS: ReadonlySet<string> = new Set(["open", "presence"]);

export const avatars = defineModule({
  name: "avatars",
  implements: [
    { spec: "XEP-0398", version: "0.3.0" }, { spec: "XEP-0153", version: "1.1" }, { spec: "XEP-0084", version: "1.1.4" },
    { spec: "XEP-0292", version: "1.1", note: "vCard4 over PEP; not converted to or from vcard-temp" },
  ],
  dependsOn: ["pep", "vcard", "presence"],
  options: z.strictObject({}),
  start(ctx) {
    const { storage } = ctx;
    ctx.feature("account", "urn:xmpp:pep-vcard-conversion:0");
    // XEP-0292 §3: vCard4 lives in the PEP node urn:xmpp:vcard4, served by PEP like any node.
    ctx.feature("account", "urn:xmpp:vcard4");
    /** SHA-1 (hex) of each user's avatar, "" for none. */
    const hashes = new BoundedMap<string, string>(CACHE_LIMIT);
    /** Whether each user's avatar hash may ride on its broadcast presence (every available presence asks). */
    const advertised = new BoundedMap<string, boolean>(CACHE_LIMIT);
    const loadVcard = async (user: string) => {
      const xml = await storage.documents.get(user, VCARD_KEY);
      return xml ? parseElement(xml) : undefined;
    };
    const hashOf = async (user: string): Promise<string> => {
      const known = hashes.get(user);
      if (known !== undefined) return known;
      const hash = vcardPhoto(await loadVcard(user))?.hash ?? "";
      hashes.set(user, hash);
      return hash;
    };
    const avatarConfigs = async (user: string): Promise<NodeConfig[]> =>
      (await Promise.all(AVATAR_NODES.map((node) => loadNodeConfig(storage, user, node)))).filter((c): c is NodeConfig => c !== undefined);
    /** Whether `requester` may see the avatar: it may read every avatar node there is (with none, the photo is a plain, public vCard one). */
    const mayRead = async (owner: string, requester: string): Promise<boolean> => {
      for (const config of await avatarConfigs(owner)) if (await nodeReadError(storage, owner, requester, config)) return false;
      return true;
    };
    const advertisable = async (user: string): Promise<boolean> => {
      const known = advertised.get(user);
      if (known !== undefined) return known;
      const shown = (await avatarConfigs(user)).every((c) => READABLE_BY_SUBSCRIBERS.has(c.access_model));
      advertised.set(user, shown);
      return shown;
    };

    // XEP-0398 §3.2: the server puts the current hash into the user's presence.
    ctx.chain("presence/broadcast", async ({ stanza, origin }) => {
      if (!origin || stanza.attrs.type !== undefined) return undefined;
      const user = origin.jid.bare;
      const [shown, hash] = await Promise.all([advertisable(user), hashOf(user)]);
      for (const x of stanza.getChildren("x", UPDATE)) stanza.remove(x);
      stanza.cnode(el("x", { xmlns: UPDATE }, shown ? el("photo", {}, hash || undefined) : undefined));
      return undefined;
    }, Priority.AMEND);

    // The vCard's PHOTO is the avatar: only those who may read the avatar nodes get it.
    ctx.chain("vcard/read", async ({ owner, requester, vcard }) => {
      if (await mayRead(owner, requester.bare)) return undefined;
      for (const photo of vcard.getChildren("PHOTO")) vcard.remove(photo);
      return undefined;
    });

    // XEP-0084 → vCard.
    ctx.on("pep/published", async ({ owner, node, payload }) => {
      if (node !== METADATA) return;
      const info = payload.getChild("info");
      const vcard = (await loadVcard(owner)) ?? el("vCard", { xmlns: NS.VCARD });
      for (const photo of vcard.getChildren("PHOTO")) vcard.remove(photo);
      let hash = "";
      if (info?.attrs.id) {
        if (info.attrs.id === hashes.get(owner)) return; // our own conversion coming back
        const [data] = await storage.pubsub.items(owner, DATA, { ids: [info.attrs.id] });
        if (!data) return; // metadata for an avatar stored elsewhere (XEP-0084 §4.2 url): nothing to convert
        vcard.cnode(el("PHOTO", {}, el("TYPE", {}, info.attrs.type ?? "image/png"), el("BINVAL", {}, parseElement(data.payload).text())));
        hash = info.attrs.id;
      }
      await storage.documents.set(owner, VCARD_KEY, vcard.toString());
      hashes.set(owner, hash);
    });

    // vCard → XEP-0084.
    ctx.on("vcard/set", async ({ owner, vcard }) => {
      const photo = vcardPhoto(vcard);
      const hash = photo?.hash ?? "";
      const [current] = await storage.pubsub.items(owner, METADATA, { max: 1 });
      hashes.set(owner, hash);
      if (current && current.id === (hash || "none")) return; // PEP has this avatar already
      // A node that exists keeps its configuration: a legacy client re-saving the vCard must not
      // open up an avatar its owner restricted. A missing node is created like its sibling, or
      // open when there is none, as public as the vCard the photo came from.
      const configs = new Map(await Promise.all(AVATAR_NODES.map(async (n) => [n, await loadNodeConfig(storage, owner, n)] as const)));
      const sibling = [...configs.values()].find((c) => c !== undefined);
      const optionsFor = (node: string): Record<string, string | readonly string[]> => configs.get(node) ? {} : {
        "pubsub#access_model": sibling?.access_model ?? "open",
        ...(sibling?.access_model === "roster" ? { "pubsub#roster_groups_allowed": sibling.roster_groups_allowed } : {}),
      };
      if (photo) {
        await ctx.runChain("pep/publish", { owner, node: DATA, id: hash, payload: el("data", { xmlns: DATA }, photo.bytes.toString("base64")), options: optionsFor(DATA) });
        await ctx.runChain("pep/publish", { owner, node: METADATA, id: hash, options: optionsFor(METADATA),
          payload: el("metadata", { xmlns: METADATA }, el("info", { id: hash, bytes: photo.bytes.length, type: photo.type })) });
      } else if (current) {
        // XEP-0084 §4.2: empty metadata means the avatar was removed.
        await ctx.runChain("pep/publish", { owner, node: METADATA, id: "none", payload: el("metadata", { xmlns: METADATA }), options: optionsFor(METADATA) });
      }
    });

    ctx.on("pep/configured", ({ owner, node }) => { if (AVATAR_NODES.includes(node)) advertised.delete(owner); });
    // Without its nodes the avatar is gone; a PHOTO left in the vCard would be readable by anyone.
    ctx.on("pep/deleted", async ({ owner, node }) => {
      if (!AVATAR_NODES.includes(node)) return;
      advertised.delete(owner);
      const vcard = await loadVcard(owner);
      if (vcard?.getChild("PHOTO")) {
        for (const photo of vcard.getChildren("PHOTO")) vcard.remove(photo);
        await storage.documents.set(owner, VCARD_KEY, vcard.toString());
      }
      hashes.set(owner, "");
    });
    ctx.on("user/deleted", ({ jid }) => { hashes.delete(jid.bare); advertised.delete(jid.bare); });
  },
});

/**
 * XEP-0398 User Avatar to vCard-Based Avatars Conversion 0.3.0 and XEP-0153 vCard-Based Avatars
 * 1.1: one avatar, whichever way a client sets it.
 * - A XEP-0084 avatar published to PEP becomes the vCard PHOTO.
 * - A vCard PHOTO set by a legacy client is published to the XEP-0084 nodes (access open, like
 *   the vCard itself).
 * - Every available presence a user sends carries the avatar's hash in
 *   <x xmlns='vcard-temp:x:update'><photo/></x>, put there by the server (XEP-0398 §3.2), so
 *   XEP-0153 clients see changes without fetching vCards.
 */
import { z } from "zod";
import { defineModule } from "../module.js";
import { el } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { parseElement } from "../xmpp/xml-parse.js";
import { VCARD_KEY, vcardPhoto } from "./vcard.js";
import { BoundedMap } from "../bounded-map.js";

const DATA = "urn:xmpp:avatar:data";
const METADATA = "urn:xmpp:avatar:metadata";
const UPDATE = "vcard-temp:x:update";
const CACHE_LIMIT = 50_000;

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

    // XEP-0398 §3.2: the server puts the current hash into the user's presence.
    ctx.chain("presence/broadcast", async ({ stanza, origin }) => {
      if (!origin || stanza.attrs.type !== undefined) return undefined;
      const hash = await hashOf(origin.jid.bare);
      for (const x of stanza.getChildren("x", UPDATE)) stanza.remove(x);
      stanza.cnode(el("x", { xmlns: UPDATE }, el("photo", {}, hash || undefined)));
      return undefined;
    }, 40);

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
      const options = { "pubsub#access_model": "open" };
      if (photo) {
        await ctx.runChain("pep/publish", { owner, node: DATA, id: hash, payload: el("data", { xmlns: DATA }, photo.bytes.toString("base64")), options });
        await ctx.runChain("pep/publish", { owner, node: METADATA, id: hash, options,
          payload: el("metadata", { xmlns: METADATA }, el("info", { id: hash, bytes: photo.bytes.length, type: photo.type })) });
      } else if (current) {
        // XEP-0084 §4.2: empty metadata means the avatar was removed.
        await ctx.runChain("pep/publish", { owner, node: METADATA, id: "none", payload: el("metadata", { xmlns: METADATA }), options });
      }
    });
    ctx.on("user/deleted", ({ jid }) => { hashes.delete(jid.bare); });
  },
});

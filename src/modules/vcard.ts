/**
 * XEP-0054 vcard-temp 1.2: anyone may read an account's vCard; only its owner may change it. What
 * another module mirrors into the vCard from access-controlled data (the PEP avatar, XEP-0398) it
 * takes out again per requester, on the "vcard/read" chain.
 */
import { createHash } from "node:crypto";
import { z } from "zod";
import { defineModule } from "../module.js";
import { el, type Element } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { StanzaError } from "../errors.js";
import { parseElement } from "../xmpp/xml-parse.js";
import type { Jid } from "../xmpp/jid.js";

export const VCARD_KEY = "vcard-temp";

/** A vCard's PHOTO: its bytes, type and SHA-1 (hex) — the hash XEP-0153 and XEP-0486 announce. */
export function vcardPhoto(vcard: Element | undefined): { bytes: Buffer; type: string; hash: string } | undefined {
  const photo = vcard?.getChild("PHOTO");
  const binval = photo?.getChildText("BINVAL")?.replace(/\s+/g, "");
  if (!binval) return undefined;
  const bytes = Buffer.from(binval, "base64");
  return { bytes, type: photo!.getChildText("TYPE") ?? "image/png", hash: createHash("sha1").update(bytes).digest("hex") };
}

declare module "../hooks.js" {
  interface Chains {
    /** A vCard about to be answered to `requester`: handlers remove what it may not see (none returns HANDLED). */
    "vcard/read": { owner: string; requester: Jid; vcard: Element };
  }
  interface Events {
    /** The owner stored a new vCard (XEP-0398 converts its photo). */
    "vcard/set": { owner: string; vcard: Element };
  }
}

export const vcard = defineModule({
  name: "vcard",
  implements: [{ spec: "XEP-0054", version: "1.2" }],
  options: z.strictObject({ maxBytes: z.number().int().min(1024).default(128 * 1024) }),
  start(ctx) {
    ctx.feature("host", NS.VCARD);
    ctx.feature("account", NS.VCARD);
    ctx.iq("account", "get", NS.VCARD, async ({ to, from }) => {
      const stored = await ctx.storage.documents.get(to.bare, VCARD_KEY);
      // XEP-0054 §3.1: with no vCard, an empty one is a valid answer.
      const vcard = stored ? parseElement(stored) : el("vCard", { xmlns: NS.VCARD });
      // A failing handler fails the request: nothing is answered that a policy did not see.
      await ctx.runChain("vcard/read", { owner: to.bare, requester: from, vcard });
      return vcard;
    });
    ctx.iq("account", "set", NS.VCARD, async ({ self, to, payload }) => {
      if (!self) throw new StanzaError("forbidden", "Only the owner may change a vCard");
      if (payload.name !== "vCard") throw new StanzaError("bad-request");
      const xml = payload.toString();
      if (Buffer.byteLength(xml) > ctx.options.maxBytes) throw new StanzaError("not-acceptable", "vCard too large");
      await ctx.storage.documents.set(to.bare, VCARD_KEY, xml);
      await ctx.emit("vcard/set", { owner: to.bare, vcard: payload });
      return undefined;
    });
  },
});

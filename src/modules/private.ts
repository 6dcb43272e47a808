/**
 * XEP-0049 Private XML Storage 1.2: one stored element per namespace, for the owner only.
 * XEP-0049 §3: "jabber:" and "http://jabber.org/" namespaces are reserved → not-acceptable.
 */
import { z } from "zod";
import { defineModule } from "../module.js";
import { el, childElements, type Element } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { StanzaError } from "../errors.js";
import { parseElement } from "../xmpp/xml-parse.js";

declare module "../hooks.js" {
  interface Events {
    /** The owner stored an element (XEP-0411 converts legacy bookmarks). */
    "private/set": { owner: string; element: Element };
  }
}

/** Where the element with this name and namespace is kept in the document store. */
export const privateKey = (name: string, ns: string) => `private:${name} ${ns}`;

export const privateXml = defineModule({
  name: "private",
  implements: [{ spec: "XEP-0049", version: "1.2" }],
  options: z.strictObject({ maxBytes: z.number().int().min(1024).default(256 * 1024) }),
  start(ctx) {
    ctx.feature("account", NS.PRIVATE);
    const target = (self: boolean, payload: ReturnType<typeof childElements>) => {
      if (!self) throw new StanzaError("forbidden");
      if (payload.length !== 1) throw new StanzaError("not-acceptable", "Exactly one child element");
      const child = payload[0]!;
      const ns = child.getNS();
      if (!ns || ns.startsWith("jabber:") || ns.startsWith("http://jabber.org/") || ns === NS.VCARD) {
        throw new StanzaError("not-acceptable", "Reserved or missing namespace");
      }
      return { child, key: privateKey(child.name, ns) };
    };
    ctx.iq("account", "get", NS.PRIVATE, async ({ self, to, payload }) => {
      const { child, key } = target(self, childElements(payload));
      const stored = await ctx.storage.documents.get(to.bare, key);
      return el("query", { xmlns: NS.PRIVATE }, stored ? parseElement(stored) : el(child.name, { xmlns: child.getNS() }));
    });
    ctx.iq("account", "set", NS.PRIVATE, async ({ self, to, payload }) => {
      const { child, key } = target(self, childElements(payload));
      child.attrs.xmlns = child.getNS();
      const xml = child.toString();
      if (Buffer.byteLength(xml) > ctx.options.maxBytes) throw new StanzaError("not-acceptable", "Too large");
      await ctx.storage.documents.set(to.bare, key, xml);
      await ctx.emit("private/set", { owner: to.bare, element: child });
      return undefined;
    });
  },
});

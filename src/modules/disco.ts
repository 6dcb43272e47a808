/** XEP-0030 Service Discovery 2.5: what the server and its accounts support — exactly the loaded modules. */
import { z } from "zod";
import { defineModule } from "../module.js";
import { el } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { StanzaError } from "../errors.js";

export const disco = defineModule({
  name: "disco",
  implements: [{ spec: "XEP-0030", version: "2.5rc3" }],
  options: z.strictObject({}),
  start(ctx) {
    ctx.feature("host", NS.DISCO_INFO);
    ctx.feature("host", NS.DISCO_ITEMS);
    ctx.feature("account", NS.DISCO_INFO);
    ctx.feature("account", NS.DISCO_ITEMS);
    const info = (identity: { category: string; type: string; name?: string }, features: readonly string[], node?: string) =>
      el("query", { xmlns: NS.DISCO_INFO, node }, el("identity", identity), ...features.map((v) => el("feature", { var: v })));
    const noNodes = (node: string | undefined) => {
      if (node !== undefined) throw new StanzaError("item-not-found");
    };
    ctx.iq("host", "get", NS.DISCO_INFO, ({ payload }) => {
      noNodes(payload.attrs.node);
      return info({ category: "server", type: "im", name: "Parley" }, ctx.advertised("host"));
    });
    ctx.iq("host", "get", NS.DISCO_ITEMS, ({ payload }) => {
      noNodes(payload.attrs.node);
      return el("query", { xmlns: NS.DISCO_ITEMS });
    });
    // XEP-0030 §3.1 / RFC 6121 §8.5.1: the server answers for an account's bare JID.
    ctx.iq("account", "get", NS.DISCO_INFO, ({ payload }) => {
      noNodes(payload.attrs.node);
      return info({ category: "account", type: "registered" }, ctx.advertised("account"));
    });
    ctx.iq("account", "get", NS.DISCO_ITEMS, ({ payload }) => {
      noNodes(payload.attrs.node);
      return el("query", { xmlns: NS.DISCO_ITEMS });
    });
  },
});

/**
 * XEP-0030 Service Discovery 2.5: what the server and its accounts support — exactly the loaded
 * modules. XEP-0115 Entity Capabilities 1.6.0 §6.3: the server's own caps in stream features, and
 * its disco#info answered on the caps node too.
 */
import { z } from "zod";
import { defineModule, type Identity } from "../module.js";
import { el } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { StanzaError } from "../errors.js";
import type { Jid } from "../xmpp/jid.js";
import { CAPS, capsVerification } from "../xmpp/caps.js";

const CAPS_NODE = "https://parley.chat";

export const SERVER_IDENTITY: Identity = { category: "server", type: "im", name: "Parley" };

export const disco = defineModule({
  name: "disco",
  implements: [{ spec: "XEP-0030", version: "2.5rc3" }],
  options: z.strictObject({}),
  start(ctx) {
    ctx.feature("host", NS.DISCO_INFO);
    ctx.feature("host", NS.DISCO_ITEMS);
    ctx.feature("account", NS.DISCO_INFO);
    ctx.feature("account", NS.DISCO_ITEMS);
    const info = (target: "host" | "account", own: Identity, node?: string) =>
      el("query", { xmlns: NS.DISCO_INFO, node },
        ...[own, ...ctx.identities(target)].map((identity) => el("identity", { ...identity })),
        ...ctx.advertised(target).map((v) => el("feature", { var: v })));
    const noNodes = (node: string | undefined) => {
      if (node !== undefined) throw new StanzaError("item-not-found");
    };
    const serverVer = () => capsVerification([SERVER_IDENTITY, ...ctx.identities("host")], ctx.advertised("host"));
    ctx.streamFeature("post-auth", () => el("c", { xmlns: CAPS, hash: "sha-1", node: CAPS_NODE, ver: serverVer() }));
    ctx.iq("host", "get", NS.DISCO_INFO, ({ payload }) => {
      const node = payload.attrs.node;
      // XEP-0115 §6.2: "node#ver" must be answered with the same information.
      if (node !== undefined && node !== `${CAPS_NODE}#${serverVer()}`) throw new StanzaError("item-not-found");
      return info("host", SERVER_IDENTITY, node);
    });
    const items = async (target: "host" | "account", owner: string, requester: Jid, node: string | undefined) => {
      const list = await ctx.listDiscoItems(target, { owner, requester, ...(node !== undefined ? { node } : {}) });
      if (!list) throw new StanzaError("item-not-found");
      return el("query", { xmlns: NS.DISCO_ITEMS, node }, ...list);
    };
    ctx.iq("host", "get", NS.DISCO_ITEMS, ({ payload, from, to }) => items("host", to.domain, from, payload.attrs.node));
    // XEP-0030 §3.1 / RFC 6121 §8.5.1: the server answers for an account's bare JID.
    ctx.iq("account", "get", NS.DISCO_INFO, ({ payload }) => {
      noNodes(payload.attrs.node);
      return info("account", { category: "account", type: "registered" });
    });
    ctx.iq("account", "get", NS.DISCO_ITEMS, ({ payload, from, to }) => items("account", to.bare, from, payload.attrs.node));
  },
});

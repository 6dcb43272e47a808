/**
 * XEP-0012 Last Activity 2.0: the server's uptime, and for an account the time since its last
 * unavailable presence — answered only to entities with a presence subscription (XEP-0012 §4:
 * otherwise forbidden), and 0 while the user has an available resource.
 */
import { z } from "zod";
import { defineModule } from "../module.js";
import { el } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { StanzaError } from "../errors.js";

export const last = defineModule({
  name: "last",
  implements: [{ spec: "XEP-0012", version: "2.0" }],
  dependsOn: ["presence"],
  options: z.strictObject({}),
  start(ctx) {
    const startedAt = Date.now();
    ctx.feature("host", NS.LAST);
    ctx.feature("account", NS.LAST);
    const seconds = (since: number) => String(Math.max(0, Math.floor((Date.now() - since) / 1000)));
    ctx.iq("host", "get", NS.LAST, () => el("query", { xmlns: NS.LAST, seconds: seconds(startedAt) }));
    ctx.iq("account", "get", NS.LAST, async ({ from, to, self }) => {
      if (!self) {
        const item = await ctx.storage.roster.getItem(to.bare, from.bare);
        if (item?.subscription !== "from" && item?.subscription !== "both") throw new StanzaError("forbidden");
      }
      if (ctx.sessions.available(to.bare).length > 0) return el("query", { xmlns: NS.LAST, seconds: "0" });
      const activity = await ctx.storage.lastActivity.get(to.bare);
      if (!activity) throw new StanzaError("item-not-found");
      return el("query", { xmlns: NS.LAST, seconds: seconds(activity.at) }, activity.status || undefined);
    });
  },
});

/**
 * XEP-0012 Last Activity 2.0: the server's uptime, and for an account the time since its last
 * unavailable presence — answered only to entities with a presence subscription (XEP-0012 §4:
 * otherwise forbidden), and 0 while the user has an available resource.
 *
 * "Last seen" privacy: each user chooses, with a XEP-0050 command, whether contacts may see it
 * (the default) or nobody may.
 */
import { z } from "zod";
import { defineModule } from "../module.js";
import { el } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { StanzaError } from "../errors.js";
import { buildForm, readForm, singleValue } from "../xmpp/forms.js";
import { parseElement } from "../xmpp/xml-parse.js";

const PRIVACY_KEY = "last:visibility";
const PRIVACY_NS = "urn:parley:last-seen:0";
type Visibility = "contacts" | "nobody";

export const last = defineModule({
  name: "last",
  implements: [{ spec: "XEP-0012", version: "2.0" }],
  dependsOn: ["presence", "adhoc"],
  options: z.strictObject({}),
  start(ctx) {
    const startedAt = Date.now();
    ctx.feature("host", NS.LAST);
    ctx.feature("account", NS.LAST);
    const seconds = (since: number) => String(Math.max(0, Math.floor((Date.now() - since) / 1000)));
    ctx.iq("host", "get", NS.LAST, () => el("query", { xmlns: NS.LAST, seconds: seconds(startedAt) }));
    const visibility = async (user: string): Promise<Visibility> => {
      const xml = await ctx.storage.documents.get(user, PRIVACY_KEY);
      return xml && parseElement(xml).text() === "nobody" ? "nobody" : "contacts";
    };
    ctx.command({
      node: PRIVACY_NS,
      name: "Who can see when I was last online",
      allowed: "user",
      form: async ({ user }) => buildForm("form", PRIVACY_NS, [{
        var: "visibility", type: "list-single", label: "Last seen visible to", values: [await visibility(user.bare)],
        options: [{ label: "My contacts", value: "contacts" }, { label: "Nobody", value: "nobody" }],
      }]),
      submit: async ({ user, form }) => {
        const value = singleValue(readForm(form), "visibility");
        if (value !== "contacts" && value !== "nobody") throw new StanzaError("bad-request", "visibility is contacts or nobody");
        await ctx.storage.documents.set(user.bare, PRIVACY_KEY, el("visibility", { xmlns: PRIVACY_NS }, value).toString());
        return value === "nobody" ? "Nobody can see when you were last online." : "Your contacts can see when you were last online.";
      },
    });

    ctx.iq("account", "get", NS.LAST, async ({ from, to, self }) => {
      if (!self) {
        if (await visibility(to.bare) === "nobody") throw new StanzaError("forbidden");
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

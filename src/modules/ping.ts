/** XEP-0199 XMPP Ping 2.0.1: the server answers pings to itself and, on a user's behalf, to bare JIDs. */
import { z } from "zod";
import { defineModule } from "../module.js";
import { NS } from "../xmpp/ns.js";

export const ping = defineModule({
  name: "ping",
  implements: [{ spec: "XEP-0199", version: "2.0.1" }],
  options: z.strictObject({}),
  start(ctx) {
    ctx.feature("host", NS.PING);
    ctx.iq("host", "get", NS.PING, () => undefined);
    ctx.iq("account", "get", NS.PING, () => undefined);
  },
});

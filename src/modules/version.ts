/** XEP-0092 Software Version 1.1: name and version; the OS only when the operator opts in. */
import { z } from "zod";
import { platform, release } from "node:os";
import { defineModule } from "../module.js";
import { el } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { PARLEY_VERSION } from "../version.js";

export const version = defineModule({
  name: "version",
  implements: [{ spec: "XEP-0092", version: "1.1" }],
  options: z.strictObject({ showOs: z.boolean().default(false) }),
  start(ctx) {
    ctx.feature("host", NS.VERSION);
    ctx.iq("host", "get", NS.VERSION, () =>
      el("query", { xmlns: NS.VERSION }, el("name", {}, "Parley"), el("version", {}, PARLEY_VERSION),
        ctx.options.showOs ? el("os", {}, `${platform()} ${release()}`) : undefined));
  },
});

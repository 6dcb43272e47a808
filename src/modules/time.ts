/** XEP-0202 Entity Time 2.0: the server's UTC time; the offset is always Z (servers run on UTC here). */
import { z } from "zod";
import { defineModule } from "../module.js";
import { el } from "../xmpp/xml.js";
import { NS } from "../xmpp/ns.js";
import { xmppDateTime } from "../xmpp/datetime.js";

export function tzOffset(date: Date): string {
  const minutes = -date.getTimezoneOffset();
  const sign = minutes >= 0 ? "+" : "-";
  const abs = Math.abs(minutes);
  return `${sign}${String(Math.floor(abs / 60)).padStart(2, "0")}:${String(abs % 60).padStart(2, "0")}`;
}

export const time = defineModule({
  name: "time",
  implements: [{ spec: "XEP-0202", version: "2.0" }],
  options: z.strictObject({}),
  start(ctx) {
    ctx.feature("host", NS.TIME);
    ctx.iq("host", "get", NS.TIME, () => {
      const now = new Date();
      return el("time", { xmlns: NS.TIME }, el("tzo", {}, tzOffset(now)), el("utc", {}, xmppDateTime(now)));
    });
  },
});

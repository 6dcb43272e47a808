/** Room benchmarks (bench:muc, bench:cluster-muc): messages numbered n arrive as <body>t<n>:…</body>. */
import type { RawClient } from "../test/helpers/raw.js";

/** Calls `arrived(n, time)` for each numbered message the client receives, scanning its wire text once. */
export function onNumberedBodies(c: RawClient, arrived: (n: number, at: number) => void): void {
  c.text = "";
  c.socket.on("data", () => {
    const now = performance.now();
    let at = 0;
    for (;;) {
      const i = c.text.indexOf("<body>t", at);
      if (i === -1) break;
      const end = c.text.indexOf("</body>", i);
      if (end === -1) break;
      arrived(Number(c.text.slice(i + 7, c.text.indexOf(":", i))), now);
      at = end;
    }
    // Keep only what follows the last body counted, so nothing is counted twice.
    c.text = c.text.slice(at);
  });
}

/** docs/routing.md's handler table is what the default modules register, in the order it runs. */
import { it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { startHarness, handlerTableMarkdown } from "../../src/module-harness.js";
import { defaultModules } from "../../src/modules/index.js";
import { Priority } from "../../src/hooks.js";

it("docs/routing.md lists every hook handler of the default modules, in running order", async () => {
  const harness = await startHarness({ modules: defaultModules });
  try {
    const rows = harness.hooks.table();
    // The ordering the routing rules rely on: policy before the addressee, archive before storage.
    const order = (hook: string) => rows.filter((r) => r.kind === "chain" && r.hook === hook).map((r) => r.owner);
    assert.deepEqual(order("message/bare"), ["blocking", "muc", "message"]);
    assert.deepEqual(order("message/offline").slice(-2), ["mam", "offline"]);
    assert.ok(rows.filter((r) => r.kind === "chain").every((r) => Object.values(Priority).includes(r.priority as never)), "every chain handler sits at a named level");
    const doc = readFileSync(new URL("../../docs/routing.md", import.meta.url), "utf8");
    const documented = /<!-- handler-table:begin -->\n([\s\S]*?)<!-- handler-table:end -->/.exec(doc)?.[1];
    assert.equal(documented, handlerTableMarkdown(rows), "docs/routing.md is out of date: regenerate it with `npm run parley -- hooks`");
  } finally {
    await harness.stop();
  }
});

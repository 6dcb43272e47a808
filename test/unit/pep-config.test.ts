/** PEP node configuration (XEP-0060 §8.2, §7.1.5) and read access by access model (§4.5), without sockets. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { applyNodeConfigForm, defaultNodeConfig, nodeConfigForm, nodeReadError, NODE_CONFIG } from "../../src/modules/pep-config.js";
import { createMemoryStorage } from "../../src/storage/memory/index.js";
import type { SubmittedForm } from "../../src/xmpp/forms.js";

const form = (fields: Record<string, string | string[]>): SubmittedForm =>
  ({ formType: NODE_CONFIG, fields: new Map(Object.entries(fields).map(([k, v]) => [k, typeof v === "string" ? [v] : v])) });
const appCondition = (err: unknown) => (err as { appCondition?: { name: string } }).appCondition?.name;

describe("node configuration form", () => {
  it("applies known fields, 'max' as the service's limit, and ignores unknown ones (§16.4)", () => {
    const next = applyNodeConfigForm(defaultNodeConfig(), form({ "pubsub#access_model": "open", "pubsub#max_items": "max", "pubsub#roster_groups_allowed": ["a", "b"], "urn:example#x": "y" }), 32);
    assert.equal(next.access_model, "open");
    assert.equal(next.max_items, 32);
    assert.deepEqual(next.roster_groups_allowed, ["a", "b"]);
    const shown = nodeConfigForm("form", next);
    assert.equal(shown.getChildren("field").find((f) => f.attrs.var === "pubsub#access_model")?.getChildText("value"), "open");
  });

  it("refuses what it cannot do with not-acceptable, changing nothing", () => {
    const config = defaultNodeConfig();
    assert.throws(() => applyNodeConfigForm(config, form({ "pubsub#access_model": "authorize" }), 32),
      (err) => (err as { condition: string }).condition === "not-acceptable" && appCondition(err) === "unsupported-access-model");
    assert.throws(() => applyNodeConfigForm(config, form({ "pubsub#max_items": "33" }), 32), { condition: "not-acceptable" });
    assert.throws(() => applyNodeConfigForm(config, form({ "pubsub#deliver_payloads": "false" }), 32), { condition: "not-acceptable" });
    assert.deepEqual(config, defaultNodeConfig());
  });
});

describe("who may read a node (§4.5)", () => {
  it("open: anyone; presence: subscribers; roster: the allowed groups; whitelist: the owner only", async () => {
    const storage = createMemoryStorage();
    const owner = "alice@localhost";
    await storage.roster.put(owner, { jid: "friend@localhost", groups: ["Family"], subscription: "from", ask: false, approved: false });
    await storage.roster.put(owner, { jid: "fan@localhost", groups: ["Work"], subscription: "none", ask: false, approved: false });
    const may = async (access_model: "open" | "presence" | "roster" | "whitelist", who: string) =>
      (await nodeReadError(storage, owner, who, { ...defaultNodeConfig(), access_model, roster_groups_allowed: ["Family"] }))?.condition ?? "allowed";
    assert.equal(await may("open", "stranger@elsewhere"), "allowed");
    assert.equal(await may("presence", "friend@localhost"), "allowed");
    assert.equal(await may("presence", "fan@localhost"), "not-authorized");
    assert.equal(await may("roster", "friend@localhost"), "allowed");
    assert.equal(await may("roster", "fan@localhost"), "not-authorized");
    assert.equal(await may("whitelist", "friend@localhost"), "not-allowed");
    assert.equal(await may("whitelist", owner), "allowed");
  });
});

/**
 * XEP-0160 §4 (deliver stored messages when the user next sends available presence), in the
 * window where both happen at once: a message for a user with no available resource is being
 * written to offline storage when the user's initial presence arrives. The flush that presence
 * starts reads the queue before the write is committed; the message must still reach the
 * session that is now available, not wait for the next login.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startHarness, type ModuleHarness } from "../../src/module-harness.js";
import { message } from "../../src/modules/message.js";
import { offline } from "../../src/modules/offline.js";
import { presence } from "../../src/modules/presence.js";
import { roster } from "../../src/modules/roster.js";
import { parseElement } from "../../src/xmpp/xml-parse.js";

describe("offline storage racing initial presence (XEP-0160 §4)", () => {
  let h: ModuleHarness;
  before(async () => { h = await startHarness({ modules: [message, offline, presence, roster] }); });
  after(() => h.stop());

  it("a message committed after the presence's flush read the queue is delivered to the now available session", async () => {
    const alice = await h.connect("alice@localhost/a");
    const bob = await h.connect("bob@localhost/b", { available: false });
    // Hold the offline write until bob's presence has started its flush.
    const write = h.storage.messages.write.bind(h.storage.messages);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => { release = resolve; });
    let writing!: () => void;
    const written = new Promise<void>((resolve) => { writing = resolve; });
    h.storage.messages.write = async (record) => { writing(); await gate; return write(record); };

    const routed = h.router.fromClient(alice, parseElement("<message to='bob@localhost' type='chat' id='m1'><body>hi</body></message>"));
    await written;
    h.storage.messages.write = write;
    await h.send(bob, "<presence/>");
    assert.equal(bob.received.filter((s) => s.name === "message").length, 0, "nothing to flush yet: the write is held");
    release();
    await routed;
    const delivered = await bob.next((s) => s.name === "message" && s.attrs.id === "m1");
    assert.equal(delivered.getChildText("body"), "hi");
  });
});

/** XEP-0163 for contacts on other servers: which remote resources are available to whom, and what they want. */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { RemoteInterest } from "../../src/modules/pep-remote.js";
import { parseJid } from "../../src/xmpp/jid.js";

const TUNE = "http://jabber.org/protocol/tune";
const NICK = "http://jabber.org/protocol/nick";
const phone = parseJid("bob@remote.example/phone");
const laptop = parseJid("bob@remote.example/laptop");

describe("remote PEP interest (XEP-0163 §2.4, §4.3.4)", () => {
  it("features learned before or after the presence: the last items are due once, when both are known", () => {
    const r = new RemoteInterest({ contacts: 10, resourcesPerContact: 4, ownersPerResource: 4 });
    assert.equal(r.available("alice@here", phone), undefined, "features unknown yet");
    assert.deepEqual(r.learned(phone, new Set([`${TUNE}+notify`])), ["alice@here"]);
    assert.equal(r.available("alice@here", phone), undefined, "already available: no second round of last items");
    // Known features, a second owner: due at once.
    assert.deepEqual([...r.available("carol@here", phone)!], [`${TUNE}+notify`]);
    // The caps module's answer may come before the presence that showed them is seen.
    assert.deepEqual(r.learned(laptop, new Set([`${NICK}+notify`])), []);
    assert.deepEqual([...r.available("alice@here", laptop)!], [`${NICK}+notify`]);
  });

  it("learning again: due again only when a +notify was added", () => {
    const r = new RemoteInterest({ contacts: 10, resourcesPerContact: 4, ownersPerResource: 4 });
    r.available("alice@here", phone);
    r.learned(phone, new Set([`${TUNE}+notify`]));
    assert.deepEqual(r.learned(phone, new Set([`${TUNE}+notify`, "urn:xmpp:receipts"])), []);
    assert.deepEqual(r.learned(phone, new Set([`${TUNE}+notify`, `${NICK}+notify`])), ["alice@here"]);
  });

  it("wanting: the owner's available resources of that contact that show node+notify; unavailable removes", () => {
    const r = new RemoteInterest({ contacts: 10, resourcesPerContact: 4, ownersPerResource: 4 });
    r.available("alice@here", phone);
    r.available("alice@here", laptop);
    r.learned(phone, new Set([`${TUNE}+notify`]));
    r.learned(laptop, new Set([`${NICK}+notify`]));
    assert.deepEqual(r.wanting("alice@here", "bob@remote.example", TUNE), ["bob@remote.example/phone"]);
    assert.deepEqual(r.wanting("carol@here", "bob@remote.example", TUNE), [], "not available to carol");
    r.unavailable("alice@here", phone);
    assert.deepEqual(r.wanting("alice@here", "bob@remote.example", TUNE), []);
    assert.deepEqual(r.wanting("alice@here", "bob@remote.example", NICK), ["bob@remote.example/laptop"]);
  });

  it("bounded: resources per contact, owners per resource, contacts (oldest out)", () => {
    const r = new RemoteInterest({ contacts: 2, resourcesPerContact: 1, ownersPerResource: 1 });
    r.learned(phone, new Set([`${TUNE}+notify`]));
    assert.equal(r.available("alice@here", laptop), undefined);
    r.available("alice@here", phone);
    r.available("carol@here", phone);
    assert.deepEqual(r.wanting("alice@here", "bob@remote.example", TUNE), ["bob@remote.example/phone"]);
    assert.deepEqual(r.wanting("carol@here", "bob@remote.example", TUNE), [], "past ownersPerResource");
    assert.deepEqual(r.learned(laptop, new Set([`${TUNE}+notify`])), [], "past resourcesPerContact");
    for (const other of ["x@remote.example/r", "y@remote.example/r"]) r.available("alice@here", parseJid(other));
    assert.deepEqual(r.wanting("alice@here", "bob@remote.example", TUNE), [], "the oldest contact was evicted");
  });
});

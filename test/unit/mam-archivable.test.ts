/** Which messages MAM archives (Prosody's should_store, XEP-0313 §7 leaves it to the server). */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { archivable } from "../../src/modules/mam.js";
import { parseElement } from "../../src/xmpp/xml-parse.js";

const cases: Array<[string, boolean, string]> = [
  ["a chat message with a body", true, "<message type='chat'><body>hi</body></message>"],
  ["no type is normal", true, "<message><body>hi</body></message>"],
  ["groupchat is the room's archive, not the user's", false, "<message type='groupchat'><body>hi</body></message>"],
  ["headline", false, "<message type='headline'><body>news</body></message>"],
  ["a chat state alone", false, "<message type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"],
  ["a subject", true, "<message type='chat'><subject>s</subject></message>"],
  ["the store hint alone", true, "<message type='chat'><store xmlns='urn:xmpp:hints'/></message>"],
  ["no-store after the body still wins", false, "<message type='chat'><body>hi</body><no-store xmlns='urn:xmpp:hints'/></message>"],
  ["no-permanent-store before the body", false, "<message type='chat'><no-permanent-store xmlns='urn:xmpp:hints'/><body>hi</body></message>"],
  ["no-store and store: no-store wins", false, "<message type='chat'><store xmlns='urn:xmpp:hints'/><no-store xmlns='urn:xmpp:hints'/></message>"],
  ["a carbon wrapper of ours", false, "<message type='chat'><body>x</body><sent xmlns='urn:xmpp:carbons:2'/></message>"],
  ["a received carbon", false, "<message type='chat'><received xmlns='urn:xmpp:carbons:2'/></message>"],
  ["an archive result", false, "<message><result xmlns='urn:xmpp:mam:2'/><body>x</body></message>"],
  ["a delivery receipt", true, "<message type='chat'><received xmlns='urn:xmpp:receipts' id='1'/></message>"],
  ["a chat marker", true, "<message type='chat'><displayed xmlns='urn:xmpp:chat-markers:0' id='1'/></message>"],
  ["an OMEMO message without body", true, "<message type='chat'><encrypted xmlns='eu.siacs.conversations.axolotl'/></message>"],
  ["an EME hint", true, "<message type='chat'><encryption xmlns='urn:xmpp:eme:0' namespace='x'/></message>"],
  ["a direct room invitation", true, "<message><x xmlns='jabber:x:conference' jid='r@muc'/></message>"],
  ["a mediated invitation", true, "<message><x xmlns='http://jabber.org/protocol/muc#user'><invite from='a@b'/></x></message>"],
  ["muc#user without an invitation", false, "<message><x xmlns='http://jabber.org/protocol/muc#user'><decline/></x></message>"],
  ["a jingle message proposal", true, "<message type='chat'><propose xmlns='urn:xmpp:jingle-message:0' id='c'/></message>"],
];

describe("MAM: which messages are archived", () => {
  for (const [what, expected, xml] of cases) {
    it(`${what} → ${expected ? "archived" : "not archived"}`, () => {
      assert.equal(archivable(parseElement(xml)), expected);
    });
  }
});

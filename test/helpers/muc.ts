/** XEP-0045 steps for raw-socket tests: join a room, unlock a new one, and match what a room sends. */
import type { Element } from "@xmpp/xml";
import type { RawClient } from "./raw.js";

export const MUC = "http://jabber.org/protocol/muc";
export const MUC_USER = `${MUC}#user`;

/** §7.2.2: the occupant's own presence, with status 110. */
export const selfPresence = (room: string, nick: string) => (e: Element) =>
  e.is("presence") && e.attrs.from === `${room}/${nick}` && e.attrs.type === undefined
  && e.getChild("x", MUC_USER)?.getChildren("status").some((s) => s.attrs.code === "110") === true;
export const presenceOf = (room: string, nick: string, type?: string) => (e: Element) =>
  e.is("presence") && e.attrs.from === `${room}/${nick}` && e.attrs.type === type;
export const groupchat = (id: string) => (e: Element) => e.is("message") && e.attrs.type === "groupchat" && e.attrs.id === id;

export async function join(c: RawClient, room: string, nick: string, history = "<history maxstanzas='0'/>"): Promise<void> {
  const mark = c.elements.length;
  c.send(`<presence to='${room}/${nick}'><x xmlns='${MUC}'>${history}</x></presence>`);
  await c.waitForElement(selfPresence(room, nick), 15_000, mark);
  // §7.2.15: the subject (empty or not) comes after the history and ends the join.
  await c.waitForElement((e) => e.is("message") && e.attrs.from === room && e.getChild("subject") !== undefined, 15_000, mark);
}

/** The owner accepts the default configuration (XEP-0045 §10.1.2): the room is unlocked. */
export async function unlock(owner: RawClient, room: string): Promise<void> {
  owner.send(`<iq type='set' id='unlock' to='${room}'><query xmlns='${MUC}#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>`);
  await owner.waitForElement((e) => e.is("iq") && e.attrs.id === "unlock" && e.attrs.type === "result", 15_000);
}

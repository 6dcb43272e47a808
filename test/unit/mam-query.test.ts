/** XEP-0313 queries read without storage (src/modules/mam-query.ts). */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { parseArchiveQuery, idAt, MAM } from "../../src/modules/mam-query.js";
import { parseElement } from "../../src/xmpp/xml-parse.js";

const sizes = { defaultPageSize: 50, maxPageSize: 250 };
const query = (fields: string, rsm = "") => parseElement(`<query xmlns='${MAM}'><x xmlns='jabber:x:data' type='submit'>`
  + `<field var='FORM_TYPE' type='hidden'><value>${MAM}</value></field>${fields}</x>`
  + (rsm ? `<set xmlns='http://jabber.org/protocol/rsm'>${rsm}</set>` : "") + "</query>");
const field = (name: string, ...values: string[]) => `<field var='${name}'>${values.map((v) => `<value>${v}</value>`).join("")}</field>`;

describe("MAM query (XEP-0313 §4.1)", () => {
  it("with, start/end and RSM narrow one range; the tightest bound wins", () => {
    const q = parseArchiveQuery(query(field("with", "bob@localhost/phone") + field("start", "2026-01-01T00:00:00Z") + field("after-id", "5"),
      "<max>10</max><after>9</after>"), sizes);
    assert.deepEqual(q.range, { withBare: "bob@localhost", withResource: "phone", afterId: idAt(Date.parse("2026-01-01T00:00:00Z")) - 1, beforeId: undefined });
    assert.deepEqual(q.referencedIds.sort(), [5, 9]);
    assert.equal(q.pageSize, 10);
    assert.equal(q.newestFirst, false);
  });

  it("paging backwards, the page limit and ids: <before/> pages from the end, max is capped, ids are paged too", () => {
    const q = parseArchiveQuery(query(field("ids", "3", "4")), sizes);
    assert.deepEqual(q.ids, [3, 4]);
    assert.equal(q.pageSize, 50);
    const back = parseArchiveQuery(query("", "<max>100000</max><before/>"), sizes);
    assert.equal(back.newestFirst, true);
    assert.equal(back.pageSize, 250);
    assert.equal(parseArchiveQuery(parseElement(`<query xmlns='${MAM}'><flip-page/></query>`), sizes).flipPage, true);
  });

  it("malformed queries get their error", () => {
    const condition = (fields: string, rsm = "") => { try { parseArchiveQuery(query(fields, rsm), sizes); return "none"; } catch (e) { return (e as { condition: string }).condition; } };
    assert.equal(condition(field("subject", "x")), "bad-request");
    assert.equal(condition(field("with", "a@b@c")), "jid-malformed");
    assert.equal(condition(field("start", "yesterday")), "bad-request");
    assert.equal(condition("", "<max>-1</max>"), "bad-request");
    // An id that is not one of ours cannot be in the archive (§4.1.3).
    assert.equal(condition(field("before-id", "not-an-id")), "item-not-found");
  });
});

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { advanceMark, byOwner } from "../../src/storage/watermark.js";

describe("undelivered queue watermark", () => {
  it("moves over a contiguous run of acknowledged entries", () => {
    assert.deepEqual(advanceMark(0, [3, 5, 8], [3, 5]), { mark: 5, held: [] });
    assert.deepEqual(advanceMark(2, [3, 5, 8], [5, 8, 3]), { mark: 8, held: [] }, "order of acknowledgement does not matter");
  });

  it("holds acknowledgements above the first unacknowledged entry", () => {
    assert.deepEqual(advanceMark(0, [3, 5, 8, 9], [5, 9]), { mark: 0, held: [5, 9] });
    assert.deepEqual(advanceMark(0, [3, 5, 8, 9], [3, 9]), { mark: 3, held: [9] });
  });

  it("ignores ids that are not the owner's entries above the mark", () => {
    assert.deepEqual(advanceMark(4, [5, 6], [1, 4, 7]), { mark: 4, held: [] });
    assert.deepEqual(advanceMark(4, [], [5]), { mark: 4, held: [] });
  });

  it("gathers a commit's acknowledgements per owner, leaving out empty ones", () => {
    assert.deepEqual([...byOwner([{ owner: "a", ids: [1] }, { owner: "b", ids: [] }, { owner: "a", ids: [3, 2] }])], [["a", [1, 3, 2]]]);
  });
});

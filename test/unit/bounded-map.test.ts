/** The cache map every module uses (src/bounded-map.ts). */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { BoundedMap } from "../../src/bounded-map.js";

describe("BoundedMap", () => {
  it("a new key past the limit evicts the oldest entry; updating a key evicts nothing", () => {
    const m = new BoundedMap<string, number>(2);
    m.set("a", 1).set("b", 2);
    m.set("a", 10);
    assert.deepEqual([...m], [["a", 10], ["b", 2]]);
    m.set("c", 3);
    assert.deepEqual([...m], [["b", 2], ["c", 3]]);
  });
});

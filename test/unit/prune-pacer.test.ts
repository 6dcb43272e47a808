import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { PrunePacer } from "../../src/modules/prune-pacer.js";

const pacing = { targetMs: 5, share: 0.5, minBatch: 10, maxBatch: 5000, maxPauseMs: 1000 };

describe("PrunePacer", () => {
  it("grows the batch while deletes are quicker than the target, at most doubling a step", () => {
    const pacer = new PrunePacer(pacing);
    assert.equal(pacer.batch, 10);
    pacer.took(0.1);
    assert.equal(pacer.batch, 20);
    pacer.took(2.5);
    assert.equal(pacer.batch, 40);
    pacer.took(4);
    assert.equal(pacer.batch, 50);
  });

  it("settles where a batch takes the target, and shrinks by at most half after a slow one", () => {
    const pacer = new PrunePacer(pacing);
    // A store that deletes a record in 0.1 ms: the target of 5 ms is 50 records.
    for (let i = 0; i < 20; i++) pacer.took(pacer.batch * 0.1);
    assert.equal(pacer.batch, 50);
    pacer.took(500);
    assert.equal(pacer.batch, 25);
  });

  it("stays within the smallest and largest batch", () => {
    const pacer = new PrunePacer(pacing);
    for (let i = 0; i < 5; i++) pacer.took(100);
    assert.equal(pacer.batch, 10);
    for (let i = 0; i < 20; i++) pacer.took(0);
    assert.equal(pacer.batch, 5000);
  });

  it("pauses so that pruning takes at most its share of the time, and never longer than the cap", () => {
    const pacer = new PrunePacer(pacing);
    assert.equal(pacer.took(4), 4);
    assert.equal(new PrunePacer({ ...pacing, share: 0.2 }).took(4), 16);
    assert.equal(pacer.took(5000), 1000);
  });
});

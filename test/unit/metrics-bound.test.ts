/**
 * The bound counter and histogram families (src/metrics/bound.ts): what prom-client's Registry
 * renders from them, parsed by the same Prometheus text parser the metrics e2e test uses, equals
 * what prom-client's own Counter and Histogram render for the same observations.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { Counter, Histogram, Registry } from "prom-client";
import { getMetricsFromIterator } from "prom2javascript";
import { BoundCounter, BoundHistogram } from "../../src/metrics/bound.js";

const parse = async (registry: Registry) => getMetricsFromIterator((await registry.metrics()).split("\n")[Symbol.iterator]());
const BUCKETS = [0.001, 0.01, 0.1];
const OBSERVED: Array<[string, number]> = [["write", 0.0005], ["write", 0.001], ["write", 0.05], ["write", 3], ["get", 0.02]];

test("a bound histogram renders the buckets, sum and count prom-client's Histogram renders", async () => {
  const bound = new Registry();
  const reference = new Registry();
  const mine = new BoundHistogram({ name: "h_seconds", help: "h", labelNames: ["store", "operation"], buckets: BUCKETS }, bound);
  const theirs = new Histogram({ name: "h_seconds", help: "h", labelNames: ["store", "operation"], buckets: BUCKETS, registers: [reference] });
  for (const [operation, seconds] of OBSERVED) {
    mine.labels("messages", operation).observe(seconds);
    theirs.labels("messages", operation).observe(seconds);
  }
  const got = await parse(bound);
  assert.deepEqual(got, await parse(reference));
  const write = (got.h_seconds!.data as Array<{ labels: Record<string, string>; buckets: Record<string, number>; count: number; sum: number }>)
    .find((d) => d.labels.operation === "write")!;
  assert.deepEqual(write.buckets, { "0.001": 2, "0.01": 2, "0.1": 3, "+Inf": 4 });
  assert.equal(write.count, 4);
  assert.equal(write.sum, 0.0005 + 0.001 + 0.05 + 3);
});

test("a bound counter renders each child from first use, at zero until incremented, and resets", async () => {
  const registry = new Registry();
  const counter = new BoundCounter({ name: "c_total", help: "c", labelNames: ["outcome", "kind"] }, registry);
  const delivered = counter.labels("delivered", "message");
  counter.labels("bounced", "iq");
  delivered.inc();
  delivered.inc(2);
  const data = (await parse(registry)).c_total!.data as Array<{ labels: Record<string, string>; value: number }>;
  assert.deepEqual(data.map((d) => [d.labels.outcome, d.labels.kind, d.value]), [["delivered", "message", 3], ["bounced", "iq", 0]]);
  const reference = new Registry();
  new Counter({ name: "c_total", help: "c", labelNames: ["outcome", "kind"], registers: [reference] }).labels("delivered", "message").inc(3);
  const theirs = (await parse(reference)).c_total!;
  assert.equal(theirs.type, (await parse(registry)).c_total!.type);
  registry.resetMetrics();
  delivered.inc();
  assert.deepEqual(((await parse(registry)).c_total!.data as Array<{ value: number }>).map((d) => d.value), [1, 0],
    "a reset zeroes the children in place: one held across it keeps counting");
});

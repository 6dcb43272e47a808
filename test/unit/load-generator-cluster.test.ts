/**
 * The load generator's cluster pieces (bench/load/cluster-target.ts, proc.ts): how S3 pairs users
 * over nodes, and the server's CPU read over its whole process tree (a `--nodes` target is a
 * primary and its workers). Wrong here means wrong CPU-s per 10k and a wrong crossing share.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { crossNodePairs, shuffled } from "../../bench/load/cluster-target.js";
import { processTree, sampleProcess } from "../../bench/load/proc.js";

describe("load generator: pairing users over cluster nodes", () => {
  it("shuffles into a permutation fixed by the seed", () => {
    const items = Array.from({ length: 1000 }, (_, i) => i);
    const once = shuffled(items);
    assert.deepEqual([...once].sort((a, b) => a - b), items);
    assert.deepEqual(shuffled(items), once);
    assert.notDeepEqual(once, items);
    assert.notDeepEqual(shuffled(items, 17), once);
  });

  it("users connected round-robin over two nodes cross in every login-order pair, in about half the shuffled ones", () => {
    const node = (i: number) => `n${i % 2}`;
    const users = Array.from({ length: 1000 }, (_, i) => i);
    const crossing = (order: number[]) => order.filter((u, i) => node(u) !== node(order[i ^ 1]!)).length / order.length;
    assert.equal(crossing(users), 1);
    const share = crossing(shuffled(users));
    assert.ok(share > 0.4 && share < 0.6, `shuffled share ${share}`);
  });

  it("cross pairs put the two users of a pair on different nodes while two nodes have users left", () => {
    const nodeOf = new Map<string, string>([["a1", "A"], ["a2", "A"], ["a3", "A"], ["a4", "A"], ["b1", "B"], ["c1", "C"]]);
    const order = crossNodePairs([...nodeOf.keys()], (u) => nodeOf.get(u));
    assert.deepEqual([...order].sort(), [...nodeOf.keys()].sort());
    const pairs = [[order[0], order[1]], [order[2], order[3]], [order[4], order[5]]].map((p) => p.map((u) => nodeOf.get(u!)).sort().join(""));
    // Four users on A, one each on B and C: two pairs can cross, the last two users are both on A.
    assert.deepEqual(pairs, ["AB", "AC", "AA"]);
  });

  it("an unknown node counts as a node of its own", () => {
    const order = crossNodePairs(["x", "y"], (u) => (u === "x" ? "A" : undefined));
    assert.deepEqual([...order].sort(), ["x", "y"]);
  });
});

describe("load generator: server CPU over the process tree", { skip: existsSync("/proc/self/stat") ? false : "SKIPPED: no /proc" }, () => {
  // A parent that starts a child burning `seconds` of its own CPU; the child then waits (live) or
  // exits and is waited for by the parent (its CPU moves to the parent's cutime).
  const family = (childEnds: boolean, seconds: number) => {
    const child = `const t=process.cpuUsage();while((process.cpuUsage(t).user+process.cpuUsage(t).system)/1e6<${seconds});process.stdout.write('burnt');${childEnds ? "" : "setInterval(()=>{},1000);"}`;
    const parent = `const c=require('child_process').spawn(process.execPath,['-e',${JSON.stringify(child)}],{stdio:['ignore','pipe','ignore']});${childEnds ? "c.once('exit',()=>process.stdout.write('reaped'));" : "c.stdout.once('data',()=>process.stdout.write('burnt:'+c.pid));"}setInterval(()=>{},1000);`;
    const p = spawn(process.execPath, ["-e", parent], { stdio: ["ignore", "pipe", "ignore"] });
    const said = new Promise<string>((resolve) => p.stdout.once("data", (d) => resolve(String(d))));
    return { p, said };
  };

  it("counts a live child's CPU, and lists the child in the tree", async () => {
    const { p, said } = family(false, 0.3);
    let childPid = 0;
    try {
      childPid = Number((await said).split(":")[1]);
      assert.ok(processTree(p.pid!).includes(childPid));
      assert.ok(sampleProcess(p.pid!).cpuSeconds >= 0.3, `tree CPU ${sampleProcess(p.pid!).cpuSeconds} s`);
    } finally {
      if (childPid) process.kill(childPid, "SIGKILL");
      p.kill("SIGKILL");
    }
  });

  it("still counts a child that ended and was waited for", async () => {
    const { p, said } = family(true, 0.3);
    try {
      assert.equal(await said, "reaped");
      assert.deepEqual(processTree(p.pid!), [p.pid!]);
      assert.ok(sampleProcess(p.pid!).cpuSeconds >= 0.3, `tree CPU ${sampleProcess(p.pid!).cpuSeconds} s`);
    } finally { p.kill("SIGKILL"); }
  });
});

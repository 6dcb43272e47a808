/**
 * A log-bucketed latency histogram (1 % relative precision, like HdrHistogram at two significant
 * digits): constant memory whatever the message count, and mergeable across steps and runs.
 */
const GROWTH = 1.01;
const LOG_GROWTH = Math.log(GROWTH);
/** Values are recorded in microseconds; 0–1 µs share the first bucket. */
const BUCKETS = Math.ceil(Math.log(3_600_000_000) / LOG_GROWTH) + 1;

export class Histogram {
  private readonly counts = new Uint32Array(BUCKETS);
  count = 0;
  maxMs = 0;

  recordMs(ms: number): void {
    const us = Math.max(1, ms * 1000);
    this.counts[Math.min(BUCKETS - 1, Math.floor(Math.log(us) / LOG_GROWTH))]!++;
    this.count++;
    if (ms > this.maxMs) this.maxMs = ms;
  }

  /** The latency under which `p` percent of the recorded values fall, in milliseconds. */
  percentileMs(p: number): number {
    if (this.count === 0) return NaN;
    const rank = Math.ceil((p / 100) * this.count);
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i]!;
      // The bucket's upper edge, so a reported percentile never understates the latency.
      if (seen >= rank) return Math.min(this.maxMs, GROWTH ** (i + 1) / 1000);
    }
    return this.maxMs;
  }

  summary(): { count: number; p50ms: number; p99ms: number; p999ms: number; maxms: number } {
    const round = (v: number) => Math.round(v * 100) / 100;
    return {
      count: this.count, p50ms: round(this.percentileMs(50)), p99ms: round(this.percentileMs(99)),
      p999ms: round(this.percentileMs(99.9)), maxms: round(this.maxMs),
    };
  }
}

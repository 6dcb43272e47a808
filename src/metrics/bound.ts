/**
 * Counters and histograms for the per-stanza and per-storage-operation hot path. prom-client's
 * label children are not bound: every `inc()`/`observe()` on one validates and hashes its label
 * set again, and allocates doing so (bench:path measured ~1.8 KB per 1:1 message in counter.js,
 * histogram.js and the storage decorator). Here a child is a plain object holding numbers, created
 * once per label set; prom-client's Registry renders the family on scrape through the same
 * `get()` contract its own metrics implement, so the exposition format is unchanged.
 */
import type { Registry } from "prom-client";

interface Sample { labels: Record<string, string | number>; value: number; metricName?: string }

abstract class Family<Child> {
  private readonly children = new Map<string, { labels: Record<string, string>; child: Child }>();

  constructor(readonly name: string, readonly help: string, readonly type: "counter" | "histogram",
    private readonly labelNames: readonly string[], registry: Registry) {
    registry.registerMetric(this as never);
  }

  /** The child for these label values, created (and exposed, at zero) on first use. */
  labels(...values: string[]): Child {
    const key = values.join("\u0000");
    let entry = this.children.get(key);
    if (!entry) {
      entry = { labels: Object.fromEntries(this.labelNames.map((n, i) => [n, values[i] ?? ""])), child: this.newChild() };
      this.children.set(key, entry);
    }
    return entry.child;
  }

  /** prom-client's metric contract: what the Registry renders. */
  get(): { name: string; help: string; type: string; aggregator: "sum"; values: Sample[] } {
    const values: Sample[] = [];
    for (const { labels, child } of this.children.values()) this.samples(labels, child, values);
    return { name: this.name, help: this.help, type: this.type, aggregator: "sum", values };
  }

  /** Zeroes every child in place: the hot path holds its children across a reset. */
  reset(): void {
    for (const { child } of this.children.values()) this.zero(child);
  }

  protected abstract newChild(): Child;
  protected abstract zero(child: Child): void;
  protected abstract samples(labels: Record<string, string>, child: Child, out: Sample[]): void;
}

export class BoundCounterChild {
  value = 0;
  inc(by = 1): void { this.value += by; }
}

export class BoundCounter extends Family<BoundCounterChild> {
  constructor(options: { name: string; help: string; labelNames: readonly string[] }, registry: Registry) {
    super(options.name, options.help, "counter", options.labelNames, registry);
  }
  protected newChild(): BoundCounterChild { return new BoundCounterChild(); }
  protected zero(child: BoundCounterChild): void { child.value = 0; }
  protected samples(labels: Record<string, string>, child: BoundCounterChild, out: Sample[]): void {
    out.push({ labels, value: child.value });
  }
}

export class BoundHistogramChild {
  sum = 0;
  count = 0;
  /** Observations per bucket (not cumulative); the last slot is above the highest bound. */
  readonly counts: Float64Array;
  constructor(private readonly bounds: readonly number[]) { this.counts = new Float64Array(bounds.length + 1); }
  observe(value: number): void {
    let i = 0;
    while (i < this.bounds.length && value > this.bounds[i]!) i++;
    this.counts[i]!++;
    this.sum += value;
    this.count++;
  }
}

export class BoundHistogram extends Family<BoundHistogramChild> {
  private readonly bounds: readonly number[];
  constructor(options: { name: string; help: string; labelNames: readonly string[]; buckets: readonly number[] }, registry: Registry) {
    super(options.name, options.help, "histogram", options.labelNames, registry);
    this.bounds = [...options.buckets].sort((a, b) => a - b);
  }
  protected newChild(): BoundHistogramChild { return new BoundHistogramChild(this.bounds); }
  protected zero(child: BoundHistogramChild): void { child.counts.fill(0); child.sum = 0; child.count = 0; }
  protected samples(labels: Record<string, string>, child: BoundHistogramChild, out: Sample[]): void {
    let cumulative = 0;
    this.bounds.forEach((le, i) => {
      cumulative += child.counts[i]!;
      out.push({ metricName: `${this.name}_bucket`, labels: { ...labels, le }, value: cumulative });
    });
    out.push({ metricName: `${this.name}_bucket`, labels: { ...labels, le: "+Inf" }, value: child.count });
    out.push({ metricName: `${this.name}_sum`, labels, value: child.sum });
    out.push({ metricName: `${this.name}_count`, labels, value: child.count });
  }
}

/** Order statistics shared by the focused benchmarks (bench/*.ts). */

/** The middle value (the upper one of the two middles for an even count). */
export const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** The value at fraction `p` (0–1) of the sorted values; NaN when there are none. */
export const percentile = (xs: readonly number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))] ?? NaN;

/**
 * The undelivered queue's watermark (docs/STORAGE.md): a user's queue is their queued records above
 * `mark`, except the entries acknowledged out of order (`held`). One rule for every driver.
 */
export interface QueueMark {
  /** Every entry up to here is acknowledged. */
  mark: number;
  /** Acknowledged entries above the first unacknowledged one, ascending. */
  held: number[];
}

/**
 * Moves the watermark over every contiguous run of acknowledged entries. `queued` are the owner's
 * queued entries above `mark`, ascending, at least up to the largest acknowledged one; acknowledged
 * ids that are not among them (another owner's, or already passed) are ignored.
 */
export function advanceMark(mark: number, queued: readonly number[], acknowledged: Iterable<number>): QueueMark {
  const acked = new Set(acknowledged);
  let i = 0;
  while (i < queued.length && acked.has(queued[i]!)) mark = queued[i++]!;
  const held: number[] = [];
  for (; i < queued.length; i++) if (acked.has(queued[i]!)) held.push(queued[i]!);
  return { mark, held };
}

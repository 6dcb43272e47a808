/**
 * The archive's per-owner index, built in sorted bulk steps (migration 14; docs/STORAGE.md, "The
 * archive index on SQLite").
 *
 * Why not index each record as it is written: every per-owner index entry lands on a leaf page of
 * its own owner, and a commit writes each page it dirtied whole, so a record of ~300 bytes cost six
 * to eight 4 KB WAL frames and 48–75 µs (docs/PERFORMANCE.md, "What an archived message costs
 * SQLite"). Here a record is written with no per-owner entry. Once `every` records have gathered
 * above the mark, their entries go into `archive_entries` sorted by owner, so an owner's entries
 * of thousands of records share their leaves.
 *
 * A step is cut into slices of owners, one transaction per event-loop turn, so that no slice holds
 * the loop for long. `archive_index` says, after every slice, up to which record each owner's
 * entries are in: `through(owner)`. A query reads the owner's entries and scans the records above
 * `through(owner)` (the tail), so every entry is found exactly once, before, during and after a step.
 * Entries go with their record or side by triggers (migration 14), so deletes and pruning need not
 * know about them.
 */
import type Database from "better-sqlite3";

export interface ArchiveIndexOptions {
  /** Records above the mark that start a step. The tail a query scans is about this long. */
  every: number;
  /** Archive entries per slice, about: one slice is one transaction in one event-loop turn. */
  sliceEntries: number;
}

export const ARCHIVE_INDEX_DEFAULTS: ArchiveIndexOptions = { every: 8_000, sliceEntries: 1_000 };

/** The archive entries of the records that `records` (a condition on seq) selects: a row per side. */
const entriesOf = (records: string) => `
  SELECT sender_owner AS owner, id, 0 AS side, seq, sender_with AS correspondent FROM messages
    WHERE ${records} AND sender_owner IS NOT NULL AND id IS NOT NULL
  UNION ALL SELECT recipient_owner, id, 1, seq, recipient_with FROM messages
    WHERE ${records} AND recipient_owner IS NOT NULL AND id IS NOT NULL`;

interface StepPlan {
  /** The records (from, to] this step indexes. */
  from: number;
  to: number;
  /** The first owner of each slice after the first, in the database's order of owners. */
  sliceStarts: string[];
  /** Where the step starts (a step resumed after a restart): owners below it are done. */
  start: string | null;
}

export class ArchiveIndexer {
  private readonly stmt;
  private running: Promise<void> | undefined;
  private stopped = false;
  private newestSeq: number;
  /** The plan counts one record in this many: about fifty per slice. */
  private readonly sample: number;

  /**
   * `commitsHeld`: settles when a write may go ahead (the checkpointer's hold); `onError`: where a
   * failed step is reported (the next commit of records retries it).
   */
  constructor(
    private readonly db: Database.Database,
    private readonly options: ArchiveIndexOptions,
    private readonly commitsHeld: () => Promise<void> | undefined,
    private readonly onError: (message: string) => void,
  ) {
    this.stmt = {
      state: db.prepare("SELECT indexed_through AS indexedThrough, step_to AS stepTo, step_done_below AS doneBelow FROM archive_index"),
      through: db.prepare(`SELECT CASE WHEN step_done_below IS NOT NULL AND ? < step_done_below THEN step_to ELSE indexed_through END
        FROM archive_index`).pluck(),
      newest: db.prepare("SELECT coalesce(max(seq), 0) FROM messages").pluck(),
      // One record in @sample: grouping every entry of the tail held the loop for 10–15 ms at 8,000 records.
      owners: db.prepare(`SELECT owner, count(*) * @sample AS entries FROM (${entriesOf("seq > @from AND seq <= @to AND seq % @sample = 0")})
        WHERE @start IS NULL OR owner >= @start GROUP BY owner ORDER BY owner`),
      slice: db.prepare(`INSERT OR IGNORE INTO archive_entries (owner, id, side, seq, correspondent)
        SELECT owner, id, side, seq, correspondent FROM (${entriesOf("seq > @from AND seq <= @to")})
        WHERE (@lo IS NULL OR owner >= @lo) AND (@hi IS NULL OR owner < @hi) ORDER BY owner, id`),
      sliceDone: db.prepare("UPDATE archive_index SET step_to = @to, step_done_below = @hi"),
      stepDone: db.prepare("UPDATE archive_index SET indexed_through = @to, step_to = @to, step_done_below = NULL"),
    };
    this.sample = Math.max(1, Math.floor(options.sliceEntries / 50));
    this.newestSeq = this.stmt.newest.get() as number;
    // A step a restart cut short, or a tail that is already long, goes on now.
    this.written(this.newestSeq);
  }

  /** The newest record whose entries `owner` has in `archive_entries`; the records above it are the tail. */
  through(owner: string): number {
    return this.stmt.through.get(owner) as number;
  }

  /** After a commit of records: starts a step when the tail has grown to `every`. */
  written(newestSeq: number): void {
    this.newestSeq = Math.max(this.newestSeq, newestSeq);
    if (this.running || this.stopped) return;
    const state = this.state();
    if (state.doneBelow === null && this.newestSeq - state.indexedThrough < this.options.every) return;
    this.running = this.step().catch((err: unknown) => this.onError(String(err))).finally(() => { this.running = undefined; });
  }

  /** Finishes the slice in flight; the step goes on at the next start. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.running;
  }

  private state(): { indexedThrough: number; stepTo: number; doneBelow: string | null } {
    return this.stmt.state.get() as { indexedThrough: number; stepTo: number; doneBelow: string | null };
  }

  private async step(): Promise<void> {
    const plan = this.plan();
    const bounds = [plan.start, ...plan.sliceStarts, null];
    for (let i = 0; i + 1 < bounds.length; i++) {
      // The turn first, then the hold: a hold starts on a message from the checkpointer (a task), so
      // none can begin between a settled hold and the slice.
      await new Promise((resolve) => setImmediate(resolve));
      await this.commitsHeld();
      if (this.stopped) return;
      const slice = { from: plan.from, to: plan.to, lo: bounds[i]!, hi: bounds[i + 1]! };
      this.db.transaction(() => {
        this.stmt.slice.run(slice);
        if (slice.hi === null) this.stmt.stepDone.run(slice);
        else this.stmt.sliceDone.run(slice);
      })();
    }
  }

  /**
   * The records to index and where to cut them: a resumed step keeps its range and starts where it
   * stopped. The slices are cut from a sample of the records, so their sizes are about right; any
   * cut is correct, as the slices cover every owner from the start on whatever their bounds.
   */
  private plan(): StepPlan {
    const state = this.state();
    const to = state.doneBelow === null ? this.newestSeq : state.stepTo;
    const owners = this.stmt.owners.all({ from: state.indexedThrough, to, start: state.doneBelow, sample: this.sample }) as Array<{ owner: string; entries: number }>;
    const sliceStarts: string[] = [];
    let inSlice = 0;
    for (const { owner, entries } of owners) {
      if (inSlice > 0 && inSlice + entries > this.options.sliceEntries) {
        sliceStarts.push(owner);
        inSlice = 0;
      }
      inSlice += entries;
    }
    return { from: state.indexedThrough, to, sliceStarts, start: state.doneBelow };
  }
}

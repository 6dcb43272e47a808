/**
 * Where uploaded bytes live. Local disk now; an S3-compatible object store can implement the same
 * interface later. Ids are opaque, URL-safe and checked here, so no caller can reach outside the store.
 */
import { createWriteStream } from "node:fs";
import { mkdir, rm, link, unlink, open as openFile, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { Transform, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";

export interface FileStore {
  /**
   * Streams `body` into file `id` through a temporary file, in place only once complete with
   * exactly `size` bytes. On any failure — abort, too many or too few bytes (SizeMismatchError),
   * a full disk (code ENOSPC), an id that exists (code EEXIST) — nothing is left behind.
   */
  write(id: string, body: Readable, size: number): Promise<void>;
  /**
   * Opens a stored file, or undefined when there is none. Once open, the bytes stay readable even
   * if the file is deleted meanwhile (expiry racing a download). Either stream it or close it.
   */
  open(id: string): Promise<OpenFile | undefined>;
  delete(id: string): Promise<void>;
}

export interface OpenFile {
  size: number;
  /** The bytes of [start, end] (inclusive), or all; closes the file when done. */
  stream(range?: { start: number; end: number }): Readable;
  close(): Promise<void>;
}

export class SizeMismatchError extends Error {
  constructor(readonly tooLarge: boolean) {
    super(tooLarge ? "more bytes than announced" : "fewer bytes than announced");
  }
}

const ID = /^[A-Za-z0-9_-]{16,64}$/;

export function createLocalFileStore(dir: string): FileStore {
  const tmpDir = join(dir, ".tmp");
  const pathOf = (id: string) => {
    if (!ID.test(id)) throw new Error("invalid file id");
    return join(dir, id.slice(0, 2), id);
  };
  return {
    async write(id, body, size) {
      const final = pathOf(id);
      await mkdir(tmpDir, { recursive: true });
      const tmp = join(tmpDir, `${id}.${randomBytes(6).toString("hex")}`);
      let written = 0;
      const counter = new Transform({
        transform(chunk: Buffer, _enc, done) {
          written += chunk.length;
          done(written > size ? new SizeMismatchError(true) : null, chunk);
        },
      });
      try {
        await pipeline(body, counter, createWriteStream(tmp, { flags: "wx" }));
        if (written !== size) throw new SizeMismatchError(false);
        await mkdir(join(dir, id.slice(0, 2)), { recursive: true });
        // link + unlink instead of rename: fails with EEXIST rather than replacing a stored file.
        await link(tmp, final);
      } finally {
        await unlink(tmp).catch(() => {});
      }
    },
    async open(id) {
      let handle: FileHandle;
      try {
        handle = await openFile(pathOf(id), "r");
      } catch {
        return undefined;
      }
      let size: number;
      try {
        ({ size } = await handle.stat());
      } catch (err) {
        // The caller never sees this handle, so nobody else would close it.
        await handle.close();
        throw err;
      }
      return {
        size,
        stream: (range) => handle.createReadStream(range ? { start: range.start, end: range.end } : {}),
        close: () => handle.close(),
      };
    },
    async delete(id) {
      await rm(pathOf(id), { force: true });
    },
  };
}

/**
 * Values that are at hand on the hot path (a cache hit) and loaded otherwise. Continuing with one
 * is written once, here: synchronously when the value is there, so the common case takes no
 * promise hop, and after it settles when it is not. Call sites do not branch on which they got.
 */
export type MaybePromise<T> = T | Promise<T>;

export function andThen<T, R>(value: MaybePromise<T>, next: (value: T) => MaybePromise<R>): MaybePromise<R> {
  return value instanceof Promise ? value.then(next) : next(value);
}

/** Both values, as soon as both are at hand. */
export function both<A, B>(a: MaybePromise<A>, b: MaybePromise<B>): MaybePromise<[A, B]> {
  return a instanceof Promise || b instanceof Promise ? Promise.all([a, b]) : [a, b];
}

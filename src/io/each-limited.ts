/**
 * Runs `work` on every item in order with at most `limit` calls in flight (a
 * thread pool's worth of writes, say). After the first failure no further item
 * is started; the calls already running settle, then that failure is thrown.
 */
export async function eachLimited<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { err: unknown } | null = null;
  const runner = async (): Promise<void> => {
    while (next < items.length && failure === null) {
      const item = items[next++]!;
      try {
        await work(item);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  const runners: Promise<void>[] = [];
  for (let k = 0; k < Math.min(limit, items.length); k++) runners.push(runner());
  await Promise.all(runners);
  if (failure !== null) throw (failure as { err: unknown }).err;
}

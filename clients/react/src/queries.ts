import type { CanaryQueryClient, CanaryVersion, QueryKey } from "./types.js";

// The version of the most recently rendered CanaryProvider, for
// `withCanaryVersion(key)` called without a version (the guide's form).
let currentVersion: CanaryVersion | null = null;

/** @internal Set by `CanaryProvider` while it renders. */
export function setCurrentCanaryVersion(version: CanaryVersion | null): void {
  currentVersion = version;
}

/**
 * `[...key, canaryVersion]`: a query key per version, so v1 and v2 never share a
 * cache entry. Pass the version from `useCanaryVersion()` when an app has more
 * than one `CanaryProvider`; without it, the one the provider last rendered is used.
 */
export function withCanaryVersion<K extends QueryKey>(
  key: K,
  canaryVersion: CanaryVersion | null = currentVersion,
): [...K, CanaryVersion | null] {
  return [...key, canaryVersion];
}

/**
 * Drop the cached versions of `key` that nothing shows, and refetch the ones
 * shown: what to do when the version changes (a rollback), so no one is shown
 * data computed for the other version.
 */
export function invalidateCanaryQueries(queryClient: CanaryQueryClient, key: QueryKey): Promise<void> {
  queryClient.removeQueries({ queryKey: key, type: "inactive" });
  return queryClient.invalidateQueries({ queryKey: key });
}

/** @internal Drop every cached query whose key ends with `version` (made by `withCanaryVersion`). */
export function dropVersionCaches(queryClient: CanaryQueryClient, version: CanaryVersion): void {
  queryClient.removeQueries({
    predicate: (query) => query.queryKey.length > 0 && query.queryKey[query.queryKey.length - 1] === version,
  });
}

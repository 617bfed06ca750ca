/** Which side of a canary a context is served: `v1` the stable version, `v2` the canary. */
export type CanaryVersion = "v1" | "v2";

/** What `useCanaryVersion()` returns. Every field is always present; nothing ever throws. */
export interface CanaryState {
  /** `"v2"` inside the canary, `"v1"` outside it, `null` while loading or after a failure. */
  canaryVersion: CanaryVersion | null;
  /** `canaryVersion === "v2"`. */
  isCanary: boolean;
  /** The served rule-set version, e.g. `"v2.0.0"`. */
  version: string | null;
  /** The deployment that serves it. */
  deploymentId: string | null;
  /** True while the first answer for the current ids is awaited. */
  loading: boolean;
  /** The last resolve's failure, or null. */
  error: CanaryError | null;
}

/** A TanStack Query key (any array). */
export type QueryKey = readonly unknown[];

/**
 * The part of TanStack Query's `QueryClient` this package uses, so the package
 * needs no runtime dependency on it: pass a real `QueryClient`.
 */
export interface CanaryQueryClient {
  removeQueries(filters: {
    queryKey?: QueryKey;
    type?: "active" | "inactive" | "all";
    predicate?: (query: { queryKey: QueryKey }) => boolean;
  }): void;
  invalidateQueries(filters: { queryKey?: QueryKey }): Promise<void>;
}

/** A failed resolve: the HTTP status and the API's error code when there was an answer. */
export class CanaryError extends Error {
  readonly status: number | null;
  readonly code: string | null;

  constructor(message: string, status: number | null = null, code: string | null = null) {
    super(message);
    this.name = "CanaryError";
    this.status = status;
    this.code = code;
  }
}

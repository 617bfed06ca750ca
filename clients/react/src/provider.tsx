import { createContext, useContext, useEffect, useRef, useState, type ReactNode } from "react";

import { dropVersionCaches, invalidateCanaryQueries, setCurrentCanaryVersion } from "./queries.js";
import { resolveCanary } from "./resolve.js";
import {
  CanaryError,
  type CanaryQueryClient,
  type CanaryState,
  type CanaryVersion,
  type QueryKey,
} from "./types.js";

export interface CanaryProviderProps {
  /** Where Canary answers, e.g. `https://canary.example.com` (`""`: this page's origin). */
  baseUrl: string;
  /** A client token (`canary_ct_...`): resolve only, safe in a page. Never an API token. */
  token: string;
  rulesetId: string;
  userId?: string | null;
  sessionId?: string | null;
  workflowId?: string | null;
  /** TanStack Query's client: when the version changes, caches of the old one are dropped. */
  queryClient?: CanaryQueryClient;
  /**
   * Keys to pass to `invalidateCanaryQueries` when the version changes. Without
   * them, every cached query whose key ends with the old version is dropped.
   */
  canaryQueryKeys?: QueryKey[];
  /** Re-resolve this often (ms) so a rollback reaches an open page; 0 turns it off. */
  refreshIntervalMs?: number;
  /** Called after the version changed, e.g. to clear caches other than TanStack Query's. */
  onVersionChange?: (previous: CanaryVersion, next: CanaryVersion) => void;
  children?: ReactNode;
}

const LOADING: CanaryState = {
  canaryVersion: null,
  isCanary: false,
  version: null,
  deploymentId: null,
  loading: true,
  error: null,
};

const OUTSIDE_PROVIDER: CanaryState = {
  ...LOADING,
  loading: false,
  error: new CanaryError("useCanaryVersion() is used outside a <CanaryProvider>."),
};

const CanaryContext = createContext<CanaryState | null>(null);

/**
 * Resolves which version this context gets (`GET .../resolve`), again whenever
 * the ids change and every `refreshIntervalMs`, and shares the answer with
 * `useCanaryVersion()`. A failure becomes `error` with `canaryVersion: null`;
 * nothing here ever throws into rendering.
 */
export function CanaryProvider(props: CanaryProviderProps): ReactNode {
  const { baseUrl, token, rulesetId, userId, sessionId, workflowId } = props;
  const refreshIntervalMs = props.refreshIntervalMs ?? 60_000;
  const [state, setState] = useState<CanaryState>(LOADING);
  const latest = useRef(props);
  latest.current = props;
  const lastVersion = useRef<CanaryVersion | null>(null);

  // NOTE: set while rendering, so children rendered in this pass already key by it.
  setCurrentCanaryVersion(state.canaryVersion);

  useEffect(() => {
    let live = true;
    let sequence = 0;
    const controllers = new Set<AbortController>();
    setState((current) => (current === LOADING ? current : LOADING));

    const run = async (): Promise<void> => {
      const mine = ++sequence;
      const controller = new AbortController();
      controllers.add(controller);
      try {
        const resolved = await resolveCanary({
          baseUrl,
          token,
          rulesetId,
          userId,
          sessionId,
          workflowId,
          signal: controller.signal,
        });
        if (live && mine === sequence) {
          setState({
            canaryVersion: resolved.canaryVersion,
            isCanary: resolved.canaryVersion === "v2",
            version: resolved.version,
            deploymentId: resolved.deploymentId,
            loading: false,
            error: null,
          });
        }
      } catch (cause) {
        // Only the newest request of the current ids may report (an older or
        // aborted one is stale).
        if (live && mine === sequence) {
          const error = cause instanceof CanaryError ? cause : new CanaryError(String(cause));
          setState({ ...LOADING, loading: false, error });
        }
      } finally {
        controllers.delete(controller);
      }
    };

    void run();
    const timer = refreshIntervalMs > 0 ? setInterval(() => void run(), refreshIntervalMs) : null;
    return () => {
      live = false;
      for (const controller of controllers) controller.abort();
      if (timer !== null) clearInterval(timer);
    };
  }, [baseUrl, token, rulesetId, userId, sessionId, workflowId, refreshIntervalMs]);

  // The version changed (a rollback, or a promotion): drop what was cached for the old one.
  useEffect(() => {
    const next = state.canaryVersion;
    if (next === null) return;
    const previous = lastVersion.current;
    lastVersion.current = next;
    if (previous === null || previous === next) return;
    const { queryClient, canaryQueryKeys, onVersionChange } = latest.current;
    try {
      if (queryClient && canaryQueryKeys?.length) {
        for (const key of canaryQueryKeys) {
          invalidateCanaryQueries(queryClient, key).catch(() => undefined);
        }
      } else if (queryClient) {
        dropVersionCaches(queryClient, previous);
      }
      onVersionChange?.(previous, next);
    } catch (cause) {
      console.error("Canary: dropping the old version's caches failed", cause);
    }
  }, [state.canaryVersion]);

  return <CanaryContext.Provider value={state}>{props.children}</CanaryContext.Provider>;
}

/**
 * `{canaryVersion, isCanary, version, deploymentId, loading, error}` for the
 * nearest `CanaryProvider`. Outside one it reports an error instead of throwing.
 */
export function useCanaryVersion(): CanaryState {
  return useContext(CanaryContext) ?? OUTSIDE_PROVIDER;
}

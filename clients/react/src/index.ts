export { CanaryProvider, useCanaryVersion, type CanaryProviderProps } from "./provider.js";
export { invalidateCanaryQueries, withCanaryVersion } from "./queries.js";
export { resolveCanary, resolveUrl, type ResolveRequest, type Resolved } from "./resolve.js";
export {
  CanaryError,
  type CanaryQueryClient,
  type CanaryState,
  type CanaryVersion,
  type QueryKey,
} from "./types.js";

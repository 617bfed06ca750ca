import { CanaryError, type CanaryVersion } from "./types.js";

export interface ResolveRequest {
  baseUrl: string;
  token: string;
  rulesetId: string;
  userId?: string | null;
  sessionId?: string | null;
  workflowId?: string | null;
  signal?: AbortSignal;
}

export interface Resolved {
  canaryVersion: CanaryVersion;
  version: string;
  deploymentId: string;
}

/** The resolve URL: `GET {baseUrl}/api/v1/rulesets/{id}/resolve?user_id=...`. */
export function resolveUrl(request: ResolveRequest): string {
  const params = new URLSearchParams();
  if (request.userId) params.set("user_id", request.userId);
  if (request.sessionId) params.set("session_id", request.sessionId);
  if (request.workflowId) params.set("workflow_id", request.workflowId);
  const query = params.toString();
  const base = request.baseUrl.replace(/\/+$/, "");
  const path = `${base}/api/v1/rulesets/${encodeURIComponent(request.rulesetId)}/resolve`;
  return query ? `${path}?${query}` : path;
}

function asVersion(value: unknown): CanaryVersion | null {
  return value === "v1" || value === "v2" ? value : null;
}

/**
 * Ask Canary which version this context gets. Rejects with a `CanaryError` on
 * any failure (network, HTTP status, malformed answer); callers turn that into
 * state, never into a thrown render.
 */
export async function resolveCanary(request: ResolveRequest): Promise<Resolved> {
  let response: Response;
  try {
    response = await fetch(resolveUrl(request), {
      method: "GET",
      headers: { Authorization: `Bearer ${request.token}`, Accept: "application/json" },
      credentials: "omit",
      signal: request.signal,
    });
  } catch (cause) {
    const message = cause instanceof Error ? cause.message : String(cause);
    throw new CanaryError(`Canary resolve failed: ${message}`);
  }
  let body: Record<string, unknown> | null = null;
  try {
    const parsed: unknown = await response.json();
    body = parsed !== null && typeof parsed === "object" ? (parsed as Record<string, unknown>) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const detail = typeof body?.detail === "string" ? body.detail : response.statusText;
    const code = typeof body?.code === "string" ? body.code : null;
    throw new CanaryError(`Canary resolve failed (${response.status}): ${detail}`, response.status, code);
  }
  // The header is what every Canary answer carries; the body says the same.
  const canaryVersion = asVersion(response.headers.get("X-Canary-Version")) ?? asVersion(body?.canary_version);
  const version = body?.version;
  const deploymentId = body?.deployment_id;
  if (canaryVersion === null || typeof version !== "string" || typeof deploymentId !== "string") {
    throw new CanaryError("Canary resolve answered without a version.", response.status);
  }
  return { canaryVersion, version, deploymentId };
}

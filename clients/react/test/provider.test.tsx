import { QueryClient, QueryClientProvider, useQuery } from "@tanstack/react-query";
import { act, cleanup, render, screen, waitFor } from "@testing-library/react";
import type { ReactNode } from "react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import {
  CanaryProvider,
  type CanaryProviderProps,
  useCanaryVersion,
  withCanaryVersion,
} from "../src/index.js";

const RULESET = "8f14e45f-ceea-4e6e-9f3b-4b5b7f8c1a2d";

interface Answer {
  status?: number;
  canaryVersion?: string;
  version?: string;
  body?: unknown;
}

function answer({ status = 200, canaryVersion = "v2", version, body }: Answer): Response {
  const payload =
    body ??
    (status === 200
      ? {
          ruleset_id: RULESET,
          deployment_id: `dep-${canaryVersion}`,
          version: version ?? (canaryVersion === "v2" ? "v2.0.0" : "v1.0.0"),
          canary_version: canaryVersion,
          is_canary: canaryVersion === "v2",
        }
      : { detail: "Invalid or revoked client token.", code: "authentication_failed" });
  return new Response(JSON.stringify(payload), {
    status,
    headers: { "Content-Type": "application/json", "X-Canary-Version": canaryVersion },
  });
}

/** A fetch stand-in that answers by user id, and records every URL it was asked for. */
function mockFetch(byUser: Record<string, Answer | (() => Answer | Promise<Answer>)>) {
  const calls: { url: string; init: RequestInit | undefined }[] = [];
  const fetchMock = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = String(input);
    calls.push({ url, init });
    const user = new URL(url, "http://page.test").searchParams.get("user_id") ?? "";
    const entry = byUser[user];
    if (entry === undefined) throw new TypeError("Failed to fetch");
    return answer(typeof entry === "function" ? await entry() : entry);
  });
  vi.stubGlobal("fetch", fetchMock);
  return calls;
}

function Badge(): ReactNode {
  const { canaryVersion, isCanary, version, deploymentId, loading, error } = useCanaryVersion();
  if (loading) return <p>loading</p>;
  if (error) return <p role="alert">{error.message}</p>;
  return (
    <p>
      {isCanary && <span>Canary v2</span>}
      <span data-testid="state">{`${canaryVersion} ${version} ${deploymentId}`}</span>
    </p>
  );
}

function provider(props: Partial<CanaryProviderProps>, children: ReactNode = <Badge />) {
  return (
    <CanaryProvider baseUrl="https://canary.test/" token="canary_ct_abc" rulesetId={RULESET} {...props}>
      {children}
    </CanaryProvider>
  );
}

beforeEach(() => {
  vi.spyOn(console, "error");
});

afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
  vi.useRealTimers();
});

describe("CanaryProvider and useCanaryVersion", () => {
  it("shows loading, then the version the user gets", async () => {
    const calls = mockFetch({ alice: { canaryVersion: "v2" } });
    render(provider({ userId: "alice" }));
    expect(screen.getByText("loading")).toBeTruthy();
    expect(await screen.findByText("Canary v2")).toBeTruthy();
    expect(screen.getByTestId("state").textContent).toBe("v2 v2.0.0 dep-v2");
    expect(calls).toHaveLength(1);
    expect(calls[0]!.url).toBe(`https://canary.test/api/v1/rulesets/${RULESET}/resolve?user_id=alice`);
    const headers = calls[0]!.init!.headers as Record<string, string>;
    expect(headers.Authorization).toBe("Bearer canary_ct_abc");
    expect(calls[0]!.init!.credentials).toBe("omit");
  });

  it("re-resolves when the ids change, and ignores the answer for the old ids", async () => {
    let releaseAlice: (value: Answer) => void = () => undefined;
    const calls = mockFetch({
      alice: () => new Promise<Answer>((resolve) => (releaseAlice = resolve)),
      bob: { canaryVersion: "v1" },
    });
    const view = render(provider({ userId: "alice" }));
    await waitFor(() => expect(calls).toHaveLength(1));
    view.rerender(provider({ userId: "bob", sessionId: "s-1" }));
    await waitFor(() => expect(screen.getByTestId("state").textContent).toBe("v1 v1.0.0 dep-v1"));
    expect(calls[1]!.url).toContain("user_id=bob&session_id=s-1");
    await act(async () => releaseAlice({ canaryVersion: "v2" })); // late, for the old ids
    expect(screen.getByTestId("state").textContent).toBe("v1 v1.0.0 dep-v1");
    expect(screen.queryByText("Canary v2")).toBeNull();
  });

  it("reports a failed resolve as an error with canaryVersion null, never throwing", async () => {
    mockFetch({ alice: { status: 401 } });
    let seen: ReturnType<typeof useCanaryVersion> | null = null;
    function Probe(): ReactNode {
      seen = useCanaryVersion();
      return null;
    }
    render(provider({ userId: "alice" }, <Probe />));
    await waitFor(() => expect(seen!.loading).toBe(false));
    expect(seen!.canaryVersion).toBeNull();
    expect(seen!.isCanary).toBe(false);
    expect(seen!.error!.status).toBe(401);
    expect(seen!.error!.code).toBe("authentication_failed");
    expect(seen!.error!.message).toContain("Invalid or revoked client token.");
  });

  it("reports network failures and malformed answers the same way", async () => {
    mockFetch({ carol: { body: { nothing: true } } });
    render(provider({ userId: "nobody" }));
    expect((await screen.findByRole("alert")).textContent).toContain("Failed to fetch");
    cleanup();
    render(provider({ userId: "carol", refreshIntervalMs: 0 }));
    expect((await screen.findByRole("alert")).textContent).toContain("without a version");
  });

  it("goes from v2 to null when a later resolve fails", async () => {
    let fail = false;
    mockFetch({ alice: () => (fail ? { status: 503 } : { canaryVersion: "v2" }) });
    vi.useFakeTimers({ shouldAdvanceTime: true });
    render(provider({ userId: "alice", refreshIntervalMs: 1000 }));
    expect(await screen.findByText("Canary v2")).toBeTruthy();
    fail = true;
    await act(async () => {
      await vi.advanceTimersByTimeAsync(1000);
    });
    expect((await screen.findByRole("alert")).textContent).toContain("503");
  });

  it("outside a provider: an error, not an exception", () => {
    render(<Badge />);
    expect(screen.getByRole("alert").textContent).toContain("outside a <CanaryProvider>");
  });
});

describe("version-keyed caches", () => {
  it("keys queries by version and drops the old version's cache when X-Canary-Version changes", async () => {
    let served = "v2";
    mockFetch({ alice: () => ({ canaryVersion: served }) });
    const queryClient = new QueryClient({ defaultOptions: { queries: { retry: false } } });
    const fetched: string[] = [];
    const changes: string[] = [];

    function Rules(): ReactNode {
      const { canaryVersion } = useCanaryVersion();
      const { data } = useQuery({
        queryKey: withCanaryVersion(["rulesets"], canaryVersion),
        queryFn: async () => {
          fetched.push(String(canaryVersion));
          return `rules for ${canaryVersion}`;
        },
        enabled: canaryVersion !== null,
      });
      return <p data-testid="rules">{data ?? "none"}</p>;
    }

    vi.useFakeTimers({ shouldAdvanceTime: true });
    render(
      <QueryClientProvider client={queryClient}>
        {provider(
          {
            userId: "alice",
            queryClient,
            refreshIntervalMs: 1000,
            onVersionChange: (previous, next) => changes.push(`${previous}->${next}`),
          },
          <Rules />,
        )}
      </QueryClientProvider>,
    );
    await waitFor(() => expect(screen.getByTestId("rules").textContent).toBe("rules for v2"));
    expect(queryClient.getQueryData(["rulesets", "v2"])).toBe("rules for v2");

    served = "v1"; // rolled back
    await act(async () => {
      await vi.advanceTimersByTimeAsync(1000);
    });
    await waitFor(() => expect(screen.getByTestId("rules").textContent).toBe("rules for v1"));
    expect(changes).toEqual(["v2->v1"]);
    expect(queryClient.getQueryData(["rulesets", "v2"])).toBeUndefined();
    const cached = queryClient.getQueryCache().findAll({ queryKey: ["rulesets"] });
    expect(cached.map((q) => q.queryKey[1])).not.toContain("v2");
    expect(fetched).toEqual(["v2", "v1"]);
  });

  it("invalidates the listed keys instead, when canaryQueryKeys is given", async () => {
    let served = "v1";
    mockFetch({ alice: () => ({ canaryVersion: served }) });
    const queryClient = new QueryClient();
    queryClient.setQueryData(["rulesets", "v1"], "old v1");
    queryClient.setQueryData(["rulesets", "v2"], "old v2");
    queryClient.setQueryData(["other", "v1"], "kept");
    vi.useFakeTimers({ shouldAdvanceTime: true });
    render(provider({ userId: "alice", queryClient, canaryQueryKeys: [["rulesets"]], refreshIntervalMs: 1000 }));
    await screen.findByTestId("state");
    served = "v2";
    await act(async () => {
      await vi.advanceTimersByTimeAsync(1000);
    });
    await screen.findByText("Canary v2");
    expect(queryClient.getQueryData(["rulesets", "v1"])).toBeUndefined();
    expect(queryClient.getQueryData(["rulesets", "v2"])).toBeUndefined();
    expect(queryClient.getQueryData(["other", "v1"])).toBe("kept");
  });
});

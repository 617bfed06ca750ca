/**
 * The page served at /demo/: the guide's example, on this package, against a real
 * Canary. Built into assignments/demo/canary-demo.js by `npm run build:demo`.
 */
import { QueryClient, QueryClientProvider, useQuery } from "@tanstack/react-query";
import { type ReactNode, StrictMode, useState } from "react";
import { createRoot } from "react-dom/client";

import { CanaryProvider, useCanaryVersion, withCanaryVersion } from "../src/index.js";

interface DemoConfig {
  baseUrl: string;
  token: string;
  rulesetId: string;
  users: string[];
  userId: string;
}

interface Rule {
  name: string;
  condition: string;
  output: unknown;
}

const config = JSON.parse(document.getElementById("canary-demo-config")?.textContent ?? "{}") as DemoConfig;
const queryClient = new QueryClient({ defaultOptions: { queries: { retry: false } } });

async function fetchRules(version: string): Promise<Rule[]> {
  const response = await fetch(`/demo/rules?version=${encodeURIComponent(version)}`);
  if (!response.ok) throw new Error(`rules: HTTP ${response.status}`);
  return ((await response.json()) as { rules: Rule[] }).rules;
}

/** The guide's component: a badge for the canary, and a list cached per version. */
function Checkout(): ReactNode {
  const { canaryVersion, isCanary, version, loading, error } = useCanaryVersion();
  const rules = useQuery({
    queryKey: withCanaryVersion(["demo-rules"], canaryVersion),
    queryFn: () => fetchRules(version ?? ""),
    enabled: canaryVersion !== null && version !== null,
  });

  return (
    <section>
      <h2>
        Checkout discounts
        {isCanary && (
          <span className="badge" data-testid="canary-badge">
            Canary v2
          </span>
        )}
      </h2>
      <p className="status" data-testid="status">
        {loading && "Resolving which version you get…"}
        {error && <span className="error">Could not resolve: {error.message}</span>}
        {!loading && !error && (
          <>
            You get <strong data-testid="version">{version}</strong> (<code>{canaryVersion}</code>).
          </>
        )}
      </p>
      <h3>Rules in your version</h3>
      {rules.isPending && canaryVersion !== null && <p>Loading rules…</p>}
      <ul data-testid="rules">
        {(rules.data ?? []).map((rule) => (
          <li key={rule.name}>
            <strong>{rule.name}</strong>: <code>{rule.condition}</code> → <code>{JSON.stringify(rule.output)}</code>
          </li>
        ))}
      </ul>
    </section>
  );
}

function Demo(): ReactNode {
  const [userId, setUserId] = useState(config.userId);
  return (
    <>
      <h1>Canary demo: useCanaryVersion</h1>
      <p>
        Rule set <code>canary-demo</code> runs a canary of v2.0.0 for <code>alice</code> only. This page resolves
        with a browser-safe client token and keys its query cache by version.
      </p>
      <p className="users">
        Signed in as:{" "}
        {config.users.map((user) => (
          <button key={user} type="button" aria-pressed={user === userId} onClick={() => setUserId(user)}>
            {user}
          </button>
        ))}
      </p>
      <CanaryProvider
        baseUrl={config.baseUrl}
        token={config.token}
        rulesetId={config.rulesetId}
        userId={userId}
        queryClient={queryClient}
        refreshIntervalMs={5000}
      >
        <Checkout />
      </CanaryProvider>
      <footer>
        Promote or roll back the <code>canary-demo</code> deployment in the <a href="/admin/">admin</a>: within five
        seconds this page re-resolves, and the old version's cached list is dropped.
      </footer>
    </>
  );
}

const root = document.getElementById("root");
if (root) {
  createRoot(root).render(
    <StrictMode>
      <QueryClientProvider client={queryClient}>
        <Demo />
      </QueryClientProvider>
    </StrictMode>,
  );
}

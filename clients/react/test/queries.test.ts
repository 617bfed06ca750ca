import { QueryClient } from "@tanstack/react-query";
import { describe, expect, it } from "vitest";

import { invalidateCanaryQueries, resolveUrl, withCanaryVersion } from "../src/index.js";

describe("withCanaryVersion", () => {
  it("appends the version to the key", () => {
    expect(withCanaryVersion(["rulesets"], "v1")).toEqual(["rulesets", "v1"]);
    expect(withCanaryVersion(["rulesets", { page: 2 }], "v2")).toEqual(["rulesets", { page: 2 }, "v2"]);
  });

  it("uses null before any provider resolved", () => {
    expect(withCanaryVersion(["rulesets"])).toEqual(["rulesets", null]);
  });
});

describe("invalidateCanaryQueries", () => {
  it("drops cached versions nobody shows and leaves other keys alone", async () => {
    const queryClient = new QueryClient();
    queryClient.setQueryData(["rulesets", "v1"], 1);
    queryClient.setQueryData(["rulesets", "v2"], 2);
    queryClient.setQueryData(["users", "v2"], 3);
    await invalidateCanaryQueries(queryClient, ["rulesets"]);
    expect(queryClient.getQueryData(["rulesets", "v1"])).toBeUndefined();
    expect(queryClient.getQueryData(["rulesets", "v2"])).toBeUndefined();
    expect(queryClient.getQueryData(["users", "v2"])).toBe(3);
  });
});

describe("resolveUrl", () => {
  it("builds the resolve URL with only the ids given", () => {
    expect(resolveUrl({ baseUrl: "", token: "t", rulesetId: "r", workflowId: "w 1" })).toBe(
      "/api/v1/rulesets/r/resolve?workflow_id=w+1",
    );
    expect(resolveUrl({ baseUrl: "https://c.test//", token: "t", rulesetId: "r" })).toBe(
      "https://c.test/api/v1/rulesets/r/resolve",
    );
  });
});

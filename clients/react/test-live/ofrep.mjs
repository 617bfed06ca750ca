// OpenFeature's web SDK and OFREP web provider pointed at a running Canary, as a browser
// page would use them; run by tests/clients/test_ofrep_providers.py.
// Env: BASE, TOKEN (a client token), ORIGIN, FLAG, USERS (comma-separated).
// Prints one JSON document: each user's evaluation details, a missing flag's, and the
// Access-Control-Allow-Origin of every answer the provider read.
import { OpenFeature } from "@openfeature/web-sdk";
import { OFREPWebProvider } from "@openfeature/ofrep-web-provider";

const { BASE, TOKEN, ORIGIN, FLAG, USERS } = process.env;
const allowOrigins = [];

// A browser sends Origin itself; node's fetch is told to, and the CORS answer recorded.
async function browserFetch(input, init) {
  const request = new Request(input, init);
  const headers = new Headers(request.headers);
  headers.set("Origin", ORIGIN);
  const response = await fetch(new Request(request, { headers }));
  allowOrigins.push(response.headers.get("access-control-allow-origin"));
  return response;
}

const provider = new OFREPWebProvider({
  baseUrl: BASE,
  headers: [["Authorization", `Bearer ${TOKEN}`]],
  fetchImplementation: browserFetch,
  pollInterval: 0,
});

const users = {};
const first = USERS.split(",")[0];
await OpenFeature.setContext({ targetingKey: first });
await OpenFeature.setProviderAndWait(provider);
const client = OpenFeature.getClient();
for (const user of USERS.split(",")) {
  await OpenFeature.setContext({ targetingKey: user });
  const details = client.getStringDetails(FLAG, "none");
  users[user] = {
    value: details.value,
    variant: details.variant,
    reason: details.reason,
    metadata: details.flagMetadata,
  };
}
const missing = client.getStringDetails("no-such-flag", "fallback");
await OpenFeature.close();
console.log(
  JSON.stringify({
    users,
    missing: { value: missing.value, errorCode: missing.errorCode },
    allowOrigins,
  }),
);

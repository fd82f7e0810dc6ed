// Run by canary.test.ts in a child process whose stdout and stderr it
// checks for the canary token:
//
//   node canary_flows.js SOCKET API_URL CANARY
//
// Drives every path of the client that handles a token (headers, watch,
// gleanFetch's 401 → invalidate → retry, gleanApiToken's refusals) and
// every error path, against canary.test.ts's fake tokend, whose tokens are
// the canary. Fails (exit 1) when it did not see the canary where a caller
// asked for headers, or when an error's message, stack, inspection or JSON
// carries it. Prints one JSON line: the flows run and the errors caught, by
// class name only.

import * as path from "node:path";
import * as util from "node:util";
import { Client, gleanApiToken, gleanFetch } from "@tokend/client";

const [socket, api, canary] = process.argv.slice(2);
if (!socket || !api || !canary) {
  process.stderr.write("usage: node canary_flows.js SOCKET API_URL CANARY\n");
  process.exit(2);
}

const flows: string[] = [];
const errors: string[] = [];

function leaks(text: string | undefined): boolean {
  return text !== undefined && text.includes(canary!);
}

function check(flow: string, err: unknown): void {
  const views = [
    err instanceof Error ? err.message : String(err),
    err instanceof Error ? err.stack : undefined,
    util.inspect(err, { depth: 20, showHidden: true }),
    JSON.stringify(err),
    String(err),
  ];
  if (views.some(leaks)) {
    process.stderr.write(`flow ${flow}: an error carries the token\n`);
    process.exit(1);
  }
  errors.push(`${flow}:${err instanceof Error ? err.name : typeof err}`);
}

async function expectError(flow: string, run: () => Promise<unknown>): Promise<void> {
  try {
    await run();
  } catch (err) {
    check(flow, err);
    flows.push(flow);
    return;
  }
  process.stderr.write(`flow ${flow}: expected an error\n`);
  process.exit(1);
}

function mustHold(flow: string, ok: boolean): void {
  if (!ok) {
    process.stderr.write(`flow ${flow}: unexpected result\n`);
    process.exit(1);
  }
  flows.push(flow);
}

async function main(): Promise<void> {
  const client = new Client({ socket, timeoutMs: 5_000 });

  const h = await client.headers("user");
  mustHold("headers", h.headers.Authorization === `Bearer ${canary}`);

  const watch = client.watch("user");
  const first = await watch.next();
  await watch.return();
  mustHold("watch", first.value?.headers.Authorization === `Bearer ${canary}`);

  const token = await gleanApiToken(client, "user")();
  mustHold("gleanApiToken", token === canary);

  // The API refuses every token: one report, one retry, the 401 returned.
  const res = await gleanFetch(client, "user")(`${api}/rest/api/v1/search`, {
    method: "POST",
    body: "{}",
  });
  await res.text();
  mustHold("gleanFetch-401", res.status === 401);

  await expectError("headers-denied", () => client.headers("forbidden"));
  await expectError("headers-precondition", () => client.headers("expired"));
  await expectError("invalidate-denied", () => client.invalidate("forbidden", "0011223344556677"));
  await expectError("watch-denied", () => client.watch("forbidden").next());
  await expectError("credentials-internal", () => client.credentials());
  // The token was handed out, then Invalidate is refused.
  await expectError("gleanFetch-invalidate-refused", () =>
    gleanFetch(client, "report-refused")(`${api}/rest/api/v1/search`),
  );
  // The token was handed out, then the HTTP request fails.
  await expectError("gleanFetch-network", () =>
    gleanFetch(client, "user")("http://127.0.0.1:1/unreachable"),
  );
  await expectError("gleanApiToken-extra-header", () => gleanApiToken(client, "oauth")());
  await expectError("gleanApiToken-not-bearer", () => gleanApiToken(client, "basic")());
  const lonely = new Client({ socket: path.join(path.dirname(socket), "nobody.sock") });
  await expectError("unreachable", () => lonely.headers("user"));
  lonely.close();
  client.close();

  process.stdout.write(`${JSON.stringify({ flows, errors })}\n`);
}

main().catch((err: unknown) => {
  // The parent checks stderr for the token too.
  process.stderr.write(`canary_flows failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});

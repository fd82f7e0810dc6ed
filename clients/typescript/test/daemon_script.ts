// The package against the real daemon, driven by the repository's
// tests/typescript_client.rs (not part of `npm test`, which needs no daemon):
//
//   node daemon_script.js COMMAND SOCKET ARGS...
//
// SOCKET `env` means `new Client()` with no socket option (TOKEND_SOCKET).
// Prints one JSON object per line; a failed call prints
// {"error": {"name", "code", "message", "isTokendError"}}.
//
//   headers SOCKET CREDENTIAL [ACT_AS]   the Headers
//   watch SOCKET CREDENTIAL N            each of the first N Headers, then {"returned": true}
//   invalidate SOCKET CREDENTIAL         {"before", "refreshing", "stale", "after"} fingerprints
//   credentials SOCKET                   the list
//   api-token SOCKET CREDENTIAL          {"token"} from gleanApiToken
//   glean-fetch SOCKET CREDENTIAL URL    {"status", "body"} of a POST through gleanFetch
//   glean-sdk SOCKET CREDENTIAL SERVER_URL api-token|fetch [ACT_AS]
//                                        the official Glean SDK's search.query({query: "test",
//                                        pageSize: 1}) with gleanApiToken as its apiToken or
//                                        gleanFetch as its fetcher: {"requestID", "titles"}
//   glean-sdk-chat SOCKET CREDENTIAL SERVER_URL api-token|fetch [ACT_AS]
//                                        the same SDK's chat.create with one USER message:
//                                        {"chatId", "texts"}

import { Glean, HTTPClient } from "@gleanwork/api-client";
import { Client, TokendError, gleanApiToken, gleanFetch } from "@tokend/client";

function print(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

async function run(client: Client, command: string, args: string[]): Promise<void> {
  const [credential = "", extra] = args;
  switch (command) {
    case "headers":
      print(await client.headers(credential, extra ? { actAs: extra } : {}));
      return;
    case "watch": {
      const n = Number(extra);
      const watch = client.watch(credential);
      for (let i = 0; i < n; i++) {
        const next = await watch.next();
        if (next.done) throw new Error(`the stream ended after ${i} responses`);
        print(next.value);
      }
      print({ returned: (await watch.return()).done });
      return;
    }
    case "invalidate": {
      const before = await client.headers(credential, { timeoutMs: 5_000 });
      const refreshing = await client.invalidate(credential, before.fingerprint);
      // A report about a fingerprint that is not the current token's is ignored.
      const stale = await client.invalidate(credential, "0000000000000000");
      const after = await client.headers(credential, { timeoutMs: 5_000 });
      print({ before: before.fingerprint, refreshing, stale, after: after.fingerprint });
      return;
    }
    case "credentials":
      print(await client.credentials());
      return;
    case "api-token":
      print({ token: await gleanApiToken(client, credential)() });
      return;
    case "glean-fetch": {
      const res = await gleanFetch(client, credential)(extra ?? "", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: '{"query":"test","pageSize":1}',
      });
      print({ status: res.status, body: await res.text() });
      return;
    }
    case "glean-sdk":
    case "glean-sdk-chat": {
      const [, serverURL, mode, actAs] = args;
      const opts = actAs ? { actAs } : {};
      const glean =
        mode === "api-token"
          ? new Glean({ serverURL, apiToken: gleanApiToken(client, credential, opts) })
          : new Glean({
              serverURL,
              httpClient: new HTTPClient({ fetcher: gleanFetch(client, credential, opts) }),
            });
      if (command === "glean-sdk-chat") {
        const chat = await glean.client.chat.create({
          messages: [{ author: "USER", fragments: [{ text: "What are the latest quarterly results?" }] }],
        });
        print({
          chatId: chat.chatId,
          texts: (chat.messages ?? []).flatMap((m) => (m.fragments ?? []).map((f) => f.text)),
        });
        return;
      }
      const found = await glean.client.search.query({ query: "test", pageSize: 1 });
      print({
        requestID: found.requestID,
        titles: (found.results ?? []).map((r) => r.title),
      });
      return;
    }
    default:
      throw new Error(`unknown command ${command}`);
  }
}

async function main(): Promise<void> {
  const [command, socket, ...args] = process.argv.slice(2);
  if (!command || !socket) {
    process.stderr.write("usage: node daemon_script.js COMMAND SOCKET ARGS...\n");
    process.exit(2);
  }
  const client = socket === "env" ? new Client() : new Client({ socket });
  try {
    await run(client, command, args);
  } catch (err) {
    if (!(err instanceof Error)) throw err;
    print({
      error: {
        name: err.name,
        code: err instanceof TokendError ? err.codeName : undefined,
        message: err.message,
        isTokendError: err instanceof TokendError,
      },
    });
  } finally {
    client.close();
  }
}

void main();

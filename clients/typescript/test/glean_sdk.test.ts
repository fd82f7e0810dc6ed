// The official Glean SDK (@gleanwork/api-client, a dev dependency) through
// gleanApiToken and gleanFetch, against a fake tokend and a local HTTP
// server standing in for Glean's search endpoint (it checks the bearer
// token and answers an empty SearchResponse).

import { strict as assert } from "node:assert";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, beforeEach, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { Glean, HTTPClient } from "@gleanwork/api-client";
import { Client, gleanApiToken, gleanFetch } from "@tokend/client";
import { type Fake, response, startFake } from "./fake";

interface Seen {
  path: string;
  authorization: string;
  actAs: string | undefined;
  body: unknown;
}

describe("the Glean SDK", () => {
  let fake: Fake;
  let client: Client;
  let api: http.Server;
  let serverURL: string;
  let current = 1;
  let invalidated: string[] = [];
  let refused = new Set<string>();
  let seen: Seen[] = [];

  beforeEach(() => {
    current = 1;
    invalidated = [];
    refused = new Set();
    seen = [];
  });

  before(async () => {
    fake = await startFake({
      GetHeaders(
        call: grpc.ServerUnaryCall<{ credential: string; actAs: string }, unknown>,
        cb: grpc.sendUnaryData<unknown>,
      ) {
        const headers: [string, string][] = [["Authorization", `Bearer tok-${current}`]];
        if (call.request.actAs) headers.push(["X-Glean-ActAs", call.request.actAs]);
        cb(null, response(headers, `fp-${current}`));
      },
      Invalidate(
        call: grpc.ServerUnaryCall<{ credential: string; tokenFingerprint: string }, unknown>,
        cb: grpc.sendUnaryData<unknown>,
      ) {
        invalidated.push(call.request.tokenFingerprint);
        const replaced = call.request.tokenFingerprint === `fp-${current}`;
        if (replaced) current++;
        cb(null, { refreshing: replaced });
      },
    });
    client = new Client({ socket: fake.socket });
    api = http.createServer((req, res) => {
      let body = "";
      req.setEncoding("utf8");
      req.on("data", (c: string) => (body += c));
      req.on("end", () => {
        const authorization = req.headers.authorization ?? "";
        seen.push({
          path: req.url ?? "",
          authorization,
          actAs: req.headers["x-glean-actas"] as string | undefined,
          body: body ? JSON.parse(body) : undefined,
        });
        const token = authorization.replace(/^Bearer /, "");
        if (!token || refused.has(token)) {
          res.writeHead(401, { "content-type": "text/plain" });
          res.end("Not allowed");
          return;
        }
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ requestID: `req-${seen.length}`, results: [], hasMoreResults: false }));
      });
    });
    await new Promise<void>((r) => api.listen(0, "127.0.0.1", r));
    serverURL = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;
  });
  after(async () => {
    client.close();
    await fake.close();
    api.closeAllConnections();
    await new Promise((r) => api.close(r));
  });

  it("searches with gleanApiToken as its apiToken, asking tokend on every request", async () => {
    const glean = new Glean({ apiToken: gleanApiToken(client, "search-bot"), serverURL });
    const first = await glean.client.search.query({ query: "test", pageSize: 1 });
    assert.equal(first.requestID, "req-1");
    await client.invalidate("search-bot", "fp-1"); // a rotation
    const second = await glean.client.search.query({ query: "again", pageSize: 1 });
    assert.equal(second.requestID, "req-2");
    assert.deepEqual(
      seen.map((s) => [s.path, s.authorization, s.body]),
      [
        ["/rest/api/v1/search", "Bearer tok-1", { query: "test", pageSize: 1 }],
        ["/rest/api/v1/search", "Bearer tok-2", { query: "again", pageSize: 1 }],
      ],
    );
  });

  it("recovers from a 401 with gleanFetch as its fetcher: one report, one retry", async () => {
    refused.add("tok-1");
    const glean = new Glean({
      serverURL,
      httpClient: new HTTPClient({ fetcher: gleanFetch(client, "search-bot") }),
    });
    const result = await glean.client.search.query({ query: "test", pageSize: 1 });
    assert.equal(result.requestID, "req-2");
    assert.deepEqual(invalidated, ["fp-1"]);
    assert.deepEqual(
      seen.map((s) => [s.authorization, s.body]),
      [
        ["Bearer tok-1", { query: "test", pageSize: 1 }],
        ["Bearer tok-2", { query: "test", pageSize: 1 }],
      ],
    );
  });

  it("sends X-Glean-ActAs for a global token through gleanFetch", async () => {
    const glean = new Glean({
      serverURL,
      apiToken: "replaced-by-gleanFetch",
      httpClient: new HTTPClient({
        fetcher: gleanFetch(client, "global-bot", { actAs: "alice@corp.example" }),
      }),
    });
    await glean.client.search.query({ query: "test" });
    assert.equal(seen.length, 1);
    assert.equal(seen[0]!.authorization, "Bearer tok-1");
    assert.equal(seen[0]!.actAs, "alice@corp.example");
  });

  it("refuses gleanApiToken for a global token before any request", async () => {
    const glean = new Glean({
      apiToken: gleanApiToken(client, "global-bot", { actAs: "alice@corp.example" }),
      serverURL,
    });
    await assert.rejects(glean.client.search.query({ query: "test" }), /X-Glean-ActAs.*gleanFetch/s);
    assert.equal(seen.length, 0);
  });
});

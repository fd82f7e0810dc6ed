// gleanApiToken and gleanFetch against a fake tokend and a local HTTP API
// that answers 401 to the tokens it is told to refuse.

import { strict as assert } from "node:assert";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, beforeEach, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { Client, PermissionDenied, gleanApiToken, gleanFetch } from "@tokend/client";
import { CANARY, type Fake, response, startFake, status } from "./fake";

interface Seen {
  method: string;
  url: string;
  authorization: string;
  actAs: string | undefined;
  contentType: string | undefined;
  custom: string | undefined;
  body: string;
}

describe("Glean helpers", () => {
  let fake: Fake;
  let client: Client;
  let api: http.Server;
  let base: string;

  // tokend's side: token n is `tok-n` (fingerprint `fp-n`); Invalidate of
  // the current one moves to the next.
  let current = 1;
  let invalidated: string[] = [];
  let gets = 0;
  // The API's side: refuses these tokens with 401.
  let refused = new Set<string>();
  let seen: Seen[] = [];

  beforeEach(() => {
    current = 1;
    invalidated = [];
    gets = 0;
    refused = new Set(["tok-1"]);
    seen = [];
  });

  before(async () => {
    fake = await startFake({
      GetHeaders(
        call: grpc.ServerUnaryCall<{ credential: string; actAs: string }, unknown>,
        cb: grpc.sendUnaryData<unknown>,
      ) {
        gets++;
        const { credential, actAs } = call.request;
        if (credential === "forbidden") {
          return cb(status(grpc.status.PERMISSION_DENIED, "uid 0 may not use credential `forbidden`"));
        }
        const token = credential === "canary" ? CANARY : `tok-${current}`;
        const headers: [string, string][] = [["Authorization", `Bearer ${token}`]];
        if (actAs) headers.push(["X-Glean-ActAs", actAs]);
        if (credential === "oauth") headers.push(["X-Glean-Auth-Type", CANARY]);
        if (credential === "basic") headers[0] = ["Authorization", `Basic ${CANARY}`];
        cb(null, response(headers, `fp-${current}`));
      },
      Invalidate(
        call: grpc.ServerUnaryCall<{ credential: string; tokenFingerprint: string }, unknown>,
        cb: grpc.sendUnaryData<unknown>,
      ) {
        invalidated.push(`${call.request.credential}:${call.request.tokenFingerprint}`);
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
          method: req.method ?? "",
          url: req.url ?? "",
          authorization,
          actAs: req.headers["x-glean-actas"] as string | undefined,
          contentType: req.headers["content-type"],
          custom: req.headers["x-custom"] as string | undefined,
          body,
        });
        const token = authorization.replace(/^Bearer /, "");
        if (refused.has(token)) {
          res.writeHead(401, { "content-type": "application/json" });
          res.end('{"error":"token rejected"}');
        } else {
          res.writeHead(200, { "content-type": "application/json" });
          res.end(JSON.stringify({ ok: true, token }));
        }
      });
    });
    await new Promise<void>((r) => api.listen(0, "127.0.0.1", r));
    base = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;
  });
  after(async () => {
    client.close();
    await fake.close();
    api.closeAllConnections();
    await new Promise((r) => api.close(r));
  });

  describe("gleanFetch", () => {
    it("sends every header tokend returns and keeps the caller's", async () => {
      refused.clear();
      const f = gleanFetch(client, "global-bot", { actAs: "alice@corp.example" });
      const res = await f(`${base}/rest/api/v1/search`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: "Bearer caller's", "X-Custom": "1" },
        body: '{"query":"q"}',
      });
      assert.equal(res.status, 200);
      assert.equal(seen.length, 1);
      assert.equal(seen[0]!.authorization, "Bearer tok-1"); // tokend's replaces the caller's
      assert.equal(seen[0]!.actAs, "alice@corp.example");
      assert.equal(seen[0]!.contentType, "application/json");
      assert.equal(seen[0]!.custom, "1");
      assert.equal(seen[0]!.body, '{"query":"q"}');
      assert.deepEqual(invalidated, []);
    });

    it("on a 401 reports the token and retries once with the replacement", async () => {
      const f = gleanFetch(client, "cc");
      const res = await f(`${base}/rest/api/v1/search`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: '{"query":"test","pageSize":1}',
      });
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), { ok: true, token: "tok-2" });
      assert.deepEqual(invalidated, ["cc:fp-1"]);
      assert.deepEqual(
        seen.map((s) => [s.method, s.authorization, s.contentType, s.body]),
        [
          ["POST", "Bearer tok-1", "application/json", '{"query":"test","pageSize":1}'],
          ["POST", "Bearer tok-2", "application/json", '{"query":"test","pageSize":1}'],
        ],
      );
    });

    it("retries a Request object with its body", async () => {
      const f = gleanFetch(client, "cc");
      const req = new Request(`${base}/rest/api/v1/chat`, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-Custom": "kept" },
        body: JSON.stringify({ messages: ["hi"] }),
      });
      const res = await f(req);
      assert.equal(res.status, 200);
      assert.deepEqual(invalidated, ["cc:fp-1"]);
      assert.equal(seen.length, 2);
      for (const s of seen) {
        assert.equal(s.url, "/rest/api/v1/chat");
        assert.equal(s.body, '{"messages":["hi"]}');
        assert.equal(s.custom, "kept");
      }
      assert.deepEqual(seen.map((s) => s.authorization), ["Bearer tok-1", "Bearer tok-2"]);
    });

    it("retries only once: a second 401 is returned", async () => {
      refused = new Set(["tok-1", "tok-2", "tok-3"]);
      const res = await gleanFetch(client, "cc")(`${base}/x`);
      assert.equal(res.status, 401);
      assert.deepEqual(await res.json(), { error: "token rejected" });
      assert.equal(seen.length, 2);
      assert.deepEqual(invalidated, ["cc:fp-1"]);
    });

    it("reports but does not resend a streamed body", async () => {
      const body = new ReadableStream({
        start(c) {
          c.enqueue(new TextEncoder().encode("streamed"));
          c.close();
        },
      });
      const res = await gleanFetch(client, "cc")(`${base}/upload`, {
        method: "POST",
        body,
        duplex: "half",
      } as RequestInit);
      assert.equal(res.status, 401);
      assert.equal(seen.length, 1);
      assert.equal(seen[0]!.body, "streamed");
      assert.deepEqual(invalidated, ["cc:fp-1"]);
    });

    it("uses the fetch it is given", async () => {
      const calls: [string, string | null][] = [];
      const fake = async (input: string | URL | Request, init?: RequestInit) => {
        calls.push([String(input), new Headers(init?.headers).get("authorization")]);
        return new Response(null, { status: calls.length === 1 ? 401 : 204 });
      };
      const res = await gleanFetch(client, "cc", { fetch: fake })("https://glean.invalid/x");
      assert.equal(res.status, 204);
      assert.deepEqual(calls, [
        ["https://glean.invalid/x", "Bearer tok-1"],
        ["https://glean.invalid/x", "Bearer tok-2"],
      ]);
      assert.deepEqual(invalidated, ["cc:fp-1"]);
    });

    it("rejects with tokend's refusal and sends nothing", async () => {
      await assert.rejects(gleanFetch(client, "forbidden")(`${base}/x`), PermissionDenied);
      assert.equal(seen.length, 0);
    });
  });

  describe("gleanApiToken", () => {
    it("resolves to the bearer token, asking tokend on every call", async () => {
      const token = gleanApiToken(client, "cc", { scopes: ["SEARCH"] });
      assert.equal(await token(), "tok-1");
      await client.invalidate("cc", "fp-1");
      assert.equal(await token(), "tok-2");
      assert.equal(gets, 2);
    });

    it("refuses a credential that needs more than Authorization, naming the header, not its value", async () => {
      const err = await gleanApiToken(client, "oauth")().catch((e: unknown) => e);
      assert.ok(err instanceof Error);
      assert.match(err.message, /X-Glean-Auth-Type/);
      assert.match(err.message, /gleanFetch/);
      assert.ok(!err.message.includes(CANARY), err.message);
      const global = await gleanApiToken(client, "g", { actAs: "a@corp.example" })().catch((e: unknown) => e);
      assert.match(String(global), /X-Glean-ActAs/);
    });

    it("refuses a non-bearer Authorization without quoting it", async () => {
      const err = await gleanApiToken(client, "basic")().catch((e: unknown) => e);
      assert.ok(err instanceof Error);
      assert.match(err.message, /no bearer Authorization/);
      assert.ok(!String(err.stack).includes(CANARY));
    });

    it("rejects with tokend's refusal", async () => {
      await assert.rejects(gleanApiToken(client, "forbidden")(), PermissionDenied);
    });
  });
});

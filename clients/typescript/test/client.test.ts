// Socket resolution and the unary calls against a fake tokend.

import { strict as assert } from "node:assert";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import type * as grpc from "@grpc/grpc-js";
import { Client, DEFAULT_SOCKET, resolveSocket } from "@tokend/client";
import { type Fake, response, startFake } from "./fake";

describe("resolveSocket", () => {
  it("takes the option over TOKEND_SOCKET over the default", () => {
    const env = { TOKEND_SOCKET: "/env/tokend.sock" };
    assert.equal(resolveSocket("/opt/tokend.sock", env), "/opt/tokend.sock");
    assert.equal(resolveSocket(undefined, env), "/env/tokend.sock");
    assert.equal(resolveSocket(undefined, {}), DEFAULT_SOCKET);
    assert.equal(DEFAULT_SOCKET, "/run/tokend/tokend.sock");
  });

  it("counts empty values as unset", () => {
    assert.equal(resolveSocket("", { TOKEND_SOCKET: "" }), DEFAULT_SOCKET);
    assert.equal(resolveSocket("", { TOKEND_SOCKET: "/env/s" }), "/env/s");
  });

  it("makes a relative path absolute", () => {
    assert.equal(resolveSocket("run/t.sock", {}), path.resolve("run/t.sock"));
    assert.equal(resolveSocket(undefined, { TOKEND_SOCKET: "t.sock" }), path.resolve("t.sock"));
  });

  it("gives the client a unix:// target with the absolute path", () => {
    const client = new Client({ socket: "rel/tokend.sock" });
    try {
      assert.equal(client.socket, path.resolve("rel/tokend.sock"));
      assert.equal(client.target, `unix://${path.resolve("rel/tokend.sock")}`);
      assert.ok(client.target.startsWith("unix:///"));
    } finally {
      client.close();
    }
  });
});

describe("Client against a fake tokend", () => {
  let fake: Fake;
  const seen: { request: Record<string, unknown>; authority: string; deadline: unknown }[] = [];
  const invalidated: Record<string, unknown>[] = [];

  before(async () => {
    fake = await startFake({
      GetHeaders(call: grpc.ServerUnaryCall<Record<string, unknown>, unknown>, cb: grpc.sendUnaryData<unknown>) {
        seen.push({
          request: call.request,
          authority: call.getHost(),
          deadline: call.getDeadline(),
        });
        cb(
          null,
          response(
            [
              ["Authorization", "Bearer tok-1"],
              ["X-Glean-ActAs", String(call.request.actAs)],
              ["X-Extra", "z"],
            ],
            "00112233aabbccdd",
            new Date("2031-05-06T07:08:09.250Z"),
          ),
        );
      },
      Invalidate(call: grpc.ServerUnaryCall<Record<string, unknown>, unknown>, cb: grpc.sendUnaryData<unknown>) {
        invalidated.push(call.request);
        cb(null, { refreshing: call.request.tokenFingerprint === "00112233aabbccdd" });
      },
      ListCredentials(_call: unknown, cb: grpc.sendUnaryData<unknown>) {
        cb(null, {
          credentials: [
            {
              name: "search-bot",
              kind: "glean_token",
              permission: "user",
              state: "CREDENTIAL_STATE_FRESH",
              expiresAt: { seconds: "1900000000", nanos: 0 },
              scopes: ["SEARCH"],
              owner: "team@corp.example",
              instance: "https://acme-be.glean.com",
            },
            {
              name: "sso",
              kind: "oauth_refresh",
              state: "CREDENTIAL_STATE_NEEDS_LOGIN",
              lastError: "no refresh token yet; run `tokenctl login sso`",
              fleet: {
                node: "host-b",
                role: "unreachable",
                leader: "host-a",
                unreachableSince: { seconds: "1899999970", nanos: 0 },
              },
            },
          ],
        });
      },
    });
  });
  after(() => fake.close());

  it("reads TOKEND_SOCKET when no socket is given", async () => {
    const saved = process.env.TOKEND_SOCKET;
    process.env.TOKEND_SOCKET = fake.socket;
    const client = new Client();
    try {
      assert.equal(client.target, `unix://${fake.socket}`);
      const h = await client.headers("search-bot", { actAs: "a@corp.example" });
      assert.equal(h.headers.Authorization, "Bearer tok-1");
    } finally {
      client.close();
      if (saved === undefined) delete process.env.TOKEND_SOCKET;
      else process.env.TOKEND_SOCKET = saved;
    }
  });

  it("sends the request's fields and :authority localhost, and returns the headers in order", async () => {
    const client = new Client({ socket: fake.socket });
    try {
      seen.length = 0;
      const h = await client.headers("global-bot", {
        actAs: "alice@corp.example",
        scopes: ["SEARCH", "CHAT"],
        minValidSeconds: 90.5,
      });
      assert.equal(seen.length, 1);
      const { request, authority, deadline } = seen[0]!;
      assert.equal(authority, "localhost");
      assert.equal(request.credential, "global-bot");
      assert.equal(request.actAs, "alice@corp.example");
      assert.deepEqual(request.requiredScopes, ["SEARCH", "CHAT"]);
      assert.deepEqual(request.minValid, { seconds: "90", nanos: 500_000_000 });
      // A deadline is sent (the client's default, 10 s).
      const left = Number(deadline) - Date.now();
      assert.ok(left > 5_000 && left <= 10_000, `deadline in ${left} ms`);

      assert.deepEqual(Object.entries(h.headers), [
        ["Authorization", "Bearer tok-1"],
        ["X-Glean-ActAs", "alice@corp.example"],
        ["X-Extra", "z"],
      ]);
      assert.equal(h.fingerprint, "00112233aabbccdd");
      assert.equal(h.expiresAt?.toISOString(), "2031-05-06T07:08:09.250Z");
      assert.equal(h.stale, false);
    } finally {
      client.close();
    }
  });

  it("sends no minValid, act-as or scopes unless asked", async () => {
    const client = new Client({ socket: fake.socket, timeoutMs: 3_000 });
    try {
      seen.length = 0;
      await client.headers("search-bot");
      const { request, deadline } = seen[0]!;
      assert.equal(request.minValid, null);
      assert.equal(request.actAs, "");
      assert.deepEqual(request.requiredScopes, []);
      const left = Number(deadline) - Date.now();
      assert.ok(left > 1_000 && left <= 3_000, `deadline in ${left} ms`);
    } finally {
      client.close();
    }
  });

  it("refuses a bad minValidSeconds before calling", async () => {
    const client = new Client({ socket: fake.socket });
    try {
      seen.length = 0;
      await assert.rejects(client.headers("x", { minValidSeconds: -1 }), RangeError);
      await assert.rejects(client.headers("x", { minValidSeconds: Number.NaN }), RangeError);
      assert.throws(() => client.watch("x", { minValidSeconds: Infinity }), RangeError);
      assert.equal(seen.length, 0);
    } finally {
      client.close();
    }
  });

  it("invalidate() reports the fingerprint and answers whether tokend refreshes", async () => {
    const client = new Client({ socket: fake.socket });
    try {
      invalidated.length = 0;
      assert.equal(await client.invalidate("cc", "00112233aabbccdd"), true);
      assert.equal(await client.invalidate("cc", "ffffffffffffffff"), false);
      assert.deepEqual(invalidated, [
        { credential: "cc", tokenFingerprint: "00112233aabbccdd" },
        { credential: "cc", tokenFingerprint: "ffffffffffffffff" },
      ]);
    } finally {
      client.close();
    }
  });

  it("credentials() lists statuses with lower-case states and Dates", async () => {
    const client = new Client({ socket: fake.socket });
    try {
      const list = await client.credentials();
      assert.deepEqual(list, [
        {
          name: "search-bot",
          kind: "glean_token",
          permission: "user",
          state: "fresh",
          expiresAt: new Date(1_900_000_000_000),
          scopes: ["SEARCH"],
          owner: "team@corp.example",
          lastError: "",
          instance: "https://acme-be.glean.com",
        },
        {
          name: "sso",
          kind: "oauth_refresh",
          permission: "",
          state: "needs_login",
          scopes: [],
          owner: "",
          lastError: "no refresh token yet; run `tokenctl login sso`",
          instance: "",
          fleet: {
            node: "host-b",
            role: "unreachable",
            leader: "host-a",
            unreachableSince: new Date(1_899_999_970_000),
          },
        },
      ]);
    } finally {
      client.close();
    }
  });
});

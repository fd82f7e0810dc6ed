// gRPC codes → TokendError subclasses, with tokend's message verbatim.

import { strict as assert } from "node:assert";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import {
  Client,
  FailedPrecondition,
  Internal,
  InvalidArgument,
  NeedsLogin,
  NotFound,
  PermissionDenied,
  ResourceExhausted,
  TokendError,
  Unavailable,
} from "@tokend/client";
import { type Fake, startFake, status } from "./fake";

type Class = new (...args: never[]) => TokendError;

// What the fake answers, by credential name: [code, tokend's message, class].
const CASES: Record<string, [grpc.status, string, Class]> = {
  missing: [
    grpc.status.NOT_FOUND,
    "no credential named `missing` is configured; `tokenctl status` lists those you may use",
    NotFound,
  ],
  forbidden: [
    grpc.status.PERMISSION_DENIED,
    "uid 1000 (gid 1000, pid 42) may not use credential `forbidden` (if one by that name exists; " +
      "`tokenctl status` lists those you may use); add the uid or one of its groups to the " +
      "credential's `allow` in tokend's config",
    PermissionDenied,
  ],
  global: [
    grpc.status.INVALID_ARGUMENT,
    "credential `global` is a global Glean token, which requires the X-Glean-ActAs header: " +
      "set act_as to the email of the user to act as",
    InvalidArgument,
  ],
  expired: [
    grpc.status.FAILED_PRECONDITION,
    "credential `expired` expired at 2024-01-01T00:00:00Z (1y ago); it must be rotated",
    FailedPrecondition,
  ],
  sso: [
    grpc.status.FAILED_PRECONDITION,
    "credential `sso` needs login: no refresh token yet; run `tokenctl login sso`",
    NeedsLogin,
  ],
  slow: [
    grpc.status.UNAVAILABLE,
    "credential `slow` has no token valid for the required time yet: token endpoint timed out; " +
      "tokend keeps retrying",
    Unavailable,
  ],
  busy: [
    grpc.status.RESOURCE_EXHAUSTED,
    "credential `busy`: reported tokens were replaced several times just now; tokend replaces " +
      "at most one every 2s after that, try again in 1s",
    ResourceExhausted,
  ],
  broken: [grpc.status.INTERNAL, "internal error: the refresh task died", Internal],
  odd: [grpc.status.ABORTED, "aborted for a test", TokendError],
};

function code(name: string): string {
  return Object.keys(grpc.status).find(
    (k) => grpc.status[k as keyof typeof grpc.status] === CASES[name]![0],
  )!;
}

describe("errors", () => {
  let fake: Fake;
  let client: Client;

  before(async () => {
    const fail = (credential: string) => {
      const c = CASES[credential];
      return c ? status(c[0], c[1]) : status(grpc.status.UNKNOWN, `no case ${credential}`);
    };
    fake = await startFake({
      GetHeaders(call: grpc.ServerUnaryCall<{ credential: string }, unknown>, cb: grpc.sendUnaryData<unknown>) {
        if (call.request.credential === "hang") return; // never answers
        cb(fail(call.request.credential));
      },
      WatchHeaders(call: grpc.ServerWritableStream<{ credential: string }, unknown>) {
        call.emit("error", fail(call.request.credential));
      },
      Invalidate(call: grpc.ServerUnaryCall<{ credential: string }, unknown>, cb: grpc.sendUnaryData<unknown>) {
        cb(fail(call.request.credential));
      },
      ListCredentials(_call: unknown, cb: grpc.sendUnaryData<unknown>) {
        cb(fail("broken"));
      },
    });
    client = new Client({ socket: fake.socket });
  });
  after(async () => {
    client.close();
    await fake.close();
  });

  for (const [credential, [, message, cls]] of Object.entries(CASES)) {
    it(`${code(credential)} → ${cls.name}, tokend's message verbatim`, async () => {
      const err = await client.headers(credential).then(
        () => assert.fail("resolved"),
        (e: unknown) => e,
      );
      assert.ok(err instanceof cls, `${String(err)} is not a ${cls.name}`);
      assert.ok(err instanceof TokendError);
      assert.ok(err instanceof Error);
      assert.equal(err.message, message);
      assert.equal(err.name, cls.name);
      assert.equal(err.code, CASES[credential]![0]);
      assert.equal(err.codeName, code(credential));
      assert.equal(String(err), `${cls.name}: ${message}`);
    });
  }

  it("only a FAILED_PRECONDITION that says `needs login` is NeedsLogin", async () => {
    const login = await client.headers("sso").catch((e: unknown) => e);
    assert.ok(login instanceof NeedsLogin && login instanceof FailedPrecondition);
    const expired = await client.headers("expired").catch((e: unknown) => e);
    assert.ok(expired instanceof FailedPrecondition && !(expired instanceof NeedsLogin));
  });

  it("maps the errors of every call", async () => {
    await assert.rejects(client.invalidate("forbidden", "0011223344556677"), PermissionDenied);
    await assert.rejects(client.invalidate("busy", "0011223344556677"), ResourceExhausted);
    await assert.rejects(client.credentials(), Internal);
    const watch = client.watch("missing");
    await assert.rejects(watch.next(), (e: unknown) => e instanceof NotFound && /`missing`/.test(e.message));
    assert.deepEqual(await watch.next(), { value: undefined, done: true });
  });

  it("an unreachable socket is Unavailable, naming the socket", async () => {
    const socket = path.join(fake.dir, "nobody-listens.sock");
    const lonely = new Client({ socket, timeoutMs: 5_000 });
    try {
      const err = await lonely.headers("x").catch((e: unknown) => e);
      assert.ok(err instanceof Unavailable, String(err));
      assert.equal(err.code, grpc.status.UNAVAILABLE);
      assert.ok(err.message.includes(`cannot reach tokend at ${socket}`), err.message);
      assert.ok(err.message.includes("TOKEND_SOCKET"), err.message);
    } finally {
      lonely.close();
    }
  });

  it("a call past its deadline is Unavailable (DEADLINE_EXCEEDED)", async () => {
    const started = Date.now();
    const err = await client.headers("hang", { timeoutMs: 300 }).catch((e: unknown) => e);
    assert.ok(err instanceof Unavailable, String(err));
    assert.equal(err.codeName, "DEADLINE_EXCEEDED");
    const took = Date.now() - started;
    assert.ok(took >= 250 && took < 5_000, `took ${took} ms`);
  });

  it("an aborted call rejects with the signal's reason", async () => {
    const controller = new AbortController();
    const pending = client.headers("hang", { signal: controller.signal, timeoutMs: 10_000 });
    setTimeout(() => controller.abort(new Error("caller gave up")), 50);
    await assert.rejects(pending, { message: "caller gave up" });
    const aborted = AbortSignal.abort(new Error("before the call"));
    await assert.rejects(client.headers("missing", { signal: aborted }), { message: "before the call" });
  });
});

// No token in error messages or on the console: canary_flows.js drives the
// client through every token and error path in a child process (grpc-js
// tracing at its most verbose), against a fake tokend and an API whose
// tokens are the canary; neither its stdout nor its stderr may carry it.

import { strict as assert } from "node:assert";
import { spawn } from "node:child_process";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as path from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { CANARY, type Fake, response, startFake, status } from "./fake";

describe("canary", () => {
  let fake: Fake;
  let api: http.Server;
  let base: string;
  let apiRequests = 0;
  let reports = 0;

  before(async () => {
    type Req = { credential: string; tokenFingerprint?: string };
    const refuse = (credential: string) => {
      switch (credential) {
        case "forbidden":
          return status(grpc.status.PERMISSION_DENIED, "uid 0 may not use credential `forbidden`");
        case "expired":
          return status(grpc.status.FAILED_PRECONDITION, "credential `expired` expired; rotate it");
        default:
          return undefined;
      }
    };
    const headersFor = (credential: string) => {
      const headers: [string, string][] = [
        ["Authorization", credential === "basic" ? `Basic ${CANARY}` : `Bearer ${CANARY}`],
      ];
      if (credential === "oauth") headers.push(["X-Glean-Auth-Type", CANARY]);
      return response(headers, "c0ffee00c0ffee00", new Date(Date.now() + 3_600_000));
    };
    fake = await startFake({
      GetHeaders(call: grpc.ServerUnaryCall<Req, unknown>, cb: grpc.sendUnaryData<unknown>) {
        const refusal = refuse(call.request.credential);
        if (refusal) cb(refusal);
        else cb(null, headersFor(call.request.credential));
      },
      WatchHeaders(call: grpc.ServerWritableStream<Req, unknown>) {
        const refusal = refuse(call.request.credential);
        if (refusal) call.emit("error", refusal);
        else call.write(headersFor(call.request.credential));
      },
      Invalidate(call: grpc.ServerUnaryCall<Req, unknown>, cb: grpc.sendUnaryData<unknown>) {
        reports++;
        if (call.request.credential === "user") cb(null, { refreshing: true });
        else cb(status(grpc.status.PERMISSION_DENIED, `uid 0 may not report \`${call.request.credential}\``));
      },
      ListCredentials(_call: unknown, cb: grpc.sendUnaryData<unknown>) {
        cb(status(grpc.status.INTERNAL, "internal error: the store failed"));
      },
    });
    // Refuses every token, quoting it in its body (as some APIs do).
    api = http.createServer((req, res) => {
      apiRequests++;
      req.resume();
      res.writeHead(401, { "content-type": "text/plain", "www-authenticate": "Bearer" });
      res.end(`rejected: ${req.headers.authorization ?? ""}`);
    });
    await new Promise<void>((r) => api.listen(0, "127.0.0.1", r));
    base = `http://127.0.0.1:${(api.address() as AddressInfo).port}`;
  });
  after(async () => {
    await fake.close();
    api.closeAllConnections();
    await new Promise((r) => api.close(r));
  });

  it("never shows the token in an error or on stdout or stderr", async () => {
    const child = spawn(
      process.execPath,
      [path.join(__dirname, "canary_flows.js"), fake.socket, base, CANARY],
      {
        env: { ...process.env, GRPC_VERBOSITY: "DEBUG", GRPC_TRACE: "all" },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => (stdout += c));
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    const code = await new Promise<number | null>((r) => child.on("close", r));

    assert.ok(!stdout.includes(CANARY), `the token is on stdout:\n${stdout}`);
    assert.ok(!stderr.includes(CANARY), "the token is on stderr (not shown here)");
    assert.equal(code, 0, `canary_flows exited with ${code}\n--- stderr (tail)\n${stderr.slice(-4000)}`);
    // grpc-js's tracing was on and captured, so the check above saw it.
    assert.match(stderr, /GetHeaders/);

    const summary = JSON.parse(stdout.trim()) as { flows: string[]; errors: string[] };
    assert.deepEqual(summary.flows, [
      "headers",
      "watch",
      "gleanApiToken",
      "gleanFetch-401",
      "headers-denied",
      "headers-precondition",
      "invalidate-denied",
      "watch-denied",
      "credentials-internal",
      "gleanFetch-invalidate-refused",
      "gleanFetch-network",
      "gleanApiToken-extra-header",
      "gleanApiToken-not-bearer",
      "unreachable",
    ]);
    assert.deepEqual(summary.errors, [
      "headers-denied:PermissionDenied",
      "headers-precondition:FailedPrecondition",
      "invalidate-denied:PermissionDenied",
      "watch-denied:PermissionDenied",
      "credentials-internal:Internal",
      "gleanFetch-invalidate-refused:PermissionDenied",
      "gleanFetch-network:TypeError",
      "gleanApiToken-extra-header:Error",
      "gleanApiToken-not-bearer:Error",
      "unreachable:Unavailable",
    ]);
    // The 401 flow: the request and its one retry, then the refused report's request.
    assert.equal(apiRequests, 3);
    assert.equal(reports, 3);
  });
});

// A fake tokend for the package's tests: a grpc-js server implementing
// tokend.v1.TokenBroker, handlers supplied per test, on a Unix socket in a
// fresh temp directory.

import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { loadTokendPackage } from "@tokend/client";

/** The token fake credentials hold: it must never show in an error or on the console. */
export const CANARY = "glean_CANARY_ts_7d41c0e9";

export interface Fake {
  socket: string;
  dir: string;
  server: grpc.Server;
  close(): Promise<void>;
}

type Service = grpc.ServiceDefinition<grpc.UntypedServiceImplementation>;

/** Starts a TokenBroker with `impl`'s handlers; missing ones answer UNIMPLEMENTED. */
export async function startFake(impl: grpc.UntypedServiceImplementation): Promise<Fake> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tokend-ts-"));
  const socket = path.join(dir, "tokend.sock");
  const server = new grpc.Server();
  const broker = loadTokendPackage().TokenBroker as grpc.ServiceClientConstructor;
  server.addService(broker.service as Service, impl);
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (err) =>
      err ? reject(err) : resolve(),
    ),
  );
  return {
    socket,
    dir,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.forceShutdown();
        fs.rmSync(dir, { recursive: true, force: true });
        resolve();
      }),
  };
}

/** A GetHeadersResponse as the server side of proto-loader takes it. */
export function response(
  headers: [string, string][],
  fingerprint: string,
  expiresAt?: Date,
): Record<string, unknown> {
  const out: Record<string, unknown> = {
    headers: headers.map(([name, value]) => ({ name, value })),
    tokenFingerprint: fingerprint,
  };
  if (expiresAt) {
    const ms = expiresAt.getTime();
    out.expiresAt = { seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 };
  }
  return out;
}

/** A gRPC error status for a handler's callback. */
export function status(code: grpc.status, details: string): Partial<grpc.StatusObject> {
  return { code, details };
}

/** Polls `check` every 10 ms until it holds; fails after `ms`. */
export async function eventually(what: string, check: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

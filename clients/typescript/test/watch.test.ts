// watch(): one Headers per rotation; return() cancels the stream.

import { strict as assert } from "node:assert";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { Client, FailedPrecondition, type Headers } from "@tokend/client";
import { type Fake, eventually, response, startFake, status } from "./fake";

type Stream = grpc.ServerWritableStream<{ credential: string; actAs: string }, unknown>;

const bearer = (n: number) => response([["Authorization", `Bearer tok-${n}`]], `fp${n}`);

describe("watch", () => {
  let fake: Fake;
  let client: Client;
  const open: Stream[] = [];
  let cancelled = 0;

  before(async () => {
    fake = await startFake({
      WatchHeaders(call: Stream) {
        call.on("cancelled", () => cancelled++);
        switch (call.request.credential) {
          case "rotating": // the current token; the test pushes more
            open.push(call);
            call.write(bearer(1));
            break;
          case "fails":
            call.write(bearer(1));
            call.emit(
              "error",
              status(grpc.status.FAILED_PRECONDITION, "credential `fails` needs login: revoked; run `tokenctl login fails`"),
            );
            break;
          case "ends":
            call.write(bearer(1));
            call.end();
            break;
          case "burst":
            for (let i = 1; i <= 40; i++) call.write(bearer(i));
            call.end();
            break;
          default:
            call.emit("error", status(grpc.status.NOT_FOUND, "no such credential"));
        }
      },
    });
    client = new Client({ socket: fake.socket });
  });
  after(async () => {
    client.close();
    await fake.close();
  });

  it("delivers the current headers, then one per rotation, until return() cancels it", async () => {
    const before = cancelled;
    const watch = client.watch("rotating", { actAs: "a@corp.example" });
    const first = await watch.next();
    assert.equal(first.done, false);
    assert.equal(first.value?.headers.Authorization, "Bearer tok-1");
    assert.equal(first.value?.fingerprint, "fp1");

    const stream = open.at(-1)!;
    assert.equal(stream.request.actAs, "a@corp.example");
    const pending = watch.next(); // waits for the rotation
    stream.write(bearer(2));
    const second = await pending;
    assert.equal(second.value?.headers.Authorization, "Bearer tok-2");
    stream.write(bearer(3));
    assert.equal((await watch.next()).value?.fingerprint, "fp3");

    assert.deepEqual(await watch.return(), { value: undefined, done: true });
    await eventually("the server sees the stream cancelled", () => cancelled === before + 1);
    assert.deepEqual(await watch.next(), { value: undefined, done: true });
  });

  it("return() settles a next() that is waiting", async () => {
    const watch = client.watch("rotating");
    await watch.next();
    const waiting = watch.next();
    await watch.return();
    assert.deepEqual(await waiting, { value: undefined, done: true });
  });

  it("leaving a for-await loop cancels the stream", async () => {
    const before = cancelled;
    const got: string[] = [];
    for await (const h of client.watch("rotating")) {
      got.push(h.fingerprint);
      break;
    }
    assert.deepEqual(got, ["fp1"]);
    await eventually("the server sees the stream cancelled", () => cancelled === before + 1);
  });

  it("an abort signal cancels the stream", async () => {
    const before = cancelled;
    const controller = new AbortController();
    const watch = client.watch("rotating", { signal: controller.signal });
    await watch.next();
    const waiting = watch.next();
    controller.abort();
    assert.deepEqual(await waiting, { value: undefined, done: true });
    await eventually("the server sees the stream cancelled", () => cancelled === before + 1);
  });

  it("ends with tokend's error after the headers it sent", async () => {
    const watch = client.watch("fails");
    assert.equal((await watch.next()).value?.fingerprint, "fp1");
    await assert.rejects(
      watch.next(),
      (e: unknown) => e instanceof FailedPrecondition && e.message.includes("tokenctl login fails"),
    );
    assert.deepEqual(await watch.next(), { value: undefined, done: true });
  });

  it("ends when the stream ends", async () => {
    const all: Headers[] = [];
    for await (const h of client.watch("ends")) all.push(h);
    assert.deepEqual(all.map((h) => h.fingerprint), ["fp1"]);
  });

  it("delivers every response of a burst in order, read slowly", async () => {
    const got: string[] = [];
    for await (const h of client.watch("burst")) {
      got.push(h.fingerprint);
      await new Promise((r) => setTimeout(r, 2));
    }
    assert.deepEqual(got, Array.from({ length: 40 }, (_, i) => `fp${i + 1}`));
  });
});

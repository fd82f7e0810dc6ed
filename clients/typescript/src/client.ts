// The client: one method per TokenBroker call, over tokend's Unix socket.

import * as path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

import { TokendError, fromServiceError } from "./errors";

/** Where tokend listens when neither the `socket` option nor `TOKEND_SOCKET` says. */
export const DEFAULT_SOCKET = "/run/tokend/tokend.sock";

/**
 * The directory holding `tokend/v1/tokend.proto`, the API this client
 * speaks: a copy of the repository's, made when the package is built.
 */
export const PROTO_DIR = path.join(__dirname, "..", "proto");

/** Deadline of calls that do not set their own: tokend's own default wait. */
export const DEFAULT_TIMEOUT_MS = 10_000;

/**
 * The socket a client connects to, as an absolute path: `socket` when
 * given, else the environment's `TOKEND_SOCKET`, else
 * {@link DEFAULT_SOCKET}. Empty values count as unset.
 */
export function resolveSocket(
  socket?: string,
  env: Record<string, string | undefined> = process.env,
): string {
  return path.resolve(socket || env.TOKEND_SOCKET || DEFAULT_SOCKET);
}

export interface ClientOptions {
  /** The daemon's socket; default `TOKEND_SOCKET`, else `/run/tokend/tokend.sock`. */
  socket?: string;
  /**
   * Deadline of each call in milliseconds, unless the call sets its own
   * (default 10 000). tokend waits for a refresh at most this long before
   * answering `Unavailable`. Streams from {@link Client.watch} have none.
   */
  timeoutMs?: number;
  /** Extra grpc-js channel options. */
  channelOptions?: grpc.ChannelOptions;
}

export interface HeadersOptions {
  /** The user to act as (email): required for global Glean tokens, refused for any other. */
  actAs?: string;
  /** Scopes about to be used: tokend refuses a token lacking one rather than hand out one the API would answer 403 to. */
  scopes?: string[];
  /** The token must stay valid at least this long (the credential's `min_valid` is a floor). */
  minValidSeconds?: number;
}

export interface CallOptions {
  /** This call's deadline in milliseconds (default: the client's `timeoutMs`). */
  timeoutMs?: number;
  /** Cancels the call; it then rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** Ready-to-send headers for one request with a credential. */
export interface Headers {
  /**
   * Header name → value, in the order tokend returned them:
   * `Authorization: Bearer …`, plus `X-Glean-ActAs` for a global Glean
   * token or a credential's extra headers. Holds the token: never log it.
   */
  headers: Record<string, string>;
  /** Names the token in {@link Client.invalidate}: 16 hex digits of its SHA-256. */
  fingerprint: string;
  /** When the token stops working; absent when it does not expire. */
  expiresAt?: Date;
  /** A still-valid token below `min_valid`, served because refreshing fails (`serve_stale = true` only). */
  stale: boolean;
}

/** A credential's state, as `tokenctl status` shows it. */
export type CredentialState =
  | "fresh"
  | "refreshing"
  | "stale"
  | "expired"
  | "needs_login"
  | "misconfigured"
  | "unspecified";

/** A credential the caller may use (every credential for admins). Never a secret. */
export interface CredentialStatus {
  name: string;
  /** The config's kind, e.g. `"glean_token"`, `"oauth_refresh"`. */
  kind: string;
  /** For Glean tokens `"user"`, `"global"` or `"anonymous"`; empty otherwise. */
  permission: string;
  state: CredentialState;
  expiresAt?: Date;
  scopes: string[];
  /** Who rotates it (an email), or empty. */
  owner: string;
  /** The last error a person should know about; empty when healthy. */
  lastError: string;
  lastRefresh?: Date;
  nextRefresh?: Date;
  /** The Glean instance the credential is for, or empty. */
  instance: string;
  /** For a shared credential (`shared = true`), this host's place in the fleet. */
  fleet?: FleetMembership;
}

/** This host's place in the fleet for a shared credential: one node refreshes it, the others follow. */
export interface FleetMembership {
  /** This node's name. */
  node: string;
  /** `"leader"` (this node refreshes the credential), `"follower"` or `"unreachable"` (etcd is). */
  role: string;
  /** The node that refreshes the credential; empty when none is known. */
  leader: string;
  /** Since when etcd has been unreachable; absent while it answers. */
  unreachableSince?: Date;
}

/** An async iterator of {@link Headers}; `return()` (or `break` in `for await`) cancels the stream. */
export interface HeadersWatch extends AsyncIterableIterator<Headers> {
  next(): Promise<IteratorResult<Headers, undefined>>;
  return(): Promise<IteratorResult<Headers, undefined>>;
}

// The messages as @grpc/proto-loader decodes them (camelCase, longs as
// strings, enums as names, defaults filled in).
interface RawTimestamp {
  seconds: string;
  nanos: number;
}
interface RawGetHeadersResponse {
  headers: { name: string; value: string }[];
  expiresAt: RawTimestamp | null;
  tokenFingerprint: string;
  stale: boolean;
}
interface RawCredentialStatus {
  name: string;
  kind: string;
  permission: string;
  state: string;
  expiresAt: RawTimestamp | null;
  scopes: string[];
  owner: string;
  lastError: string;
  lastRefresh: RawTimestamp | null;
  nextRefresh: RawTimestamp | null;
  instance: string;
  fleet: { node: string; role: string; leader: string; unreachableSince: RawTimestamp | null } | null;
}
interface RawGetHeadersRequest {
  credential: string;
  actAs: string;
  requiredScopes: string[];
  minValid?: { seconds: string; nanos: number };
}
type Callback<T> = (err: grpc.ServiceError | null, value?: T) => void;
interface BrokerStub extends grpc.Client {
  GetHeaders(
    req: RawGetHeadersRequest,
    options: grpc.CallOptions,
    cb: Callback<RawGetHeadersResponse>,
  ): grpc.ClientUnaryCall;
  WatchHeaders(
    req: RawGetHeadersRequest,
    options: grpc.CallOptions,
  ): grpc.ClientReadableStream<RawGetHeadersResponse>;
  Invalidate(
    req: { credential: string; tokenFingerprint: string },
    options: grpc.CallOptions,
    cb: Callback<{ refreshing: boolean }>,
  ): grpc.ClientUnaryCall;
  ListCredentials(
    req: Record<string, never>,
    options: grpc.CallOptions,
    cb: Callback<{ credentials: RawCredentialStatus[] }>,
  ): grpc.ClientUnaryCall;
}
type BrokerConstructor = new (
  target: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ChannelOptions,
) => BrokerStub;

let brokerConstructor: BrokerConstructor | undefined;

/** The proto-loader options this client decodes messages with. */
export const PROTO_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  includeDirs: [PROTO_DIR],
};

/** `tokend.v1` as grpc-js loads it from {@link PROTO_DIR} (services and messages). */
export function loadTokendPackage(): grpc.GrpcObject {
  const definition = protoLoader.loadSync("tokend/v1/tokend.proto", PROTO_LOADER_OPTIONS);
  const root = grpc.loadPackageDefinition(definition) as { tokend: { v1: grpc.GrpcObject } };
  return root.tokend.v1;
}

function broker(): BrokerConstructor {
  brokerConstructor ??= loadTokendPackage().TokenBroker as unknown as BrokerConstructor;
  return brokerConstructor;
}

function toDate(t: RawTimestamp | null | undefined): Date | undefined {
  if (!t) return undefined;
  return new Date(Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6));
}

function toHeaders(raw: RawGetHeadersResponse): Headers {
  const headers: Record<string, string> = {};
  for (const h of raw.headers) headers[h.name] = h.value;
  const out: Headers = { headers, fingerprint: raw.tokenFingerprint, stale: raw.stale };
  const expiresAt = toDate(raw.expiresAt);
  if (expiresAt) out.expiresAt = expiresAt;
  return out;
}

function toStatus(raw: RawCredentialStatus): CredentialStatus {
  const state = raw.state.replace(/^CREDENTIAL_STATE_/, "").toLowerCase() as CredentialState;
  const out: CredentialStatus = {
    name: raw.name,
    kind: raw.kind,
    permission: raw.permission,
    state,
    scopes: raw.scopes,
    owner: raw.owner,
    lastError: raw.lastError,
    instance: raw.instance,
  };
  const times = {
    expiresAt: toDate(raw.expiresAt),
    lastRefresh: toDate(raw.lastRefresh),
    nextRefresh: toDate(raw.nextRefresh),
  };
  for (const [k, v] of Object.entries(times)) {
    if (v) out[k as keyof typeof times] = v;
  }
  if (raw.fleet) {
    const { node, role, leader } = raw.fleet;
    out.fleet = { node, role, leader };
    const since = toDate(raw.fleet.unreachableSince);
    if (since) out.fleet.unreachableSince = since;
  }
  return out;
}

function request(credential: string, opts: HeadersOptions): RawGetHeadersRequest {
  if (typeof credential !== "string") {
    throw new TypeError("credential must be a string: the credential's name in tokend's config");
  }
  const req: RawGetHeadersRequest = {
    credential,
    actAs: opts.actAs ?? "",
    requiredScopes: opts.scopes ?? [],
  };
  const min = opts.minValidSeconds;
  if (min !== undefined) {
    if (!Number.isFinite(min) || min < 0) {
      throw new RangeError(`minValidSeconds must be a finite number of seconds >= 0, not ${min}`);
    }
    const seconds = Math.floor(min);
    req.minValid = { seconds: String(seconds), nanos: Math.round((min - seconds) * 1e9) };
  }
  return req;
}

/**
 * A tokend client on one channel to its socket. Connects on first use;
 * {@link Client.close} when done.
 *
 * ```ts
 * const tokend = new Client();
 * const { headers } = await tokend.headers("search-bot", { scopes: ["SEARCH"] });
 * await fetch(url, { headers });
 * ```
 */
export class Client {
  /** The socket's absolute path. */
  readonly socket: string;
  /** The gRPC target, `unix:///abs/path`. */
  readonly target: string;
  private readonly stub: BrokerStub;
  private readonly timeoutMs: number;

  constructor(options: ClientOptions = {}) {
    this.socket = resolveSocket(options.socket);
    this.target = `unix://${this.socket}`;
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const Broker = broker();
    this.stub = new Broker(this.target, grpc.credentials.createInsecure(), {
      // grpc-js would send the socket path as :authority otherwise.
      "grpc.default_authority": "localhost",
      ...options.channelOptions,
    });
  }

  /**
   * The headers to send with one request using `credential` (its name in
   * tokend's config). Rejects with a {@link TokendError} subclass (a
   * `RangeError` for a negative or non-finite `minValidSeconds`).
   */
  headers(credential: string, opts: HeadersOptions & CallOptions = {}): Promise<Headers> {
    let req: RawGetHeadersRequest;
    try {
      req = request(credential, opts);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.unary<RawGetHeadersResponse, Headers>(
      opts,
      (o, cb) => this.stub.GetHeaders(req, o, cb),
      toHeaders,
    );
  }

  /**
   * The current headers at once, then again after every rotation, until
   * `return()` is called (or a `for await` loop is left). Ends with an error
   * when the credential needs a person ({@link FailedPrecondition}) or is
   * removed ({@link NotFound}). Throws a `RangeError` at once for a
   * negative or non-finite `minValidSeconds`.
   */
  watch(credential: string, opts: HeadersOptions & { signal?: AbortSignal } = {}): HeadersWatch {
    const req = request(credential, opts);
    const call = this.stub.WatchHeaders(req, {});
    return new Watch(call, this.socket, opts.signal);
  }

  /**
   * Reports that the API answered 401 to the token with this fingerprint
   * ({@link Headers.fingerprint}): tokend replaces it at once, and never
   * hands it out again. Resolves to whether a replacement is under way
   * (`false` when the token was already replaced or cannot be refreshed).
   */
  invalidate(credential: string, fingerprint: string, opts: CallOptions = {}): Promise<boolean> {
    return this.unary<{ refreshing: boolean }, boolean>(
      opts,
      (o, cb) =>
        this.stub.Invalidate({ credential, tokenFingerprint: fingerprint }, o, cb),
      (r) => r.refreshing,
    );
  }

  /** The credentials the caller may use (every one for admins), with their state. */
  credentials(opts: CallOptions = {}): Promise<CredentialStatus[]> {
    return this.unary<{ credentials: RawCredentialStatus[] }, CredentialStatus[]>(
      opts,
      (o, cb) => this.stub.ListCredentials({}, o, cb),
      (r) => r.credentials.map(toStatus),
    );
  }

  /** Closes the channel; calls in flight are cancelled. */
  close(): void {
    this.stub.close();
  }

  private unary<Raw, Out>(
    opts: CallOptions,
    start: (options: grpc.CallOptions, cb: Callback<Raw>) => grpc.ClientUnaryCall,
    convert: (raw: Raw) => Out,
  ): Promise<Out> {
    const { signal } = opts;
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<Out>((resolve, reject) => {
      const deadline = Date.now() + (opts.timeoutMs ?? this.timeoutMs);
      let onAbort: (() => void) | undefined;
      const call = start({ deadline }, (err, value) => {
        if (onAbort) signal?.removeEventListener("abort", onAbort);
        if (signal?.aborted) reject(signal.reason);
        else if (err) reject(fromServiceError(err, this.socket));
        else resolve(convert(value as Raw));
      });
      if (signal) {
        onAbort = () => call.cancel();
        signal.addEventListener("abort", onAbort, { once: true });
      }
    });
  }
}

/** Most responses buffered before the stream is paused. */
const WATCH_BUFFER = 8;

class Watch implements HeadersWatch {
  private readonly queue: Headers[] = [];
  private readonly waiting: {
    resolve: (r: IteratorResult<Headers, undefined>) => void;
    reject: (e: unknown) => void;
  }[] = [];
  private failure: unknown;
  private done = false;
  private paused = false;
  private readonly onAbort?: () => void;

  constructor(
    private readonly call: grpc.ClientReadableStream<RawGetHeadersResponse>,
    socket: string,
    private readonly signal?: AbortSignal,
  ) {
    call.on("data", (raw: RawGetHeadersResponse) => {
      if (this.done) return;
      const waiter = this.waiting.shift();
      if (waiter) {
        waiter.resolve({ value: toHeaders(raw), done: false });
        return;
      }
      this.queue.push(toHeaders(raw));
      if (this.queue.length >= WATCH_BUFFER && !this.paused) {
        this.paused = true;
        call.pause();
      }
    });
    call.on("error", (err: grpc.ServiceError) => {
      this.end(this.done ? undefined : fromServiceError(err, socket));
    });
    call.on("end", () => this.end(undefined));
    if (signal) {
      if (signal.aborted) {
        queueMicrotask(() => void this.return());
      } else {
        this.onAbort = () => void this.return();
        signal.addEventListener("abort", this.onAbort, { once: true });
      }
    }
  }

  /** The stream ended (with `failure`, or cleanly): settle the waiters. */
  private end(failure: TokendError | undefined): void {
    if (this.done) return;
    this.done = true;
    if (this.onAbort) this.signal?.removeEventListener("abort", this.onAbort);
    const waiting = this.waiting.splice(0);
    if (failure && waiting.length > 0) {
      const first = waiting.shift();
      first?.reject(failure);
    } else if (failure) {
      this.failure = failure;
    }
    for (const w of waiting) w.resolve({ value: undefined, done: true });
  }

  next(): Promise<IteratorResult<Headers, undefined>> {
    const value = this.queue.shift();
    if (value) {
      if (this.paused && this.queue.length < WATCH_BUFFER / 2) {
        this.paused = false;
        this.call.resume();
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.failure !== undefined) {
      const failure = this.failure;
      this.failure = undefined;
      return Promise.reject(failure);
    }
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }

  return(): Promise<IteratorResult<Headers, undefined>> {
    this.queue.length = 0;
    this.failure = undefined;
    if (!this.done) {
      this.end(undefined);
      this.call.cancel();
    }
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): HeadersWatch {
    return this;
  }
}

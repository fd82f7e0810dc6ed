/**
 * Client for tokend, the credential broker daemon: ready-to-send HTTP
 * headers for the credentials a process may use, over tokend's Unix socket
 * (gRPC, `tokend.v1.TokenBroker`), and helpers for the Glean SDK.
 *
 * ```ts
 * import { Client, gleanFetch } from "@tokend/client";
 *
 * const tokend = new Client(); // TOKEND_SOCKET, else /run/tokend/tokend.sock
 * const { headers } = await tokend.headers("search-bot", { scopes: ["SEARCH"] });
 * ```
 *
 * @packageDocumentation
 */

export {
  Client,
  DEFAULT_SOCKET,
  DEFAULT_TIMEOUT_MS,
  PROTO_DIR,
  PROTO_LOADER_OPTIONS,
  loadTokendPackage,
  resolveSocket,
} from "./client";
export type {
  CallOptions,
  ClientOptions,
  CredentialState,
  CredentialStatus,
  FleetMembership,
  Headers,
  HeadersOptions,
  HeadersWatch,
} from "./client";
export {
  FailedPrecondition,
  InvalidArgument,
  Internal,
  NeedsLogin,
  NotFound,
  PermissionDenied,
  ResourceExhausted,
  TokendError,
  Unavailable,
  fromServiceError,
} from "./errors";
export type { CodeName } from "./errors";
export { gleanApiToken, gleanFetch } from "./glean";
export type { Fetch, GleanFetchOptions } from "./glean";

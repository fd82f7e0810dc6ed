// A failed call, by the gRPC code tokend answered with.

import { status as Status, type ServiceError } from "@grpc/grpc-js";

/** The name of a gRPC status code, e.g. `"PERMISSION_DENIED"`. */
export type CodeName = keyof typeof Status;

function codeName(code: number): CodeName | "UNKNOWN" {
  const names = Object.keys(Status) as CodeName[];
  return names.find((n) => Status[n] === code) ?? "UNKNOWN";
}

/**
 * A call tokend refused, or that could not reach it.
 *
 * `message` is tokend's own text, written for a person (it names the
 * credential and says what to run or fix), without the code in front; it
 * never carries a token. Catch a subclass to act on what went wrong:
 * {@link NotFound}, {@link PermissionDenied}, {@link InvalidArgument},
 * {@link FailedPrecondition} (and its {@link NeedsLogin}),
 * {@link Unavailable}, {@link ResourceExhausted}, {@link Internal}. Codes
 * tokend does not answer with (a cancelled call, say) arrive as a plain
 * `TokendError`.
 */
export class TokendError extends Error {
  /** The gRPC status code (`@grpc/grpc-js`'s `status`). */
  readonly code: number;
  /** The code's name, e.g. `"PERMISSION_DENIED"`. */
  readonly codeName: string;

  constructor(code: number, message: string) {
    super(message);
    this.code = code;
    this.codeName = codeName(code);
    this.name = new.target.name;
  }
}

/** No credential has that name (told to admins only), or it was removed while watched. */
export class NotFound extends TokendError {}

/**
 * The caller may not use the credential, or may not act as that user; to
 * anyone but an admin, also a name that is not configured.
 */
export class PermissionDenied extends TokendError {}

/**
 * The request is wrong: `actAs` missing for a global Glean token or given
 * for any other, not an email, or a scope that is not a Glean scope.
 */
export class InvalidArgument extends TokendError {}

/**
 * The credential cannot serve this request until a person acts: the token
 * lacks a required scope, has expired or expires within `minValidSeconds`,
 * or the credential needs an import or a config fix. Retrying will not help.
 */
export class FailedPrecondition extends TokendError {}

/** A {@link FailedPrecondition}: an OAuth credential needs `tokenctl login NAME`. */
export class NeedsLogin extends FailedPrecondition {}

/**
 * No token valid for the required time arrived before the deadline
 * (refreshing is failing or slow; tokend keeps retrying, so may the
 * caller), or tokend could not be reached at all.
 */
export class Unavailable extends TokendError {}

/**
 * The caller's uid holds too many `watch` streams, or reported tokens were
 * replaced too often just now; the message says when to try again.
 */
export class ResourceExhausted extends TokendError {}

/** A fault inside tokend, not the caller's doing. */
export class Internal extends TokendError {}

/**
 * The error for a failed grpc-js call. `socket` is named in the message when
 * the daemon could not be reached at all.
 */
export function fromServiceError(err: ServiceError, socket?: string): TokendError {
  const code = typeof err.code === "number" ? err.code : Status.UNKNOWN;
  let message = typeof err.details === "string" ? err.details : "";
  if (code === Status.UNAVAILABLE && /^No connection established/.test(message) && socket) {
    message =
      `cannot reach tokend at ${socket} (is it running, and may this user open the socket? ` +
      `set TOKEND_SOCKET or the socket option if it listens elsewhere): ${message}`;
  }
  if (message === "") {
    message = `${codeName(code)} (no message)`;
  }
  switch (code) {
    case Status.NOT_FOUND:
      return new NotFound(code, message);
    case Status.PERMISSION_DENIED:
      return new PermissionDenied(code, message);
    case Status.INVALID_ARGUMENT:
      return new InvalidArgument(code, message);
    case Status.FAILED_PRECONDITION:
      // tokend's NeedsLogin: "credential `NAME` needs login: REASON".
      return / needs login: /.test(message)
        ? new NeedsLogin(code, message)
        : new FailedPrecondition(code, message);
    case Status.UNAVAILABLE:
    case Status.DEADLINE_EXCEEDED:
      return new Unavailable(code, message);
    case Status.RESOURCE_EXHAUSTED:
      return new ResourceExhausted(code, message);
    case Status.INTERNAL:
    case Status.UNKNOWN:
    case Status.DATA_LOSS:
      return new Internal(code, message);
    default:
      return new TokendError(code, message);
  }
}

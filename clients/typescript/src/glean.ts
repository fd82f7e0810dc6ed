// Glue for the Glean SDK (@gleanwork/api-client) and any fetch-based code:
// a bearer-token callback for the SDK's `apiToken`, and a fetch that adds
// tokend's headers and recovers from a 401 by reporting the token.

import type { Client, HeadersOptions, Headers as TokendHeaders } from "./client";

/**
 * A callback for the Glean SDK's `apiToken`: each call asks tokend for the
 * credential's headers and resolves to the bearer token alone (without
 * `Bearer `).
 *
 * The SDK sends only `Authorization` from it, so it refuses (naming the
 * headers, never their values) a credential that needs more — a global
 * Glean token's `X-Glean-ActAs`, an OAuth credential's `X-Glean-Auth-Type`:
 * use {@link gleanFetch} as the SDK's fetcher for those.
 *
 * ```ts
 * const glean = new Glean({ apiToken: gleanApiToken(tokend, "search-bot"), serverURL });
 * ```
 */
export function gleanApiToken(
  client: Client,
  credential: string,
  opts: HeadersOptions = {},
): () => Promise<string> {
  return async () => bearerToken(await client.headers(credential, opts), credential);
}

/** The bearer token in `h`'s `Authorization`, when that is all `h` holds. */
function bearerToken(h: TokendHeaders, credential: string): string {
  const names = Object.keys(h.headers);
  const authorization = names.find((n) => n.toLowerCase() === "authorization");
  const others = names.filter((n) => n !== authorization);
  if (others.length > 0) {
    throw new Error(
      `credential \`${credential}\` needs header(s) ${others.join(", ")} besides Authorization, ` +
        "which an apiToken cannot carry; use gleanFetch(client, credential) as the SDK's fetcher",
    );
  }
  const value = authorization === undefined ? undefined : h.headers[authorization];
  const match = value === undefined ? null : /^Bearer (.+)$/i.exec(value);
  if (!match?.[1]) {
    throw new Error(
      `credential \`${credential}\` yields no bearer Authorization header, which an apiToken ` +
        "needs; use gleanFetch(client, credential) instead",
    );
  }
  return match[1];
}

/** The `fetch` {@link gleanFetch} wraps, and the tokend request options. */
export interface GleanFetchOptions extends HeadersOptions {
  /** The fetch to send requests with (default: the global `fetch`). */
  fetch?: (input: string | URL | Request, init?: RequestInit) => Promise<Response>;
}

/** The function {@link gleanFetch} returns: `fetch`'s signature. */
export type Fetch = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

/**
 * A `fetch` that sends every request with the headers tokend returns for
 * `credential` (replacing any of the same name the caller set) and, when the
 * API answers 401, reports the token with `invalidate` and sends the request
 * once more with the replacement. A request whose body is a stream given in
 * `init` cannot be sent twice: its 401 is reported and returned. tokend's
 * refusals reject with a {@link TokendError} subclass.
 *
 * ```ts
 * const glean = new Glean({
 *   serverURL,
 *   apiToken: "unused", // gleanFetch replaces Authorization
 *   httpClient: new HTTPClient({ fetcher: gleanFetch(tokend, "global-bot", { actAs }) }),
 * });
 * ```
 */
export function gleanFetch(
  client: Client,
  credential: string,
  opts: GleanFetchOptions = {},
): Fetch {
  const { fetch: send = globalThis.fetch, ...headerOpts } = opts;
  return async (input, init) => {
    // A Request's body can be read once: keep a copy for the retry.
    const spare = input instanceof Request && input.body !== null && init?.body == null
      ? input.clone()
      : undefined;
    const first = await client.headers(credential, headerOpts);
    const response = await send(input, withHeaders(input, init, first));
    if (response.status !== 401) return response;
    await client.invalidate(credential, first.fingerprint);
    if (init?.body != null && !replayable(init.body)) return response;
    const again = await client.headers(credential, headerOpts);
    await response.body?.cancel().catch(() => undefined);
    const retry = spare ?? input;
    return send(retry, withHeaders(retry, init, again));
  };
}

/** Whether `body` can be sent again (a stream or an async iterable cannot). */
function replayable(body: NonNullable<RequestInit["body"]>): boolean {
  return (
    typeof body === "string" ||
    body instanceof ArrayBuffer ||
    ArrayBuffer.isView(body) ||
    body instanceof Blob ||
    body instanceof URLSearchParams ||
    body instanceof FormData
  );
}

function withHeaders(
  input: string | URL | Request,
  init: RequestInit | undefined,
  h: TokendHeaders,
): RequestInit {
  const headers = new globalThis.Headers(
    init?.headers ?? (input instanceof Request ? input.headers : undefined),
  );
  for (const [name, value] of Object.entries(h.headers)) headers.set(name, value);
  return { ...init, headers };
}

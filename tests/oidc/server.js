// Real OAuth 2.0 authorization server for tokend's integration tests.
//
// Built on oidc-provider (8.x) so the Rust client is exercised against a
// spec-conformant implementation rather than a hand-rolled mock. The test-only
// parts (automated login/consent, request recording, secret rotation, grant
// revocation) live in a koa middleware mounted *before* oidc-provider's own
// routes, so they see every request but never change how OAuth itself works.
//
// Start:  node tests/oidc/server.js
// Env:    PORT (default 0 = any free port), ACCESS_TOKEN_TTL (seconds, default 5)
// Stdout: exactly one line, {"issuer":"http://127.0.0.1:<port>","port":<port>}
// Stderr: everything else (logs, oidc-provider warnings).

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import * as querystring from 'node:querystring';

import Provider from 'oidc-provider';

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

function intEnv(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) {
    console.error(`invalid ${name}=${JSON.stringify(raw)}: expected a non-negative integer`);
    process.exit(2);
  }
  return n;
}

const PORT = intEnv('PORT', 0);
// Short by default so tests can watch tokens expire without sleeping long.
const ACCESS_TOKEN_TTL = Math.max(1, intEnv('ACCESS_TOKEN_TTL', 5));
const HOST = '127.0.0.1';

const DEFAULT_RESOURCE = 'urn:tokend:test-api';
const RESOURCE_SCOPE = 'api';
const DEFAULT_ACCOUNT = 'alice';
const TOKEN_PATH = '/token';
const AUTHORIZATION_PATH = '/auth';

const log = (...args) => console.error('[oidc-test]', ...args);

// stdout carries only the readiness line; oidc-provider prints its notices via
// console.info, so send console.log/info to stderr as well.
console.log = (...args) => console.error(...args);
console.info = (...args) => console.error(...args);

// ---------------------------------------------------------------------------
// Storage: one in-memory adapter for every oidc-provider model.
//
// Why not oidc-provider's bundled MemoryAdapter: it is an LRU capped at 1000
// entries (tokens could silently vanish in a long test run), and we need to
// reach into the store for /test/revoke-grants and to serve clients whose
// secret can change at runtime.
// ---------------------------------------------------------------------------

/** model name -> Map(id -> { payload, expiresAt (ms epoch) | undefined }) */
const store = new Map();

function table(model) {
  if (!store.has(model)) store.set(model, new Map());
  return store.get(model);
}

function getLive(model, id) {
  const entry = table(model).get(id);
  if (!entry) return undefined;
  if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
    table(model).delete(id);
    return undefined;
  }
  return entry;
}

function putRecord(model, id, payload, expiresIn) {
  table(model).set(id, {
    payload: structuredClone(payload),
    expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : undefined,
  });
}

// Access tokens here are JWTs, which oidc-provider does not persist at all;
// as a consequence its introspection/revocation endpoints would report every
// JWT access token as inactive. The jwt customizer (see configuration) writes
// a "shadow" record keyed by the token's jti, and find() maps a presented JWT
// back to that record after checking the JWT's signature with our own key.
const JWT_TOKEN_MODELS = new Set(['AccessToken', 'ClientCredentials']);
let jwtVerifyKey; // public half of the signing key, set at startup

function jtiFromJwt(value) {
  const parts = value.split('.');
  if (parts.length !== 3) return undefined;
  try {
    const header = JSON.parse(Buffer.from(parts[0], 'base64url').toString());
    if (header.alg !== 'RS256') return undefined;
    const ok = crypto.verify(
      'sha256',
      Buffer.from(`${parts[0]}.${parts[1]}`),
      jwtVerifyKey,
      Buffer.from(parts[2], 'base64url'),
    );
    if (!ok) return undefined;
    const payload = JSON.parse(Buffer.from(parts[1], 'base64url').toString());
    return typeof payload.jti === 'string' ? payload.jti : undefined;
  } catch {
    return undefined;
  }
}

class TestAdapter {
  constructor(model) {
    this.model = model;
  }

  async upsert(id, payload, expiresIn) {
    putRecord(this.model, id, payload, expiresIn);
  }

  async find(id) {
    let key = id;
    if (JWT_TOKEN_MODELS.has(this.model) && typeof id === 'string' && id.includes('.')) {
      key = jtiFromJwt(id);
      if (!key) return undefined;
    }
    const entry = getLive(this.model, key);
    if (this.model === 'RefreshToken' && entry && entry.payload.consumed) {
      // oidc-provider answers a plain invalid_grant to a consumed refresh
      // token (and revokes the grant); count it so tests can tell a replay
      // from any other refusal.
      stats.replays += 1;
    }
    return entry ? structuredClone(entry.payload) : undefined;
  }

  async findByUserCode(userCode) {
    for (const [id] of table(this.model)) {
      const entry = getLive(this.model, id);
      if (entry && entry.payload.userCode === userCode) return structuredClone(entry.payload);
    }
    return undefined;
  }

  async findByUid(uid) {
    for (const [id] of table(this.model)) {
      const entry = getLive(this.model, id);
      if (entry && entry.payload.uid === uid) return structuredClone(entry.payload);
    }
    return undefined;
  }

  async consume(id) {
    const entry = getLive(this.model, id);
    // epoch seconds, as oidc-provider expects; a consumed refresh token that is
    // presented again makes oidc-provider revoke the whole grant.
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    table(this.model).delete(id);
  }

  async revokeByGrantId(grantId) {
    for (const [id, entry] of table(this.model)) {
      if (entry.payload.grantId === grantId) table(this.model).delete(id);
    }
  }
}

// ---------------------------------------------------------------------------
// Clients: stored in the adapter's "Client" table instead of `clients:` config.
//
// oidc-provider caches static clients for the provider's lifetime, so changing
// a static client's secret would not take effect. Adapter-backed clients are
// re-read on every Client.find() and cached only by a fingerprint of their
// metadata, so /test/rotate-secret takes effect on the very next request.
// ---------------------------------------------------------------------------

const CLIENT_DEFAULTS = {
  grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
  response_types: ['code'],
  redirect_uris: ['http://127.0.0.1:9090/oauth/callback'],
  // "native" makes oidc-provider ignore the port of http loopback redirect
  // URIs (RFC 8252 §7.3), so http://127.0.0.1:<any>/oauth/callback is accepted.
  application_type: 'native',
};

const INITIAL_CLIENTS = [
  {
    ...CLIENT_DEFAULTS,
    client_id: 'tokend-post',
    client_secret: 'post-secret',
    token_endpoint_auth_method: 'client_secret_post',
  },
  {
    ...CLIENT_DEFAULTS,
    client_id: 'tokend-basic',
    client_secret: 'basic-secret',
    token_endpoint_auth_method: 'client_secret_basic',
  },
];

for (const client of INITIAL_CLIENTS) putRecord('Client', client.client_id, client);

// ---------------------------------------------------------------------------
// Token endpoint recording (for /test/stats and /test/token-requests)
// ---------------------------------------------------------------------------

const REDACTED_FIELDS = new Set(['client_secret', 'refresh_token', 'code', 'code_verifier']);

let tokenRequests = []; // [{ form: {...}, authorization: bool }]
// errors: token-endpoint refusals by `error: error_description`; replays:
// consumed refresh tokens presented again (see the adapter's find).
let stats = { token_requests: 0, by_grant_type: {}, errors: {}, replays: 0 };

function resetStats() {
  tokenRequests = [];
  stats = { token_requests: 0, by_grant_type: {}, errors: {}, replays: 0 };
}

function redact(form) {
  const out = {};
  for (const [k, v] of Object.entries(form)) {
    out[k] = REDACTED_FIELDS.has(k) ? '<redacted>' : v;
  }
  return out;
}

// Read the whole request body ourselves (bounded). oidc-provider notices the
// stream was consumed and falls back to `ctx.request.body` (it logs a one-time
// warning about an "already parsed request body" to stderr; that is expected).
function readBody(req, limit = 1024 * 1024) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > limit) {
        reject(new Error('request body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

// oidc-provider treats client_secret_basic and client_secret_post as
// interchangeable (a "basic" client may send its secret in the body and vice
// versa). That would let a client using the wrong method pass every test, so
// the registered method is enforced here, with the same 401 invalid_client
// response (and WWW-Authenticate when an Authorization header was sent) that
// oidc-provider gives for a wrong secret. Returns false if it responded.
const CLIENT_AUTH_PATHS = new Set([TOKEN_PATH, '/token/introspection', '/token/revocation']);

function enforceAuthMethod(ctx, form) {
  const header = ctx.get('authorization');
  const usedBasic = /^basic /i.test(header);
  const usedPost = typeof form.client_secret === 'string';
  let clientId = typeof form.client_id === 'string' ? form.client_id : undefined;
  if (usedBasic) {
    try {
      const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
      clientId = decodeURIComponent(decoded.slice(0, decoded.indexOf(':')).replace(/\+/g, '%20'));
    } catch {
      return true; // malformed header: let oidc-provider produce its own error
    }
  }
  const client = clientId !== undefined ? getLive('Client', clientId) : undefined;
  if (!client || usedBasic === usedPost) return true; // unknown client / both / neither: oidc-provider decides

  const method = client.payload.token_endpoint_auth_method;
  const used = usedBasic ? 'client_secret_basic' : 'client_secret_post';
  if (method === used) return true;

  log(`invalid_client: ${clientId} is registered for ${method} but used ${used} on ${ctx.path}`);
  if (usedBasic) {
    ctx.set('WWW-Authenticate', `Basic realm="${ctx.origin}", error="invalid_client", error_description="client authentication failed"`);
  }
  ctx.set('Cache-Control', 'no-store');
  json(ctx, 401, { error: 'invalid_client', error_description: 'client authentication failed' });
  return false;
}

// Parse JSON or form bodies for the /test/* control endpoints.
async function readParams(ctx) {
  const raw = await readBody(ctx.req);
  if (!raw) return {};
  if (ctx.is('application/json')) return JSON.parse(raw);
  return querystring.parse(raw);
}

// ---------------------------------------------------------------------------
// Test control endpoints
// ---------------------------------------------------------------------------

function json(ctx, status, body) {
  ctx.status = status;
  ctx.type = 'application/json';
  ctx.body = JSON.stringify(body);
}

// Delete every grant (and every artifact referencing it: refresh tokens,
// access-token shadow records, authorization codes) for `account`, or for all
// accounts when `account` is omitted.
function revokeGrants(account) {
  const grantIds = new Set();
  for (const [id, entry] of table('Grant')) {
    if (account === undefined || entry.payload.accountId === account) grantIds.add(id);
  }
  let removed = 0;
  for (const [model, rows] of store) {
    if (model === 'Client') continue;
    for (const [id, entry] of rows) {
      const hit = model === 'Grant' ? grantIds.has(id) : grantIds.has(entry.payload.grantId);
      if (hit) {
        rows.delete(id);
        removed += 1;
      }
    }
  }
  return { grants: grantIds.size, records_removed: removed };
}

async function controlEndpoints(ctx) {
  const route = `${ctx.method} ${ctx.path}`;
  switch (route) {
    case 'GET /test/stats':
      return json(ctx, 200, stats);
    case 'GET /test/token-requests':
      return json(ctx, 200, tokenRequests);
    case 'POST /test/reset-stats':
      resetStats();
      return json(ctx, 200, { ok: true });
    case 'POST /test/rotate-secret': {
      const { client_id: clientId, client_secret: secret } = await readParams(ctx);
      if (typeof clientId !== 'string' || typeof secret !== 'string' || !secret) {
        return json(ctx, 400, { error: 'client_id and client_secret are required' });
      }
      const entry = getLive('Client', clientId);
      if (!entry) return json(ctx, 404, { error: `unknown client ${clientId}` });
      entry.payload = { ...entry.payload, client_secret: secret };
      log(`rotated secret of ${clientId}`);
      return json(ctx, 200, { ok: true, client_id: clientId });
    }
    case 'POST /test/revoke-grants': {
      const { account } = await readParams(ctx);
      const result = revokeGrants(typeof account === 'string' && account ? account : undefined);
      log(`revoked grants for ${account || 'all accounts'}:`, result);
      return json(ctx, 200, { ok: true, ...result });
    }
    default:
      return json(ctx, 404, { error: `no test endpoint ${route}` });
  }
}

// ---------------------------------------------------------------------------
// Automated interactions: log in as alice (or login_hint) and consent to
// everything, so a plain HTTP client that follows redirects and keeps cookies
// gets from /auth to redirect_uri?code=...&state=... without any forms.
// ---------------------------------------------------------------------------

async function completeInteraction(ctx, provider) {
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const { prompt, params, session } = details;
  let result;

  if (prompt.name === 'login') {
    const accountId = params.login_hint || DEFAULT_ACCOUNT;
    result = { login: { accountId } };
  } else if (prompt.name === 'consent') {
    const accountId = session.accountId;
    // Reuse the existing grant if there is one (oidc-provider asks for consent
    // again only for what is missing from it), else start a new one.
    let grant = details.grantId ? await provider.Grant.find(details.grantId) : undefined;
    if (!grant) grant = new provider.Grant({ accountId, clientId: params.client_id });

    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    if (missing.missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    result = { consent: { grantId: await grant.save() } };
  } else {
    result = { error: 'access_denied', error_description: `unsupported prompt ${prompt.name}` };
  }

  log(`interaction ${details.uid}: ${prompt.name} done`);
  const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, {
    mergeWithLastSubmission: false,
  });
  ctx.status = 303;
  ctx.redirect(returnTo);
}

// ---------------------------------------------------------------------------
// Provider
// ---------------------------------------------------------------------------

function buildProvider(issuer) {
  // Fresh RS256 key per run; we keep the public half to verify JWT access
  // tokens in the adapter (see jtiFromJwt).
  const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  jwtVerifyKey = publicKey;
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', alg: 'RS256', use: 'sig' };

  const configuration = {
    adapter: TestAdapter,
    clients: [], // served from the adapter, see above
    jwks: { keys: [jwk] },
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },

    // Every account id exists; the subject is simply the id.
    async findAccount(ctx, sub) {
      return { accountId: sub, async claims() { return { sub }; } };
    },

    scopes: ['openid', 'offline_access'],
    pkce: { methods: ['S256'], required: () => true },

    // Refresh tokens for every code exchange (no offline_access/prompt=consent
    // dance needed), rotated on every use.
    issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: () => true,
    // Do not tie tokens to the browser session: the test's cookie jar is gone
    // long before the refresh token is used.
    expiresWithSession: async () => false,

    ttl: {
      AccessToken: ACCESS_TOKEN_TTL,
      ClientCredentials: ACCESS_TOKEN_TTL,
      AuthorizationCode: 60,
      Interaction: 600,
      Session: 3600,
      Grant: 14 * 24 * 3600,
      IdToken: 3600,
      RefreshToken: 14 * 24 * 3600,
    },

    routes: { authorization: AUTHORIZATION_PATH, token: TOKEN_PATH },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },

    features: {
      devInteractions: { enabled: false }, // replaced by completeInteraction()
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        // Same rule as oidc-provider's default (any authenticated confidential
        // client may introspect); spelled out only to silence its startup notice.
        allowedPolicy: async (ctx, client, token) => client.clientAuthMethod !== 'none' || token.clientId === client.clientId,
      },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        // Requests without `resource` get the test API, so the Rust client
        // does not have to send one.
        defaultResource: async (ctx, client, oneOf) => {
          if (oneOf) return oneOf.includes(DEFAULT_RESOURCE) ? DEFAULT_RESOURCE : oneOf[0];
          return DEFAULT_RESOURCE;
        },
        // Auth-code/refresh access tokens are always for the granted resource
        // (a JWT), even when `openid` was requested too.
        useGrantedResource: async () => true,
        // Any absolute URI is accepted as a resource; all behave the same.
        getResourceServerInfo: async (ctx, resourceIndicator) => ({
          scope: RESOURCE_SCOPE,
          audience: resourceIndicator,
          accessTokenFormat: 'jwt',
          accessTokenTTL: ACCESS_TOKEN_TTL,
        }),
      },
    },

    formats: {
      customizers: {
        // Called for every JWT access token just before signing: record the
        // shadow entry that makes the token introspectable/revocable.
        async jwt(ctx, token, jwt) {
          const record = {};
          for (const key of token.constructor.IN_PAYLOAD) {
            if (token[key] !== undefined) record[key] = token[key];
          }
          Object.assign(record, { jti: jwt.payload.jti, iat: jwt.payload.iat, exp: jwt.payload.exp });
          const ttl = Math.max(1, jwt.payload.exp - Math.floor(Date.now() / 1000));
          putRecord(token.kind, jwt.payload.jti, record, ttl);
        },
      },
    },
  };

  const provider = new Provider(issuer, configuration);

  provider.on('server_error', (ctx, err) => log('server_error', ctx.path, err));
  for (const event of ['grant.error', 'introspection.error', 'revocation.error', 'authorization.error']) {
    provider.on(event, (ctx, err) => log(event, err.error, err.error_description, err.error_detail || ''));
  }

  // Mounted before oidc-provider's routes (provider.use inserts ahead of them).
  provider.use(async (ctx, next) => {
    if (ctx.path.startsWith('/test/')) {
      return controlEndpoints(ctx);
    }

    if (ctx.path.startsWith('/interaction/') && ctx.method === 'GET') {
      try {
        return await completeInteraction(ctx, provider);
      } catch (err) {
        // Typically a client that did not keep the _interaction cookie.
        log('interaction failed:', err.message, err.error_detail || '');
        return json(ctx, err.statusCode || 500, {
          error: err.error || 'server_error',
          error_description: `${err.error_description || err.message} (does the client keep cookies?)`,
        });
      }
    }

    // RFC 6749 §3.3: an omitted scope gets the server's default. Without this
    // oidc-provider grants nothing and answers access_denied at the callback.
    if (ctx.path === AUTHORIZATION_PATH && ctx.method === 'GET' && !ctx.query.scope) {
      ctx.query = { ...ctx.query, scope: RESOURCE_SCOPE };
    }

    // RFC 8414 metadata: same document as OpenID discovery.
    if (ctx.path === '/.well-known/oauth-authorization-server') {
      ctx.path = '/.well-known/openid-configuration';
    }

    if (ctx.method === 'POST' && CLIENT_AUTH_PATHS.has(ctx.path)) {
      // Read the form ourselves so it can be recorded exactly as received and
      // the client authentication method checked (see enforceAuthMethod).
      let form = {};
      try {
        const raw = await readBody(ctx.req);
        ctx.request.body = raw;
        if (ctx.is('application/x-www-form-urlencoded')) form = { ...querystring.parse(raw) };
      } catch (err) {
        log('request body unreadable:', err.message);
      }

      if (ctx.path === TOKEN_PATH) {
        // Record before oidc-provider runs so failed requests count too.
        const grantType = typeof form.grant_type === 'string' ? form.grant_type : '(none)';
        stats.token_requests += 1;
        stats.by_grant_type[grantType] = (stats.by_grant_type[grantType] || 0) + 1;
        tokenRequests.push({ form: redact(form), authorization: ctx.get('authorization') !== '' });
      }

      if (!enforceAuthMethod(ctx, form)) return undefined;
    }

    await next();
    if (ctx.method === 'POST' && ctx.path === TOKEN_PATH && ctx.status >= 400) {
      const body = ctx.body && typeof ctx.body === 'object' ? ctx.body : {};
      const key = `${body.error}${body.error_description ? `: ${body.error_description}` : ''}`;
      stats.errors[key] = (stats.errors[key] || 0) + 1;
    }
    return undefined;
  });

  return provider;
}

// ---------------------------------------------------------------------------
// Startup: listen first (PORT may be 0), then build the provider with the real
// port in the issuer, then announce readiness on stdout.
// ---------------------------------------------------------------------------

let handler = (req, res) => {
  res.statusCode = 503;
  res.end();
};
const server = http.createServer((req, res) => handler(req, res));

server.on('error', (err) => {
  log('listen failed:', err.message);
  process.exit(1);
});

server.listen(PORT, HOST, () => {
  const { port } = server.address();
  const issuer = `http://${HOST}:${port}`;
  const provider = buildProvider(issuer);
  handler = provider.callback();
  log(`listening, issuer ${issuer}, access token ttl ${ACCESS_TOKEN_TTL}s`);
  process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    server.close();
    process.exit(0);
  });
}

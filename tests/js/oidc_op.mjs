// A real OpenID Provider for the tests (panva's oidc-provider, OpenID certified), on
// 127.0.0.1 over http. `node oidc_op.mjs CONFIG.json`; CONFIG gives the port, the issuer,
// the clients (as oidc-provider takes them) and the accounts (login -> claims). The login
// page is a minimal custom interaction: a login name and the `acr` to assert (the test
// stands for the person, and for the card or e-CPS that gives eidas1). Consent is implied.
// Prints "ready" on stdout when it listens.
import fs from 'node:fs';
import http from 'node:http';
import Provider from 'oidc-provider';

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));

const provider = new Provider(cfg.issuer, {
  clients: cfg.clients,
  jwks: cfg.jwks,
  cookies: { keys: ['signflow-test-op-cookie-key'] },
  pkce: { required: () => true },
  acrValues: ['eidas1', 'eidas2', 'basic'],
  // Pro Santé Connect's own claim: "8" followed by the RPPS number.
  claims: {
    openid: ['sub', 'SubjectNameID'],
    profile: ['given_name', 'family_name'],
    email: ['email'],
  },
  findAccount: async (_ctx, id) => {
    const claims = cfg.accounts[id];
    if (!claims) return undefined;
    return { accountId: id, claims: async () => ({ sub: id, ...claims }) };
  },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: { enabled: true },
  },
  // Consent is not what is under test: every client gets the scopes and claims it asks.
  loadExistingGrant: async (ctx) => {
    const existing = ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (existing) return ctx.oidc.provider.Grant.find(existing);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid profile email');
    grant.addOIDCClaims(['SubjectNameID', 'given_name', 'family_name', 'email']);
    await grant.save();
    return grant;
  },
});

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

async function interaction(req, res, uid, submitted) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  if (submitted) {
    const form = await readForm(req);
    const login = form.get('login') || '';
    const acr = form.get('acr') || undefined;
    const result = cfg.accounts[login]
      ? { login: { accountId: login, acr } }
      : { error: 'access_denied', error_description: 'unknown login' };
    await provider.interactionFinished(req, res, result, { mergeWithLastSubmission: false });
    return;
  }
  res.setHeader('Content-Type', 'text/html; charset=utf-8');
  res.end(`<!doctype html><html lang="en"><title>Test OP login</title><main>
<h1>Test OP login</h1>
<form method="post" action="/interaction/${escape(uid)}/login">
<label>Login <input name="login" autofocus></label>
<label>Level <select name="acr"><option value="eidas1">eidas1</option><option value="basic">basic</option></select></label>
<button type="submit">Sign in at the provider</button>
</form></main></html>`);
}

const handler = provider.callback();
const server = http.createServer((req, res) => {
  const path = new URL(req.url, cfg.issuer).pathname;
  const match = path.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (!match) {
    handler(req, res);
    return;
  }
  interaction(req, res, match[1], req.method === 'POST' && Boolean(match[2])).catch((err) => {
    res.statusCode = 400;
    res.end(`interaction failed: ${escape(err.message)}`);
  });
});
server.listen(cfg.port, '127.0.0.1', () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));

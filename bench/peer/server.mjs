// node-oidc-provider configured like authserver's token endpoint, for bench/ab.py.
//
// What matches authserver: client_credentials for one confidential client
// (client_secret_basic), JWT access tokens (RFC 9068, through the resource indicators feature
// with accessTokenFormat 'jwt' and a fixed audience, so a plain grant_type=client_credentials
// body gets a JWT), DPoP (RFC 9449) with ES256 proofs and replay detection, and an ES256 signing
// key. What differs, on purpose: the provider's default in-memory adapter (one Node process;
// the client is static configuration), where authserver reads the client from PostgreSQL and
// keeps DPoP jtis in Redis across worker processes.
//
// Environment: PEER_PORT (default 18300), PEER_CLIENT_ID, PEER_CLIENT_SECRET (defaults below;
// the benchmark passes its own), PEER_AUDIENCE (default urn:authserver-bench:api).
// Run: npm --prefix bench/peer start   (after npm --prefix bench/peer ci)

import { generateKeyPairSync } from 'node:crypto';

import Provider from 'oidc-provider';

const port = Number(process.env.PEER_PORT || 18300);
const host = process.env.PEER_HOST || '127.0.0.1';
const issuer = `http://${host}:${port}`;
const clientId = process.env.PEER_CLIENT_ID || 'bench-peer';
const clientSecret = process.env.PEER_CLIENT_SECRET || 'bench-peer-secret-0123456789abcdef';
const audience = process.env.PEER_AUDIENCE || 'urn:authserver-bench:api';

// A fresh P-256 key per start, as authserver's bench creates a fresh signing key per database.
const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingKey = { ...privateKey.export({ format: 'jwk' }), alg: 'ES256', use: 'sig', kid: 'es256-1' };

const configuration = {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
  }],
  jwks: { keys: [signingKey] },
  // ES256 for everything the provider signs (the access token's alg follows this default).
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  enabledJWA: { dPoPSigningAlgValues: ['ES256'] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    dPoP: { enabled: true },
    introspection: { enabled: false },
    revocation: { enabled: false },
    resourceIndicators: {
      enabled: true,
      // Every token is for the one resource server, whether or not `resource` is sent.
      defaultResource: () => audience,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        audience,
        scope: '',
        accessTokenTTL: 600,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
};

const provider = new Provider(issuer, configuration);
provider.on('server_error', (ctx, err) => {
  console.error('server_error', err);
});

const server = provider.listen(port, host, () => {
  console.log(`oidc-provider ${issuer} (pid ${process.pid}) ready`);
});

function stop() {
  server.close(() => process.exit(0));
  // Keep-alive connections would hold close() open.
  server.closeAllConnections();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

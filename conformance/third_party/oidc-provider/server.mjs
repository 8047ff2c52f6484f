// An independent OAuth 2.0 server (panva/oidc-provider) for the conformance suite's generic checks.
// Loopback only, throwaway keys; never a deployment. Configuration comes from the environment:
//   PORT (default 3000), INITIAL_ACCESS_TOKEN (DCR; default "conformance-iat"),
//   CLIENT_ID / CLIENT_SECRET (a pre-registered client_credentials client),
//   REQUIRE_DPOP_NONCE=1 to make every DPoP proof carry a server nonce (RFC 9449 §8).
import { generateKeyPairSync, randomBytes } from 'node:crypto';

import Provider from 'oidc-provider';

const port = Number(process.env.PORT || 3000);
const issuer = `http://127.0.0.1:${port}`;

function privateJwk(type, options, extra) {
  const { privateKey } = generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), ...extra };
}

const configuration = {
  clients: [{
    client_id: process.env.CLIENT_ID || 'conformance-cc',
    client_secret: process.env.CLIENT_SECRET || 'conformance-cc-secret-0123456789abcdef',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: {
    keys: [
      privateJwk('ec', { namedCurve: 'P-256' }, { use: 'sig', alg: 'ES256', kid: 'es256' }),
      privateJwk('rsa', { modulusLength: 2048 }, { use: 'sig', alg: 'RS256', kid: 'rs256' }),
    ],
  },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    registration: {
      enabled: true,
      initialAccessToken: process.env.INITIAL_ACCESS_TOKEN || 'conformance-iat',
    },
    dPoP: {
      enabled: true,
      nonceSecret: randomBytes(32),
      requireNonce: () => process.env.REQUIRE_DPOP_NONCE === '1',
    },
  },
};

const provider = new Provider(issuer, configuration);
provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening, issuer ${issuer}`);
});

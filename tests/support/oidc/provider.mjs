// A real OpenID provider (the npm package oidc-provider) for the console's login tests.
// node provider.mjs PORT CLIENT_ID CLIENT_SECRET REDIRECT_URI
// Its development login form accepts any user name; the user's roles come from ROLES_<NAME> in the
// environment (comma-separated), under resource_access.karnak.roles as Keycloak puts them.
import Provider from "oidc-provider";

const [port, clientId, clientSecret, redirectUri] = process.argv.slice(2);

const provider = new Provider(`http://127.0.0.1:${port}`, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      grant_types: ["authorization_code"],
      response_types: ["code"],
    },
  ],
  claims: { openid: ["sub"], profile: ["preferred_username", "resource_access"] },
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true } },
  async findAccount(ctx, id) {
    const roles = (process.env[`ROLES_${id.toUpperCase()}`] || "").split(",").filter(Boolean);
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, resource_access: { karnak: { roles } } };
      },
    };
  },
});
provider.proxy = false;
provider.listen(Number(port), "127.0.0.1", () => console.log(`oidc-provider listening on ${port}`));

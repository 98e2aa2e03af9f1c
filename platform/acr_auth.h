// Registry auth kind `acr`: Azure Container Registry credentials from the node's managed identity.
// SPEC "Registry auth".
//
// Contract: for an image whose registry is <name>.azurecr.io (or a sovereign-cloud .azurecr.cn/.us),
// or the one registry host named by `registryOverride`, credentialsFor() gets a Microsoft Entra
// (AAD) token from the Azure Instance Metadata Service (GET <imds>/metadata/identity/oauth2/token,
// header `Metadata: true`, resource https://management.azure.com/, optional `clientId` for a
// user-assigned identity), exchanges it at POST https://<registry>/oauth2/exchange for an ACR
// refresh token, and returns {username "00000000-0000-0000-0000-000000000000", password <refresh
// token>} — the documented form `docker login` accepts, which both Docker's and containerd's
// registry token flows send as basic auth to the registry's token endpoint. The refresh token is
// cached per registry until `refreshBefore` ahead of its expiry (its JWT `exp`, else 3 hours); if
// renewing fails while it has not expired, it keeps being used. Other registries get nullopt.
// IMDS is `imdsEndpoint`, else QCS_AZURE_IMDS_ENDPOINT, else http://169.254.169.254; the exchange
// endpoint is `exchangeEndpoint` (a base URL), else https://<registry>. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common/clock.h"
#include "platform/cloud_http.h"
#include "platform/registry_auth.h"
#include "platform/secrets.h"

namespace qcs::platform {

struct AcrAuthOptions {
  std::string registryOverride;  // "127.0.0.1:5000": also served, though not an ACR host name
  std::string imdsEndpoint;      // "http://127.0.0.1:PORT": instead of QCS_AZURE_IMDS_ENDPOINT / 169.254.169.254
  std::string exchangeEndpoint;  // "http://127.0.0.1:PORT": where /oauth2/exchange is, instead of the registry
  std::string clientId;          // a user-assigned identity's client id; empty: the system-assigned one
  std::chrono::seconds refreshBefore{15 * 60};
};

std::unique_ptr<RegistryAuthProvider> makeAcrAuth(AcrAuthOptions options, EnvLookup env,
                                                  std::shared_ptr<CloudHttpClient> http,
                                                  std::shared_ptr<const Clock> clock);

// Whether a registry host is an Azure Container Registry: <name>.azurecr.io (.cn, .us).
bool isAzureRegistry(const std::string& host);

// The `exp` claim of a JWT (seconds since the epoch), without checking its signature; nullopt
// when the token is not a JWT with a numeric exp. Exposed for tests.
std::optional<int64_t> jwtExpiry(const std::string& token);

}  // namespace qcs::platform

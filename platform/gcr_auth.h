// Registry auth kind `gcr`: Google Container Registry and Artifact Registry credentials from the
// GCP metadata server. SPEC "Registry auth".
//
// Contract: for an image whose registry is gcr.io, *.gcr.io or *-docker.pkg.dev, or the one
// registry host named by `registryOverride`, credentialsFor() returns {username
// "oauth2accesstoken", password <access token>}. The token is the default service account's
// (on GKE, the workload identity's), fetched with GET <metadata>/computeMetadata/v1/instance/
// service-accounts/default/token and the header `Metadata-Flavor: Google`. One token serves every
// registry; it is cached until `refreshBefore` ahead of its expiry, and if renewing fails while it
// has not expired, it keeps being used. Other registries get nullopt (anonymous). The metadata
// server is `metadataHost` ("host[:port]"), else GCE_METADATA_HOST, else 169.254.169.254 (the
// address metadata.google.internal resolves to, so no DNS and no proxy are involved). Thread-safe.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "common/clock.h"
#include "platform/cloud_http.h"
#include "platform/registry_auth.h"
#include "platform/secrets.h"

namespace qcs::platform {

struct GcrAuthOptions {
  std::string registryOverride;  // "127.0.0.1:5000": also served, though not a Google host name
  std::string metadataHost;      // "127.0.0.1:PORT": instead of GCE_METADATA_HOST / 169.254.169.254
  // The metadata server hands out tokens with at least about 5 minutes left, so the margin stays below.
  std::chrono::seconds refreshBefore{60};
};

std::unique_ptr<RegistryAuthProvider> makeGcrAuth(GcrAuthOptions options, EnvLookup env,
                                                  std::shared_ptr<CloudHttpClient> http,
                                                  std::shared_ptr<const Clock> clock);

// Whether a registry host is Google's: gcr.io, <region>.gcr.io, <location>-docker.pkg.dev.
bool isGoogleRegistry(const std::string& host);

}  // namespace qcs::platform

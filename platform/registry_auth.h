// RegistryAuthProvider: the credentials for pulling the sensor image. SPEC "Registry auth".
//
// Contract: credentialsFor() returns nullopt for anonymous pulls, credentials when the provider
// has some for that registry, or an error naming what is missing. Credentials are secrets: they
// go to the runtime's pull call and nowhere else.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "common/result.h"
#include "platform/secrets.h"
#include "runtime/container_runtime.h"
#include "runtime/image_reference.h"

namespace qcs::platform {

using runtime::ImageReference;

class RegistryAuthProvider {
 public:
  virtual ~RegistryAuthProvider() = default;
  virtual Result<std::optional<runtime::RegistryCredentials>> credentialsFor(const ImageReference& image) = 0;
  virtual std::string kind() const = 0;
};

// Anonymous pulls.
std::unique_ptr<RegistryAuthProvider> makeNoAuth();

// A fixed username and a password from a secret source, for the image's registry.
std::unique_ptr<RegistryAuthProvider> makeBasicAuth(std::string username, std::unique_ptr<SecretSource> password);

// A Docker config.json: "auths" entries (auth, username/password, identitytoken), and the
// credential helpers named by "credHelpers"/"credsStore" (docker-credential-<name> on PATH).
// The file is read on every call, so an updated file is used without a restart.
std::unique_ptr<RegistryAuthProvider> makeDockerConfigAuth(std::string path);

// Runs a Docker credential helper (`docker-credential-<helper> get`) for a server. Exposed for tests.
Result<std::optional<runtime::RegistryCredentials>> runCredentialHelper(const std::string& helper,
                                                                        const std::string& server,
                                                                        std::chrono::milliseconds timeout);

}  // namespace qcs::platform

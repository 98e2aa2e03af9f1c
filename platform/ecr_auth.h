// Registry auth kind `ecr`: Amazon ECR credentials from GetAuthorizationToken. SPEC "Registry auth".
//
// Contract: for an image whose registry is an ECR registry (<account>.dkr.ecr[-fips].<region>.
// amazonaws.com[.cn]), or the one registry host named by `registryOverride` (tests, pull-through
// proxies), credentialsFor() returns {username "AWS", password} decoded from the token
// ("AWS:<password>" in base64). The token is cached per registry until `refreshBefore` ahead of
// its expiresAt, so pulls do not call ECR each time. Other registries get nullopt (anonymous).
// The region comes from the registry host, else `region`, else AWS_REGION/AWS_DEFAULT_REGION/IMDS;
// the endpoint is `endpointOverride` or https://api.ecr.<region>.amazonaws.com. Thread-safe.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "platform/aws_secrets.h"
#include "platform/registry_auth.h"

namespace qcs::platform {

struct EcrAuthOptions {
  std::string registryOverride;  // "127.0.0.1:5000": also served, though not an ECR host name
  std::string endpointOverride;  // "http://127.0.0.1:PORT": instead of the regional API endpoint
  std::string region;            // when the registry host does not say
  std::chrono::seconds refreshBefore{30 * 60};
};

std::unique_ptr<RegistryAuthProvider> makeEcrAuth(EcrAuthOptions options, AwsEnvironment aws);

// The region of an ECR registry host ("123456789012.dkr.ecr.eu-west-1.amazonaws.com" ->
// "eu-west-1"); nullopt when the host is not an ECR registry.
std::optional<std::string> ecrRegistryRegion(const std::string& host);

}  // namespace qcs::platform

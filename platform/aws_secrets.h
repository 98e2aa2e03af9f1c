// A SecretSource backed by AWS Secrets Manager (GetSecretValue). SPEC "Secrets".
//
// Contract: read() returns the secret's SecretString — or, with a json_key, the value under that
// key of the SecretString's JSON object — trimmed. The value is fetched at most once per refresh
// interval (default 5 minutes): the supervisor calls read() on every reconcile, and a rotated
// secret is returned after the next refresh, so the sensor is re-created with it. When a refresh
// fails while a value is cached, the cached value keeps being served (AWS being unreachable must
// not stop a running sensor), staleReason() says why until a fetch succeeds again, and the fetch is
// tried again after `retryAfterFailure`.
// The region comes from the reference, else AWS_REGION / AWS_DEFAULT_REGION, else IMDS; the
// endpoint from the reference (tests, VPC endpoints), else https://secretsmanager.<region>.amazonaws.com.
// Errors name the secret id, the key and the keys present — never a value.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "common/clock.h"
#include "platform/aws_credentials.h"
#include "platform/cloud_http.h"
#include "platform/secrets.h"

namespace qcs::platform {

struct AwsSecretRef {
  std::string secretId;
  std::string jsonKey;       // empty: the whole SecretString
  std::string region;        // empty: from the environment or IMDS
  std::string versionStage;  // empty: AWSCURRENT
  std::string endpoint;      // empty: the public regional endpoint
  std::chrono::milliseconds refreshInterval{5 * 60 * 1000};
  std::chrono::milliseconds retryAfterFailure{60 * 1000};
};

struct AwsEnvironment {
  EnvLookup env;
  std::shared_ptr<CloudHttpClient> http;
  std::shared_ptr<AwsCredentialsProvider> credentials;
  std::shared_ptr<const Clock> clock;  // required
};

std::unique_ptr<SecretSource> makeAwsSecretsManagerSecret(AwsSecretRef ref, AwsEnvironment aws);

// The production environment: the process environment, the retrying libcurl client (CA bundle
// from AWS_CA_BUNDLE when set) and the standard credential chain on the system clock.
AwsEnvironment makeDefaultAwsEnvironment(EnvLookup env);

// The value under `key` of a SecretString holding a JSON object. Exposed for tests.
Result<std::string> selectJsonKey(const std::string& secretString, const std::string& key, const std::string& secretId);

}  // namespace qcs::platform

#include "platform/aws_secrets.h"

#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>

#include "common/encoding.h"

namespace qcs::platform {

namespace {

using json = nlohmann::json;

class SecretsManagerSecret final : public SecretSource {
 public:
  SecretsManagerSecret(AwsSecretRef ref, AwsEnvironment aws) : ref_(std::move(ref)), aws_(std::move(aws)) {}

  Result<std::string> read() override {
    std::lock_guard lock(mu_);
    const SteadyTime now = aws_.clock->now();
    if (cached_ && now < nextFetch_) return select(*cached_);
    auto fetched = fetch();
    if (!fetched) {
      if (cached_) {
        nextFetch_ = now + ref_.retryAfterFailure;
        staleReason_ = fetched.message();
        return select(*cached_);
      }
      return fetched.error();
    }
    staleReason_.clear();
    cached_ = std::move(fetched.value());
    nextFetch_ = now + ref_.refreshInterval;
    return select(*cached_);
  }

  std::string staleReason() const override {
    std::lock_guard lock(mu_);
    return staleReason_;
  }

  std::string describe() const override {
    std::string text = "aws-secretsmanager " + ref_.secretId;
    if (!ref_.jsonKey.empty()) text += " key " + ref_.jsonKey;
    if (!ref_.versionStage.empty()) text += " stage " + ref_.versionStage;
    return text;
  }

 private:
  Result<std::string> select(const std::string& secretString) const {
    std::string value;
    if (ref_.jsonKey.empty()) {
      value = std::string(trim(secretString));
    } else {
      auto selected = selectJsonKey(secretString, ref_.jsonKey, ref_.secretId);
      if (!selected) return selected.error();
      value = std::string(trim(selected.value()));
    }
    if (value.empty()) {
      return makeError(ErrorCode::kInvalidArgument, "Secrets Manager secret " + ref_.secretId +
                                                        (ref_.jsonKey.empty() ? "" : " key " + ref_.jsonKey) +
                                                        " is empty");
    }
    return value;
  }

  Result<std::string> fetch() {
    if (region_.empty()) {
      std::unique_ptr<ImdsClient> imds;
      if (auto endpoint = imdsEndpointFromEnv(aws_.env)) {
        imds = std::make_unique<ImdsClient>(aws_.http, *endpoint, *aws_.clock);
      }
      auto region = resolveAwsRegion(ref_.region, aws_.env, imds.get());
      if (!region) return withContext(region.error(), "Secrets Manager secret " + ref_.secretId);
      region_ = region.value();
    }
    const std::string endpoint =
        ref_.endpoint.empty() ? "https://secretsmanager." + region_ + ".amazonaws.com" : ref_.endpoint;
    json request{{"SecretId", ref_.secretId}};
    if (!ref_.versionStage.empty()) request["VersionStage"] = ref_.versionStage;
    AwsCallContext context{aws_.http, aws_.credentials, aws_.clock};
    auto body = callAwsJsonApi(context, endpoint, region_, "secretsmanager", "secretsmanager.GetSecretValue",
                               request.dump(), "Secrets Manager secret " + ref_.secretId);
    if (!body) {
      if (body.code() == ErrorCode::kPermissionDenied) {
        return withContext(body.error(),
                           "grant secretsmanager:GetSecretValue on the secret (and kms:Decrypt on its "
                           "KMS key) to the agent's role");
      }
      return body.error();
    }
    auto doc = json::parse(body.value(), nullptr, false);
    if (!doc.is_object()) {
      return makeError(ErrorCode::kProtocol, "Secrets Manager secret " + ref_.secretId +
                                                 ": GetSecretValue answered something that is not JSON");
    }
    auto secretString = doc.find("SecretString");
    if (secretString == doc.end() || !secretString->is_string()) {
      if (doc.contains("SecretBinary")) {
        return makeError(ErrorCode::kInvalidArgument, "Secrets Manager secret " + ref_.secretId +
                                                          " holds SecretBinary; store the value as SecretString");
      }
      return makeError(ErrorCode::kProtocol,
                       "Secrets Manager secret " + ref_.secretId + ": the answer has no SecretString");
    }
    return secretString->get<std::string>();
  }

  AwsSecretRef ref_;
  AwsEnvironment aws_;
  mutable std::mutex mu_;
  std::string region_;
  std::optional<std::string> cached_;
  std::string staleReason_;  // the last refresh's error while cached_ is served; "" after a success
  SteadyTime nextFetch_{};
};

}  // namespace

Result<std::string> selectJsonKey(const std::string& secretString, const std::string& key,
                                  const std::string& secretId) {
  auto doc = json::parse(secretString, nullptr, false);
  if (!doc.is_object()) {
    return makeError(ErrorCode::kInvalidArgument, "Secrets Manager secret " + secretId + ": json_key " + key +
                                                      " was given but the SecretString is not a JSON object "
                                                      "(remove json_key, or store {\"" +
                                                      key + "\": \"...\"})");
  }
  auto it = doc.find(key);
  if (it == doc.end()) {
    std::string keys;
    for (auto entry = doc.begin(); entry != doc.end(); ++entry) keys += (keys.empty() ? "" : ", ") + entry.key();
    return makeError(ErrorCode::kNotFound, "Secrets Manager secret " + secretId + " has no key \"" + key +
                                               "\" (keys present: " + (keys.empty() ? "none" : keys) + ")");
  }
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number()) return it->dump();
  return makeError(ErrorCode::kInvalidArgument,
                   "Secrets Manager secret " + secretId + ": the value of key \"" + key + "\" is not a string");
}

AwsEnvironment makeDefaultAwsEnvironment(EnvLookup env) {
  AwsEnvironment aws;
  aws.env = std::move(env);
  CurlHttpOptions http;
  // The AWS SDKs' variable for a private CA (a TLS-inspecting proxy, a VPC endpoint with its own CA).
  if (auto bundle = aws.env("AWS_CA_BUNDLE")) http.caBundlePath = std::string(trim(*bundle));
  aws.http = makeDefaultCloudHttpClient(std::move(http));
  aws.clock = std::make_shared<SystemClock>();
  AwsChainOptions chain;
  chain.env = aws.env;
  chain.http = aws.http;
  chain.clock = aws.clock;
  aws.credentials = makeAwsCredentialChain(std::move(chain));
  return aws;
}

std::unique_ptr<SecretSource> makeAwsSecretsManagerSecret(AwsSecretRef ref, AwsEnvironment aws) {
  return std::make_unique<SecretsManagerSecret>(std::move(ref), std::move(aws));
}

}  // namespace qcs::platform

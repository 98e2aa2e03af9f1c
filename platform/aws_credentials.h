// The AWS credential chain and the EC2 instance metadata service (IMDSv2) client.
//
// Contract: the chain picks the first configured source, in the SDKs' order —
//   1. the environment: AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN);
//   2. the ECS container credentials endpoint: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI against
//      http://169.254.170.2 (the host is overridable with QCS_AWS_CONTAINER_CREDENTIALS_HOST, for
//      tests), or AWS_CONTAINER_CREDENTIALS_FULL_URI (https, or http to loopback or the ECS/EKS
//      link-local addresses only), sending AWS_CONTAINER_AUTHORIZATION_TOKEN(_FILE) as Authorization;
//   3. IMDSv2 (token PUT, role name, role credentials) at AWS_EC2_METADATA_SERVICE_ENDPOINT or
//      http://169.254.169.254, unless AWS_EC2_METADATA_DISABLED=true —
// and reports that source's error rather than silently trying the next one (a misconfigured task
// role must not turn into "using the instance role"). Temporary credentials are cached until five
// minutes before their Expiration; a failed refresh keeps using still-valid cached credentials.
// Thread-safe. Errors name the source and endpoint, never a key, token or secret.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "common/clock.h"
#include "common/result.h"
#include "platform/cloud_http.h"
#include "platform/secrets.h"
#include "platform/sigv4.h"

namespace qcs::platform {

inline constexpr const char* kDefaultImdsEndpoint = "http://169.254.169.254";
inline constexpr const char* kDefaultEcsCredentialsHost = "169.254.170.2";

class AwsCredentialsProvider {
 public:
  virtual ~AwsCredentialsProvider() = default;
  virtual Result<AwsCredentials> credentials() = 0;
  // Drops cached credentials (a service said they expired), so the next call fetches anew.
  virtual void invalidate() = 0;
};

// Fixed credentials (tests, and callers that already hold some).
std::shared_ptr<AwsCredentialsProvider> makeStaticAwsCredentials(AwsCredentials credentials);

// IMDSv2: a session token (PUT /latest/api/token with X-aws-ec2-metadata-token-ttl-seconds),
// reused until shortly before its TTL ends and fetched anew after a 401. Thread-safe.
class ImdsClient {
 public:
  ImdsClient(std::shared_ptr<CloudHttpClient> http, std::string endpoint, const Clock& clock,
             std::chrono::seconds tokenTtl = std::chrono::seconds(21600));
  // GET <endpoint><path> with the token; the body of a 200, an error otherwise.
  Result<std::string> get(const std::string& path);
  const std::string& endpoint() const { return endpoint_; }

 private:
  Result<std::string> token(bool forceNew);
  Result<HttpResponse> getWithToken(const std::string& path, const std::string& token);

  std::shared_ptr<CloudHttpClient> http_;
  std::string endpoint_;
  const Clock& clock_;
  std::chrono::seconds tokenTtl_;
  std::mutex mu_;
  std::string token_;
  SteadyTime tokenValidUntil_{};
};

struct AwsChainOptions {
  EnvLookup env;
  std::shared_ptr<CloudHttpClient> http;
  std::shared_ptr<const Clock> clock;  // required
  std::chrono::seconds refreshBeforeExpiry{300};
};

std::shared_ptr<AwsCredentialsProvider> makeAwsCredentialChain(AwsChainOptions options);

// The IMDS endpoint the environment asks for (AWS_EC2_METADATA_SERVICE_ENDPOINT, trailing slash
// removed) or the default; nullopt when AWS_EC2_METADATA_DISABLED is true.
std::optional<std::string> imdsEndpointFromEnv(const EnvLookup& env);

// The region: `configured` if set, else AWS_REGION, else AWS_DEFAULT_REGION, else IMDS
// /latest/meta-data/placement/region (when imds is not null). The error says how to set one.
Result<std::string> resolveAwsRegion(const std::string& configured, const EnvLookup& env, ImdsClient* imds);

// What an AWS JSON-protocol call needs besides its request: the HTTP client, the credentials and
// the clock that dates the signature.
struct AwsCallContext {
  std::shared_ptr<CloudHttpClient> http;
  std::shared_ptr<AwsCredentialsProvider> credentials;
  std::shared_ptr<const Clock> clock;
};

// One AWS JSON 1.1 call: POST <endpoint>/ with X-Amz-Target: <target>, SigV4-signed for
// region/service. Returns the 200 body. When the service says the token expired, the credentials
// are invalidated and the call is made once more with fresh ones. Other answers become errors
// with the AWS error code and message (AccessDeniedException -> kPermissionDenied,
// ResourceNotFoundException -> kNotFound, throttling -> kUnavailable, bad credentials ->
// kUnauthenticated), prefixed by `what`.
Result<std::string> callAwsJsonApi(const AwsCallContext& context, const std::string& endpoint,
                                   const std::string& region, const std::string& service, const std::string& target,
                                   const std::string& body, const std::string& what);

// "2026-11-26T23:00:00Z" (fractional seconds and a +00:00 offset accepted) as a time point.
std::optional<std::chrono::system_clock::time_point> parseIso8601(const std::string& text);

}  // namespace qcs::platform

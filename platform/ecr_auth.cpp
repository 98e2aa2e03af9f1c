#include "platform/ecr_auth.h"

#include <cctype>
#include <cmath>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

#include "common/encoding.h"

namespace qcs::platform {

namespace {

using json = nlohmann::json;
using runtime::RegistryCredentials;

struct CachedToken {
  RegistryCredentials credentials;
  std::chrono::system_clock::time_point expiresAt;
};

class EcrAuth final : public RegistryAuthProvider {
 public:
  EcrAuth(EcrAuthOptions options, AwsEnvironment aws) : options_(std::move(options)), aws_(std::move(aws)) {}

  Result<std::optional<RegistryCredentials>> credentialsFor(const ImageReference& image) override {
    auto hostRegion = ecrRegistryRegion(image.registry);
    const bool overridden = !options_.registryOverride.empty() && image.registry == options_.registryOverride;
    if (!hostRegion && !overridden) return std::optional<RegistryCredentials>{};

    std::lock_guard lock(mu_);
    const auto now = aws_.clock->wallNow();
    auto cached = cache_.find(image.registry);
    if (cached != cache_.end() && now < cached->second.expiresAt - options_.refreshBefore) {
      return std::optional<RegistryCredentials>(cached->second.credentials);
    }
    auto fetched = fetch(image.registry, hostRegion);
    if (!fetched) {
      // A token that is due for renewal but not expired still pulls.
      if (cached != cache_.end() && now < cached->second.expiresAt) {
        return std::optional<RegistryCredentials>(cached->second.credentials);
      }
      return fetched.error();
    }
    cache_[image.registry] = fetched.value();
    return std::optional<RegistryCredentials>(fetched->credentials);
  }

  std::string kind() const override { return "ecr"; }

 private:
  Result<CachedToken> fetch(const std::string& registry, const std::optional<std::string>& hostRegion) {
    const std::string what = "registry_auth ecr for " + registry;
    std::string region;
    if (hostRegion) {
      region = *hostRegion;
    } else {
      std::unique_ptr<ImdsClient> imds;
      if (auto endpoint = imdsEndpointFromEnv(aws_.env)) {
        imds = std::make_unique<ImdsClient>(aws_.http, *endpoint, *aws_.clock);
      }
      auto resolved = resolveAwsRegion(options_.region, aws_.env, imds.get());
      if (!resolved) return withContext(resolved.error(), what);
      region = resolved.value();
    }
    const std::string endpoint =
        options_.endpointOverride.empty() ? "https://api.ecr." + region + ".amazonaws.com" : options_.endpointOverride;
    AwsCallContext context{aws_.http, aws_.credentials, aws_.clock};
    auto body = callAwsJsonApi(context, endpoint, region, "ecr",
                               "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken", "{}", what);
    if (!body) {
      if (body.code() == ErrorCode::kPermissionDenied) {
        return withContext(body.error(),
                           "grant ecr:GetAuthorizationToken (and ecr:BatchGetImage, "
                           "ecr:GetDownloadUrlForLayer on the repository) to the agent's role");
      }
      return body.error();
    }
    auto doc = json::parse(body.value(), nullptr, false);
    const json* data = nullptr;
    if (doc.is_object()) {
      auto list = doc.find("authorizationData");
      if (list != doc.end() && list->is_array() && !list->empty() && (*list)[0].is_object()) data = &(*list)[0];
    }
    if (data == nullptr) {
      return makeError(ErrorCode::kProtocol, what + ": GetAuthorizationToken answered without authorizationData");
    }
    auto token = data->find("authorizationToken");
    if (token == data->end() || !token->is_string()) {
      return makeError(ErrorCode::kProtocol, what + ": the authorizationData has no authorizationToken");
    }
    auto decoded = base64Decode(token->get<std::string>());
    auto colon = decoded ? decoded->find(':') : std::string::npos;
    if (!decoded || colon == std::string::npos) {
      return makeError(ErrorCode::kProtocol, what + ": the authorizationToken is not base64 of user:password");
    }
    CachedToken out;
    out.credentials.username = decoded->substr(0, colon);
    out.credentials.password = decoded->substr(colon + 1);
    out.credentials.serverAddress = registry;
    // ECR tokens live 12 hours; without an expiresAt, assume an hour and ask again then.
    out.expiresAt = aws_.clock->wallNow() + std::chrono::hours(1);
    if (auto expires = data->find("expiresAt"); expires != data->end() && expires->is_number()) {
      out.expiresAt = std::chrono::system_clock::time_point(
          std::chrono::seconds(static_cast<int64_t>(std::floor(expires->get<double>()))));
    }
    return out;
  }

  EcrAuthOptions options_;
  AwsEnvironment aws_;
  std::mutex mu_;
  std::map<std::string, CachedToken> cache_;
};

}  // namespace

std::optional<std::string> ecrRegistryRegion(const std::string& host) {
  // <12 digits>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]
  auto dot = host.find('.');
  if (dot != 12) return std::nullopt;
  for (size_t i = 0; i < dot; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(host[i]))) return std::nullopt;
  }
  std::string rest = host.substr(dot + 1);
  std::string afterEcr;
  for (const char* prefix : {"dkr.ecr.", "dkr.ecr-fips."}) {
    if (rest.rfind(prefix, 0) == 0) afterEcr = rest.substr(std::char_traits<char>::length(prefix));
  }
  if (afterEcr.empty()) return std::nullopt;
  for (const char* suffix : {".amazonaws.com", ".amazonaws.com.cn"}) {
    const std::string s(suffix);
    if (afterEcr.size() > s.size() && afterEcr.compare(afterEcr.size() - s.size(), s.size(), s) == 0) {
      std::string region = afterEcr.substr(0, afterEcr.size() - s.size());
      if (region.find('.') == std::string::npos && !region.empty()) return region;
    }
  }
  return std::nullopt;
}

std::unique_ptr<RegistryAuthProvider> makeEcrAuth(EcrAuthOptions options, AwsEnvironment aws) {
  return std::make_unique<EcrAuth>(std::move(options), std::move(aws));
}

}  // namespace qcs::platform

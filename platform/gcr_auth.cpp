#include "platform/gcr_auth.h"

#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>

namespace qcs::platform {

namespace {

using json = nlohmann::json;
using runtime::RegistryCredentials;

constexpr const char* kTokenPath = "/computeMetadata/v1/instance/service-accounts/default/token";
constexpr const char* kDefaultMetadataHost = "169.254.169.254";
constexpr size_t kMaxQuotedBody = 200;

bool endsWith(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// An error body of the metadata server, cut short and on one line: it never carries a token.
std::string quoteBody(const std::string& body) {
  std::string out = body.substr(0, kMaxQuotedBody);
  for (char& c : out) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

struct CachedToken {
  std::string accessToken;
  std::chrono::system_clock::time_point expiresAt;
};

class GcrAuth final : public RegistryAuthProvider {
 public:
  GcrAuth(GcrAuthOptions options, EnvLookup env, std::shared_ptr<CloudHttpClient> http,
          std::shared_ptr<const Clock> clock)
      : options_(std::move(options)), env_(std::move(env)), http_(std::move(http)), clock_(std::move(clock)) {}

  Result<std::optional<RegistryCredentials>> credentialsFor(const ImageReference& image) override {
    const bool overridden = !options_.registryOverride.empty() && image.registry == options_.registryOverride;
    if (!isGoogleRegistry(image.registry) && !overridden) return std::optional<RegistryCredentials>{};

    std::lock_guard lock(mu_);
    const auto now = clock_->wallNow();
    if (!cached_ || now >= cached_->expiresAt - options_.refreshBefore) {
      auto fetched = fetch(image.registry);
      if (fetched) {
        cached_ = std::move(fetched.value());
      } else if (!cached_ || now >= cached_->expiresAt) {
        return fetched.error();
      }
      // else: a token due for renewal but not expired still pulls.
    }
    RegistryCredentials credentials;
    credentials.username = "oauth2accesstoken";
    credentials.password = cached_->accessToken;
    credentials.serverAddress = image.registry;
    return std::optional<RegistryCredentials>(std::move(credentials));
  }

  std::string kind() const override { return "gcr"; }

 private:
  std::string metadataHost() const {
    if (!options_.metadataHost.empty()) return options_.metadataHost;
    if (env_) {
      if (auto host = env_("GCE_METADATA_HOST"); host && !host->empty()) return *host;
    }
    return kDefaultMetadataHost;
  }

  Result<CachedToken> fetch(const std::string& registry) {
    const std::string what = "registry_auth gcr for " + registry;
    HttpRequest request;
    request.url = "http://" + metadataHost() + kTokenPath;
    request.headers = {{"Metadata-Flavor", "Google"}};
    auto response = http_->send(request);
    if (!response) {
      return withContext(response.error(), what +
                                               ": the GCP metadata server did not answer (is this a GCE/GKE "
                                               "node? GCE_METADATA_HOST overrides its address)");
    }
    const std::string where = what + ": " + describeEndpoint(request.url);
    if (response->status == 404) {
      return makeError(ErrorCode::kNotFound,
                       where +
                           " answered 404: the node (or, on GKE, the pod's Kubernetes service account through "
                           "workload identity) has no Google service account; attach one with read access to "
                           "the registry (" +
                           quoteBody(response->body) + ")");
    }
    if (response->status == 403) {
      return makeError(ErrorCode::kPermissionDenied,
                       where +
                           " answered 403: the service account's token is refused (check the node's access "
                           "scopes and the workload identity binding) (" +
                           quoteBody(response->body) + ")");
    }
    if (response->status != 200) {
      return makeError(ErrorCode::kUnavailable, where + " answered HTTP " + std::to_string(response->status) + " (" +
                                                    quoteBody(response->body) + ")");
    }
    auto doc = json::parse(response->body, nullptr, false);
    if (!doc.is_object()) return makeError(ErrorCode::kProtocol, where + " answered something that is not JSON");
    auto token = doc.find("access_token");
    if (token == doc.end() || !token->is_string() || token->get<std::string>().empty()) {
      return makeError(ErrorCode::kProtocol, where + " answered without an access_token");
    }
    auto expiresIn = doc.find("expires_in");
    if (expiresIn == doc.end() || !expiresIn->is_number() || expiresIn->get<double>() <= 0) {
      return makeError(ErrorCode::kProtocol, where + " answered without a positive expires_in");
    }
    CachedToken out;
    out.accessToken = token->get<std::string>();
    out.expiresAt = clock_->wallNow() + std::chrono::seconds(static_cast<int64_t>(expiresIn->get<double>()));
    return out;
  }

  GcrAuthOptions options_;
  EnvLookup env_;
  std::shared_ptr<CloudHttpClient> http_;
  std::shared_ptr<const Clock> clock_;
  std::mutex mu_;
  std::optional<CachedToken> cached_;
};

}  // namespace

bool isGoogleRegistry(const std::string& host) {
  if (host == "gcr.io") return true;
  if (endsWith(host, ".gcr.io")) return host.size() > 7 && host.find('.') == host.size() - 7;
  if (endsWith(host, "-docker.pkg.dev")) {
    const std::string location = host.substr(0, host.size() - std::char_traits<char>::length("-docker.pkg.dev"));
    return !location.empty() && location.find('.') == std::string::npos;
  }
  return false;
}

std::unique_ptr<RegistryAuthProvider> makeGcrAuth(GcrAuthOptions options, EnvLookup env,
                                                  std::shared_ptr<CloudHttpClient> http,
                                                  std::shared_ptr<const Clock> clock) {
  return std::make_unique<GcrAuth>(std::move(options), std::move(env), std::move(http), std::move(clock));
}

}  // namespace qcs::platform

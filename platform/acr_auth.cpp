#include "platform/acr_auth.h"

#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

#include "common/encoding.h"
#include "runtime/json_fields.h"

namespace qcs::platform {

namespace {

using json = nlohmann::json;
using runtime::RegistryCredentials;

constexpr const char* kDefaultImdsEndpoint = "http://169.254.169.254";
constexpr const char* kArmResource = "https://management.azure.com/";
// The username ACR expects next to a refresh token (az acr login --expose-token prints it).
constexpr const char* kRefreshTokenUser = "00000000-0000-0000-0000-000000000000";
// ACR refresh tokens live 3 hours; used when the token's own exp cannot be read.
constexpr std::chrono::hours kDefaultRefreshTokenLifetime{3};
constexpr size_t kMaxQuotedMessage = 300;

bool endsWith(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string stripSlash(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

// The human part of an Azure error answer: IMDS/Entra's {"error", "error_description"} or the
// registry's {"errors": [{"code", "message"}]}. Never carries a token; capped anyway.
std::string azureErrorText(const std::string& body) {
  auto doc = json::parse(body, nullptr, false);
  std::string text;
  if (doc.is_object()) {
    if (auto errors = doc.find("errors");
        errors != doc.end() && errors->is_array() && !errors->empty() && (*errors)[0].is_object()) {
      text = runtime::stringField((*errors)[0], "code") + ": " + runtime::stringField((*errors)[0], "message");
    } else if (!runtime::stringField(doc, "error").empty()) {
      text = runtime::stringField(doc, "error") + ": " + runtime::stringField(doc, "error_description");
    }
  }
  if (text.empty()) text = body;
  text = text.substr(0, kMaxQuotedMessage);
  for (char& c : text) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return text;
}

std::string formEncode(const std::vector<std::pair<std::string, std::string>>& fields) {
  std::string out;
  for (const auto& [name, value] : fields) {
    if (!out.empty()) out += '&';
    out += urlEncode(name) + "=" + urlEncode(value);
  }
  return out;
}

struct CachedToken {
  std::string refreshToken;
  std::chrono::system_clock::time_point expiresAt;
};

class AcrAuth final : public RegistryAuthProvider {
 public:
  AcrAuth(AcrAuthOptions options, EnvLookup env, std::shared_ptr<CloudHttpClient> http,
          std::shared_ptr<const Clock> clock)
      : options_(std::move(options)), env_(std::move(env)), http_(std::move(http)), clock_(std::move(clock)) {}

  Result<std::optional<RegistryCredentials>> credentialsFor(const ImageReference& image) override {
    const bool overridden = !options_.registryOverride.empty() && image.registry == options_.registryOverride;
    if (!isAzureRegistry(image.registry) && !overridden) return std::optional<RegistryCredentials>{};

    std::lock_guard lock(mu_);
    const auto now = clock_->wallNow();
    auto cached = cache_.find(image.registry);
    if (cached == cache_.end() || now >= cached->second.expiresAt - options_.refreshBefore) {
      auto fetched = fetch(image.registry);
      if (fetched) {
        cached = cache_.insert_or_assign(image.registry, std::move(fetched.value())).first;
      } else if (cached == cache_.end() || now >= cached->second.expiresAt) {
        return fetched.error();
      }
      // else: a refresh token due for renewal but not expired still pulls.
    }
    RegistryCredentials credentials;
    credentials.username = kRefreshTokenUser;
    credentials.password = cached->second.refreshToken;
    credentials.serverAddress = image.registry;
    return std::optional<RegistryCredentials>(std::move(credentials));
  }

  std::string kind() const override { return "acr"; }

 private:
  std::string imdsEndpoint() const {
    if (!options_.imdsEndpoint.empty()) return stripSlash(options_.imdsEndpoint);
    if (env_) {
      if (auto endpoint = env_("QCS_AZURE_IMDS_ENDPOINT"); endpoint && !endpoint->empty()) {
        return stripSlash(*endpoint);
      }
    }
    return kDefaultImdsEndpoint;
  }

  Result<std::string> entraToken(const std::string& what) {
    HttpRequest request;
    request.url =
        imdsEndpoint() + "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" + urlEncode(kArmResource);
    if (!options_.clientId.empty()) request.url += "&client_id=" + urlEncode(options_.clientId);
    request.headers = {{"Metadata", "true"}};
    auto response = http_->send(request);
    if (!response) {
      return withContext(response.error(), what +
                                               ": the Azure Instance Metadata Service did not answer (is this "
                                               "an Azure VM or AKS node? QCS_AZURE_IMDS_ENDPOINT overrides its "
                                               "address)");
    }
    const std::string where = what + ": managed identity token from " + describeEndpoint(request.url);
    if (response->status == 400 || response->status == 404) {
      return makeError(ErrorCode::kUnauthenticated,
                       where + " refused (HTTP " + std::to_string(response->status) + ", " +
                           azureErrorText(response->body) +
                           "): give the node a managed identity (AKS: the kubelet identity) with the AcrPull role "
                           "on the registry; with several user-assigned identities, name one by its client id "
                           "(QCS_AZURE_CLIENT_ID)");
    }
    if (response->status != 200) {
      return makeError(ErrorCode::kUnavailable, where + " answered HTTP " + std::to_string(response->status) + " (" +
                                                    azureErrorText(response->body) + ")");
    }
    auto doc = json::parse(response->body, nullptr, false);
    auto token = doc.is_object() ? doc.find("access_token") : doc.end();
    if (!doc.is_object() || token == doc.end() || !token->is_string() || token->get<std::string>().empty()) {
      return makeError(ErrorCode::kProtocol, where + " answered without an access_token");
    }
    return token->get<std::string>();
  }

  Result<CachedToken> fetch(const std::string& registry) {
    const std::string what = "registry_auth acr for " + registry;
    auto aad = entraToken(what);
    if (!aad) return aad.error();

    HttpRequest request;
    request.method = "POST";
    request.url = (options_.exchangeEndpoint.empty() ? "https://" + registry : stripSlash(options_.exchangeEndpoint)) +
                  "/oauth2/exchange";
    request.headers = {{"Content-Type", "application/x-www-form-urlencoded"}};
    request.body = formEncode({{"grant_type", "access_token"}, {"service", registry}, {"access_token", aad.value()}});
    auto response = http_->send(request);
    if (!response) return withContext(response.error(), what + ": exchanging the managed identity token");
    const std::string where = what + ": " + describeEndpoint(request.url);
    if (response->status == 401 || response->status == 403) {
      return makeError(ErrorCode::kPermissionDenied,
                       where + " refused the managed identity (HTTP " + std::to_string(response->status) + ", " +
                           azureErrorText(response->body) +
                           "): assign it the AcrPull role on the registry (az role assignment create --role AcrPull)");
    }
    if (response->status != 200) {
      return makeError(
          response->status >= 500 ? ErrorCode::kUnavailable : ErrorCode::kInvalidArgument,
          where + " answered HTTP " + std::to_string(response->status) + " (" + azureErrorText(response->body) + ")");
    }
    auto doc = json::parse(response->body, nullptr, false);
    auto token = doc.is_object() ? doc.find("refresh_token") : doc.end();
    if (!doc.is_object() || token == doc.end() || !token->is_string() || token->get<std::string>().empty()) {
      return makeError(ErrorCode::kProtocol, where + " answered without a refresh_token");
    }
    CachedToken out;
    out.refreshToken = token->get<std::string>();
    out.expiresAt = clock_->wallNow() + kDefaultRefreshTokenLifetime;
    if (auto exp = jwtExpiry(out.refreshToken)) {
      out.expiresAt = std::chrono::system_clock::time_point(std::chrono::seconds(*exp));
    }
    return out;
  }

  AcrAuthOptions options_;
  EnvLookup env_;
  std::shared_ptr<CloudHttpClient> http_;
  std::shared_ptr<const Clock> clock_;
  std::mutex mu_;
  std::map<std::string, CachedToken> cache_;
};

}  // namespace

bool isAzureRegistry(const std::string& host) {
  for (const char* suffix : {".azurecr.io", ".azurecr.cn", ".azurecr.us"}) {
    const std::string s(suffix);
    if (endsWith(host, s)) {
      // Only a login server, <name>.azurecr.io: no deeper names (data endpoints are not registries).
      const std::string name = host.substr(0, host.size() - s.size());
      return !name.empty() && name.find('.') == std::string::npos;
    }
  }
  return false;
}

std::optional<int64_t> jwtExpiry(const std::string& token) {
  auto first = token.find('.');
  auto second = first == std::string::npos ? std::string::npos : token.find('.', first + 1);
  if (second == std::string::npos) return std::nullopt;
  std::string payload = token.substr(first + 1, second - first - 1);
  for (char& c : payload) {
    if (c == '-') c = '+';
    if (c == '_') c = '/';
  }
  auto decoded = base64Decode(payload);
  if (!decoded) return std::nullopt;
  auto doc = json::parse(decoded.value(), nullptr, false);
  if (!doc.is_object()) return std::nullopt;
  auto exp = doc.find("exp");
  if (exp == doc.end() || !exp->is_number()) return std::nullopt;
  return static_cast<int64_t>(exp->get<double>());
}

std::unique_ptr<RegistryAuthProvider> makeAcrAuth(AcrAuthOptions options, EnvLookup env,
                                                  std::shared_ptr<CloudHttpClient> http,
                                                  std::shared_ptr<const Clock> clock) {
  return std::make_unique<AcrAuth>(std::move(options), std::move(env), std::move(http), std::move(clock));
}

}  // namespace qcs::platform

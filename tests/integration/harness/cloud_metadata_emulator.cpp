#include "harness/cloud_metadata_emulator.h"

#include <algorithm>
#include <cctype>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>

#include "common/encoding.h"

namespace qcs::testing {

using json = nlohmann::json;

namespace {

constexpr const char* kImdsTokenPath = "/metadata/identity/oauth2/token";
constexpr const char* kGcpTokenPath = "/computeMetadata/v1/instance/service-accounts/default/token";
constexpr const char* kAzureComputePath = "/metadata/instance/compute";
constexpr const char* kGcpZonePath = "/computeMetadata/v1/instance/zone";
// A few of the instance endpoint's versions; the real service lists more.
const std::vector<std::string> kAzureApiVersions{"2019-06-01", "2020-09-01", "2021-02-01", "2021-12-13", "2023-07-01"};

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return text;
}

std::string percentDecode(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '+') {
      out.push_back(' ');
    } else if (text[i] == '%' && i + 2 < text.size() && std::isxdigit(static_cast<unsigned char>(text[i + 1])) &&
               std::isxdigit(static_cast<unsigned char>(text[i + 2]))) {
      out.push_back(static_cast<char>(std::stoi(text.substr(i + 1, 2), nullptr, 16)));
      i += 2;
    } else {
      out.push_back(text[i]);
    }
  }
  return out;
}

// name -> value of a query string or form body; a name given twice keeps the first.
std::map<std::string, std::string> parseForm(const std::string& text) {
  std::map<std::string, std::string> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('&', start);
    if (end == std::string::npos) end = text.size();
    const std::string pair = text.substr(start, end - start);
    const size_t eq = pair.find('=');
    out.emplace(percentDecode(pair.substr(0, eq)), eq == std::string::npos ? "" : percentDecode(pair.substr(eq + 1)));
    start = end + 1;
  }
  return out;
}

int64_t epochSeconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

CloudMetadataEmulator::Response imdsError(const std::string& error, const std::string& description) {
  return {400, "application/json", {}, json{{"error", error}, {"error_description", description}}.dump()};
}

CloudMetadataEmulator::Response registryError(int status, const std::string& code, const std::string& message) {
  return {
      status, "application/json", {}, json{{"errors", json::array({{{"code", code}, {"message", message}}})}}.dump()};
}

}  // namespace

CloudMetadataEmulator::CloudMetadataEmulator(Options options) : options_(std::move(options)) {}

std::unique_ptr<CloudMetadataEmulator> CloudMetadataEmulator::start(Options options) {
  std::unique_ptr<CloudMetadataEmulator> emulator(new CloudMetadataEmulator(std::move(options)));
  emulator->http_ = LoopbackHttpServer::start(
      "cloud metadata emulator", [raw = emulator.get()](const Request& request) { return raw->handle(request); });
  if (!emulator->http_) return nullptr;
  if (emulator->options_.acrService.empty()) emulator->options_.acrService = emulator->hostAndPort();
  return emulator;
}

CloudMetadataEmulator::~CloudMetadataEmulator() { http_.reset(); }

std::string CloudMetadataEmulator::endpoint() const { return "http://" + hostAndPort(); }
std::string CloudMetadataEmulator::hostAndPort() const { return "127.0.0.1:" + std::to_string(http_->port()); }
std::string CloudMetadataEmulator::acrService() const { return options_.acrService; }

CloudMetadataEmulator::Response CloudMetadataEmulator::handle(const Request& request) {
  const std::string path = request.target.substr(0, request.target.find('?'));
  if (path == kImdsTokenPath) return azureImds(request);
  if (path == "/oauth2/exchange") return acrExchange(request);
  if (path == kGcpTokenPath) return gcpToken(request);
  if (path == kAzureComputePath) return azureCompute(request);
  if (path == kGcpZonePath) return gcpZone(request);
  return Response{404, "text/plain", {}, "not found"};
}

CloudMetadataEmulator::Response CloudMetadataEmulator::refuse(const std::string& endpoint, Response response,
                                                              const std::string& reason) {
  rejections_.push_back(endpoint + ": " + reason);
  return response;
}

CloudMetadataEmulator::Response CloudMetadataEmulator::azureImds(const Request& request) {
  std::lock_guard lock(mu_);
  ++calls_["azure-imds"];
  const char* name = "azure-imds";
  if (request.method != "GET") return refuse(name, {405, "text/plain", {}, ""}, "method " + request.method);
  // IMDS refuses anything that came through a proxy.
  if (request.hasHeader("X-Forwarded-For")) {
    return refuse(name, imdsError("invalid_request", "Request contains X-Forwarded-For header"),
                  "X-Forwarded-For present");
  }
  if (request.header("Metadata") != "true") {
    return refuse(name, imdsError("invalid_request", "Required metadata header not specified"),
                  "Required metadata header not specified");
  }
  const auto q = request.target.find('?');
  auto query = parseForm(q == std::string::npos ? "" : request.target.substr(q + 1));
  if (query["api-version"].empty()) {
    return refuse(name, imdsError("invalid_request", "Required query variable 'api-version' is missing"),
                  "api-version missing");
  }
  if (query["resource"].empty()) {
    return refuse(name, imdsError("invalid_request", "Required audience variable missing"), "resource missing");
  }
  const std::string clientId = query.count("client_id") ? query["client_id"] : "";
  clientIds_.push_back(clientId);
  if (!clientId.empty() && clientId != options_.systemIdentityClientId &&
      std::find(options_.userAssignedClientIds.begin(), options_.userAssignedClientIds.end(), clientId) ==
          options_.userAssignedClientIds.end()) {
    return refuse(name, imdsError("invalid_request", "Identity not found"), "unknown client_id");
  }
  const auto now = std::chrono::system_clock::now();
  const auto expires = now + options_.aadTokenLifetime;
  const std::string token = "eyJ0eXAiOiJKV1QifQ.aad-" + randomHex(24) + ".sig";
  aadTokens_[token] = expires;
  const std::string lifetime = std::to_string(options_.aadTokenLifetime.count());
  return Response{200,
                  "application/json; charset=utf-8",
                  {},
                  json{{"access_token", token},
                       {"client_id", clientId.empty() ? options_.systemIdentityClientId : clientId},
                       {"expires_in", lifetime},
                       {"expires_on", std::to_string(epochSeconds(expires))},
                       {"ext_expires_in", lifetime},
                       {"not_before", std::to_string(epochSeconds(now))},
                       {"resource", query["resource"]},
                       {"token_type", "Bearer"}}
                      .dump()};
}

CloudMetadataEmulator::Response CloudMetadataEmulator::acrExchange(const Request& request) {
  std::lock_guard lock(mu_);
  ++calls_["acr-exchange"];
  const char* name = "acr-exchange";
  if (request.method != "POST") return refuse(name, {405, "text/plain", {}, ""}, "method " + request.method);
  if (lower(request.header("Content-Type")).rfind("application/x-www-form-urlencoded", 0) != 0) {
    return refuse(name, registryError(400, "UNSUPPORTED", "the body must be application/x-www-form-urlencoded"),
                  "content type " + request.header("Content-Type"));
  }
  auto form = parseForm(request.body);
  if (form["grant_type"] != "access_token") {
    return refuse(name, registryError(400, "UNSUPPORTED", "grant_type must be access_token"),
                  "grant_type " + form["grant_type"]);
  }
  if (form["service"] != options_.acrService) {
    return refuse(name, registryError(400, "DENIED", "service must be " + options_.acrService),
                  "service " + form["service"]);
  }
  auto aad = aadTokens_.find(form["access_token"]);
  if (aad == aadTokens_.end() || aad->second <= std::chrono::system_clock::now()) {
    return refuse(name, registryError(401, "UNAUTHORIZED", "the access token is invalid or expired"),
                  aad == aadTokens_.end() ? "unknown access token" : "expired access token");
  }
  if (!acrPull_) {
    return refuse(name, registryError(401, "UNAUTHORIZED", "the identity has no pull permission on this registry"),
                  "no AcrPull");
  }
  const auto expires = std::chrono::system_clock::now() + options_.refreshTokenLifetime;
  const std::string token = !options_.fixedAcrRefreshToken.empty()
                                ? options_.fixedAcrRefreshToken
                                : base64UrlEncode(R"({"alg":"RS256","typ":"JWT"})") + "." +
                                      base64UrlEncode(json{
                                          {"exp", epochSeconds(expires)},
                                          {"grant_type", "refresh_token"},
                                          {"service", options_.acrService},
                                          {"jti",
                                           randomHex(16)}}.dump()) +
                                      "." + randomHex(16);
  refreshTokens_[token] = expires;
  return Response{200, "application/json; charset=utf-8", {}, json{{"refresh_token", token}}.dump()};
}

CloudMetadataEmulator::Response CloudMetadataEmulator::gcpToken(const Request& request) {
  std::lock_guard lock(mu_);
  ++calls_["gcp-token"];
  const char* name = "gcp-token";
  const std::map<std::string, std::string> flavor{{"Metadata-Flavor", "Google"}, {"Server", "Metadata Server for VM"}};
  if (request.method != "GET") return refuse(name, {405, "text/plain", flavor, ""}, "method " + request.method);
  if (request.hasHeader("X-Forwarded-For")) {
    return refuse(name, {403, "text/html", flavor, "Forbidden: X-Forwarded-For is not allowed"},
                  "X-Forwarded-For present");
  }
  if (request.header("Metadata-Flavor") != "Google") {
    return refuse(name, {403, "text/html", flavor, "Missing Metadata-Flavor:Google header."},
                  "Metadata-Flavor missing");
  }
  if (!options_.gcpServiceAccount) {
    return refuse(name, {404, "text/html", flavor, "Not Found"}, "no service account");
  }
  const std::string token =
      !options_.fixedGcpAccessToken.empty() ? options_.fixedGcpAccessToken : "ya29.c." + randomHex(32);
  gcpTokens_[token] = std::chrono::system_clock::now() + options_.gcpTokenLifetime;
  return Response{
      200, "application/json", flavor,
      json{{"access_token", token}, {"expires_in", options_.gcpTokenLifetime.count()}, {"token_type", "Bearer"}}
          .dump()};
}

CloudMetadataEmulator::Response CloudMetadataEmulator::azureCompute(const Request& request) {
  std::lock_guard lock(mu_);
  ++calls_["azure-compute"];
  const char* name = "azure-compute";
  auto badRequest = [](const std::string& error, bool listVersions) {
    json body{{"error", error}};
    if (listVersions) body["newest-versions"] = json::array({"2023-07-01", "2021-12-13", "2021-02-01"});
    return Response{400, "application/json; charset=utf-8", {}, body.dump()};
  };
  if (request.method != "GET") {
    return refuse(name, {405, "application/json; charset=utf-8", {}, json{{"error", "Method not allowed"}}.dump()},
                  "method " + request.method);
  }
  if (request.hasHeader("X-Forwarded-For")) {
    return refuse(name, badRequest("Bad request. Request contains X-Forwarded-For header", false),
                  "X-Forwarded-For present");
  }
  if (request.header("Metadata") != "true") {
    return refuse(name, badRequest("Bad request. Required metadata header not specified", false),
                  "Required metadata header not specified");
  }
  const auto q = request.target.find('?');
  auto query = parseForm(q == std::string::npos ? "" : request.target.substr(q + 1));
  const std::string version = query["api-version"];
  if (version.empty()) {
    return refuse(name,
                  badRequest("Bad request. api-version was not specified in the request. For more information "
                             "refer to aka.ms/azureimds",
                             true),
                  "api-version missing");
  }
  if (std::find(kAzureApiVersions.begin(), kAzureApiVersions.end(), version) == kAzureApiVersions.end()) {
    return refuse(name,
                  badRequest("Bad request. api-version is invalid or was not specified in the request. For more "
                             "information refer to aka.ms/azureimds",
                             true),
                  "api-version " + version + " unknown");
  }
  return Response{200,
                  "application/json; charset=utf-8",
                  {},
                  json{{"azEnvironment", "AzurePublicCloud"},
                       {"location", options_.azureLocation},
                       {"name", "qcs-test-vm"},
                       {"osType", "Linux"},
                       {"provider", "Microsoft.Compute"},
                       {"resourceGroupName", "qcs-test"},
                       {"subscriptionId", "8d10da13-8125-4ba9-a717-bf7490507b3d"},
                       {"vmId", "02aab8a4-74ef-476e-8182-f6d2ba4166a6"},
                       {"vmSize", "Standard_D2s_v5"},
                       {"zone", options_.azureZone}}
                      .dump()};
}

CloudMetadataEmulator::Response CloudMetadataEmulator::gcpZone(const Request& request) {
  std::lock_guard lock(mu_);
  ++calls_["gcp-zone"];
  const char* name = "gcp-zone";
  const std::map<std::string, std::string> flavor{{"Metadata-Flavor", "Google"}, {"Server", "Metadata Server for VM"}};
  if (request.method != "GET") return refuse(name, {405, "text/plain", flavor, ""}, "method " + request.method);
  if (request.hasHeader("X-Forwarded-For")) {
    return refuse(name, {403, "text/html", flavor, "Forbidden: X-Forwarded-For is not allowed"},
                  "X-Forwarded-For present");
  }
  if (request.header("Metadata-Flavor") != "Google") {
    return refuse(name, {403, "text/html", flavor, "Missing Metadata-Flavor:Google header."},
                  "Metadata-Flavor missing");
  }
  return Response{200, "application/text", flavor,
                  "projects/" + options_.gcpProjectNumber + "/zones/" + options_.gcpZone};
}

void CloudMetadataEmulator::setAcrPull(bool granted) {
  std::lock_guard lock(mu_);
  acrPull_ = granted;
}

void CloudMetadataEmulator::expireAadTokens() {
  std::lock_guard lock(mu_);
  for (auto& [token, expires] : aadTokens_) expires = std::chrono::system_clock::time_point{};
}

bool CloudMetadataEmulator::acceptsGcpToken(const std::string& token) const {
  std::lock_guard lock(mu_);
  auto it = gcpTokens_.find(token);
  return it != gcpTokens_.end() && it->second > std::chrono::system_clock::now();
}

bool CloudMetadataEmulator::acceptsAcrRefreshToken(const std::string& token) const {
  std::lock_guard lock(mu_);
  auto it = refreshTokens_.find(token);
  return it != refreshTokens_.end() && it->second > std::chrono::system_clock::now();
}

int CloudMetadataEmulator::calls(const std::string& endpoint) const {
  std::lock_guard lock(mu_);
  auto it = calls_.find(endpoint);
  return it == calls_.end() ? 0 : it->second;
}

std::vector<std::string> CloudMetadataEmulator::rejections() const {
  std::lock_guard lock(mu_);
  return rejections_;
}

std::vector<std::string> CloudMetadataEmulator::imdsClientIds() const {
  std::lock_guard lock(mu_);
  return clientIds_;
}

std::string CloudMetadataEmulator::randomHex(size_t bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  static thread_local std::mt19937_64 rng(std::random_device{}());
  std::string out;
  for (size_t i = 0; i < bytes; ++i) {
    const auto byte = static_cast<unsigned>(rng() & 0xff);
    out.push_back(kHex[byte >> 4]);
    out.push_back(kHex[byte & 0xf]);
  }
  return out;
}

}  // namespace qcs::testing

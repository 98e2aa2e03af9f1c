#include "platform/cloud_http.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/http_head.h"

namespace qcs::platform {

namespace {

struct CurlEasyDeleter {
  void operator()(CURL* handle) const { curl_easy_cleanup(handle); }
};
struct CurlSlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using CurlEasyPtr = std::unique_ptr<CURL, CurlEasyDeleter>;
using CurlSlistPtr = std::unique_ptr<curl_slist, CurlSlistDeleter>;

void ensureCurlInitialized() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string lowerCase(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return text;
}

// "https://user@host:port/path?q" -> "host"; brackets of an IPv6 literal removed.
std::string hostOfUrl(const std::string& url) {
  auto start = url.find("://");
  start = start == std::string::npos ? 0 : start + 3;
  auto end = url.find_first_of("/?#", start);
  std::string authority = url.substr(start, end == std::string::npos ? std::string::npos : end - start);
  if (auto at = authority.rfind('@'); at != std::string::npos) authority = authority.substr(at + 1);
  if (!authority.empty() && authority.front() == '[') {
    auto close = authority.find(']');
    return authority.substr(1, close == std::string::npos ? std::string::npos : close - 1);
  }
  return authority.substr(0, authority.find(':'));
}

// Hosts plain http is acceptable for: nothing leaves the machine (loopback) or the link
// (the metadata services at 169.254.169.254 and 169.254.170.2 only speak http).
bool plainHttpAllowed(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0 || host.rfind("169.254.", 0) == 0 ||
         host == "fd00:ec2::254";
}

// libcurl's no_proxy list: the operator's NO_PROXY plus loopback and the metadata addresses,
// which must never be reached through a proxy (the proxy would see instance credentials).
std::string noProxyList() {
  std::string list = "localhost,127.0.0.0/8,::1,169.254.169.254,169.254.170.2,169.254.170.23,fd00:ec2::254";
  for (const char* name : {"NO_PROXY", "no_proxy"}) {
    const char* value = std::getenv(name);
    if (value != nullptr && *value != '\0') {
      list += ",";
      list += value;
      break;
    }
  }
  return list;
}

struct TransferState {
  HttpResponse response;
  size_t cap = 0;
  bool tooLarge = false;
};

size_t onHeaderLine(char* data, size_t size, size_t count, void* user) {
  auto* state = static_cast<TransferState*>(user);
  const size_t length = size * count;
  applyHttpHeadLine(std::string_view(data, length), state->response.status, state->response.headers);
  return length;
}

size_t onBodyData(char* data, size_t size, size_t count, void* user) {
  auto* state = static_cast<TransferState*>(user);
  const size_t length = size * count;
  if (state->response.body.size() + length > state->cap) {
    state->tooLarge = true;
    return 0;
  }
  state->response.body.append(data, length);
  return length;
}

class CurlHttpClient final : public CloudHttpClient {
 public:
  explicit CurlHttpClient(CurlHttpOptions options) : options_(std::move(options)) { ensureCurlInitialized(); }

  Result<HttpResponse> send(const HttpRequest& request) override {
    const std::string where = request.method + " " + describeEndpoint(request.url);
    const bool isHttps = request.url.rfind("https://", 0) == 0;
    if (!isHttps && request.url.rfind("http://", 0) != 0) {
      return makeError(ErrorCode::kInvalidArgument, where + ": the URL must start with https:// or http://");
    }
    if (!isHttps && !plainHttpAllowed(hostOfUrl(request.url))) {
      return makeError(ErrorCode::kInvalidArgument,
                       where + ": plain http is only used for loopback and link-local metadata addresses; use https");
    }
    CurlEasyPtr easy(curl_easy_init());
    if (!easy) return makeError(ErrorCode::kInternal, where + ": curl_easy_init failed");
    CURL* handle = easy.get();
    TransferState state;
    state.cap = options_.maxResponseBytes;
    char errorBuffer[CURL_ERROR_SIZE] = {};

    CurlSlistPtr headers;
    // libcurl adds "Expect: 100-continue" to larger POSTs; AWS endpoints do not need the round trip.
    std::vector<std::string> lines{"Expect:"};
    bool hasContentType = false;
    for (const auto& [name, value] : request.headers) {
      if (lowerCase(name) == "content-type") hasContentType = true;
      // "Name;" is libcurl's way to send a header with an empty value.
      lines.push_back(value.empty() ? name + ";" : name + ": " + value);
    }
    if (!hasContentType && !request.body.empty()) lines.emplace_back("Content-Type:");
    for (const auto& line : lines) {
      curl_slist* appended = curl_slist_append(headers.get(), line.c_str());
      if (appended == nullptr) return makeError(ErrorCode::kInternal, where + ": curl_slist_append failed");
      (void)headers.release();
      headers.reset(appended);
    }
    const std::string noProxy = noProxyList();
    const auto connectTimeout = request.connectTimeout.count() > 0 ? request.connectTimeout : options_.connectTimeout;
    const auto totalTimeout = request.totalTimeout.count() > 0 ? request.totalTimeout : options_.totalTimeout;
    curl_easy_setopt(handle, CURLOPT_URL, request.url.c_str());
    curl_easy_setopt(handle, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(handle, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(handle, CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(handle, CURLOPT_USERAGENT, "qcs-agent");
    curl_easy_setopt(handle, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(handle, CURLOPT_NOPROXY, noProxy.c_str());
    curl_easy_setopt(handle, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(handle, CURLOPT_SSL_VERIFYHOST, 2L);
    if (!options_.caBundlePath.empty()) curl_easy_setopt(handle, CURLOPT_CAINFO, options_.caBundlePath.c_str());
    curl_easy_setopt(handle, CURLOPT_CONNECTTIMEOUT_MS, long(connectTimeout.count()));
    curl_easy_setopt(handle, CURLOPT_TIMEOUT_MS, long(totalTimeout.count()));
    if (request.method == "GET") {
      curl_easy_setopt(handle, CURLOPT_HTTPGET, 1L);
    } else if (request.method == "HEAD") {
      curl_easy_setopt(handle, CURLOPT_NOBODY, 1L);
    } else {
      curl_easy_setopt(handle, CURLOPT_CUSTOMREQUEST, request.method.c_str());
      curl_easy_setopt(handle, CURLOPT_POSTFIELDS, request.body.c_str());
      curl_easy_setopt(handle, CURLOPT_POSTFIELDSIZE, long(request.body.size()));
    }
    curl_easy_setopt(handle, CURLOPT_HEADERFUNCTION, &onHeaderLine);
    curl_easy_setopt(handle, CURLOPT_HEADERDATA, &state);
    curl_easy_setopt(handle, CURLOPT_WRITEFUNCTION, &onBodyData);
    curl_easy_setopt(handle, CURLOPT_WRITEDATA, &state);
    curl_easy_setopt(handle, CURLOPT_ERRORBUFFER, errorBuffer);

    const CURLcode code = curl_easy_perform(handle);
    if (code == CURLE_OK) {
      long status = 0;
      curl_easy_getinfo(handle, CURLINFO_RESPONSE_CODE, &status);
      if (status != 0) state.response.status = status;
      return std::move(state.response);
    }
    if (state.tooLarge) {
      return makeError(ErrorCode::kProtocol, where + ": the answer is larger than the " +
                                                 std::to_string(options_.maxResponseBytes) +
                                                 " bytes allowed (is the endpoint the right service?)");
    }
    const std::string detail = errorBuffer[0] != '\0' ? errorBuffer : curl_easy_strerror(code);
    switch (code) {
      case CURLE_OPERATION_TIMEDOUT:
        return makeError(ErrorCode::kTimeout, where + ": timed out after " + std::to_string(totalTimeout.count()) +
                                                  "ms (" + detail + "; check the network path and HTTPS_PROXY)");
      case CURLE_COULDNT_RESOLVE_HOST:
      case CURLE_COULDNT_RESOLVE_PROXY:
        return makeError(ErrorCode::kUnavailable, where + ": cannot resolve the host (" + detail + "; check DNS)");
      case CURLE_COULDNT_CONNECT:
        return makeError(ErrorCode::kUnavailable,
                         where + ": cannot connect (" + detail + "; check the endpoint, firewall and HTTPS_PROXY)");
      case CURLE_PEER_FAILED_VERIFICATION:
      case CURLE_SSL_CACERT_BADFILE:
      case CURLE_SSL_CONNECT_ERROR:
        return makeError(ErrorCode::kUnavailable,
                         where + ": TLS failed (" + detail +
                             "; behind a TLS-inspecting proxy, configure its CA certificate as the CA bundle)");
      default: return makeError(ErrorCode::kUnavailable, where + ": " + detail);
    }
  }

 private:
  CurlHttpOptions options_;
};

bool isThrottlingCode(const std::string& code) {
  static const char* const kCodes[] = {"Throttling",
                                       "ThrottlingException",
                                       "ThrottledException",
                                       "RequestThrottledException",
                                       "TooManyRequestsException",
                                       "ProvisionedThroughputExceededException",
                                       "RequestLimitExceeded",
                                       "BandwidthLimitExceeded",
                                       "RequestThrottled",
                                       "SlowDown",
                                       "PriorRequestNotComplete",
                                       "EC2ThrottledException"};
  return std::find(std::begin(kCodes), std::end(kCodes), code) != std::end(kCodes);
}

class RetryingHttpClient final : public CloudHttpClient {
 public:
  RetryingHttpClient(std::shared_ptr<CloudHttpClient> inner, RetryPolicy policy, Sleeper sleep,
                     std::shared_ptr<Random> random)
      : inner_(std::move(inner)), policy_(policy), sleep_(std::move(sleep)), random_(std::move(random)) {}

  Result<HttpResponse> send(const HttpRequest& request) override {
    const int attempts = std::max(1, policy_.maxAttempts);
    for (int attempt = 1;; ++attempt) {
      auto result = inner_->send(request);
      bool retry = result ? isRetryableResponse(result.value()) : isRetryableError(result.error());
      if (!retry || attempt >= attempts) return result;
      sleep_(retryDelay(policy_, attempt, random_->uniform()));
    }
  }

 private:
  static bool isRetryableError(const Error& error) {
    return error.code == ErrorCode::kUnavailable || error.code == ErrorCode::kTimeout;
  }

  std::shared_ptr<CloudHttpClient> inner_;
  RetryPolicy policy_;
  Sleeper sleep_;
  std::shared_ptr<Random> random_;
};

}  // namespace

std::string HttpResponse::header(const std::string& name) const {
  auto it = headers.find(lowerCase(name));
  return it == headers.end() ? std::string() : it->second;
}

std::unique_ptr<CloudHttpClient> makeCurlHttpClient(CurlHttpOptions options) {
  return std::make_unique<CurlHttpClient>(std::move(options));
}

std::unique_ptr<CloudHttpClient> makeRetryingHttpClient(std::shared_ptr<CloudHttpClient> inner, RetryPolicy policy,
                                                        Sleeper sleep, std::shared_ptr<Random> random) {
  return std::make_unique<RetryingHttpClient>(std::move(inner), policy, std::move(sleep), std::move(random));
}

std::shared_ptr<CloudHttpClient> makeDefaultCloudHttpClient(CurlHttpOptions options) {
  return makeRetryingHttpClient(
      makeCurlHttpClient(std::move(options)), RetryPolicy{},
      [](std::chrono::milliseconds delay) { std::this_thread::sleep_for(delay); }, std::make_shared<SystemRandom>());
}

std::string awsErrorCode(const HttpResponse& response) {
  std::string code = response.header("x-amzn-errortype");
  if (code.empty()) {
    auto doc = nlohmann::json::parse(response.body, nullptr, false);
    if (doc.is_object()) {
      for (const char* key : {"__type", "code", "Code"}) {
        auto it = doc.find(key);
        if (it != doc.end() && it->is_string()) {
          code = it->get<std::string>();
          break;
        }
      }
    }
  }
  // "com.amazonaws.secretsmanager#ThrottlingException" and "ThrottlingException:http://..." forms.
  if (auto hash = code.rfind('#'); hash != std::string::npos) code = code.substr(hash + 1);
  if (auto colon = code.find(':'); colon != std::string::npos) code = code.substr(0, colon);
  return code;
}

std::string awsErrorMessage(const HttpResponse& response) {
  auto doc = nlohmann::json::parse(response.body, nullptr, false);
  if (!doc.is_object()) return {};
  for (const char* key : {"message", "Message"}) {
    auto it = doc.find(key);
    if (it != doc.end() && it->is_string()) return it->get<std::string>().substr(0, 300);
  }
  return {};
}

bool isRetryableResponse(const HttpResponse& response) {
  if (response.status >= 500 || response.status == 429) return true;
  if (response.status >= 400) return isThrottlingCode(awsErrorCode(response));
  return false;
}

std::string describeEndpoint(const std::string& url) {
  auto end = url.find_first_of("?#");
  std::string bare = url.substr(0, end);
  // Userinfo never belongs in a message.
  auto scheme = bare.find("://");
  auto start = scheme == std::string::npos ? 0 : scheme + 3;
  auto slash = bare.find('/', start);
  auto at = bare.rfind('@', slash == std::string::npos ? std::string::npos : slash);
  if (at != std::string::npos && at >= start) bare.erase(start, at + 1 - start);
  return bare;
}

std::chrono::milliseconds retryDelay(const RetryPolicy& policy, int retry, double u) {
  double delay = double(policy.initialDelay.count()) * std::pow(policy.multiplier, std::max(0, retry - 1));
  delay = std::min(delay, double(policy.maxDelay.count()));
  double jitter = std::clamp(policy.jitter, 0.0, 1.0);
  delay *= 1.0 - jitter * std::clamp(u, 0.0, 1.0);
  return std::chrono::milliseconds(static_cast<int64_t>(std::llround(delay)));
}

}  // namespace qcs::platform

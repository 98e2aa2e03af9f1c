// Fakes shared by the AWS unit tests: a scripted CloudHttpClient and a fixed-sequence Random.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/random.h"
#include "platform/cloud_http.h"

namespace qcs::platform::testing {

// Answers each request with the handler's result and records every request it saw.
class FakeHttp final : public CloudHttpClient {
 public:
  using Handler = std::function<Result<HttpResponse>(const HttpRequest&)>;
  explicit FakeHttp(Handler handler) : handler_(std::move(handler)) {}

  Result<HttpResponse> send(const HttpRequest& request) override {
    std::lock_guard lock(mu_);
    requests.push_back(request);
    return handler_(request);
  }

  size_t count(const std::string& urlSuffix) const {
    size_t n = 0;
    for (const auto& r : requests) {
      std::string bare = r.url.substr(0, r.url.find('?'));
      if (bare.size() >= urlSuffix.size() &&
          bare.compare(bare.size() - urlSuffix.size(), urlSuffix.size(), urlSuffix) == 0) {
        ++n;
      }
    }
    return n;
  }

  std::vector<HttpRequest> requests;

 private:
  std::mutex mu_;
  Handler handler_;
};

inline HttpResponse reply(long status, std::string body, std::map<std::string, std::string> headers = {}) {
  HttpResponse response;
  response.status = status;
  response.body = std::move(body);
  response.headers = std::move(headers);
  return response;
}

inline std::optional<std::string> headerOf(const HttpRequest& request, const std::string& name) {
  for (const auto& [n, v] : request.headers) {
    if (n.size() == name.size() && std::equal(n.begin(), n.end(), name.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
        })) {
      return v;
    }
  }
  return std::nullopt;
}

class FixedRandom final : public Random {
 public:
  explicit FixedRandom(double value) : value_(value) {}
  double uniform() override { return value_; }

 private:
  double value_;
};

}  // namespace qcs::platform::testing

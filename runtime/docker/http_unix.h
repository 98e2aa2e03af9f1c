// A small HTTP/1.1 client over a unix socket, on libcurl (CURLOPT_UNIX_SOCKET_PATH).
//
// Contract:
// - One request per call; every call has its own curl easy handle (RAII), so a client may be used
//   from several threads at once.
// - Connect timeout and total timeout apply per request; streams (events, pulls) pass a zero total
//   timeout and may set a low-speed limit instead.
// - Failures come back as Result errors naming the peer ("docker"), the socket and what to do, e.g.
//   "docker: permission denied on /var/run/docker.sock (the agent runs as uid 1000; add it to group
//   docker or run as root)". HTTP statuses are not errors here: the caller maps them.
// - Every answer is bounded: a body collected in memory may not exceed the request's maxBodyBytes
//   (a Content-Length announcing more fails at once, before the body is read), and the error names
//   the request and the limit. Streams (a BodyFn) bound their own buffers.
// - Request bodies may carry secrets: they never appear in an error message.
#pragma once

#include <curl/curl.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"

namespace qcs::runtime::docker {

struct CurlEasyDeleter {
  void operator()(CURL* handle) const { curl_easy_cleanup(handle); }
};
struct CurlMultiDeleter {
  void operator()(CURLM* handle) const { curl_multi_cleanup(handle); }
};
struct CurlSlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using CurlEasyPtr = std::unique_ptr<CURL, CurlEasyDeleter>;
using CurlMultiPtr = std::unique_ptr<CURLM, CurlMultiDeleter>;
using CurlSlistPtr = std::unique_ptr<curl_slist, CurlSlistDeleter>;

// Calls curl_global_init exactly once per process (thread-safe).
void ensureCurlInitialized();

// What one collected answer may hold unless the request says otherwise: far above anything the
// Engine API sends for the calls the agent makes (an inspect is a few KiB), far below what would
// hurt a node agent's memory.
inline constexpr size_t kDefaultMaxBodyBytes = size_t{8} << 20;

struct HttpRequest {
  std::string method = "GET";
  std::string target;  // path and query, e.g. "/v1.41/containers/json?all=1"
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;                              // may hold secrets: never logged, never in an error
  std::string contentType = "application/json";  // sent only with a body
  std::chrono::milliseconds totalTimeout{0};     // 0 = no total limit (streams)
  std::chrono::seconds lowSpeedTime{0};          // >0: fail when no byte arrives for this long
  size_t maxBodyBytes = kDefaultMaxBodyBytes;    // the most a collected (non-streamed) body may hold
};

struct HttpResponse {
  long status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased; last value wins
  std::string body;                            // empty when the body went to a BodyFn

  // The header's value, or "" (name matched case-insensitively).
  std::string header(std::string_view name) const;
};

// Receives the body as it arrives. Return false to abort the transfer.
using BodyFn = std::function<bool(std::string_view chunk)>;
// Called once when the final response's status line and headers are complete (body not yet read).
// Return false to abort the transfer.
using HeadersFn = std::function<bool(const HttpResponse& head)>;

// One prepared request: owns the easy handle, the header list and the response being read. Used
// directly by code that drives transfers through a curl multi handle (the event watcher).
class HttpTransfer {
 public:
  HttpTransfer(const HttpTransfer&) = delete;
  HttpTransfer& operator=(const HttpTransfer&) = delete;
  ~HttpTransfer();

  CURL* handle() const { return easy_.get(); }

  // Turns the transfer's CURLcode into the response or an actionable error.
  Result<HttpResponse> finish(CURLcode code);

 private:
  friend class UnixHttpClient;
  HttpTransfer() = default;

  static size_t onHeaderLine(char* data, size_t size, size_t count, void* self);
  static size_t onBodyData(char* data, size_t size, size_t count, void* self);
  // Runs a caller's callback; false (and the transfer aborted) when it says stop or throws.
  bool callSafely(const std::function<bool()>& callback);

  CurlEasyPtr easy_;
  CurlSlistPtr headerList_;
  std::string socketPath_;
  std::string peerName_;
  std::string url_;
  std::string what_;  // "GET /v1.41/containers/json": the request, for errors (no query: it may be long)
  std::string body_;
  std::chrono::milliseconds connectTimeout_{0};
  std::chrono::milliseconds totalTimeout_{0};
  std::chrono::seconds lowSpeedTime_{0};
  size_t maxBodyBytes_ = kDefaultMaxBodyBytes;
  std::chrono::steady_clock::time_point started_;
  BodyFn onBody_;
  HeadersFn onHeaders_;
  HttpResponse response_;
  bool headersDelivered_ = false;
  bool abortedByCaller_ = false;
  std::string callbackFailure_;
  bool bodyTooLarge_ = false;
  char errorBuffer_[CURL_ERROR_SIZE] = {};
};

class UnixHttpClient {
 public:
  // peerName prefixes every error ("docker"). connectTimeout bounds connect() of every request.
  UnixHttpClient(std::string socketPath, std::string peerName, std::chrono::milliseconds connectTimeout);

  const std::string& socketPath() const { return socketPath_; }

  // Performs the request synchronously. Without onBody the body is collected in the response,
  // up to request.maxBodyBytes (kProtocol beyond, naming the request and the limit).
  Result<HttpResponse> send(const HttpRequest& request, const BodyFn& onBody = {},
                            const HeadersFn& onHeaders = {}) const;

  // Prepares the request for a curl multi handle; the caller adds handle() to it and calls
  // finish() with the CURLcode the multi handle reports.
  Result<std::unique_ptr<HttpTransfer>> prepare(const HttpRequest& request, BodyFn onBody = {},
                                                HeadersFn onHeaders = {}) const;

 private:
  std::string socketPath_;
  std::string peerName_;
  std::chrono::milliseconds connectTimeout_;
};

// "3s", "250ms", "2m", "1m30s": durations for people.
std::string humanDuration(std::chrono::milliseconds duration);

// "512 bytes", "4 KiB", "8 MiB", "1.5 GiB": sizes for people.
std::string humanBytes(uint64_t bytes);

// The actionable message for a failed connect() to a unix socket, by errno. Exposed for tests.
Error connectError(const std::string& peerName, const std::string& socketPath, int err);

}  // namespace qcs::runtime::docker

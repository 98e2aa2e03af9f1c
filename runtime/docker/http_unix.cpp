#include "runtime/docker/http_unix.h"

#include "common/http_head.h"

#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iterator>
#include <mutex>

namespace qcs::runtime::docker {

namespace {

std::string lowerCase(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return out;
}

std::string_view trimView(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  return text;
}

// Who owns the socket, for the permission hint: "group docker", or "gid 999" without a name.
std::string socketGroupHint(const std::string& socketPath) {
  struct stat st {};
  if (::stat(socketPath.c_str(), &st) != 0) return "the socket's group";
  struct group grp {};
  struct group* found = nullptr;
  std::vector<char> buffer(16384);
  if (::getgrgid_r(st.st_gid, &grp, buffer.data(), buffer.size(), &found) == 0 && found != nullptr) {
    return std::string("group ") + found->gr_name;
  }
  return "gid " + std::to_string(st.st_gid);
}

}  // namespace

void ensureCurlInitialized() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::string HttpResponse::header(std::string_view name) const {
  auto it = headers.find(lowerCase(name));
  return it == headers.end() ? std::string() : it->second;
}

std::string humanDuration(std::chrono::milliseconds duration) {
  const auto ms = duration.count();
  if (ms < 1000) return std::to_string(ms) + "ms";
  if (ms < 60'000) {
    if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
    std::string tenths = std::to_string((ms % 1000) / 100);
    return std::to_string(ms / 1000) + "." + tenths + "s";
  }
  const auto totalSeconds = ms / 1000;
  const auto minutes = totalSeconds / 60;
  const auto seconds = totalSeconds % 60;
  return std::to_string(minutes) + "m" + (seconds != 0 ? std::to_string(seconds) + "s" : "");
}

std::string humanBytes(uint64_t bytes) {
  constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024) return std::to_string(bytes) + (bytes == 1 ? " byte" : " bytes");
  double value = double(bytes);
  size_t unit = 0;
  for (value /= 1024; value >= 1024 && unit + 1 < std::size(kUnits); value /= 1024) ++unit;
  char text[32];
  if (value == double(uint64_t(value))) {
    std::snprintf(text, sizeof text, "%llu %s", static_cast<unsigned long long>(value), kUnits[unit]);
  } else {
    std::snprintf(text, sizeof text, "%.1f %s", value, kUnits[unit]);
  }
  return text;
}

Error connectError(const std::string& peerName, const std::string& socketPath, int err) {
  const std::string prefix = peerName + ": ";
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return makeError(ErrorCode::kUnavailable, prefix + "no socket at " + socketPath + " (is the " + peerName +
                                                    " daemon running? is the path right?)");
    case ECONNREFUSED:
      return makeError(ErrorCode::kUnavailable,
                       prefix + "nothing listens on " + socketPath + " (is the " + peerName + " daemon running?)");
    case EACCES:
    case EPERM: {
      const uid_t uid = ::geteuid();
      if (uid == 0) {
        return makeError(ErrorCode::kPermissionDenied,
                         prefix + "permission denied on " + socketPath +
                             " (the agent runs as root, so a security module such as SELinux or AppArmor, or a "
                             "read-only mount, denies it)");
      }
      return makeError(ErrorCode::kPermissionDenied,
                       prefix + "permission denied on " + socketPath + " (the agent runs as uid " +
                           std::to_string(uid) + "; add it to " + socketGroupHint(socketPath) + " or run as root)");
    }
    case EAGAIN:
      return makeError(ErrorCode::kUnavailable, prefix + socketPath +
                                                    " accepts no new connections (its listen queue is full; the " +
                                                    peerName + " daemon is overloaded or stuck)");
    default:
      return makeError(ErrorCode::kUnavailable, prefix + "cannot connect to " + socketPath + ": " + std::strerror(err));
  }
}

HttpTransfer::~HttpTransfer() = default;

bool HttpTransfer::callSafely(const std::function<bool()>& callback) {
  // An exception must not unwind through libcurl's C frames: it ends the transfer instead.
  try {
    if (callback()) return true;
  } catch (const std::exception& e) {
    callbackFailure_ = std::string("the callback threw: ") + e.what();
  } catch (...) {
    callbackFailure_ = "the callback threw";
  }
  abortedByCaller_ = true;
  return false;
}

size_t HttpTransfer::onHeaderLine(char* data, size_t size, size_t count, void* self) {
  auto* transfer = static_cast<HttpTransfer*>(self);
  const size_t length = size * count;
  std::string_view line(data, length);
  if (applyHttpHeadLine(line, transfer->response_.status, transfer->response_.headers)) return length;
  if (trimView(line).empty()) {
    if (transfer->response_.status >= 200 && !transfer->headersDelivered_) {
      transfer->headersDelivered_ = true;
      // A collected body announced larger than allowed fails before a byte of it is read.
      if (!transfer->onBody_ && transfer->what_.rfind("HEAD ", 0) != 0) {
        const std::string announced = transfer->response_.header("content-length");
        if (!announced.empty() &&
            std::all_of(announced.begin(), announced.end(), [](unsigned char c) { return std::isdigit(c); }) &&
            (announced.size() > 19 || std::stoull(announced) > transfer->maxBodyBytes_)) {
          transfer->bodyTooLarge_ = true;
          return 0;
        }
      }
      if (transfer->onHeaders_ && !transfer->callSafely([&] { return transfer->onHeaders_(transfer->response_); })) {
        return 0;
      }
    }
  }
  return length;
}

size_t HttpTransfer::onBodyData(char* data, size_t size, size_t count, void* self) {
  auto* transfer = static_cast<HttpTransfer*>(self);
  const size_t length = size * count;
  if (transfer->onBody_) {
    return transfer->callSafely([&] { return transfer->onBody_(std::string_view(data, length)); }) ? length : 0;
  }
  if (transfer->response_.body.size() + length > transfer->maxBodyBytes_) {
    transfer->bodyTooLarge_ = true;
    return 0;
  }
  transfer->response_.body.append(data, length);
  return length;
}

Result<HttpResponse> HttpTransfer::finish(CURLcode code) {
  const std::string prefix = peerName_ + ": ";
  const auto elapsed =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started_);
  if (code == CURLE_OK) {
    long status = 0;
    curl_easy_getinfo(easy_.get(), CURLINFO_RESPONSE_CODE, &status);
    if (status != 0) response_.status = status;
    return std::move(response_);
  }
  if (abortedByCaller_) {
    return makeError(ErrorCode::kInternal, prefix + "request to " + socketPath_ + " aborted by the caller" +
                                               (callbackFailure_.empty() ? "" : ": " + callbackFailure_));
  }
  if (bodyTooLarge_) {
    return makeError(ErrorCode::kProtocol, prefix + socketPath_ + " sent an answer larger than " +
                                               humanBytes(maxBodyBytes_) + " to " + what_ +
                                               " (the most the agent reads for it; is it the " + peerName_ +
                                               " daemon that listens there?)");
  }
  const std::string curlDetail = errorBuffer_[0] != '\0' ? std::string(errorBuffer_) : curl_easy_strerror(code);
  switch (code) {
    case CURLE_COULDNT_CONNECT: {
      long osErrno = 0;
      curl_easy_getinfo(easy_.get(), CURLINFO_OS_ERRNO, &osErrno);
      if (osErrno != 0) return connectError(peerName_, socketPath_, int(osErrno));
      return makeError(ErrorCode::kUnavailable, prefix + "cannot connect to " + socketPath_ + ": " + curlDetail);
    }
    case CURLE_OPERATION_TIMEDOUT: {
      // curl's timers fire a little early or late: which limit fired is judged with some slack.
      const auto slack = std::chrono::milliseconds(100);
      const bool totalFired = totalTimeout_.count() > 0 && elapsed + slack >= totalTimeout_;
      if (!headersDelivered_) {
        const auto limit = totalFired || connectTimeout_.count() == 0 ? totalTimeout_ : connectTimeout_;
        return makeError(ErrorCode::kTimeout, prefix + socketPath_ + " did not answer within " + humanDuration(limit) +
                                                  " (the " + peerName_ + " daemon is overloaded or stuck)");
      }
      if (lowSpeedTime_.count() > 0 && !totalFired) {
        return makeError(ErrorCode::kTimeout, prefix + socketPath_ + " sent nothing for " +
                                                  humanDuration(lowSpeedTime_) + " in the middle of an answer");
      }
      return makeError(ErrorCode::kTimeout,
                       prefix + socketPath_ + " did not finish answering within " + humanDuration(totalTimeout_));
    }
    case CURLE_GOT_NOTHING:
      return makeError(ErrorCode::kUnavailable, prefix + socketPath_ +
                                                    " closed the connection without answering (is the daemon "
                                                    "shutting down or restarting?)");
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
      return makeError(ErrorCode::kUnavailable,
                       prefix + "the connection to " + socketPath_ + " broke (" + curlDetail + ")");
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_UNSUPPORTED_PROTOCOL:  // what curl says to bytes that are not HTTP/1 ("HTTP/0.9")
      return makeError(ErrorCode::kProtocol, prefix + socketPath_ + " did not answer in HTTP (" + curlDetail +
                                                 "); is it the " + peerName_ + " socket?");
    default: return makeError(ErrorCode::kInternal, prefix + "request to " + socketPath_ + " failed: " + curlDetail);
  }
}

UnixHttpClient::UnixHttpClient(std::string socketPath, std::string peerName, std::chrono::milliseconds connectTimeout)
    : socketPath_(std::move(socketPath)), peerName_(std::move(peerName)), connectTimeout_(connectTimeout) {
  ensureCurlInitialized();
}

Result<std::unique_ptr<HttpTransfer>> UnixHttpClient::prepare(const HttpRequest& request, BodyFn onBody,
                                                              HeadersFn onHeaders) const {
  if (socketPath_.size() >= sizeof(sockaddr_un::sun_path)) {
    return makeError(ErrorCode::kInvalidArgument, peerName_ + ": socket path " + socketPath_ +
                                                      " is longer than a unix socket path may be (" +
                                                      std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " bytes)");
  }
  std::unique_ptr<HttpTransfer> transfer(new HttpTransfer());
  transfer->easy_.reset(curl_easy_init());
  if (!transfer->easy_) return makeError(ErrorCode::kInternal, peerName_ + ": curl_easy_init failed");
  transfer->socketPath_ = socketPath_;
  transfer->peerName_ = peerName_;
  transfer->connectTimeout_ = connectTimeout_;
  transfer->totalTimeout_ = request.totalTimeout;
  transfer->lowSpeedTime_ = request.lowSpeedTime;
  transfer->maxBodyBytes_ = request.maxBodyBytes;
  transfer->what_ = request.method + " " + request.target.substr(0, request.target.find('?'));
  transfer->onBody_ = std::move(onBody);
  transfer->onHeaders_ = std::move(onHeaders);
  transfer->body_ = request.body;
  // The host part is ignored on a unix socket, but HTTP/1.1 needs one.
  transfer->url_ = "http://localhost" + request.target;

  CURL* easy = transfer->easy_.get();
  curl_easy_setopt(easy, CURLOPT_UNIX_SOCKET_PATH, transfer->socketPath_.c_str());
  curl_easy_setopt(easy, CURLOPT_URL, transfer->url_.c_str());
  curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, transfer->errorBuffer_);
  curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, long(connectTimeout_.count()));
  curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, long(request.totalTimeout.count()));
  if (request.lowSpeedTime.count() > 0) {
    curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, long(request.lowSpeedTime.count()));
  }
  curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, &HttpTransfer::onHeaderLine);
  curl_easy_setopt(easy, CURLOPT_HEADERDATA, transfer.get());
  curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &HttpTransfer::onBodyData);
  curl_easy_setopt(easy, CURLOPT_WRITEDATA, transfer.get());

  curl_slist* list = nullptr;
  auto append = [&list](const std::string& line) {
    curl_slist* grown = curl_slist_append(list, line.c_str());
    if (grown == nullptr) return false;
    list = grown;
    return true;
  };
  bool appended = append("Expect:");  // no 100-continue round trip on local sockets
  for (const auto& [name, value] : request.headers) {
    appended = appended && append(std::string(name).append(": ").append(value));
  }
  if (!request.body.empty() || request.method == "POST") {
    appended = appended && append("Content-Type: " + request.contentType);
  }
  transfer->headerList_.reset(list);
  if (!appended) return makeError(ErrorCode::kInternal, peerName_ + ": out of memory building request headers");
  curl_easy_setopt(easy, CURLOPT_HTTPHEADER, transfer->headerList_.get());

  if (request.method == "GET") {
    curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
  } else if (request.method == "HEAD") {
    curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
  } else {
    if (request.method == "POST" || !transfer->body_.empty()) {
      curl_easy_setopt(easy, CURLOPT_POSTFIELDS, transfer->body_.c_str());
      curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(transfer->body_.size()));
    }
    if (request.method != "POST") curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, request.method.c_str());
  }
  transfer->started_ = std::chrono::steady_clock::now();
  return transfer;
}

Result<HttpResponse> UnixHttpClient::send(const HttpRequest& request, const BodyFn& onBody,
                                          const HeadersFn& onHeaders) const {
  auto transfer = prepare(request, onBody, onHeaders);
  if (!transfer.ok()) return transfer.error();
  const CURLcode code = curl_easy_perform((*transfer)->handle());
  return (*transfer)->finish(code);
}

}  // namespace qcs::runtime::docker

#include "harness/hostile_socket.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <random>
#include <string_view>

namespace qcs::testing {

namespace {

constexpr size_t kMaxRequestHead = 64 * 1024;
constexpr size_t kMaxRequestBody = size_t{16} << 20;
constexpr size_t kStreamPiece = 64 * 1024;
// Endless answers still end somewhere, so a peer that never hangs up cannot keep a test's thread
// writing forever.
constexpr size_t kEndlessCap = size_t{256} << 20;
constexpr size_t kHugeFieldBytes = size_t{16} << 20;
constexpr size_t kLogLimit = 1000;

std::string statusLine(int status) {
  switch (status) {
    case 200: return "HTTP/1.1 200 OK\r\n";
    case 201: return "HTTP/1.1 201 Created\r\n";
    case 404: return "HTTP/1.1 404 Not Found\r\n";
    default: return "HTTP/1.1 " + std::to_string(status) + " Whatever\r\n";
  }
}

// A complete answer with a Content-Length that matches the body.
std::string wholeAnswer(int status, const std::string& contentType, const std::string& body,
                        const std::string& extraHeaders = {}) {
  return statusLine(status) + "Content-Type: " + contentType + "\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n" + extraHeaders + "Connection: close\r\n\r\n" + body;
}

// The head of a chunked 200 answer.
std::string chunkedHead(const std::string& extraHeaders) {
  return statusLine(200) + "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n" + extraHeaders +
         "Connection: close\r\n\r\n";
}

std::string chunk(std::string_view data) {
  char size[32];
  std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  return std::string(size).append(data).append("\r\n");
}

std::string apiHeaders(const std::string& apiVersion) {
  return "Api-Version: " + apiVersion + "\r\nServer: Docker/20.10.99-hostile (linux)\r\n";
}

// The request path without Docker's /vX.Y prefix and without the query.
std::string plainPath(const std::string& target) {
  std::string path = target.substr(0, target.find('?'));
  if (path.size() > 2 && path[0] == '/' && path[1] == 'v' && std::isdigit(static_cast<unsigned char>(path[2]))) {
    const auto slash = path.find('/', 1);
    path = slash == std::string::npos ? "/" : path.substr(slash);
  }
  return path;
}

bool startsWith(const std::string& text, std::string_view prefix) { return text.rfind(prefix, 0) == 0; }

bool endsWith(const std::string& text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

struct HostileSocket::Request {
  std::string method;
  std::string target;
  bool http = false;  // false: the bytes were not an HTTP request
};

std::unique_ptr<HostileSocket> HostileSocket::start(const std::string& socketPath, Script script) {
  std::unique_ptr<HostileSocket> server(new HostileSocket());
  server->socketPath_ = socketPath;
  server->script_ = std::move(script);
  sockaddr_un address{};
  if (socketPath.size() >= sizeof(address.sun_path)) {
    std::cerr << "hostile socket: path too long: " << socketPath << "\n";
    return nullptr;
  }
  if (::pipe2(server->stopPipe_, O_CLOEXEC | O_NONBLOCK) != 0) {
    std::cerr << "hostile socket: pipe: " << std::strerror(errno) << "\n";
    return nullptr;
  }
  struct stat st {};
  if (::lstat(socketPath.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(socketPath.c_str());
  server->listenFd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, socketPath.c_str(), socketPath.size() + 1);
  if (server->listenFd_ < 0 ||
      ::bind(server->listenFd_, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0 ||
      ::listen(server->listenFd_, 64) != 0) {
    std::cerr << "hostile socket: cannot listen on " << socketPath << ": " << std::strerror(errno) << "\n";
    return nullptr;  // the destructor closes what was opened
  }
  server->acceptThread_ = std::thread([raw = server.get()] { raw->acceptLoop(); });
  return server;
}

HostileSocket::~HostileSocket() {
  stopping_ = true;
  if (stopPipe_[1] >= 0) (void)!::write(stopPipe_[1], "x", 1);
  if (acceptThread_.joinable()) acceptThread_.join();
  {
    std::lock_guard lock(mu_);
    for (auto& connection : connections_) {
      if (connection.fd >= 0) ::shutdown(connection.fd, SHUT_RDWR);
    }
  }
  // The threads are joined without the lock: they take it to close their sockets.
  for (auto& connection : connections_) {
    if (connection.thread.joinable()) connection.thread.join();
  }
  if (listenFd_ >= 0) {
    ::close(listenFd_);
    ::unlink(socketPath_.c_str());
  }
  for (int fd : stopPipe_) {
    if (fd >= 0) ::close(fd);
  }
}

void HostileSocket::setScript(Script script) {
  std::lock_guard lock(mu_);
  script_ = std::move(script);
}

HostileSocket::Script HostileSocket::script() const {
  std::lock_guard lock(mu_);
  return script_;
}

size_t HostileSocket::requestsTo(const std::string& needle) const {
  std::lock_guard lock(mu_);
  return size_t(std::count_if(log_.begin(), log_.end(),
                              [&](const std::string& line) { return line.find(needle) != std::string::npos; }));
}

std::vector<std::string> HostileSocket::requestLog() const {
  std::lock_guard lock(mu_);
  return log_;
}

void HostileSocket::reapFinished() {
  std::lock_guard lock(mu_);
  for (auto it = connections_.begin(); it != connections_.end();) {
    if (it->done.load()) {
      if (it->thread.joinable()) it->thread.join();
      it = connections_.erase(it);
    } else {
      ++it;
    }
  }
}

void HostileSocket::acceptLoop() {
  while (!stopping_) {
    pollfd fds[2] = {{listenFd_, POLLIN, 0}, {stopPipe_[0], POLLIN, 0}};
    if (::poll(fds, 2, 1000) < 0 && errno != EINTR) return;
    if (stopping_ || (fds[1].revents & POLLIN) != 0) return;
    reapFinished();
    if ((fds[0].revents & POLLIN) == 0) continue;
    const int fd = ::accept4(listenFd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    std::lock_guard lock(mu_);
    if (connections_.size() >= kMaxConnections) {
      ::close(fd);
      continue;
    }
    Connection& connection = connections_.emplace_back();
    connection.fd = fd;
    connection.thread = std::thread([this, &connection] { serve(connection); });
  }
}

bool HostileSocket::sendAll(int fd, std::string_view data, bool countAsBody) {
  while (!data.empty()) {
    pollfd fds[2] = {{fd, POLLOUT, 0}, {stopPipe_[0], POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (stopping_ || (fds[1].revents & POLLIN) != 0) return false;
    if ((fds[0].revents & (POLLERR | POLLHUP | POLLNVAL)) != 0 && (fds[0].revents & POLLOUT) == 0) return false;
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return false;
    }
    if (countAsBody) bytesSent_ += size_t(n);
    data.remove_prefix(size_t(n));
  }
  return true;
}

void HostileSocket::holdUntilHangup(int fd) {
  char buffer[4096];
  for (;;) {
    pollfd fds[2] = {{fd, POLLIN, 0}, {stopPipe_[0], POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (stopping_ || (fds[1].revents & POLLIN) != 0) return;
    if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) == 0) continue;
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
    if (n == 0) return;
    if (n < 0 && errno != EINTR && errno != EAGAIN) return;
  }
}

void HostileSocket::serve(Connection& connection) {
  const int fd = connection.fd;
  // The request: its head up to the blank line, then as much body as Content-Length says.
  std::string received;
  size_t headEnd = std::string::npos;
  char buffer[16384];
  while (headEnd == std::string::npos && received.size() < kMaxRequestHead) {
    pollfd fds[2] = {{fd, POLLIN, 0}, {stopPipe_[0], POLLIN, 0}};
    if (::poll(fds, 2, 5000) <= 0 || (fds[1].revents & POLLIN) != 0) break;
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
    if (n <= 0) {
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      break;
    }
    received.append(buffer, size_t(n));
    headEnd = received.find("\r\n\r\n");
  }
  Request request;
  if (headEnd != std::string::npos) {
    const std::string head = received.substr(0, headEnd);
    const auto firstSpace = head.find(' ');
    const auto secondSpace = head.find(' ', firstSpace == std::string::npos ? 0 : firstSpace + 1);
    if (firstSpace != std::string::npos && secondSpace != std::string::npos &&
        head.compare(secondSpace + 1, 5, "HTTP/") == 0) {
      request.http = true;
      request.method = head.substr(0, firstSpace);
      request.target = head.substr(firstSpace + 1, secondSpace - firstSpace - 1);
    }
    size_t contentLength = 0;
    std::string lowered = head;
    std::transform(lowered.begin(), lowered.end(), lowered.begin(),
                   [](unsigned char c) { return char(std::tolower(c)); });
    if (auto at = lowered.find("\r\ncontent-length:"); at != std::string::npos) {
      contentLength = std::min<size_t>(std::strtoull(lowered.c_str() + at + 17, nullptr, 10), kMaxRequestBody);
    }
    size_t haveBody = received.size() - headEnd - 4;
    while (haveBody < contentLength) {
      pollfd fds[2] = {{fd, POLLIN, 0}, {stopPipe_[0], POLLIN, 0}};
      if (::poll(fds, 2, 5000) <= 0 || (fds[1].revents & POLLIN) != 0) break;
      const ssize_t n = ::recv(fd, buffer, sizeof buffer, MSG_DONTWAIT);
      if (n <= 0) {
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        break;
      }
      haveBody += size_t(n);
    }
  }
  if (!received.empty()) {
    ++requests_;
    std::lock_guard lock(mu_);
    log_.push_back(request.http ? request.method + " " + request.target : std::string("(not HTTP)"));
    if (log_.size() > kLogLimit) log_.erase(log_.begin());
  }

  if (request.http && !stopping_) {
    const Script script = this->script();
    const std::string path = plainPath(request.target);
    Behaviour behaviour = script.calls;
    if (request.method == "GET" && (path == "/_ping" || path == "/version")) behaviour = script.handshake;
    if (request.method == "GET" && path == "/events") behaviour = script.events;
    answer(fd, request, behaviour, script.apiVersion);
  }

  std::lock_guard lock(mu_);
  ::close(connection.fd);
  connection.fd = -1;
  connection.done = true;
}

void HostileSocket::answer(int fd, const Request& request, Behaviour behaviour, const std::string& apiVersion) {
  switch (behaviour) {
    case Behaviour::kDocker: answerDocker(fd, request, apiVersion); return;
    case Behaviour::kWrongShape: answerWrongShape(fd, request); return;
    case Behaviour::kGarbage: {
      std::mt19937 random{std::random_device{}()};
      std::string noise(4096, '\0');
      for (auto& c : noise) c = char(random() & 0xff);
      noise[0] = '\x7f';  // whatever else it is, it does not start like "HTTP/"
      sendAll(fd, noise);
      return;
    }
    case Behaviour::kTruncatedJson: {
      const std::string head = statusLine(200) + "Content-Type: application/json\r\nContent-Length: 2048\r\n" +
                               apiHeaders(apiVersion) + "Connection: close\r\n\r\n";
      sendAll(fd, head, false);
      sendAll(fd, R"({"Id": "0123456789abcdef", "State": {"Status": "runn)");
      return;
    }
    case Behaviour::kHugeJson: {
      if (!sendAll(fd, chunkedHead(apiHeaders(apiVersion)), false) || !sendAll(fd, chunk("["))) return;
      const std::string element = "\"" + std::string(1020, 'x') + "\",";
      std::string piece;
      while (piece.size() + element.size() <= kStreamPiece) piece += element;
      for (size_t sent = 1; sent < kHugeBodyBytes; sent += piece.size()) {
        if (!sendAll(fd, chunk(piece))) return;
      }
      sendAll(fd, chunk("\"end\"]") + "0\r\n\r\n");
      return;
    }
    case Behaviour::kDeepJson: {
      const std::string body = std::string(kDeepJsonLevels, '[') + std::string(kDeepJsonLevels, ']');
      sendAll(fd, wholeAnswer(200, "application/json", body, apiHeaders(apiVersion)));
      return;
    }
    case Behaviour::kWrongContentType: {
      const std::string page =
          "<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head>\n"
          "<body><h1>Welcome to nginx!</h1><p>If you see this page, the web server works.</p></body></html>\n";
      sendAll(fd, wholeAnswer(200, "text/html", page, "Server: nginx/1.22.1\r\n"));
      return;
    }
    case Behaviour::kStallBeforeHeaders: holdUntilHangup(fd); return;
    case Behaviour::kStallMidBody: {
      const std::string head = statusLine(200) + "Content-Type: application/json\r\nContent-Length: 65536\r\n" +
                               apiHeaders(apiVersion) + "Connection: close\r\n\r\n";
      if (sendAll(fd, head, false) && sendAll(fd, R"({"Id": "0123456789abcdef", "State": {)")) holdUntilHangup(fd);
      return;
    }
    case Behaviour::kEventsGarbageLines: {
      if (!sendAll(fd, chunkedHead(apiHeaders(apiVersion)), false)) return;
      std::mt19937 random{std::random_device{}()};
      for (size_t sent = 0; sent < kEndlessCap;) {
        std::string piece;
        while (piece.size() < kStreamPiece) {
          const size_t length = 40 + random() % 160;
          for (size_t i = 0; i < length; ++i) piece.push_back(char(0x21 + random() % 94));
          piece.push_back('\n');
        }
        if (!sendAll(fd, chunk(piece))) return;
        sent += piece.size();
      }
      return;
    }
    case Behaviour::kEventsEndlessLine: {
      if (!sendAll(fd, chunkedHead(apiHeaders(apiVersion)), false) ||
          !sendAll(fd, chunk(R"({"Type":"container","Action":"die","Actor":{"ID":")"))) {
        return;
      }
      const std::string piece(kStreamPiece, 'a');
      for (size_t sent = 0; sent < kEndlessCap; sent += piece.size()) {
        if (!sendAll(fd, chunk(piece))) return;
      }
      return;
    }
    case Behaviour::kEventsHugeFields: {
      if (!sendAll(fd, chunkedHead(apiHeaders(apiVersion)), false)) return;
      const std::string hex(kStreamPiece, 'f');
      for (size_t sent = 0; sent < kEndlessCap;) {
        if (!sendAll(fd, chunk(R"({"Type":"container","Action":"start","Actor":{"ID":")"))) return;
        for (size_t field = 0; field < kHugeFieldBytes; field += hex.size()) {
          if (!sendAll(fd, chunk(hex))) return;
        }
        if (!sendAll(fd, chunk(R"(","Attributes":{"name":")"))) return;
        for (size_t field = 0; field < kHugeFieldBytes; field += hex.size()) {
          if (!sendAll(fd, chunk(hex))) return;
        }
        if (!sendAll(fd, chunk("\"}},\"time\":1}\n"))) return;
        sent += 2 * kHugeFieldBytes;
      }
      return;
    }
  }
}

void HostileSocket::answerDocker(int fd, const Request& request, const std::string& apiVersion) {
  const std::string path = plainPath(request.target);
  if (request.method == "GET" && path == "/_ping") {
    sendAll(fd, wholeAnswer(200, "text/plain; charset=utf-8", "OK",
                            apiHeaders(apiVersion) + "Docker-Experimental: false\r\nCache-Control: no-cache\r\n"));
  } else if (request.method == "GET" && path == "/version") {
    const std::string body = R"({"Version":"20.10.99-hostile","ApiVersion":")" + apiVersion +
                             R"(","MinAPIVersion":"1.12","Os":"linux","Arch":"amd64"})";
    sendAll(fd, wholeAnswer(200, "application/json", body, apiHeaders(apiVersion)));
  } else if (request.method == "GET" && path == "/containers/json") {
    sendAll(fd, wholeAnswer(200, "application/json", "[]", apiHeaders(apiVersion)));
  } else if (request.method == "GET" && path == "/events") {
    // Docker sends the head at once and then only events: none come here.
    if (sendAll(fd, chunkedHead(apiHeaders(apiVersion)), false)) holdUntilHangup(fd);
  } else {
    sendAll(fd, wholeAnswer(404, "application/json", R"({"message":"hostile test peer: no such object"})",
                            apiHeaders(apiVersion)));
  }
}

void HostileSocket::answerWrongShape(int fd, const Request& request) {
  const std::string path = plainPath(request.target);
  // Headers a Docker client looks for are right; the bodies are not.
  const std::string headers = apiHeaders("1.41");
  auto json = [&](int status, const std::string& body) {
    sendAll(fd, wholeAnswer(status, "application/json", body, headers));
  };
  if (path == "/_ping") {
    json(200, "[]");
  } else if (path == "/version") {
    json(200, R"("20.10.24")");
  } else if (path == "/containers/json") {
    json(200, R"({"Id": 42, "Names": "not a list"})");
  } else if (path == "/containers/create") {
    json(201, R"({"Id": {"nested": true}, "Warnings": 5})");
  } else if (startsWith(path, "/containers/") && endsWith(path, "/json")) {
    json(200, R"({"Id": 7, "Name": ["x"], "State": 3, "Config": [1, 2], "HostConfig": "none"})");
  } else if (startsWith(path, "/images/") && endsWith(path, "/json")) {
    json(200, "[1, 2, 3]");
  } else if (path == "/events") {
    if (!sendAll(fd, chunkedHead(headers), false)) return;
    if (sendAll(fd, chunk("[1,2,3]\n42\n{\"Type\": 5, \"Action\": [], \"Actor\": \"x\", \"id\": {}}\n"))) {
      holdUntilHangup(fd);
    }
  } else {
    json(200, "12345");
  }
}

}  // namespace qcs::testing

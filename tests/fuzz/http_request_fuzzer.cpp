// Fuzzes the agent's HTTP server (agent::HttpServer, Boost.Beast) with raw request bytes: one real
// server on 127.0.0.1:0 for the whole run, each input written over a fresh loopback connection and
// the reply read back. Every reply must be a well-formed status line with a status the server is
// documented to send, and every kHealthCheckEvery inputs a normal GET must still be answered.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <set>
#include <string>

#include "agent/http_server.h"
#include "fuzz_check.h"

using namespace qcs::agent;

namespace {

constexpr size_t kHealthCheckEvery = 64;
constexpr auto kReplyTimeout = std::chrono::milliseconds(2000);
const char* const kLivezBody = "ok\n";

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

HttpServer& server() {
  static const std::unique_ptr<HttpServer> instance = [] {
    HttpServerOptions options;
    options.listen = "127.0.0.1:0";
    // Short, so an input that leaves a request half-sent costs little; the client half-closes anyway.
    options.readTimeout = std::chrono::milliseconds(1000);
    options.idleTimeout = std::chrono::milliseconds(1000);
    HttpRoutes routes;
    routes["/livez"] = [] { return HttpReply{200, "text/plain; charset=utf-8", kLivezBody}; };
    routes["/status"] = [] { return HttpReply{200, "application/json", R"({"state":"running"})"}; };
    auto started = HttpServer::start(options, std::move(routes));
    FUZZ_CHECK(started.ok(), started.ok() ? "" : started.message());
    return std::move(started).value();
  }();
  return *instance;
}

// Writes the request, half-closes, and reads until the server closes or the timeout passes.
std::string exchange(uint16_t port, const uint8_t* data, size_t size) {
  Fd socket(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  FUZZ_CHECK(socket.get() >= 0, "socket() failed");
  // Reset instead of TIME_WAIT on close: thousands of connections a second would use up the
  // ephemeral ports otherwise.
  const linger abortive{1, 0};
  ::setsockopt(socket.get(), SOL_SOCKET, SO_LINGER, &abortive, sizeof abortive);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  FUZZ_CHECK(::connect(socket.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0,
             "the server refused a connection");
  // The server may close early (431, 400) while the rest is still being written: that is fine.
  for (size_t sent = 0; sent < size;) {
    const ssize_t n = ::send(socket.get(), data + sent, size - sent, MSG_NOSIGNAL);
    if (n <= 0) break;
    sent += size_t(n);
  }
  ::shutdown(socket.get(), SHUT_WR);

  std::string reply;
  const auto deadline = std::chrono::steady_clock::now() + kReplyTimeout;
  char buffer[4096];
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) break;
    pollfd readable{socket.get(), POLLIN, 0};
    if (::poll(&readable, 1, int(left)) <= 0) break;
    const ssize_t n = ::recv(socket.get(), buffer, sizeof buffer, 0);
    if (n <= 0) break;
    reply.append(buffer, size_t(n));
  }
  return reply;
}

// "HTTP/1.1 404 Not Found\r\n...": the status of the first response, or -1 if malformed.
int firstStatus(const std::string& reply) {
  if (reply.compare(0, 5, "HTTP/") != 0) return -1;
  const size_t space = reply.find(' ');
  if (space == std::string::npos || space + 4 > reply.size() || reply.find("\r\n") < space + 4) return -1;
  for (size_t i = space + 1; i < space + 4; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(reply[i]))) return -1;
  }
  return std::stoi(reply.substr(space + 1, 3));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static size_t inputs = 0;
  HttpServer& http = server();
  const uint16_t port = http.boundPort();

  const std::string reply = exchange(port, data, size);
  if (!reply.empty()) {
    static const std::set<int> kDocumented{200, 400, 404, 405, 413, 431};
    const int status = firstStatus(reply);
    FUZZ_CHECK(kDocumented.count(status) == 1, reply.substr(0, 200));
  }

  if (inputs++ % kHealthCheckEvery == 0) {
    auto livez = httpGet(http.boundAddress(), "/livez", std::chrono::seconds(5));
    FUZZ_CHECK(livez.ok(), livez.ok() ? "" : "the server stopped answering: " + livez.message());
    FUZZ_CHECK(livez->status == 200 && livez->body == kLivezBody, livez->body);
  }
  return 0;
}

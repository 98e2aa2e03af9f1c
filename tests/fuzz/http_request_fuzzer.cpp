// Fuzzes the agent's HTTP server (agent::HttpServer, Boost.Beast) with raw request bytes: one real
// server on 127.0.0.1:0 for the whole run, each input written over a fresh loopback connection and
// the reply read back. Every reply must be a well-formed status line with a status the server is
// documented to send, and every kHealthCheckEvery inputs a normal GET must still be answered.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <system_error>
#include <thread>

#include "agent/http_server.h"
#include "common/file_descriptor.h"
#include "fuzz_check.h"

using namespace qcs::agent;

namespace {

constexpr size_t kHealthCheckEvery = 64;
constexpr auto kReplyTimeout = std::chrono::milliseconds(2000);
constexpr int kConnectAttempts = 50;
const char* const kLivezBody = "ok\n";

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

// A connected loopback socket, or an invariant failure naming the errno once kConnectAttempts tries
// failed. Each connection comes from its own source address in 127.0.0.0/8 (the port is picked at
// connect for that address), so a 4-tuple is not reused while the server still holds the previous
// connection's state: with thousands of connections a second over one address, a SYN can meet the
// server's leftover entry for the same ports and be reset (ECONNREFUSED) or wait a second for its
// retransmission, long enough for libFuzzer's timer signal to interrupt connect (EINTR), though the
// server is listening. A refusal, an interruption or a lack of ports is retried on a new socket; a
// server that stopped listening fails every try, and the /livez check catches one that stopped
// answering.
qcs::FileDescriptor connectToServer(uint16_t port) {
  static uint32_t next = 0;
  int error = 0;
  for (int attempt = 0; attempt < kConnectAttempts; ++attempt) {
    qcs::FileDescriptor socket(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    FUZZ_CHECK(socket.valid(), "socket() failed: " + std::generic_category().message(errno));
    // Reset instead of TIME_WAIT on close: thousands of connections a second would use up the
    // ephemeral ports otherwise.
    const linger abortive{1, 0};
    ::setsockopt(socket.get(), SOL_SOCKET, SO_LINGER, &abortive, sizeof abortive);
    const int noPortYet = 1;
    ::setsockopt(socket.get(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &noPortYet, sizeof noPortYet);
    // 127.1.0.1 .. 127.1.255.254, in turn.
    const uint32_t host = next++ % 0xfffe + 1;
    sockaddr_in source{};
    source.sin_family = AF_INET;
    source.sin_addr.s_addr = htonl((127u << 24) | (1u << 16) | host);
    if (::bind(socket.get(), reinterpret_cast<const sockaddr*>(&source), sizeof source) != 0) {
      error = errno;
      continue;
    }
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(socket.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0) return socket;
    error = errno;
    if (error != ECONNREFUSED && error != EADDRNOTAVAIL && error != EAGAIN && error != EINTR) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::qcs::fuzz::invariantFailed(__FILE__, __LINE__, "connect() to the server",
                               "the server at 127.0.0.1:" + std::to_string(port) +
                                   " refused every connection, the last with " +
                                   std::generic_category().message(error));
}

// Writes the request, half-closes, and reads until the server closes or the timeout passes.
std::string exchange(uint16_t port, const uint8_t* data, size_t size) {
  const qcs::FileDescriptor socket = connectToServer(port);
  // libFuzzer's timer signal may interrupt any call below (EINTR): that is retried, never taken as
  // the end of the reply. The server may close early (431, 400) while the rest is still being
  // written: that is fine.
  for (size_t sent = 0; sent < size;) {
    const ssize_t n = ::send(socket.get(), data + sent, size - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
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
    const int ready = ::poll(&readable, 1, int(left));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) break;
    const ssize_t n = ::recv(socket.get(), buffer, sizeof buffer, 0);
    if (n < 0 && errno == EINTR) continue;
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

// A small blocking HTTP/1.1 server on 127.0.0.1:<free port> for the tests' service emulators:
// one thread, one connection at a time, keep-alive honoured, a 5 s receive timeout so a stalled
// client cannot wedge it, and a CONNECT answered once and then closed. The handler runs on the
// server's thread; an exception from it becomes a 500. Destroying the server stops it.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace qcs::testing {

struct LoopbackHttpRequest {
  std::string method;
  std::string target;  // origin-form path and query, or the authority of a CONNECT
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // Header lookups ignore case.
  bool hasHeader(const std::string& name) const;
  std::string header(const std::string& name) const;  // "" when absent
};

struct LoopbackHttpResponse {
  int status = 200;
  std::string contentType = "application/json";
  std::map<std::string, std::string> headers;
  std::string body;
};

class LoopbackHttpServer {
 public:
  using Handler = std::function<LoopbackHttpResponse(const LoopbackHttpRequest&)>;
  // Listens and starts serving; nullptr (with the reason on stderr, prefixed by name) if it cannot.
  static std::unique_ptr<LoopbackHttpServer> start(const std::string& name, Handler handler);
  ~LoopbackHttpServer();
  LoopbackHttpServer(const LoopbackHttpServer&) = delete;
  LoopbackHttpServer& operator=(const LoopbackHttpServer&) = delete;

  int port() const { return port_; }

 private:
  struct Socket;
  explicit LoopbackHttpServer(Handler handler);
  void serve();

  Handler handler_;
  std::unique_ptr<Socket> socket_;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  // The connection being served, so the destructor can end it: a client that keeps its
  // connection busy (dockerd's awslogs driver) would otherwise keep serve() from ever returning.
  std::mutex connectionMu_;
  int connectionFd_ = -1;
  std::thread thread_;
};

}  // namespace qcs::testing

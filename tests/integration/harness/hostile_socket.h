// A hostile container-runtime peer for the tests: a unix-socket server, on its own threads, that
// answers every connection the way the test tells it to — a minimal well-formed Docker Engine API,
// or garbage, truncated or huge JSON, JSON of the wrong shape, the wrong content type, stalls, an
// absurd API version, and broken /events streams. The test may change the behaviour at any time;
// it applies to connections accepted from then on.
//
// Contract:
// - start() binds and listens at the path (an existing socket file there is replaced) and serves
//   until destruction, which stops every connection (stalled ones included), joins its threads and
//   unlinks the socket. Each connection is served on a thread of its own, so a stalled answer never
//   holds up another connection; at most kMaxConnections are served at once (more are closed).
// - One request per connection: it reads the request line, headers and body, answers per the
//   Script, and closes ("Connection: close"). Bytes that are not an HTTP request are counted too.
// - A stalled or streaming answer ends when the peer hangs up or the server is destroyed.
// - Everything is local to the socket: nothing listens on a network address.
#pragma once

#include <atomic>
#include <cstddef>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace qcs::testing {

enum class HostileBehaviour {
  // A small, honest Docker: /_ping "OK" with API-Version, /version, an empty /containers/json,
  // an /events stream that stays open and quiet, 404 {"message"} for everything else.
  kDocker,
  kGarbage,             // random bytes that are not HTTP, then close
  kTruncatedJson,       // 200 application/json, Content-Length 2048, 50 bytes sent, then close
  kHugeJson,            // 200 application/json, chunked: a 256 MiB array of strings
  kDeepJson,            // 200 application/json: an array nested 1,000,000 levels deep (2 MB)
  kWrongShape,          // 200 application/json of the wrong shape: /_ping `[]`, /version a string, ...
  kWrongContentType,    // 200 text/html: a web server's welcome page
  kStallBeforeHeaders,  // reads the request and never answers
  kStallMidBody,        // 200 with Content-Length 64 KiB, sends part of the body, then nothing
  kEventsGarbageLines,  // 200 chunked stream of newline-terminated garbage lines, as fast as it goes
  kEventsEndlessLine,   // 200 chunked stream of one event whose line never ends (no newline, ever)
  kEventsHugeFields,    // 200 chunked stream of events whose ID and attributes are 16 MiB each
};

// Which behaviour answers which request.
struct HostileScript {
  // GET /_ping and GET /version (with or without /vX.Y), every other request but /events, GET /events.
  HostileBehaviour handshake = HostileBehaviour::kDocker;
  HostileBehaviour calls = HostileBehaviour::kDocker;
  HostileBehaviour events = HostileBehaviour::kDocker;
  // The API-Version (and ApiVersion) kDocker reports: "0.1" or "99.99" make an absurd answer.
  std::string apiVersion = "1.41";
};

class HostileSocket {
 public:
  using Behaviour = HostileBehaviour;
  using Script = HostileScript;

  static Script everything(Behaviour behaviour) { return Script{behaviour, behaviour, behaviour, "1.41"}; }

  static constexpr size_t kMaxConnections = 64;
  static constexpr size_t kHugeBodyBytes = size_t{256} << 20;
  static constexpr size_t kDeepJsonLevels = 1'000'000;

  // Listens at socketPath; nullptr (with the reason on stderr) if it cannot.
  static std::unique_ptr<HostileSocket> start(const std::string& socketPath, Script script = Script{});
  ~HostileSocket();
  HostileSocket(const HostileSocket&) = delete;
  HostileSocket& operator=(const HostileSocket&) = delete;

  const std::string& socketPath() const { return socketPath_; }

  // Applies to connections accepted from now on.
  void setScript(Script script);
  Script script() const;

  // Every request (or non-HTTP byte burst) seen so far.
  size_t requestCount() const { return requests_.load(); }
  // Requests whose target contains needle (e.g. "/events", "/_ping").
  size_t requestsTo(const std::string& needle) const;
  // "METHOD target" of the last requests seen (at most 1000), oldest first.
  std::vector<std::string> requestLog() const;
  // Body bytes written to peers so far (streams included): shows that a huge answer was cut short.
  size_t bytesSent() const { return bytesSent_.load(); }

 private:
  struct Connection {
    int fd = -1;
    std::atomic<bool> done{false};
    std::thread thread;
  };
  struct Request;

  HostileSocket() = default;
  void acceptLoop();
  void serve(Connection& connection);
  void answer(int fd, const Request& request, Behaviour behaviour, const std::string& apiVersion);
  void answerDocker(int fd, const Request& request, const std::string& apiVersion);
  void answerWrongShape(int fd, const Request& request);
  // Writes all of data; false once the peer is gone or the server stops.
  bool sendAll(int fd, std::string_view data, bool countAsBody = true);
  // Waits until the peer hangs up or the server stops.
  void holdUntilHangup(int fd);
  void reapFinished();

  std::string socketPath_;
  int listenFd_ = -1;
  int stopPipe_[2] = {-1, -1};  // written once on destruction: wakes accept and every stall
  std::atomic<bool> stopping_{false};
  mutable std::mutex mu_;
  Script script_;
  std::vector<std::string> log_;
  std::list<Connection> connections_;  // stable addresses for the threads that serve them
  std::atomic<size_t> requests_{0};
  std::atomic<size_t> bytesSent_{0};
  std::thread acceptThread_;
};

}  // namespace qcs::testing

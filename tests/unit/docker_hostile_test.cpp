// The Docker client against a peer that is not a (sane) Docker daemon (issue 7): answers are
// capped, JSON is checked before use, /_ping must say "OK", the API version is renegotiated with
// whoever answers now, and the event watcher drops a stream that sends nonsense. The peer is a
// scripted unix-socket server in this file; waits are conditions with deadlines.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "runtime/docker/docker_runtime.h"
#include "runtime/docker/http_unix.h"

namespace qcs::runtime::docker {
namespace {

using namespace std::chrono_literals;

// ---- A scripted peer ----------------------------------------------------------------------------

struct PeerReply {
  std::string bytes;      // written as is (status line, headers, body)
  bool holdOpen = false;  // then keep the connection until the client hangs up
};

// Listens on a unix socket in a private directory; each connection gets its own thread, reads one
// request head and writes what the handler says. Destroying it ends every connection.
class ScriptedPeer {
 public:
  using Handler = std::function<PeerReply(const std::string& requestLine)>;

  explicit ScriptedPeer(Handler handler) : handler_(std::move(handler)) {
    char pattern[] = "/tmp/qcs-hostile-unit-XXXXXX";
    if (::mkdtemp(pattern) == nullptr) std::abort();
    dir_ = pattern;
    path_ = dir_ + "/docker.sock";
    if (::pipe(stop_) != 0) std::abort();
    listenFd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::snprintf(address.sun_path, sizeof address.sun_path, "%s", path_.c_str());
    if (::bind(listenFd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 || ::listen(listenFd_, 16) != 0)
      std::abort();
    acceptor_ = std::thread([this] { acceptLoop(); });
  }

  ~ScriptedPeer() {
    stopping_ = true;
    (void)!::write(stop_[1], "x", 1);
    acceptor_.join();
    {
      std::lock_guard lock(mu_);
      for (int fd : open_) ::shutdown(fd, SHUT_RDWR);
    }
    for (auto& thread : threads_) thread.join();
    ::close(listenFd_);
    ::close(stop_[0]);
    ::close(stop_[1]);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  const std::string& path() const { return path_; }

  std::vector<std::string> requests() const {
    std::lock_guard lock(mu_);
    return requests_;
  }
  size_t count(const std::string& needle) const {
    std::lock_guard lock(mu_);
    size_t n = 0;
    for (const auto& line : requests_) n += line.find(needle) != std::string::npos ? 1 : 0;
    return n;
  }

 private:
  void acceptLoop() {
    for (;;) {
      pollfd fds[2] = {{listenFd_, POLLIN, 0}, {stop_[0], POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) continue;
      if (stopping_ || (fds[1].revents & POLLIN) != 0) return;
      const int fd = ::accept4(listenFd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      std::lock_guard lock(mu_);
      open_.push_back(fd);
      threads_.emplace_back([this, fd] { serve(fd); });
    }
  }

  void serve(int fd) {
    std::string head;
    char buffer[4096];
    while (head.find("\r\n\r\n") == std::string::npos) {
      const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
      if (n <= 0) break;
      head.append(buffer, size_t(n));
    }
    const std::string line = head.substr(0, head.find("\r\n"));
    {
      std::lock_guard lock(mu_);
      requests_.push_back(line);
    }
    PeerReply reply = handler_(line);
    std::string_view rest = reply.bytes;
    while (!rest.empty() && !stopping_) {
      const ssize_t n = ::send(fd, rest.data(), rest.size(), MSG_NOSIGNAL);
      if (n <= 0) break;
      rest.remove_prefix(size_t(n));
    }
    if (reply.holdOpen) {
      while (!stopping_ && ::recv(fd, buffer, sizeof buffer, 0) > 0) {
      }
    }
    std::lock_guard lock(mu_);
    ::shutdown(fd, SHUT_RDWR);
    open_.remove(fd);
    ::close(fd);
  }

  Handler handler_;
  std::string dir_;
  std::string path_;
  int listenFd_ = -1;
  int stop_[2] = {-1, -1};
  std::atomic<bool> stopping_{false};
  mutable std::mutex mu_;
  std::list<int> open_;
  std::vector<std::string> requests_;
  std::list<std::thread> threads_;
  std::thread acceptor_;
};

std::string answer(int status, const std::string& contentType, const std::string& body,
                   const std::string& extraHeaders = "") {
  return "HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Type: " + contentType +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + extraHeaders + "Connection: close\r\n\r\n" +
         body;
}

// A ping that says OK at apiVersion, naming the daemon in a Server header unless `server` is empty.
std::string pingOk(const std::string& apiVersion, const std::string& server = "Docker/20.10.24 (linux)") {
  return answer(200, "text/plain", "OK",
                "Api-Version: " + apiVersion + "\r\n" + (server.empty() ? "" : "Server: " + server + "\r\n"));
}

// A Docker that pings "OK" at apiVersion (with `server` as pingOk has it), answers /version with
// `version`, and every other request with `other`.
ScriptedPeer::Handler dockerWith(std::function<std::string()> apiVersion,
                                 std::function<PeerReply(const std::string&)> other,
                                 const std::string& server = "Docker/20.10.24 (linux)",
                                 const std::string& version = "20.10.24") {
  return [apiVersion, other, server, version](const std::string& line) {
    if (line.find("/_ping ") != std::string::npos) return PeerReply{pingOk(apiVersion(), server)};
    if (line.find("/version ") != std::string::npos) {
      return PeerReply{answer(200, "application/json", R"({"Version":")" + version + R"("})")};
    }
    return other(line);
  };
}

std::unique_ptr<ContainerRuntime> connectTo(const ScriptedPeer& peer) {
  auto connected = connectDocker(peer.path(), 2s);
  EXPECT_TRUE(connected.ok()) << connected.message();
  return connected.ok() ? std::move(connected).value() : nullptr;
}

// ---- Pure helpers -------------------------------------------------------------------------------

TEST(DockerHostileTest, JsonNestingIsMeasuredOutsideStrings) {
  EXPECT_TRUE(jsonNestingWithin(R"({"a": [1, {"b": []}]})", 4));
  EXPECT_FALSE(jsonNestingWithin(R"({"a": [1, {"b": []}]})", 3));
  EXPECT_TRUE(jsonNestingWithin(R"({"a": "[[[[[[[[[[", "b": "\"[[[["})", 1));
  EXPECT_TRUE(jsonNestingWithin("", 0));
  EXPECT_FALSE(jsonNestingWithin(std::string(kMaxJsonDepth + 1, '['), kMaxJsonDepth));
  EXPECT_TRUE(jsonNestingWithin(std::string(kMaxJsonDepth, '[') + std::string(kMaxJsonDepth, ']')));
  // Closers without openers do not buy depth for later openers.
  EXPECT_FALSE(jsonNestingWithin("]]]]" + std::string(3, '['), 2));
}

TEST(DockerHostileTest, DeeplyNestedJsonIsRefusedBeforeParsing) {
  const std::string deep = std::string(1'000'000, '[') + std::string(1'000'000, ']');
  EXPECT_FALSE(parseDockerEvent(deep).has_value());
  auto inspected = parseContainerInspect(deep);
  ASSERT_FALSE(inspected.ok());
  EXPECT_EQ(inspected.code(), ErrorCode::kProtocol);
  EXPECT_FALSE(parseContainerStats(deep).ok());
}

TEST(DockerHostileTest, NumbersOfTheWrongKindOrSizeAreIgnored) {
  auto inspected = parseContainerInspect(
      R"({"Id": "abc", "State": {"Status": "exited", "ExitCode": 99999999999999, "OOMKilled": 1}})");
  ASSERT_TRUE(inspected.ok()) << inspected.message();
  EXPECT_EQ(inspected->exitCode, 0);
  EXPECT_FALSE(inspected->oomKilled);
  auto negative = parseContainerInspect(R"({"Id": "abc", "State": {"ExitCode": -1}})");
  ASSERT_TRUE(negative.ok());
  EXPECT_EQ(negative->exitCode, -1);

  auto stats = parseContainerStats(
      R"({"cpu_stats": {"cpu_usage": {"total_usage": -5.5}}, "memory_stats": {"usage": 1e300, "stats": {"cache": "x"}}})");
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->cpuSeconds, 0);
  EXPECT_EQ(stats->memoryBytes, 0);
  auto floats = parseContainerStats(R"({"cpu_stats": {"cpu_usage": {"total_usage": 2.5e9}}})");
  ASSERT_TRUE(floats.ok());
  EXPECT_DOUBLE_EQ(floats->cpuSeconds, 2.5);

  EXPECT_FALSE(parseDockerEvent(R"({"Type": 5, "Action": [], "Actor": "x", "id": {}})").has_value());
  EXPECT_FALSE(parseDockerEvent("[1,2,3]").has_value());
}

TEST(DockerHostileTest, LineSplitterHoldsAtMostOneLineOfTheLimit) {
  std::vector<std::string> lines;
  LineSplitter splitter(8, [&](std::string_view line) {
    lines.emplace_back(line);
    return true;
  });
  EXPECT_TRUE(splitter.feed("one\ntw"));
  EXPECT_TRUE(splitter.feed("o\nthree"));
  EXPECT_TRUE(splitter.finish());
  EXPECT_EQ(lines, (std::vector<std::string>{"one", "two", "three"}));

  LineSplitter endless(8, [](std::string_view) { return true; });
  EXPECT_TRUE(endless.feed("abcd"));
  EXPECT_TRUE(endless.feed("efgh"));
  EXPECT_FALSE(endless.feed("i"));  // 9 bytes and no newline yet
  EXPECT_TRUE(endless.overflowed());
  EXPECT_FALSE(endless.feed("\n"));  // stays stopped

  LineSplitter longInOneChunk(8, [](std::string_view) { return true; });
  EXPECT_FALSE(longInOneChunk.feed("123456789\nshort\n"));
  EXPECT_TRUE(longInOneChunk.overflowed());

  int calls = 0;
  LineSplitter stopped(8, [&](std::string_view) { return ++calls < 2; });
  EXPECT_FALSE(stopped.feed("a\nb\nc\n"));
  EXPECT_FALSE(stopped.overflowed());
  EXPECT_EQ(calls, 2);
}

TEST(DockerHostileTest, HumanBytes) {
  EXPECT_EQ(humanBytes(1), "1 byte");
  EXPECT_EQ(humanBytes(512), "512 bytes");
  EXPECT_EQ(humanBytes(4096), "4 KiB");
  EXPECT_EQ(humanBytes(kDefaultMaxBodyBytes), "8 MiB");
  EXPECT_EQ(humanBytes(3 * 512 * 1024), "1.5 MiB");
  EXPECT_EQ(humanBytes(uint64_t{1} << 30), "1 GiB");
}

// ---- The HTTP client ----------------------------------------------------------------------------

TEST(DockerHostileTest, AnAnnouncedHugeBodyFailsBeforeItIsRead) {
  ScriptedPeer peer([](const std::string&) {
    return PeerReply{"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 274877906944\r\n\r\n[\"x\",",
                     true};
  });
  UnixHttpClient client(peer.path(), "docker", 2s);
  HttpRequest request;
  request.target = "/v1.41/containers/json?all=1";
  request.totalTimeout = 2s;
  auto response = client.send(request);
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.code(), ErrorCode::kProtocol);
  EXPECT_EQ(response.message(), "docker: " + peer.path() +
                                    " sent an answer larger than 8 MiB to GET /v1.41/containers/json (the most the "
                                    "agent reads for it; is it the docker daemon that listens there?)");
}

TEST(DockerHostileTest, AStreamedHugeBodyIsCutAtTheLimit) {
  // Chunked: no length up front; 64 KiB chunks, 2 MiB in all, against a 1 MiB limit.
  std::string chunked = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
  const std::string piece(65536, 'x');
  for (int i = 0; i < 32; ++i) chunked += "10000\r\n" + piece + "\r\n";
  chunked += "0\r\n\r\n";
  ScriptedPeer peer([&](const std::string&) { return PeerReply{chunked}; });
  UnixHttpClient client(peer.path(), "docker", 2s);
  HttpRequest request;
  request.target = "/v1.41/images/x/json";
  request.totalTimeout = 5s;
  request.maxBodyBytes = size_t{1} << 20;
  auto response = client.send(request);
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(response.code(), ErrorCode::kProtocol);
  EXPECT_NE(response.message().find("larger than 1 MiB to GET /v1.41/images/x/json"), std::string::npos)
      << response.message();

  request.maxBodyBytes = size_t{4} << 20;  // the same answer under a higher limit is fine
  auto whole = client.send(request);
  ASSERT_TRUE(whole.ok()) << whole.message();
  EXPECT_EQ(whole->body.size(), 32u * 65536u);
}

TEST(DockerHostileTest, BytesThatAreNotHttpAreAProtocolError) {
  std::string noise(2048, '\0');
  for (size_t i = 0; i < noise.size(); ++i) noise[i] = char((i * 131 + 7) & 0xff);
  noise[0] = '\x7f';
  ScriptedPeer peer([&](const std::string&) { return PeerReply{noise}; });
  auto connected = connectDocker(peer.path(), 2s);
  ASSERT_FALSE(connected.ok());
  EXPECT_EQ(connected.code(), ErrorCode::kProtocol) << connected.message();
  EXPECT_NE(connected.message().find("did not answer in HTTP"), std::string::npos) << connected.message();
  std::string detail;
  EXPECT_EQ(probeDocker(peer.path(), 2s, detail), ProbeOutcome::kBadAnswer) << detail;
}

// ---- The handshake ------------------------------------------------------------------------------

TEST(DockerHostileTest, APingThatDoesNotSayOkIsNotDocker) {
  ScriptedPeer peer(
      [](const std::string&) { return PeerReply{answer(200, "application/json", "[]", "Api-Version: 1.41\r\n")}; });
  auto connected = connectDocker(peer.path(), 2s);
  ASSERT_FALSE(connected.ok());
  EXPECT_EQ(connected.code(), ErrorCode::kProtocol);
  EXPECT_EQ(connected.message(),
            "docker: " + peer.path() + " answered /_ping with \"[]\" instead of \"OK\"; is it a Docker socket?");
  std::string detail;
  EXPECT_EQ(probeDocker(peer.path(), 2s, detail), ProbeOutcome::kBadAnswer);
}

TEST(DockerHostileTest, AHugePingAnswerIsCutAtFourKiB) {
  ScriptedPeer peer([](const std::string&) {
    return PeerReply{answer(200, "text/plain", std::string(1 << 20, 'K'), "Api-Version: 1.41\r\n")};
  });
  auto connected = connectDocker(peer.path(), 2s);
  ASSERT_FALSE(connected.ok());
  EXPECT_NE(connected.message().find("larger than 4 KiB to GET /_ping"), std::string::npos) << connected.message();
}

TEST(DockerHostileTest, AbsurdApiVersionsAreRefusedOrCapped) {
  std::string version = "0.1";
  ScriptedPeer peer(
      dockerWith([&] { return version; },
                 [](const std::string&) { return PeerReply{answer(404, "application/json", R"({"message":"no"})")}; }));
  auto ancient = connectDocker(peer.path(), 2s);
  ASSERT_FALSE(ancient.ok());
  EXPECT_EQ(ancient.code(), ErrorCode::kConflict);
  std::string detail;
  EXPECT_EQ(probeDocker(peer.path(), 2s, detail), ProbeOutcome::kUnsupported);

  version = "1.99999999999999999999";  // would overflow an int
  auto overflowing = connectDocker(peer.path(), 2s);
  ASSERT_FALSE(overflowing.ok());
  EXPECT_EQ(overflowing.code(), ErrorCode::kProtocol);

  version = "99.99";
  auto future = connectDocker(peer.path(), 2s);
  ASSERT_TRUE(future.ok()) << future.message();
  EXPECT_EQ((*future)->info().apiVersion, "1." + std::to_string(kMaxApiMinor));
}

TEST(DockerHostileTest, PingRenegotiatesWithTheDaemonThatAnswersNow) {
  std::mutex mu;
  std::string version = "1.43";
  ScriptedPeer peer(dockerWith(
      [&] {
        std::lock_guard lock(mu);
        return version;
      },
      [](const std::string&) { return PeerReply{answer(200, "application/json", "[]")}; }));
  auto runtime = connectTo(peer);
  ASSERT_NE(runtime, nullptr);
  EXPECT_EQ(runtime->info().apiVersion, "1.43");
  ASSERT_TRUE(runtime->listContainers({}).ok());
  EXPECT_EQ(peer.count("GET /v1.43/containers/json"), 1u);

  // An older daemon now answers at the same path.
  {
    std::lock_guard lock(mu);
    version = "1.41";
  }
  ASSERT_TRUE(runtime->ping().ok());
  EXPECT_EQ(runtime->info().apiVersion, "1.41");
  ASSERT_TRUE(runtime->listContainers({}).ok());
  EXPECT_EQ(peer.count("GET /v1.41/containers/json"), 1u);

  {
    std::lock_guard lock(mu);
    version = "1.12";
  }
  auto refused = runtime->ping();
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.code(), ErrorCode::kConflict);
}

TEST(DockerHostileTest, ACallAnOlderDaemonRefusesAsTooNewRenegotiatesAndIsRetried) {
  std::mutex mu;
  std::string version = "1.43";
  auto current = [&] {
    std::lock_guard lock(mu);
    return version;
  };
  ScriptedPeer peer(dockerWith(current, [&](const std::string& line) {
    if (current() == "1.41" && line.find("/v1.43/") != std::string::npos) {
      return PeerReply{
          answer(400, "application/json",
                 R"({"message":"client version 1.43 is too new. Maximum supported API version is 1.41"})")};
    }
    return PeerReply{answer(200, "application/json", "[]")};
  }));
  auto runtime = connectTo(peer);
  ASSERT_NE(runtime, nullptr);
  {
    std::lock_guard lock(mu);
    version = "1.41";
  }
  auto listed = runtime->listContainers({});
  ASSERT_TRUE(listed.ok()) << listed.message();
  EXPECT_EQ(runtime->info().apiVersion, "1.41");
  EXPECT_EQ(peer.count("GET /v1.43/containers/json"), 1u);
  EXPECT_EQ(peer.count("GET /v1.41/containers/json"), 1u);
}

// ---- Answers of the wrong kind ------------------------------------------------------------------

TEST(DockerHostileTest, AnswersThatAreNotJsonOrNotTheRightShapeAreProtocolErrors) {
  std::string listing;
  std::string inspect;
  std::string inspectType = "application/json";
  ScriptedPeer peer(dockerWith([] { return std::string("1.41"); },
                               [&](const std::string& line) {
                                 if (line.find("/containers/json") != std::string::npos)
                                   return PeerReply{answer(200, "application/json", listing)};
                                 if (line.find("/images/") != std::string::npos)
                                   return PeerReply{answer(200, "application/json", "[1, 2]")};
                                 return PeerReply{answer(200, inspectType, inspect)};
                               }));
  auto runtime = connectTo(peer);
  ASSERT_NE(runtime, nullptr);

  listing = R"({"Id": 42})";
  auto notArray = runtime->listContainers({});
  ASSERT_FALSE(notArray.ok());
  EXPECT_EQ(notArray.code(), ErrorCode::kProtocol);
  EXPECT_NE(notArray.message().find("is not a JSON array"), std::string::npos) << notArray.message();

  listing = std::string(100000, '[') + std::string(100000, ']');
  auto deep = runtime->listContainers({});
  ASSERT_FALSE(deep.ok());
  EXPECT_NE(deep.message().find("nested deeper than 64 levels"), std::string::npos) << deep.message();

  listing = "[";
  for (size_t i = 0; i <= kMaxListedContainers; ++i)
    listing += (i ? "," : "") + std::string(R"({"Id":"c)") + std::to_string(i) + "\"}";
  listing += "]";
  auto many = runtime->listContainers({});
  ASSERT_FALSE(many.ok());
  EXPECT_NE(many.message().find("listed 257 containers"), std::string::npos) << many.message();
  EXPECT_EQ(peer.count("/containers/c"), 0u) << "no inspect was made";

  inspect = R"({"Id": 7, "State": 3, "Config": [1, 2]})";
  auto numbers = runtime->inspectContainer("sensor");
  ASSERT_FALSE(numbers.ok());
  EXPECT_EQ(numbers.code(), ErrorCode::kProtocol);

  inspectType = "text/html";
  inspect = "<html><body>Welcome to nginx!</body></html>";
  auto html = runtime->inspectContainer("sensor");
  ASSERT_FALSE(html.ok());
  EXPECT_EQ(html.message(), "docker: " + peer.path() +
                                " answered GET /containers/sensor/json with text/html, not JSON (is it the Docker "
                                "daemon that listens there?)");

  auto image = runtime->imagePresent("qualys/qcs-sensor:latest");
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.code(), ErrorCode::kProtocol);
}

// ---- The event watcher --------------------------------------------------------------------------

// Polls cond every 10ms until it holds or the deadline passes (then a last try).
bool eventually(const std::function<bool()>& cond, std::chrono::milliseconds deadline) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return cond();
}

class EventRecorder {
 public:
  RuntimeEventFn callback() {
    return [this](const RuntimeEvent& event) {
      std::lock_guard lock(mu_);
      events_.push_back(event);
    };
  }
  // The first event satisfying pred within the deadline.
  std::optional<RuntimeEvent> waitFor(const std::function<bool(const RuntimeEvent&)>& pred,
                                      std::chrono::milliseconds deadline) {
    std::optional<RuntimeEvent> found;
    eventually(
        [&] {
          std::lock_guard lock(mu_);
          for (const auto& event : events_) {
            if (pred(event)) {
              found = event;
              return true;
            }
          }
          return false;
        },
        deadline);
    return found;
  }
  size_t count(RuntimeEvent::Kind kind) const {
    std::lock_guard lock(mu_);
    return size_t(std::count_if(events_.begin(), events_.end(), [&](const auto& e) { return e.kind == kind; }));
  }

 private:
  mutable std::mutex mu_;
  std::vector<RuntimeEvent> events_;
};

const std::string kStreamHead =
    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";

std::string chunk(const std::string& data) {
  char size[32];
  std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  return size + data + "\r\n";
}

TEST(DockerHostileTest, AnEventStreamOfGarbageIsDroppedAndRedialledWithBackoff) {
  ScriptedPeer peer(
      dockerWith([] { return std::string("1.41"); },
                 [](const std::string& line) {
                   if (line.find("/events") == std::string::npos)
                     return PeerReply{answer(404, "application/json", "{}")};
                   const std::string good = R"({"Type":"container","Action":"start","Actor":{"ID":"abc"}})";
                   return PeerReply{kStreamHead + chunk(good + "\n") + chunk("%%garbage%% not json\n"), true};
                 }));
  auto runtime = connectTo(peer);
  ASSERT_NE(runtime, nullptr);
  EventRecorder events;
  auto watcher = runtime->watchEvents({}, events.callback());
  auto lost = events.waitFor([](const RuntimeEvent& e) { return e.kind == RuntimeEvent::Kind::kStreamLost; }, 5s);
  ASSERT_TRUE(lost.has_value());
  EXPECT_EQ(lost->detail, "docker: the event stream from " + peer.path() +
                              " sent a line that is not a JSON event: %%garbage%% not json");
  // The good line before it still counted.
  EXPECT_TRUE(events.waitFor([](const RuntimeEvent& e) { return e.containerId == "abc"; }, 1s).has_value());
  // Re-dialled, but with a growing backoff: 250ms, 500ms, 1s... not every 250ms.
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(eventually([&] { return events.count(RuntimeEvent::Kind::kStreamConnected) >= 4; }, 10s));
  const auto tookForFour = std::chrono::steady_clock::now() - start;
  EXPECT_GE(tookForFour, 1500ms) << "3 re-dials after the first took only "
                                 << std::chrono::duration_cast<std::chrono::milliseconds>(tookForFour).count() << "ms";
}

TEST(DockerHostileTest, AnEndlessEventLineEndsTheStreamAtTheLimit) {
  ScriptedPeer peer(dockerWith([] { return std::string("1.41"); },
                               [](const std::string& line) {
                                 if (line.find("/events") == std::string::npos)
                                   return PeerReply{answer(404, "application/json", "{}")};
                                 std::string stream =
                                     kStreamHead + chunk(R"({"Type":"container","Action":"die","Actor":{"ID":")");
                                 const std::string piece(65536, 'a');
                                 for (size_t sent = 0; sent <= 2 * kMaxStreamLineBytes; sent += piece.size())
                                   stream += chunk(piece);
                                 return PeerReply{stream, true};
                               }));
  auto runtime = connectTo(peer);
  ASSERT_NE(runtime, nullptr);
  EventRecorder events;
  auto watcher = runtime->watchEvents({}, events.callback());
  auto lost = events.waitFor([](const RuntimeEvent& e) { return e.kind == RuntimeEvent::Kind::kStreamLost; }, 5s);
  ASSERT_TRUE(lost.has_value());
  EXPECT_EQ(lost->detail, "docker: the event stream from " + peer.path() +
                              " sent a line longer than 1 MiB (the most the agent holds of one)");
}

TEST(DockerHostileTest, TheWatcherFollowsARenegotiatedApiVersionAtOnce) {
  std::mutex mu;
  std::string version = "1.43";
  ScriptedPeer peer(dockerWith(
      [&] {
        std::lock_guard lock(mu);
        return version;
      },
      [](const std::string& line) {
        // An older daemon refuses the newer version, as dockerd does.
        if (line.find("/v1.43/") != std::string::npos) {
          return PeerReply{
              answer(400, "application/json",
                     R"({"message":"client version 1.43 is too new. Maximum supported API version is 1.41"})")};
        }
        if (line.find("/events") != std::string::npos) return PeerReply{kStreamHead, true};
        return PeerReply{answer(404, "application/json", "{}")};
      }));
  auto runtime = connectTo(peer);
  ASSERT_NE(runtime, nullptr);
  EventRecorder events;
  auto watcher = runtime->watchEvents({}, events.callback());
  // Refused a few times: the backoff grows towards seconds.
  ASSERT_TRUE(eventually([&] { return peer.count("/v1.43/events") >= 4; }, 10s));
  EXPECT_EQ(events.count(RuntimeEvent::Kind::kStreamConnected), 0u);
  {
    std::lock_guard lock(mu);
    version = "1.41";
  }
  const auto renegotiated = std::chrono::steady_clock::now();
  ASSERT_TRUE(runtime->ping().ok());
  auto connected =
      events.waitFor([](const RuntimeEvent& e) { return e.kind == RuntimeEvent::Kind::kStreamConnected; }, 10s);
  ASSERT_TRUE(connected.has_value());
  EXPECT_LT(std::chrono::steady_clock::now() - renegotiated, 1s) << "the watcher waited out its backoff";
  EXPECT_GE(peer.count("GET /v1.41/events"), 1u);
}

TEST(DockerConnectVersionTest, TheDaemonVersionComesFromThePingWithoutAskingVersion) {
  ScriptedPeer peer(dockerWith([] { return std::string("1.41"); },
                               [](const std::string&) { return PeerReply{answer(200, "application/json", "[]")}; }));
  auto runtime = connectTo(peer);
  ASSERT_NE(runtime, nullptr);
  EXPECT_EQ(runtime->info().version, "20.10.24");
  EXPECT_EQ(peer.count("/version "), 0u) << "the ping's Server header already names the version";
}

TEST(DockerConnectVersionTest, VersionIsAskedWhenThePingDoesNotNameTheDaemon) {
  ScriptedPeer peer(
      dockerWith([] { return std::string("1.41"); },
                 [](const std::string&) { return PeerReply{answer(404, "application/json", R"({"message":"no"})")}; },
                 /*server=*/"", /*version=*/"24.0.7"));
  auto runtime = connectTo(peer);
  ASSERT_NE(runtime, nullptr);
  EXPECT_EQ(runtime->info().version, "24.0.7");
  EXPECT_EQ(peer.count("/version "), 1u);
}

}  // namespace
}  // namespace qcs::runtime::docker

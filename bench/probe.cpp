// qcs_bench_probe: the stopwatch of bench/run.sh. It subscribes to the runtime's event stream
// first, then starts an action (a command), and stops the clock when the runtime reports that the
// named container's task started. The same observer times the agent and every alternative, so the
// comparison is fair, and both ends come from CLOCK_MONOTONIC in one process.
//
//   qcs_bench_probe docker --socket SOCK --name NAME [--timeout-ms MS] [--detach] [--log FILE]
//                   -- CMD ARGS...
//   qcs_bench_probe containerd [--ctr CTR] --address SOCK --namespace NS --id ID [--timeout-ms MS]
//                   [--detach] [--log FILE] -- CMD ARGS...
//   qcs_bench_probe free-port
//
// On success it prints "<elapsed milliseconds> <pid of CMD>" and exits 0. --detach starts CMD in
// its own session and leaves it running (the agent); --log sends CMD's stdout and stderr to FILE;
// otherwise CMD must exit 0 (docker run -d,
// curl, kill), though the clock stops at the start event whether or not CMD has exited yet.
// Exit 1 with a message on stderr when the event does not come within the timeout (default 60 s)
// or CMD fails first.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void reset(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

struct Options {
  std::string socket;
  std::string name;
  std::string ctr = "/usr/bin/ctr";
  std::string nameSpace;
  int timeoutMs = 60000;
  bool detach = false;
  std::string logPath;  // CMD's stdout and stderr; /dev/null for stdout (ours is the report) if empty
  std::vector<std::string> command;
};

[[noreturn]] void fail(const std::string& message) {
  std::fprintf(stderr, "qcs_bench_probe: %s\n", message.c_str());
  std::exit(1);
}

std::string urlEncode(const std::string& text) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) != 0 || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// Spawns argv; with detach the child gets its own session, so it outlives this process without a
// terminal's signals. Its stdout never shares ours: that carries the report.
pid_t spawn(const std::vector<std::string>& argv, bool detach, const std::string& logPath = {}) {
  pid_t pid = ::fork();
  if (pid < 0) fail(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    if (detach) ::setsid();
    int out = ::open(logPath.empty() ? "/dev/null" : logPath.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (out >= 0) {
      ::dup2(out, STDOUT_FILENO);
      if (!logPath.empty()) ::dup2(out, STDERR_FILENO);
      ::close(out);
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    std::fprintf(stderr, "qcs_bench_probe: exec %s: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  return pid;
}

// Waits for `matches(buffer)` on fd while watching the child: fails early when a non-detached
// child exits non-zero. Returns the time the matching bytes arrived.
template <typename Match>
Clock::time_point awaitEvent(int fd, std::string& buffer, Match matches, pid_t child, bool detach,
                             Clock::time_point deadline, const std::string& what) {
  bool childDone = child <= 0;
  for (;;) {
    if (matches(buffer)) return Clock::now();
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) fail("no " + what + " within the timeout");
    pollfd pfd{fd, POLLIN, 0};
    // Short poll slices only to notice a failed command; the event itself wakes poll at once.
    int ready = ::poll(&pfd, 1, static_cast<int>(std::min<long long>(left, 20)));
    if (ready > 0) {
      char chunk[8192];
      ssize_t n = ::read(fd, chunk, sizeof chunk);
      if (n > 0) {
        Clock::time_point arrived = Clock::now();
        buffer.append(chunk, static_cast<size_t>(n));
        if (matches(buffer)) return arrived;
        continue;
      }
      if (n == 0) fail("the event stream closed before the " + what);
      if (errno != EINTR && errno != EAGAIN) fail(std::string("reading events: ") + std::strerror(errno));
    }
    if (!childDone && !detach) {
      int status = 0;
      if (::waitpid(child, &status, WNOHANG) == child) {
        childDone = true;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
          fail("the command failed (status " + std::to_string(status) + ") before the " + what);
        }
      }
    }
  }
}

void finishChild(pid_t child, bool detach, Clock::time_point deadline) {
  if (detach) return;
  int status = 0;
  while (Clock::now() < deadline) {
    pid_t r = ::waitpid(child, &status, WNOHANG);
    if (r == child) {
      if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fail("the command exited with status " + std::to_string(status));
      }
      return;
    }
    if (r < 0) return;  // reaped in awaitEvent already
    ::usleep(2000);
  }
  fail("the command did not exit within the timeout");
}

void report(Clock::time_point start, Clock::time_point end, pid_t child) {
  double ms = std::chrono::duration<double, std::milli>(end - start).count();
  std::printf("%.3f %d\n", ms, static_cast<int>(child));
}

int dockerProbe(const Options& o) {
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (o.socket.size() >= sizeof addr.sun_path) fail("socket path too long: " + o.socket);
  std::strcpy(addr.sun_path, o.socket.c_str());
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    fail("connect " + o.socket + ": " + std::strerror(errno) + " (is the bench dockerd running?)");
  }
  const std::string filters = R"({"type":["container"],"event":["start"],"container":[")" + o.name + R"("]})";
  const std::string request =
      "GET /events?filters=" + urlEncode(filters) + " HTTP/1.1\r\nHost: docker\r\nAccept: */*\r\n\r\n";
  if (::write(fd.get(), request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    fail("writing the /events request");
  }
  const auto deadline = Clock::now() + std::chrono::milliseconds(o.timeoutMs);
  std::string buffer;
  // dockerd flushes the headers once the subscription is in place: from then on no start is missed.
  awaitEvent(
      fd.get(), buffer, [](const std::string& b) { return b.find("\r\n\r\n") != std::string::npos; }, 0, true, deadline,
      "/events response headers");
  const size_t headerEnd = buffer.find("\r\n\r\n");
  if (buffer.compare(0, 12, "HTTP/1.1 200") != 0) fail("/events answered: " + buffer.substr(0, headerEnd));
  buffer.erase(0, headerEnd + 4);

  const auto start = Clock::now();
  pid_t child = spawn(o.command, o.detach, o.logPath);
  const auto end = awaitEvent(
      fd.get(), buffer, [](const std::string& b) { return b.find(R"("Action":"start")") != std::string::npos; }, child,
      o.detach, deadline, "start event for " + o.name);
  finishChild(child, o.detach, deadline);
  report(start, end, child);
  return 0;
}

int containerdProbe(const Options& o) {
  int pipeFds[2];
  if (::pipe2(pipeFds, O_CLOEXEC) != 0) fail("pipe");
  pid_t events = ::fork();
  if (events < 0) fail("fork");
  if (events == 0) {
    ::dup2(pipeFds[1], STDOUT_FILENO);
    ::execl(o.ctr.c_str(), o.ctr.c_str(), "--address", o.socket.c_str(), "events", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(pipeFds[1]);
  Fd fd(pipeFds[0]);
  const auto deadline = Clock::now() + std::chrono::milliseconds(o.timeoutMs);

  // `ctr events` says nothing when its subscription is live, so send ourselves a marker event (a
  // namespace label) and start the clock only once it came back through the stream.
  std::random_device random;
  const std::string token = "qcs-bench-sync-" + std::to_string(random()) + std::to_string(random());
  std::string buffer;
  auto syncDeadline = std::min(deadline, Clock::now() + std::chrono::seconds(10));
  for (bool synced = false; !synced;) {
    pid_t label =
        spawn({o.ctr, "--address", o.socket, "namespaces", "label", o.nameSpace, "qcs-bench-sync=" + token}, false);
    int status = 0;
    ::waitpid(label, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) fail("ctr namespaces label " + o.nameSpace + " failed");
    auto slice = std::min(syncDeadline, Clock::now() + std::chrono::milliseconds(500));
    pollfd pfd{fd.get(), POLLIN, 0};
    while (!synced && Clock::now() < slice) {
      int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(slice - Clock::now()).count());
      if (::poll(&pfd, 1, std::max(left, 1)) > 0) {
        char chunk[8192];
        ssize_t n = ::read(fd.get(), chunk, sizeof chunk);
        if (n <= 0) fail("ctr events ended before it subscribed");
        buffer.append(chunk, static_cast<size_t>(n));
        synced = buffer.find(token) != std::string::npos;
      }
    }
    if (!synced && Clock::now() >= syncDeadline) fail("ctr events did not show the marker event within 10 s");
  }
  buffer.clear();

  const std::string wanted = "\"container_id\":\"" + o.name + "\"";
  const auto start = Clock::now();
  pid_t child = spawn(o.command, o.detach, o.logPath);
  auto matches = [&](const std::string& b) {
    // One line per event: "<time> <namespace> /tasks/start {"container_id":"...","pid":N}".
    for (size_t at = 0; (at = b.find("/tasks/start", at)) != std::string::npos; ++at) {
      size_t lineEnd = b.find('\n', at);
      if (lineEnd == std::string::npos) return false;
      if (b.substr(at, lineEnd - at).find(wanted) != std::string::npos) return true;
    }
    return false;
  };
  const auto end = awaitEvent(fd.get(), buffer, matches, child, o.detach, deadline, "/tasks/start for " + o.name);
  finishChild(child, o.detach, deadline);
  ::kill(events, SIGTERM);
  ::waitpid(events, nullptr, 0);
  report(start, end, child);
  return 0;
}

int freePort() {
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof addr;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &length) != 0) {
    fail(std::string("binding 127.0.0.1:0: ") + std::strerror(errno));
  }
  std::printf("%d\n", ntohs(addr.sin_port));
  return 0;
}

Options parse(int argc, char** argv) {
  Options o;
  int i = 2;
  auto value = [&](const char* flag) -> std::string {
    if (i + 1 >= argc) fail(std::string(flag) + " needs a value");
    return argv[++i];
  };
  for (; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") {
      for (++i; i < argc; ++i) o.command.emplace_back(argv[i]);
      break;
    }
    if (arg == "--socket" || arg == "--address") {
      o.socket = value(arg.c_str());
    } else if (arg == "--name" || arg == "--id") {
      o.name = value(arg.c_str());
    } else if (arg == "--ctr") {
      o.ctr = value("--ctr");
    } else if (arg == "--namespace") {
      o.nameSpace = value("--namespace");
    } else if (arg == "--timeout-ms") {
      o.timeoutMs = std::atoi(value("--timeout-ms").c_str());
    } else if (arg == "--log") {
      o.logPath = value("--log");
    } else if (arg == "--detach") {
      o.detach = true;
    } else {
      fail("unknown argument " + arg);
    }
  }
  if (o.socket.empty() || o.name.empty() || o.command.empty()) fail("needs --socket/--address, --name/--id and -- CMD");
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "free-port") return freePort();
  if (mode == "docker") return dockerProbe(parse(argc, argv));
  if (mode == "containerd") {
    Options o = parse(argc, argv);
    if (o.nameSpace.empty()) fail("containerd needs --namespace");
    return containerdProbe(o);
  }
  std::fprintf(stderr,
               "usage: qcs_bench_probe docker --socket SOCK --name NAME [--timeout-ms MS] [--detach] -- CMD...\n"
               "       qcs_bench_probe containerd [--ctr CTR] --address SOCK --namespace NS --id ID "
               "[--timeout-ms MS] [--detach] -- CMD...\n"
               "       qcs_bench_probe free-port\n");
  return 2;
}

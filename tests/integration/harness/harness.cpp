#include "harness/harness.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/encoding.h"
#include "runtime/containerd/containerd_client.h"
#include "runtime/docker/http_unix.h"

extern char** environ;

namespace qcs::testing {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

constexpr const char* kDockerd = "/usr/sbin/dockerd";
constexpr const char* kDockerCli = "/usr/bin/docker";
constexpr const char* kBusybox = "/bin/busybox";
constexpr const char* kRegistryBinary = "/usr/bin/docker-registry";
constexpr const char* kHtpasswd = "/usr/bin/htpasswd";
constexpr const char* kTar = "/bin/tar";

// The applets sensor.sh uses (see tests/fixtures/standin/sensor.sh).
constexpr const char* kStandinApplets[] = {"sh", "tr", "cut", "sort", "sleep", "dd", "kill", "cat", "echo"};

std::string makeTempDir(const std::string& prefix) {
  std::string pattern = "/tmp/" + prefix + "XXXXXX";
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (::mkdtemp(buffer.data()) == nullptr) {
    std::cerr << "harness: mkdtemp " << pattern << ": " << std::strerror(errno) << "\n";
    std::abort();
  }
  return std::string(buffer.data());
}

std::string shellQuote(const std::string& text) {
  std::string out = "'";
  for (char c : text) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

std::string tail(const std::string& text, size_t maxChars) {
  return text.size() <= maxChars ? text : "..." + text.substr(text.size() - maxChars);
}

void ignoreSigpipeOnce() {
  static std::once_flag once;
  std::call_once(once, [] { ::signal(SIGPIPE, SIG_IGN); });
}

// In a forked child: sigaction is async-signal-safe, signal() is not guaranteed to be.
void restoreDefaultSigpipe() {
  struct sigaction action {};
  action.sa_handler = SIG_DFL;
  ::sigaction(SIGPIPE, &action, nullptr);
}

// argv as the char* array exec wants; the strings must outlive it.
std::vector<char*> cArgv(const std::vector<std::string>& argv) {
  std::vector<char*> out;
  out.reserve(argv.size() + 1);
  for (const auto& arg : argv) out.push_back(const_cast<char*>(arg.c_str()));
  out.push_back(nullptr);
  return out;
}

// Whether pid is alive and not a zombie.
bool processAlive(pid_t pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  std::string stat = readFile("/proc/" + std::to_string(pid) + "/stat");
  const auto close = stat.rfind(')');
  if (close == std::string::npos || close + 2 >= stat.size()) return false;
  return stat[close + 2] != 'Z';
}

std::string processCmdline(pid_t pid) {
  std::string cmdline = readFile("/proc/" + std::to_string(pid) + "/cmdline");
  std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
  return cmdline;
}

// Processes whose command line names dir: dockerd's containerd and shims started for our daemon.
std::vector<pid_t> processesMentioning(const std::string& dir) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    const pid_t pid = std::stoi(name);
    if (pid == ::getpid()) continue;
    if (processCmdline(pid).find(dir + "/") != std::string::npos && processAlive(pid)) out.push_back(pid);
  }
  return out;
}

// Undoes /proc/self/mountinfo's octal escapes ("\040" for a space).
std::string unescapeMountPath(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 3 < text.size()) {
      const std::string octal = text.substr(i + 1, 3);
      if (std::all_of(octal.begin(), octal.end(), [](char c) { return c >= '0' && c <= '7'; })) {
        out.push_back(char(std::stoi(octal, nullptr, 8)));
        i += 3;
        continue;
      }
    }
    out.push_back(text[i]);
  }
  return out;
}

bool dockerPingAnswers(const std::string& socketPath) {
  runtime::docker::UnixHttpClient client(socketPath, "docker", milliseconds(1000));
  runtime::docker::HttpRequest request;
  request.target = "/_ping";
  request.totalTimeout = milliseconds(2000);
  auto response = client.send(request);
  return response.ok() && response->status == 200;
}

size_t discardBody(char*, size_t size, size_t count, void*) { return size * count; }

// The HTTP status of GET url over TCP, without any proxy; 0 when nothing answered.
long httpStatus(const std::string& url) {
  runtime::docker::ensureCurlInitialized();
  runtime::docker::CurlEasyPtr easy(curl_easy_init());
  if (!easy) return 0;
  curl_easy_setopt(easy.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(easy.get(), CURLOPT_PROXY, "");
  curl_easy_setopt(easy.get(), CURLOPT_NOPROXY, "*");
  curl_easy_setopt(easy.get(), CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(easy.get(), CURLOPT_TIMEOUT_MS, 2000L);
  curl_easy_setopt(easy.get(), CURLOPT_WRITEFUNCTION, &discardBody);
  if (curl_easy_perform(easy.get()) != CURLE_OK) return 0;
  long status = 0;
  curl_easy_getinfo(easy.get(), CURLINFO_RESPONSE_CODE, &status);
  return status;
}

int freeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  ::close(fd);
  return port;
}

}  // namespace

// ---- Small utilities ----------------------------------------------------------------------------

bool waitFor(const std::function<bool()>& cond, milliseconds deadline) {
  const auto end = steady_clock::now() + deadline;
  while (steady_clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(milliseconds(50));
  }
  return cond();
}

TempDir::TempDir(const std::string& prefix) : path_(makeTempDir(prefix)) {}
TempDir::~TempDir() { removeTree(path_); }
std::string TempDir::file(const std::string& name) const { return path_ + "/" + name; }

void removeTree(const std::string& dir) {
  if (dir.empty() || dir == "/") return;
  std::vector<std::string> mounts;
  std::istringstream mountinfo(readFile("/proc/self/mountinfo"));
  for (std::string line; std::getline(mountinfo, line);) {
    std::istringstream fields(line);
    std::string id, parent, devices, root, mountPoint;
    fields >> id >> parent >> devices >> root >> mountPoint;
    mountPoint = unescapeMountPath(mountPoint);
    if (mountPoint == dir || mountPoint.rfind(dir + "/", 0) == 0) mounts.push_back(mountPoint);
  }
  std::sort(mounts.begin(), mounts.end(), [](const auto& a, const auto& b) { return a.size() > b.size(); });
  for (const auto& mountPoint : mounts) {
    if (::umount2(mountPoint.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
      std::cerr << "harness: umount " << mountPoint << ": " << std::strerror(errno) << "\n";
    }
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  if (ec) std::cerr << "harness: removing " << dir << ": " << ec.message() << "\n";
}

bool writeFile(const std::string& path, const std::string& content, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return false;
  size_t written = 0;
  while (written < content.size()) {
    const ssize_t n = ::write(fd, content.data() + written, content.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      return false;
    }
    written += size_t(n);
  }
  ::fchmod(fd, mode);
  return ::close(fd) == 0;
}

std::vector<std::string> nonEmptyLines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!trim(line).empty()) out.emplace_back(trim(line));
  }
  return out;
}

// rmdir, never a recursive removal: it removes a directory only when it is empty, so a group that
// still holds a process or another containerd's container (a namespace name shared by tests
// running in parallel) stays.
void removeNamespaceCgroups(const std::map<std::string, std::vector<std::string>>& containersByNamespace) {
  const auto isName = [](const std::string& name) {
    return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos;
  };
  std::vector<std::string> hierarchies = {"/sys/fs/cgroup"};
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/sys/fs/cgroup", ec)) {
    if (entry.is_directory(ec) && !entry.is_symlink(ec)) hierarchies.push_back(entry.path().string());
  }
  for (const auto& [nameSpace, containers] : containersByNamespace) {
    if (!isName(nameSpace)) continue;
    for (const auto& hierarchy : hierarchies) {
      const std::string group = hierarchy + "/" + nameSpace;
      for (const auto& id : containers) {
        if (isName(id)) ::rmdir((group + "/" + id).c_str());
      }
      ::rmdir(group.c_str());
    }
  }
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

Result<CommandResult> runCommand(const std::vector<std::string>& argv, const std::string& stdinText,
                                 milliseconds timeout) {
  if (argv.empty() || argv[0].empty() || argv[0][0] != '/') {
    return makeError(ErrorCode::kInvalidArgument, "runCommand needs an absolute program path");
  }
  ignoreSigpipeOnce();
  int inPipe[2], outPipe[2], errPipe[2];
  if (::pipe2(inPipe, O_CLOEXEC) != 0) return makeError(ErrorCode::kInternal, "pipe failed");
  if (::pipe2(outPipe, O_CLOEXEC) != 0) return makeError(ErrorCode::kInternal, "pipe failed");
  if (::pipe2(errPipe, O_CLOEXEC) != 0) return makeError(ErrorCode::kInternal, "pipe failed");
  std::vector<char*> args = cArgv(argv);
  const pid_t pid = ::fork();
  if (pid < 0) return makeError(ErrorCode::kInternal, std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    restoreDefaultSigpipe();
    ::dup2(inPipe[0], 0);
    ::dup2(outPipe[1], 1);
    ::dup2(errPipe[1], 2);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(inPipe[0]);
  ::close(outPipe[1]);
  ::close(errPipe[1]);
  ::fcntl(inPipe[1], F_SETFL, O_NONBLOCK);

  CommandResult result;
  size_t fed = 0;
  int inFd = inPipe[1];
  if (stdinText.empty()) {
    ::close(inFd);
    inFd = -1;
  }
  int outFd = outPipe[0];
  int errFd = errPipe[0];
  const auto end = steady_clock::now() + timeout;
  bool timedOut = false;
  while (outFd >= 0 || errFd >= 0) {
    const auto left = std::chrono::duration_cast<milliseconds>(end - steady_clock::now()).count();
    if (left <= 0) {
      timedOut = true;
      ::kill(pid, SIGKILL);
      break;
    }
    pollfd fds[3] = {{outFd, POLLIN, 0}, {errFd, POLLIN, 0}, {inFd, POLLOUT, 0}};
    if (::poll(fds, 3, int(std::min<long long>(left, 1000))) < 0 && errno != EINTR) break;
    char buffer[65536];
    for (int i = 0; i < 2; ++i) {
      int& fd = i == 0 ? outFd : errFd;
      if (fd < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      const ssize_t n = ::read(fd, buffer, sizeof(buffer));
      if (n > 0) {
        (i == 0 ? result.out : result.err).append(buffer, size_t(n));
      } else if (n == 0 || errno != EINTR) {
        ::close(fd);
        fd = -1;
      }
    }
    if (inFd >= 0 && (fds[2].revents & (POLLOUT | POLLERR | POLLHUP)) != 0) {
      const ssize_t n = ::write(inFd, stdinText.data() + fed, stdinText.size() - fed);
      if (n > 0) fed += size_t(n);
      if (n < 0 && errno != EAGAIN && errno != EINTR) fed = stdinText.size();
      if (fed >= stdinText.size()) {
        ::close(inFd);
        inFd = -1;
      }
    }
  }
  for (int fd : {inFd, outFd, errFd}) {
    if (fd >= 0) ::close(fd);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.exitCode = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (timedOut) {
    return makeError(ErrorCode::kTimeout, argv[0] + " did not finish within " + std::to_string(timeout.count()) +
                                              "ms; stderr: " + tail(result.err, 2000));
  }
  return result;
}

// ---- Process ------------------------------------------------------------------------------------

Result<std::unique_ptr<Process>> Process::spawn(const std::vector<std::string>& argv,
                                                const std::map<std::string, std::string>& extraEnv,
                                                const std::string& logPath, int parentDeathSignal) {
  if (argv.empty() || argv[0].empty() || argv[0][0] != '/') {
    return makeError(ErrorCode::kInvalidArgument, "Process::spawn needs an absolute program path");
  }
  ignoreSigpipeOnce();
  // Everything the child needs is prepared before fork: between fork and exec only
  // async-signal-safe calls are allowed (other threads may hold locks).
  std::vector<std::string> envStrings;
  for (char** entry = environ; *entry != nullptr; ++entry) {
    std::string text(*entry);
    const std::string name = text.substr(0, text.find('='));
    if (extraEnv.count(name) == 0) envStrings.push_back(std::move(text));
  }
  for (const auto& [name, value] : extraEnv) envStrings.push_back(std::string(name).append("=").append(value));
  std::vector<char*> envp = cArgv(envStrings);
  std::vector<char*> args = cArgv(argv);
  const int logFd = ::open(logPath.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (logFd < 0) return makeError(ErrorCode::kInternal, "opening " + logPath + ": " + std::strerror(errno));
  const int nullFd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(logFd);
    if (nullFd >= 0) ::close(nullFd);
    return makeError(ErrorCode::kInternal, std::string("fork: ") + std::strerror(errno));
  }
  if (pid == 0) {
    if (parentDeathSignal != 0) {
      ::prctl(PR_SET_PDEATHSIG, parentDeathSignal);
      if (::getppid() != parent) ::_exit(127);
    }
    ::setpgid(0, 0);
    restoreDefaultSigpipe();
    if (nullFd >= 0) ::dup2(nullFd, 0);
    ::dup2(logFd, 1);
    ::dup2(logFd, 2);
    ::execve(args[0], args.data(), envp.data());
    ::_exit(127);
  }
  ::close(logFd);
  if (nullFd >= 0) ::close(nullFd);
  return std::unique_ptr<Process>(new Process(pid, logPath));
}

Process::~Process() {
  if (!exitCode_ && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    reap(true);
  }
}

bool Process::reap(bool block) {
  if (exitCode_) return true;
  int status = 0;
  pid_t got = 0;
  do {
    got = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
  } while (got < 0 && errno == EINTR);
  if (got == pid_) {
    exitCode_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return true;
  }
  if (got < 0) {
    exitCode_ = -1;  // not our child any more; nothing to wait for
    return true;
  }
  return false;
}

bool Process::running() { return !reap(false); }

bool Process::kill(int sig) {
  if (exitCode_) return false;
  return ::kill(pid_, sig) == 0;
}

std::optional<int> Process::wait(milliseconds timeout) {
  const auto end = steady_clock::now() + timeout;
  while (!reap(false)) {
    if (steady_clock::now() >= end) return std::nullopt;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return exitCode_;
}

std::string Process::output() const { return readFile(logPath_); }

// ---- Dockerd ------------------------------------------------------------------------------------

std::unique_ptr<Dockerd> Dockerd::start(std::map<std::string, std::string> env) {
  std::unique_ptr<Dockerd> dockerd(new Dockerd());
  dockerd->dir_ = makeTempDir("qcs-it-");
  dockerd->socketPath_ = dockerd->dir_ + "/docker.sock";
  dockerd->env_ = std::move(env);
  fs::create_directories(dockerd->dir_ + "/data");
  fs::create_directories(dockerd->dir_ + "/exec");
  fs::create_directories(dockerd->dir_ + "/cli");
  // Its own (empty) daemon.json, so the machine's /etc/docker/daemon.json never applies.
  writeFile(dockerd->dir_ + "/daemon.json", "{}\n");
  if (!dockerd->launch()) {
    std::cerr << "harness: dockerd did not answer /_ping within 60s; its log:\n" << tail(dockerd->log(), 8000) << "\n";
    return nullptr;
  }
  return dockerd;
}

bool Dockerd::launch() {
  const std::vector<std::string> argv = {
      kDockerd,
      "--config-file=" + dir_ + "/daemon.json",
      "-H",
      "unix://" + socketPath_,
      "--data-root=" + dir_ + "/data",
      "--exec-root=" + dir_ + "/exec",
      "--pidfile=" + dir_ + "/docker.pid",
      "--bridge=none",
      "--iptables=false",
      "--ip-masq=false",
      "--shutdown-timeout=5",
  };
  // SIGTERM on the test's death lets dockerd take its containerd and containers down with it.
  auto spawned = Process::spawn(argv, env_, dir_ + "/dockerd.log", SIGTERM);
  if (!spawned.ok()) {
    std::cerr << "harness: " << spawned.message() << "\n";
    return false;
  }
  process_ = std::move(spawned).value();
  const bool answered =
      waitFor([this] { return !process_->running() || dockerPingAnswers(socketPath_); }, std::chrono::seconds(60));
  if (!answered || !process_->running()) {
    stop();
    return false;
  }
  return true;
}

Dockerd::~Dockerd() {
  if (process_) {
    auto ids = cli("ps -aq");
    if (ids.ok() && !trim(*ids).empty()) {
      std::string all;
      std::istringstream lines(*ids);
      for (std::string id; std::getline(lines, id);) all += " " + id;
      auto removed = cli("rm -f -v" + all);
      if (!removed.ok()) std::cerr << "harness: removing containers: " << removed.message() << "\n";
    }
  }
  stop();
  // Anything our daemon started that outlived it (a shim whose container was not removed).
  for (pid_t pid : processesMentioning(dir_)) {
    std::cerr << "harness: killing leftover " << pid << ": " << processCmdline(pid) << "\n";
    ::kill(pid, SIGKILL);
  }
  removeTree(dir_);
}

void Dockerd::stop() {
  if (!process_) return;
  const std::string containerdPidText = readFile(dir_ + "/exec/containerd/containerd.pid");
  pid_t containerdPid = 0;
  if (!trim(containerdPidText).empty()) containerdPid = pid_t(std::atoi(containerdPidText.c_str()));
  process_->kill(SIGTERM);
  if (!process_->wait(std::chrono::seconds(60))) {
    std::cerr << "harness: dockerd ignored SIGTERM for 60s; killing it\n";
    process_->kill(SIGKILL);
    process_->wait(std::chrono::seconds(10));
  }
  process_.reset();
  if (containerdPid > 0 && processCmdline(containerdPid).find(dir_ + "/") != std::string::npos) {
    if (!waitFor([containerdPid] { return !processAlive(containerdPid); }, std::chrono::seconds(20))) {
      std::cerr << "harness: dockerd's containerd " << containerdPid << " outlived it; killing it\n";
      ::kill(containerdPid, SIGKILL);
      waitFor([containerdPid] { return !processAlive(containerdPid); }, std::chrono::seconds(5));
    }
  }
}

bool Dockerd::restart() {
  stop();
  if (!launch()) {
    std::cerr << "harness: dockerd did not come back; its log:\n" << tail(log(), 8000) << "\n";
    return false;
  }
  return true;
}

std::string Dockerd::log() const { return readFile(dir_ + "/dockerd.log"); }

Result<std::string> Dockerd::cli(const std::string& args, const std::string& stdinText) {
  const std::string command =
      std::string(kDockerCli) + " -H unix://" + socketPath_ + " --config " + dir_ + "/cli " + args;
  auto result = runCommand({"/bin/sh", "-c", command}, stdinText, std::chrono::minutes(5));
  if (!result.ok()) return withContext(result.error(), "docker " + args);
  if (result->exitCode != 0) {
    return makeError(ErrorCode::kInternal, "docker " + args + " exited " + std::to_string(result->exitCode) + ": " +
                                               tail(result->err, 4000) + tail(result->out, 2000));
  }
  return std::string(trim(result->out));
}

Status Dockerd::killContainer(const std::string& name) {
  const std::string format = shellQuote("{{.State.Running}} {{.State.StartedAt}}");
  auto before = cli("inspect --format " + format + " " + shellQuote(name));
  auto killed = cli("kill " + shellQuote(name));
  if (killed.ok()) return okStatus();
  const bool ended = waitFor(
      [&] {
        auto now = cli("inspect --format " + format + " " + shellQuote(name));
        return now.ok() && (now->rfind("false", 0) == 0 || (before.ok() && *now != *before));
      },
      std::chrono::seconds(10));
  return ended ? okStatus() : killed.error();
}

// ---- Containerd ---------------------------------------------------------------------------------

namespace {

constexpr const char* kContainerd = "/usr/bin/containerd";
constexpr const char* kCtr = "/usr/bin/ctr";

bool containerdVersionAnswers(const std::string& socketPath) {
  runtime::containerd::ContainerdClient client(socketPath, "default", milliseconds(1000));
  return client.version().ok();
}

}  // namespace

std::unique_ptr<Containerd> Containerd::start() {
  std::unique_ptr<Containerd> containerd(new Containerd());
  containerd->dir_ = makeTempDir("qcs-it-");
  containerd->socketPath_ = containerd->dir_ + "/c.sock";
  fs::create_directories(containerd->dir_ + "/root");
  fs::create_directories(containerd->dir_ + "/state");
  // Its own config, so the machine's /etc/containerd/config.toml never applies. overlayfs is the
  // snapshotter (ctr's default); its data lands under root/. The shims' ttrpc socket sits beside the
  // gRPC one; debug and metrics listeners are off.
  std::string configText = R"(version = 2
root = "@DIR@/root"
state = "@DIR@/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "@DIR@/c.sock"

[ttrpc]
  address = "@DIR@/c.ttrpc.sock"

[debug]
  address = ""

[metrics]
  address = ""
)";
  for (auto at = configText.find("@DIR@"); at != std::string::npos; at = configText.find("@DIR@", at)) {
    configText.replace(at, 5, containerd->dir_);
  }
  writeFile(containerd->dir_ + "/config.toml", configText);
  if (!containerd->launch()) {
    std::cerr << "harness: containerd did not answer Version within 60s; its log:\n"
              << tail(containerd->log(), 8000) << "\n";
    return nullptr;
  }
  return containerd;
}

bool Containerd::launch() {
  const std::vector<std::string> argv = {kContainerd, "--config", dir_ + "/config.toml"};
  // SIGTERM on the test's death lets containerd shut down; the destructor handles its shims.
  auto spawned = Process::spawn(argv, {}, dir_ + "/containerd.log", SIGTERM);
  if (!spawned.ok()) {
    std::cerr << "harness: " << spawned.message() << "\n";
    return false;
  }
  process_ = std::move(spawned).value();
  const bool answered = waitFor([this] { return !process_->running() || containerdVersionAnswers(socketPath_); },
                                std::chrono::seconds(60));
  if (!answered || !process_->running()) {
    stop();
    return false;
  }
  return true;
}

Containerd::~Containerd() {
  // This daemon's namespaces and the containers it had: the cgroup names its tasks used.
  std::map<std::string, std::vector<std::string>> containersByNamespace;
  if (process_) {
    auto namespaces = cli("namespaces ls -q");
    for (const auto& ns : namespaces.ok() ? nonEmptyLines(*namespaces) : std::vector<std::string>{}) {
      const std::string n = "-n " + shellQuote(ns) + " ";
      auto tasks = cli(n + "tasks ls -q");
      for (const auto& id : tasks.ok() ? nonEmptyLines(*tasks) : std::vector<std::string>{}) {
        auto killed = cli(n + "tasks delete -f " + shellQuote(id));
        if (!killed.ok()) std::cerr << "harness: deleting task " << id << ": " << killed.message() << "\n";
      }
      auto& known = containersByNamespace[ns];
      auto containers = cli(n + "containers ls -q");
      for (const auto& id : containers.ok() ? nonEmptyLines(*containers) : std::vector<std::string>{}) {
        known.push_back(id);
        auto removed = cli(n + "containers delete " + shellQuote(id));
        if (!removed.ok()) std::cerr << "harness: deleting container " << id << ": " << removed.message() << "\n";
      }
    }
  }
  stop();
  // Shims whose tasks outlived the daemon (their command line names our socket).
  for (pid_t pid : processesMentioning(dir_)) {
    std::cerr << "harness: killing leftover " << pid << ": " << processCmdline(pid) << "\n";
    ::kill(pid, SIGKILL);
  }
  removeNamespaceCgroups(containersByNamespace);
  removeTree(dir_);
}

void Containerd::stop() {
  if (!process_) return;
  process_->kill(SIGTERM);
  if (!process_->wait(std::chrono::seconds(30))) {
    std::cerr << "harness: containerd ignored SIGTERM for 30s; killing it\n";
    process_->kill(SIGKILL);
    process_->wait(std::chrono::seconds(10));
  }
  process_.reset();
}

bool Containerd::restart() {
  stop();
  if (!launch()) {
    std::cerr << "harness: containerd did not come back; its log:\n" << tail(log(), 8000) << "\n";
    return false;
  }
  return true;
}

std::string Containerd::log() const { return readFile(dir_ + "/containerd.log"); }

Result<std::string> Containerd::cli(const std::string& args, const std::string& stdinText) {
  const std::string command = std::string(kCtr) + " --address " + socketPath_ + " " + args;
  auto result = runCommand({"/bin/sh", "-c", command}, stdinText, std::chrono::minutes(5));
  if (!result.ok()) return withContext(result.error(), "ctr " + args);
  if (result->exitCode != 0) {
    return makeError(ErrorCode::kInternal, "ctr " + args + " exited " + std::to_string(result->exitCode) + ": " +
                                               tail(result->err, 4000) + tail(result->out, 2000));
  }
  return std::string(trim(result->out));
}

// ---- The stand-in image -------------------------------------------------------------------------

namespace {

// The stand-in's root filesystem (busybox, its applets and /sensor), tarred into tarball.
Status buildStandinRootfsTar(const std::string& rootfs, const std::string& tarball) {
  std::error_code ec;
  fs::create_directories(rootfs + "/bin", ec);
  fs::create_directories(rootfs + "/standin", ec);
  fs::create_directories(rootfs + "/tmp", ec);
  fs::copy_file(kBusybox, rootfs + "/bin/busybox", fs::copy_options::overwrite_existing, ec);
  if (ec) return makeError(ErrorCode::kInternal, std::string("copying ") + kBusybox + ": " + ec.message());
  for (const auto& applet : kStandinApplets) {
    fs::create_symlink("busybox", rootfs + "/bin/" + std::string(applet), ec);
    if (ec) return makeError(ErrorCode::kInternal, std::string("symlinking ") + applet + ": " + ec.message());
  }
  const std::string script = readFile(std::string(QCS_STANDIN_DIR) + "/sensor.sh");
  if (script.empty()) return makeError(ErrorCode::kNotFound, std::string(QCS_STANDIN_DIR) + "/sensor.sh is missing");
  if (!writeFile(rootfs + "/sensor", script, 0755)) return makeError(ErrorCode::kInternal, "writing /sensor");
  auto tarred = runCommand({kTar, "-C", rootfs, "-cf", tarball, "."});
  if (!tarred.ok()) return tarred.error();
  if (tarred->exitCode != 0) return makeError(ErrorCode::kInternal, "tar failed: " + tarred->err);
  return okStatus();
}

}  // namespace

Result<std::string> buildStandinImage(Dockerd& dockerd, const std::string& tag) {
  TempDir work;
  const std::string tarball = work.file("rootfs.tar");
  if (auto built = buildStandinRootfsTar(work.file("rootfs"), tarball); !built.ok()) return built.error();
  auto imported = dockerd.cli("import --change " + shellQuote("ENTRYPOINT [\"/sensor\"]") + " --change " +
                              shellQuote("ENV PATH=/bin") + " " + tarball + " " + shellQuote(tag));
  if (!imported.ok()) return imported.error();
  return tag;
}

namespace {

// The OCI name of this machine's architecture (the stand-in is this machine's busybox).
std::string ociArchitecture() {
#if defined(__x86_64__)
  return "amd64";
#elif defined(__aarch64__)
  return "arm64";
#else
#error "add this architecture's OCI name"
#endif
}

struct Blob {
  std::string digest;  // "sha256:<hex>"
  size_t size = 0;
};

// Stores content as blobs/sha256/<hex> of an OCI image layout.
Result<Blob> writeBlob(const std::string& layout, const std::string& content) {
  Blob blob{"sha256:" + sha256Hex(content), content.size()};
  const std::string path = layout + "/blobs/sha256/" + blob.digest.substr(7);
  if (!writeFile(path, content)) return makeError(ErrorCode::kInternal, "writing " + path);
  return blob;
}

nlohmann::json descriptor(const std::string& mediaType, const Blob& blob) {
  return {{"mediaType", mediaType}, {"digest", blob.digest}, {"size", blob.size}};
}

}  // namespace

Result<std::string> importStandinImage(Containerd& containerd, const std::string& ref, const std::string& nameSpace) {
  TempDir work;
  const std::string rootfsTar = work.file("layer.tar");
  if (auto built = buildStandinRootfsTar(work.file("rootfs"), rootfsTar); !built.ok()) return built.error();
  const std::string layout = work.file("layout");
  std::error_code ec;
  fs::create_directories(layout + "/blobs/sha256", ec);
  if (ec) return makeError(ErrorCode::kInternal, "creating " + layout + ": " + ec.message());

  // The layer: the rootfs tar, gzipped; the config names the uncompressed tar's digest (diff_id).
  const std::string layerTar = readFile(rootfsTar);
  auto gzipped = runCommand({"/bin/gzip", "-n", "-c", rootfsTar});
  if (!gzipped.ok()) return gzipped.error();
  if (gzipped->exitCode != 0) return makeError(ErrorCode::kInternal, "gzip failed: " + gzipped->err);
  auto layer = writeBlob(layout, gzipped->out);
  if (!layer.ok()) return layer.error();

  const nlohmann::json config = {
      {"architecture", ociArchitecture()},
      {"os", "linux"},
      {"config", {{"Entrypoint", {"/sensor"}}, {"Env", {"PATH=/bin"}}}},
      {"rootfs", {{"type", "layers"}, {"diff_ids", {"sha256:" + sha256Hex(layerTar)}}}},
  };
  auto configBlob = writeBlob(layout, config.dump());
  if (!configBlob.ok()) return configBlob.error();

  const nlohmann::json manifest = {
      {"schemaVersion", 2},
      {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
      {"config", descriptor("application/vnd.oci.image.config.v1+json", *configBlob)},
      {"layers", {descriptor("application/vnd.oci.image.layer.v1.tar+gzip", *layer)}},
  };
  auto manifestBlob = writeBlob(layout, manifest.dump());
  if (!manifestBlob.ok()) return manifestBlob.error();

  nlohmann::json entry = descriptor("application/vnd.oci.image.manifest.v1+json", *manifestBlob);
  entry["platform"] = {{"architecture", ociArchitecture()}, {"os", "linux"}};
  // containerd takes io.containerd.image.name as the image's full name; ctr's importer would
  // otherwise rewrite the OCI ref name with an "import-<date>" prefix.
  entry["annotations"] = {{"io.containerd.image.name", ref}, {"org.opencontainers.image.ref.name", ref}};
  const nlohmann::json index = {
      {"schemaVersion", 2},
      {"mediaType", "application/vnd.oci.image.index.v1+json"},
      {"manifests", {entry}},
  };
  if (!writeFile(layout + "/index.json", index.dump()) ||
      !writeFile(layout + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})")) {
    return makeError(ErrorCode::kInternal, "writing the OCI layout's index");
  }
  const std::string archive = work.file("standin-oci.tar");
  auto tarred = runCommand({kTar, "-C", layout, "-cf", archive, "oci-layout", "index.json", "blobs"});
  if (!tarred.ok()) return tarred.error();
  if (tarred->exitCode != 0) return makeError(ErrorCode::kInternal, "tar failed: " + tarred->err);

  auto imported = containerd.cli("-n " + shellQuote(nameSpace) + " images import " + archive);
  if (!imported.ok()) return imported.error();
  auto listed = containerd.cli("-n " + shellQuote(nameSpace) + " images ls -q");
  if (!listed.ok()) return listed.error();
  if (listed->find(ref) == std::string::npos) {
    return makeError(ErrorCode::kNotFound, "ctr images import did not create " + ref + "; images: " + *listed);
  }
  return ref;
}

// ---- Registry -----------------------------------------------------------------------------------

std::unique_ptr<Registry> Registry::start(const std::string& user, const std::string& password) {
  std::unique_ptr<Registry> registry(new Registry());
  registry->dir_ = makeTempDir("qcs-it-");
  registry->user_ = user;
  registry->password_ = password;
  const bool open = user.empty();
  if (!open) {
    auto hashed = runCommand({kHtpasswd, "-Bbn", user, password});
    if (!hashed.ok() || hashed->exitCode != 0) {
      std::cerr << "harness: htpasswd failed: " << (hashed.ok() ? hashed->err : hashed.message()) << "\n";
      return nullptr;
    }
    writeFile(registry->dir_ + "/htpasswd", hashed->out, 0600);
  }
  const std::string auth = open ? std::string()
                                : "auth:\n"
                                  "  htpasswd:\n"
                                  "    realm: qcs-test\n"
                                  "    path: " +
                                      registry->dir_ + "/htpasswd\n";
  // The port is free when we look; a race with another process taking it is retried once.
  for (int attempt = 0; attempt < 2; ++attempt) {
    registry->port_ = freeLoopbackPort();
    const std::string config =
        "version: 0.1\n"
        "log:\n"
        "  level: info\n"
        "  accesslog:\n"
        "    disabled: true\n"
        "storage:\n"
        "  filesystem:\n"
        "    rootdirectory: " +
        registry->dir_ +
        "/data\n"
        "  delete:\n"
        "    enabled: true\n"
        "http:\n"
        "  addr: 127.0.0.1:" +
        std::to_string(registry->port_) +
        "\n"
        "  secret: qcs-integration-test\n" +
        auth;
    writeFile(registry->dir_ + "/config.yml", config);
    auto spawned = Process::spawn({kRegistryBinary, "serve", registry->dir_ + "/config.yml"}, {},
                                  registry->dir_ + "/registry.log");
    if (!spawned.ok()) {
      std::cerr << "harness: " << spawned.message() << "\n";
      return nullptr;
    }
    registry->process_ = std::move(spawned).value();
    const std::string url = "http://" + registry->address() + "/v2/";
    Process* process = registry->process_.get();
    const long ready = open ? 200 : 401;
    const bool up = waitFor([&] { return !process->running() || httpStatus(url) == ready; }, std::chrono::seconds(30));
    if (up && process->running()) return registry;
    registry->process_.reset();
  }
  std::cerr << "harness: the registry did not answer; its log:\n" << tail(registry->log(), 8000) << "\n";
  return nullptr;
}

Registry::~Registry() {
  if (process_) {
    process_->kill(SIGTERM);
    if (!process_->wait(std::chrono::seconds(10))) process_->kill(SIGKILL);
    process_.reset();
  }
  removeTree(dir_);
}

std::string Registry::address() const { return "127.0.0.1:" + std::to_string(port_); }

std::string Registry::log() const { return readFile(dir_ + "/registry.log"); }

Status Registry::push(Dockerd& dockerd, const std::string& localRef, const std::string& remoteRepoTag) {
  const std::string target =
      remoteRepoTag.rfind(address() + "/", 0) == 0 ? remoteRepoTag : address() + "/" + remoteRepoTag;
  if (!user_.empty()) {
    auto login = dockerd.cli("login -u " + shellQuote(user_) + " --password-stdin " + address(), password_);
    if (!login.ok()) return login.error();
  }
  auto tagged = dockerd.cli("tag " + shellQuote(localRef) + " " + shellQuote(target));
  if (!tagged.ok()) return tagged.error();
  auto pushed = dockerd.cli("push " + shellQuote(target));
  if (!user_.empty()) {
    auto loggedOut = dockerd.cli("logout " + address());
    if (pushed.ok() && !loggedOut.ok()) return loggedOut.error();
  }
  if (!pushed.ok()) return pushed.error();
  return okStatus();
}

}  // namespace qcs::testing

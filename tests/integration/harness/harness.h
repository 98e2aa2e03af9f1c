// The integration-test harness: real daemons (dockerd, a registry) and processes, started in
// private directories under /tmp/qcs-it-XXXXXX and torn down by their destructors.
//
// Rules it keeps for the tests: nothing listens outside 127.0.0.1, nothing touches the machine's own
// dockerd or /var/lib/docker, and nothing waits a fixed time: use waitFor() with a deadline.
// Spawned daemons get a parent-death signal, so a crashed test does not leave them running; that
// signal follows the thread that started them, so start daemons from the test's main thread.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <csignal>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace qcs::testing {

// Polls cond every ~50ms until it holds (true) or the deadline passes (false, after a last try).
bool waitFor(const std::function<bool()>& cond, std::chrono::milliseconds deadline);

// A directory made with mkdtemp under /tmp, removed recursively (mounts under it unmounted first).
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "qcs-it-");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path() + "/" + name
  std::string file(const std::string& name) const;

 private:
  std::string path_;
};

// Unmounts everything mounted at or under dir (deepest first), then removes dir recursively.
void removeTree(const std::string& dir);

// Writes (replaces) a file; false on failure.
bool writeFile(const std::string& path, const std::string& content, mode_t mode = 0644);
// The file's content, or "" when it cannot be read.
std::string readFile(const std::string& path);
// The lines of text that are not blank, each trimmed (what `ctr ... ls -q` prints, for example).
std::vector<std::string> nonEmptyLines(const std::string& text);
// runc creates /<namespace>/<container> in every cgroup hierarchy (v2: /sys/fs/cgroup; v1:
// /sys/fs/cgroup/<controller>) and removes only the container's level when its task goes, so every
// test namespace would leave an empty /<namespace> behind on the machine. Removes those of the
// given namespaces and containers where they are empty; never anything else.
void removeNamespaceCgroups(const std::map<std::string, std::vector<std::string>>& containersByNamespace);

struct CommandResult {
  int exitCode = -1;  // 128+signal when killed
  std::string out;
  std::string err;
};
// Runs argv (no shell), feeding stdinText, capturing stdout and stderr; killed after timeout.
Result<CommandResult> runCommand(const std::vector<std::string>& argv, const std::string& stdinText = {},
                                 std::chrono::milliseconds timeout = std::chrono::minutes(2));

// A child process whose stdout and stderr go to a log file.
class Process {
 public:
  // extraEnv is added to (and overrides) this process's environment. parentDeathSignal is sent to
  // the child when the thread that spawned it dies (0 = none).
  static Result<std::unique_ptr<Process>> spawn(const std::vector<std::string>& argv,
                                                const std::map<std::string, std::string>& extraEnv,
                                                const std::string& logPath, int parentDeathSignal = SIGKILL);
  ~Process();  // SIGKILL and reap if still running
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  bool running();
  bool kill(int sig);
  // The exit code (128+signal when killed by one) once it exited within timeout; nullopt otherwise.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  // The log so far.
  std::string output() const;
  const std::string& logPath() const { return logPath_; }

 private:
  Process(pid_t pid, std::string logPath) : pid_(pid), logPath_(std::move(logPath)) {}
  bool reap(bool block);

  pid_t pid_;
  std::string logPath_;
  std::optional<int> exitCode_;
};

// A private dockerd: its own socket, data root, exec root and pidfile under /tmp/qcs-it-XXXXXX,
// no bridge, no iptables. Containers it runs may only use --network host or none.
class Dockerd {
 public:
  // Starts it and waits (up to 60s) until /_ping answers; nullptr (with the log on stderr) if not.
  // `env` is added to dockerd's environment (e.g. AWS credentials for the awslogs log driver).
  static std::unique_ptr<Dockerd> start(std::map<std::string, std::string> env = {});
  ~Dockerd();  // force-removes containers, stops dockerd and its containerd, unmounts, removes dirs
  Dockerd(const Dockerd&) = delete;
  Dockerd& operator=(const Dockerd&) = delete;

  const std::string& socketPath() const { return socketPath_; }
  const std::string& dir() const { return dir_; }
  bool running() const { return process_ != nullptr; }

  // Runs `/usr/bin/docker -H unix://<sock> --config <dir>/cli <args>` through /bin/sh (so args may
  // quote); the trimmed stdout, or an error carrying the exit code, stderr and stdout.
  Result<std::string> cli(const std::string& args, const std::string& stdinText = {});
  // `docker kill` of a running container. dockerd may answer an error for a kill that landed ("did
  // not receive an exit event" on a loaded machine), so a failed kill still succeeds when the
  // container stops or starts anew within 10 s; otherwise the error names dockerd's answer.
  Status killContainer(const std::string& name);

  // SIGTERM, wait for dockerd to exit and for its containerd to go.
  void stop();
  // stop(), then start again on the same directories and wait for /_ping. False if it did not answer.
  bool restart();
  // The dockerd log so far.
  std::string log() const;

 private:
  Dockerd() = default;
  bool launch();

  std::string dir_;
  std::string socketPath_;
  std::map<std::string, std::string> env_;
  std::unique_ptr<Process> process_;
};

// Builds the stand-in sensor image (tests/fixtures/standin) from busybox-static with `docker import`;
// returns the tag.
Result<std::string> buildStandinImage(Dockerd& dockerd, const std::string& tag = "qcs-standin:test");

// A private containerd: its own config file, root, state and socket under /tmp/qcs-it-XXXXXX; the
// CRI plugin, debug and metrics listeners off; overlayfs snapshotter. Containers it runs may only
// use the host network (`ctr run --net-host`). Its shims put their sockets under
// /run/containerd/s/ (containerd 1.6 always does), named by a hash of this daemon's socket path.
class Containerd {
 public:
  // Starts it and waits (up to 60s) until the Version service answers; nullptr (with the log on
  // stderr) if not.
  static std::unique_ptr<Containerd> start();
  // Kills and deletes its tasks and containers, stops it, kills leftover shims, rmdirs the (empty)
  // cgroups runc made for its namespaces and containers, unmounts, removes dirs.
  ~Containerd();
  Containerd(const Containerd&) = delete;
  Containerd& operator=(const Containerd&) = delete;

  const std::string& socketPath() const { return socketPath_; }
  const std::string& dir() const { return dir_; }
  bool running() const { return process_ != nullptr; }

  // Runs `/usr/bin/ctr --address <sock> <args>` through /bin/sh (so args may quote); the trimmed
  // stdout, or an error carrying the exit code, stderr and stdout.
  Result<std::string> cli(const std::string& args, const std::string& stdinText = {});

  // SIGTERM and wait for containerd to exit (its shims and their tasks keep running).
  void stop();
  // stop(), then start again on the same directories and wait for Version. False if it did not answer.
  bool restart();
  // The containerd log so far.
  std::string log() const;

 private:
  Containerd() = default;
  bool launch();

  std::string dir_;
  std::string socketPath_;
  std::unique_ptr<Process> process_;
};

// Imports the stand-in sensor image (the same rootfs as buildStandinImage) into containerd's
// namespace `nameSpace` under the name ref, from an OCI image layout archive the harness writes
// (one gzip layer, a config with Entrypoint ["/sensor"], a manifest and an index); returns ref.
Result<std::string> importStandinImage(Containerd& containerd, const std::string& ref,
                                       const std::string& nameSpace = "qualys");

// A private registry v2 (Debian's docker-registry) on 127.0.0.1:<free port> with htpasswd auth,
// or open to anonymous pulls and pushes when user is empty.
class Registry {
 public:
  // Starts it and waits until /v2/ answers (401, or 200 when open); nullptr (with the log on stderr) if not.
  static std::unique_ptr<Registry> start(const std::string& user, const std::string& password);
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // "127.0.0.1:PORT"
  std::string address() const;
  const std::string& user() const { return user_; }
  const std::string& password() const { return password_; }

  // Logs in with the dockerd's CLI, tags localRef as <address>/<remoteRepoTag> (remoteRepoTag may
  // already start with the address) and pushes it, then logs out again.
  Status push(Dockerd& dockerd, const std::string& localRef, const std::string& remoteRepoTag);
  std::string log() const;

 private:
  Registry() = default;

  std::string dir_;
  int port_ = 0;
  std::string user_;
  std::string password_;
  std::unique_ptr<Process> process_;
};

}  // namespace qcs::testing

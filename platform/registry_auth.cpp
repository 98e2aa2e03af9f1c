#include "platform/registry_auth.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "common/encoding.h"
#include "runtime/json_fields.h"

extern char** environ;

namespace qcs::platform {

namespace {

using runtime::RegistryCredentials;
using CredentialsResult = Result<std::optional<RegistryCredentials>>;

class NoAuth final : public RegistryAuthProvider {
 public:
  CredentialsResult credentialsFor(const ImageReference&) override { return std::optional<RegistryCredentials>{}; }
  std::string kind() const override { return "none"; }
};

class BasicAuth final : public RegistryAuthProvider {
 public:
  BasicAuth(std::string username, std::unique_ptr<SecretSource> password)
      : username_(std::move(username)), password_(std::move(password)) {}

  CredentialsResult credentialsFor(const ImageReference& image) override {
    auto password = password_->read();
    if (!password) return withContext(password.error(), "registry_auth.password (" + password_->describe() + ")");
    RegistryCredentials creds;
    creds.username = username_;
    creds.password = std::move(password.value());
    creds.serverAddress = image.registry;
    return std::optional<RegistryCredentials>(std::move(creds));
  }
  std::string kind() const override { return "basic"; }

 private:
  std::string username_;
  std::unique_ptr<SecretSource> password_;
};

// "https://index.docker.io/v1/" -> "index.docker.io"; "127.0.0.1:5000" stays.
std::string normalizeServer(std::string server) {
  for (const char* scheme : {"https://", "http://"}) {
    if (server.rfind(scheme, 0) == 0) server = server.substr(std::strlen(scheme));
  }
  if (auto slash = server.find('/'); slash != std::string::npos) server = server.substr(0, slash);
  return server;
}

bool serverMatches(const std::string& key, const std::string& registry) {
  std::string host = normalizeServer(key);
  if (registry == "docker.io") {
    return host == "docker.io" || host == "index.docker.io" || host == "registry-1.docker.io";
  }
  return host == registry;
}

// The server name credential helpers and Docker use for a registry.
std::string helperServerName(const std::string& registry) {
  return registry == "docker.io" ? "https://index.docker.io/v1/" : registry;
}

class DockerConfigAuth final : public RegistryAuthProvider {
 public:
  explicit DockerConfigAuth(std::string path) : path_(std::move(path)) {}

  CredentialsResult credentialsFor(const ImageReference& image) override {
    std::ifstream in(path_);
    if (!in) {
      return makeError(ErrorCode::kNotFound,
                       "registry_auth.docker_config: cannot read " + path_ + ": " + std::strerror(errno));
    }
    nlohmann::json doc = nlohmann::json::parse(in, nullptr, false);
    if (doc.is_discarded() || !doc.is_object()) {
      return makeError(ErrorCode::kInvalidArgument, "registry_auth.docker_config: " + path_ +
                                                        " is not a JSON object (expected Docker's config.json)");
    }
    if (auto helpers = doc.find("credHelpers"); helpers != doc.end() && helpers->is_object()) {
      for (auto it = helpers->begin(); it != helpers->end(); ++it) {
        if (serverMatches(it.key(), image.registry) && it.value().is_string()) {
          return runCredentialHelper(it.value().get<std::string>(), helperServerName(image.registry),
                                     std::chrono::seconds(30));
        }
      }
    }
    if (auto auths = doc.find("auths"); auths != doc.end() && auths->is_object()) {
      for (auto it = auths->begin(); it != auths->end(); ++it) {
        if (!serverMatches(it.key(), image.registry) || !it.value().is_object()) continue;
        auto entry = fromAuthEntry(it.value(), image.registry);
        if (!entry) return entry.error();
        if (entry.value()) return entry;
      }
    }
    if (auto store = doc.find("credsStore"); store != doc.end() && store->is_string()) {
      return runCredentialHelper(store->get<std::string>(), helperServerName(image.registry), std::chrono::seconds(30));
    }
    return std::optional<RegistryCredentials>{};
  }
  std::string kind() const override { return "docker-config"; }

 private:
  CredentialsResult fromAuthEntry(const nlohmann::json& entry, const std::string& registry) {
    RegistryCredentials creds;
    creds.serverAddress = registry;
    creds.identityToken = runtime::stringField(entry, "identitytoken");
    creds.username = runtime::stringField(entry, "username");
    creds.password = runtime::stringField(entry, "password");
    if (std::string auth = runtime::stringField(entry, "auth"); !auth.empty()) {
      auto decoded = base64Decode(auth);
      auto colon = decoded ? decoded->find(':') : std::string::npos;
      if (!decoded || colon == std::string::npos) {
        return makeError(ErrorCode::kInvalidArgument, "registry_auth.docker_config: the \"auth\" entry for " +
                                                          registry + " in " + path_ +
                                                          " is not base64 of user:password");
      }
      creds.username = decoded->substr(0, colon);
      creds.password = decoded->substr(colon + 1);
    }
    if (creds.username.empty() && creds.password.empty() && creds.identityToken.empty()) {
      return std::optional<RegistryCredentials>{};
    }
    return std::optional<RegistryCredentials>(std::move(creds));
  }

  std::string path_;
};

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  void reset() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

}  // namespace

CredentialsResult runCredentialHelper(const std::string& helper, const std::string& server,
                                      std::chrono::milliseconds timeout) {
  const std::string program = "docker-credential-" + helper;
  int inPipe[2];
  int outPipe[2];
  if (::pipe2(inPipe, O_CLOEXEC) != 0)
    return makeError(ErrorCode::kInternal, "pipe: " + std::string(std::strerror(errno)));
  Fd inRead(inPipe[0]), inWrite(inPipe[1]);
  if (::pipe2(outPipe, O_CLOEXEC) != 0)
    return makeError(ErrorCode::kInternal, "pipe: " + std::string(std::strerror(errno)));
  Fd outRead(outPipe[0]), outWrite(outPipe[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, inRead.fd, 0);
  posix_spawn_file_actions_adddup2(&actions, outWrite.fd, 1);
  std::vector<char*> argv{const_cast<char*>(program.c_str()), const_cast<char*>("get"), nullptr};
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, program.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    return makeError(ErrorCode::kNotFound, "credential helper " + program + " cannot be run: " + std::strerror(rc) +
                                               " (install it on the agent's PATH or remove it from the Docker config)");
  }
  inRead.reset();
  outWrite.reset();
  std::string request = server + "\n";
  (void)!::write(inWrite.fd, request.data(), request.size());
  inWrite.reset();

  std::string output;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  bool timedOut = false;
  char buf[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timedOut = true;
      break;
    }
    pollfd p{outRead.fd, POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      timedOut = n == 0;
      break;
    }
    ssize_t got = ::read(outRead.fd, buf, sizeof buf);
    if (got <= 0) break;
    output.append(buf, static_cast<size_t>(got));
    if (output.size() > (1 << 20)) break;
  }
  if (timedOut) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timedOut) {
    return makeError(ErrorCode::kTimeout, "credential helper " + program + " did not answer within " +
                                              std::to_string(timeout.count()) + "ms");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    // Helpers print "credentials not found in native keychain" for unknown servers.
    if (output.find("credentials not found") != std::string::npos) return std::optional<RegistryCredentials>{};
    return makeError(ErrorCode::kUnauthenticated,
                     "credential helper " + program + " failed for " + server + ": " + std::string(trim(output)));
  }
  auto doc = nlohmann::json::parse(output, nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("Secret") || !doc["Secret"].is_string() ||
      (doc.contains("Username") && !doc["Username"].is_string())) {
    return makeError(ErrorCode::kProtocol, "credential helper " + program +
                                               " printed something that is not "
                                               "{\"Username\",\"Secret\"} JSON");
  }
  RegistryCredentials creds;
  creds.serverAddress = server;
  std::string username = doc.value("Username", "");
  std::string secret = doc.value("Secret", "");
  if (username == "<token>") {
    creds.identityToken = secret;
  } else {
    creds.username = username;
    creds.password = secret;
  }
  return std::optional<RegistryCredentials>(std::move(creds));
}

std::unique_ptr<RegistryAuthProvider> makeNoAuth() { return std::make_unique<NoAuth>(); }

std::unique_ptr<RegistryAuthProvider> makeBasicAuth(std::string username, std::unique_ptr<SecretSource> password) {
  return std::make_unique<BasicAuth>(std::move(username), std::move(password));
}

std::unique_ptr<RegistryAuthProvider> makeDockerConfigAuth(std::string path) {
  return std::make_unique<DockerConfigAuth>(std::move(path));
}

}  // namespace qcs::platform

#include "platform/secrets.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/encoding.h"

namespace qcs::platform {

namespace {

class EnvSecret final : public SecretSource {
 public:
  EnvSecret(std::string name, EnvLookup lookup) : name_(std::move(name)), lookup_(std::move(lookup)) {}

  Result<std::string> read() override {
    auto value = lookup_(name_);
    if (!value) {
      return makeError(ErrorCode::kNotFound, "environment variable " + name_ +
                                                 " is not set (set it in the agent's environment, "
                                                 "e.g. the systemd EnvironmentFile or the pod's env from a Secret)");
    }
    std::string trimmed(trim(*value));
    if (trimmed.empty()) {
      return makeError(ErrorCode::kInvalidArgument, "environment variable " + name_ + " is empty");
    }
    return trimmed;
  }
  std::string describe() const override { return "env " + name_; }

 private:
  std::string name_;
  EnvLookup lookup_;
};

bool inKubernetesSecretVolume(const std::string& path) {
  auto slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash == 0 ? 1 : slash);
  struct stat st {};
  std::string dataLink = dir + "/..data";
  return ::lstat(dataLink.c_str(), &st) == 0 && S_ISLNK(st.st_mode);
}

class FileSecret final : public SecretSource {
 public:
  explicit FileSecret(std::string path) : path_(std::move(path)) {}

  Result<std::string> read() override {
    struct stat st {};
    if (::stat(path_.c_str(), &st) != 0) {
      int err = errno;
      if (err == ENOENT) {
        return makeError(ErrorCode::kNotFound, "secret file " + path_ + " does not exist (create it with mode 0600)");
      }
      return makeError(err == EACCES ? ErrorCode::kPermissionDenied : ErrorCode::kInternal,
                       "secret file " + path_ + ": " + std::strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
      return makeError(ErrorCode::kInvalidArgument, "secret file " + path_ + " is not a regular file");
    }
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0 && !inKubernetesSecretVolume(path_)) {
      char mode[8];
      std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
      return makeError(ErrorCode::kPermissionDenied, "secret file " + path_ + " has mode " + mode +
                                                         ": group and others can read it; run `chmod 600 " + path_ +
                                                         "`");
    }
    std::ifstream in(path_, std::ios::binary);
    if (!in) {
      return makeError(ErrorCode::kPermissionDenied,
                       "secret file " + path_ + " cannot be read: " + std::strerror(errno));
    }
    std::ostringstream buffer;
    buffer << in.rdbuf();
    std::string value(trim(buffer.str()));
    if (value.empty()) return makeError(ErrorCode::kInvalidArgument, "secret file " + path_ + " is empty");
    return value;
  }
  std::string describe() const override { return "file " + path_; }

 private:
  std::string path_;
};

}  // namespace

std::unique_ptr<SecretSource> makeEnvSecret(std::string name, EnvLookup lookup) {
  return std::make_unique<EnvSecret>(std::move(name), std::move(lookup));
}

std::unique_ptr<SecretSource> makeFileSecret(std::string path) { return std::make_unique<FileSecret>(std::move(path)); }

bool isUuid(const std::string& text) {
  if (text.size() != 36) return false;
  for (size_t i = 0; i < text.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? text[i] != '-' : !std::isxdigit(static_cast<unsigned char>(text[i]))) return false;
  }
  return true;
}

}  // namespace qcs::platform

#include "agent/check.h"

#include <curl/curl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <iostream>
#include <sstream>

#include "agent/app.h"
#include "agent/components.h"
#include "agent/logging.h"
#include "runtime/containerd/containerd_runtime.h"
#include "runtime/detect.h"
#include "runtime/docker/docker_runtime.h"
#include "runtime/docker/http_unix.h"
#include "runtime/image_reference.h"
#include "runtime/registry/registry_client.h"

namespace qcs::agent {

namespace {

constexpr int64_t kCgroup2Magic = 0x63677270;  // CGROUP2_SUPER_MAGIC
constexpr int64_t kTmpfsMagic = 0x01021994;    // TMPFS_MAGIC: the v1 hierarchy's parent
constexpr std::chrono::milliseconds kRuntimeTimeout{5000};
constexpr std::chrono::milliseconds kHttpsConnectTimeout{5000};
constexpr std::chrono::milliseconds kHttpsTotalTimeout{15000};

CheckLine line(std::string name, CheckResult result, std::string detail, std::string remediation = {}) {
  return CheckLine{std::move(name), result, std::move(detail), std::move(remediation)};
}

CheckLine skipped(std::string name, const std::string& because, const std::string& prerequisite) {
  return line(std::move(name), CheckResult::kSkip, "skipped: " + because, "fix the " + prerequisite + " check first");
}

// Multi-line messages (describeDetection, daemon errors) as one line.
std::string oneLine(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  std::string out;
  for (char c : text) {
    if (c == '\n') {
      out += "; ";
    } else {
      out += c;
    }
  }
  return out;
}

std::string underHostRoot(const std::string& hostRoot, const std::string& path) {
  if (hostRoot.empty() || hostRoot == "/") return path;
  std::string root = hostRoot.back() == '/' ? hostRoot.substr(0, hostRoot.size() - 1) : hostRoot;
  return root + (path.empty() || path.front() != '/' ? "/" : "") + path;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

// The nearest existing directory at or above path: where a directory not created yet will live.
std::string nearestExisting(std::string path) {
  while (!path.empty() && path != "/" && !exists(path)) {
    auto slash = path.find_last_of('/');
    path = slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
  }
  return path.empty() ? "/" : path;
}

// "http://user:secret@proxy:3128" -> "http://proxy:3128": a proxy URL may carry credentials.
std::string withoutUserinfo(const std::string& url) {
  auto scheme = url.find("://");
  auto start = scheme == std::string::npos ? 0 : scheme + 3;
  auto at = url.find('@', start);
  auto slash = url.find('/', start);
  if (at == std::string::npos || (slash != std::string::npos && at > slash)) return url;
  return url.substr(0, start) + url.substr(at + 1);
}

// ---- Runtime ----------------------------------------------------------------------------------------

struct RuntimeFacts {
  runtime::Detection detection;
  std::unique_ptr<runtime::ContainerRuntime> runtime;  // null when detection or connect failed
};

std::string socketOwnerHint(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  std::string group = std::to_string(st.st_gid);
  if (const struct group* g = ::getgrgid(st.st_gid)) group = g->gr_name;
  char mode[8];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
  return "group " + group + ", mode " + mode;
}

std::string socketGroupName(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return "docker";
  if (const struct group* g = ::getgrgid(st.st_gid)) return g->gr_name;
  return std::to_string(st.st_gid);
}

std::vector<CheckLine> runtimeChecks(const Config& config, RuntimeFacts& facts) {
  std::vector<CheckLine> out;
  auto detect = detectOptions(config);
  detect.timeout = kRuntimeTimeout;
  facts.detection = runtime::detectRuntime(detect, runtime::defaultProbe());
  const auto& detection = facts.detection;
  const std::string uid = std::to_string(::geteuid());

  const runtime::Candidate* denied = nullptr;
  for (const auto& c : detection.tried) {
    if (c.outcome == runtime::ProbeOutcome::kPermissionDenied && !denied) denied = &c;
  }

  if (detection.chosen) {
    const auto& c = *detection.chosen;
    out.push_back(line("runtime", CheckResult::kPass,
                       c.kind + " at " + c.path + " (" + c.origin + ")" + (c.detail.empty() ? "" : ": " + c.detail)));
    out.push_back(line("permissions", CheckResult::kPass,
                       "uid " + uid + " can connect to " + c.path + " (" + socketOwnerHint(c.path) + ")"));
  } else {
    std::string remediation;
    if (denied) {
      remediation = "the agent (uid " + uid + ") may not use " + denied->path + "; see the permissions check";
    } else if (!config.runtime.endpoint.empty()) {
      remediation = "runtime.endpoint is " + config.runtime.endpoint +
                    ": point it at the runtime's socket, or leave it empty to detect, and make sure the daemon runs";
    } else {
      remediation =
          "start Docker or containerd (systemctl start docker / containerd), or set runtime.endpoint to its socket; "
          "in a pod, mount the host's / at runtime.host_root (now " +
          config.runtime.hostRoot + ")";
    }
    out.push_back(line("runtime", CheckResult::kFail,
                       "no container runtime answered: " + oneLine(runtime::describeDetection(detection)),
                       remediation));
    if (denied) {
      std::string group = socketGroupName(denied->path);
      out.push_back(
          line("permissions", CheckResult::kFail,
               "uid " + uid + " may not connect to " + denied->path + " (" + socketOwnerHint(denied->path) + ")",
               "add the agent's user to group " + group + " or run the agent as root"));
    } else {
      out.push_back(skipped("permissions", "no runtime socket found", "runtime"));
    }
  }

  if (!detection.chosen) {
    out.push_back(skipped("api_version", "no runtime answered", "runtime"));
    return out;
  }
  const auto& chosen = *detection.chosen;
  if (chosen.kind == "containerd") {
    auto options = containerdOptions(config);
    options.socketPath = chosen.path;
    options.timeout = kRuntimeTimeout;
    auto connected = runtime::containerd::connectContainerd(options);
    if (!connected) {
      out.push_back(line("api_version", CheckResult::kFail,
                         "containerd Version call failed: " + oneLine(connected.message()),
                         "check that containerd at " + chosen.path + " is healthy (systemctl status containerd)"));
      return out;
    }
    facts.runtime = std::move(connected.value());
    out.push_back(line("api_version", CheckResult::kPass,
                       "containerd " + facts.runtime->info().version + " (Version service answered, API v1)"));
    return out;
  }
  auto connected = runtime::docker::connectDocker(chosen.path, kRuntimeTimeout);
  if (!connected) {
    out.push_back(line("api_version", CheckResult::kFail, oneLine(connected.message()),
                       "the agent needs Docker Engine API 1." + std::to_string(runtime::docker::kMinApiMinor) +
                           " or newer (Docker 19.03+): upgrade Docker"));
    return out;
  }
  facts.runtime = std::move(connected.value());
  const auto& info = facts.runtime->info();
  out.push_back(line("api_version", CheckResult::kPass,
                     "docker " + info.version + ", API " + info.apiVersion + " negotiated (the agent needs 1." +
                         std::to_string(runtime::docker::kMinApiMinor) + " to 1." +
                         std::to_string(runtime::docker::kMaxApiMinor) + ")"));
  return out;
}

CheckLine cgroupCheck(const Config& config) {
  const std::string path = underHostRoot(config.runtime.hostRoot, "/sys/fs/cgroup");
  struct statfs fs {};
  if (::statfs(path.c_str(), &fs) != 0) return cgroupCheckLine(CgroupVersion::kUnknown, path);
  bool unified = false;
  struct statfs u {};
  if (::statfs((path + "/unified").c_str(), &u) == 0) unified = static_cast<int64_t>(u.f_type) == kCgroup2Magic;
  return cgroupCheckLine(classifyCgroup(static_cast<int64_t>(fs.f_type), unified), path);
}

// ---- Disk --------------------------------------------------------------------------------------------

CheckLine diskCheck(const std::string& name, const std::string& path, const DiskNeed& need, bool mustExist,
                    const std::string& configKey) {
  std::string measured = path;
  std::string note;
  if (!exists(path)) {
    if (mustExist) {
      return line(name, CheckResult::kFail, path + " does not exist",
                  "create it (mkdir -p " + path + ") or change " + configKey);
    }
    measured = nearestExisting(path);
    note = " (not created yet; measured on " + measured + ")";
  }
  struct statvfs vfs {};
  if (::statvfs(measured.c_str(), &vfs) != 0) {
    return line(name, CheckResult::kFail, "cannot read free space of " + measured + ": " + std::strerror(errno),
                "check that " + measured + " is readable by the agent");
  }
  uint64_t freeBytes = static_cast<uint64_t>(vfs.f_bavail) * static_cast<uint64_t>(vfs.f_frsize);
  CheckLine out = classifyFreeSpace(name, path, freeBytes, need);
  out.detail += note;
  return out;
}

Result<std::string> dockerRootDir(const std::string& socketPath, const std::string& apiVersion) {
  runtime::docker::UnixHttpClient client(socketPath, "docker", kRuntimeTimeout);
  runtime::docker::HttpRequest request;
  request.target = "/v" + apiVersion + "/info";
  request.totalTimeout = kRuntimeTimeout;
  auto response = client.send(request);
  if (!response) return response.error();
  if (response->status != 200) {
    return makeError(ErrorCode::kUnavailable, "docker: GET /info answered HTTP " + std::to_string(response->status));
  }
  auto doc = nlohmann::json::parse(response->body, nullptr, false);
  if (!doc.is_object() || !doc.contains("DockerRootDir") || !doc["DockerRootDir"].is_string()) {
    return makeError(ErrorCode::kProtocol, "docker: /info has no DockerRootDir");
  }
  return doc["DockerRootDir"].get<std::string>();
}

std::vector<CheckLine> diskChecks(const Config& config, const RuntimeFacts& facts) {
  std::vector<CheckLine> out;
  const DiskNeed runtimeNeed{kRuntimeRootFailBelow, kRuntimeRootWarnBelow,
                             "the sensor image and the images it unpacks while scanning"};
  const bool containerd = facts.runtime && facts.runtime->info().kind == "containerd";
  if (!facts.runtime) {
    out.push_back(skipped("disk.runtime_root", "no runtime to ask for its root directory", "runtime"));
  } else if (containerd) {
    out.push_back(diskCheck("disk.runtime_root", underHostRoot(config.runtime.hostRoot, "/var/lib/containerd"),
                            runtimeNeed, false, "runtime.host_root"));
  } else {
    auto root = dockerRootDir(facts.runtime->info().endpoint, facts.runtime->info().apiVersion);
    if (!root) {
      out.push_back(line("disk.runtime_root", CheckResult::kFail, oneLine(root.message()),
                         "check that dockerd at " + facts.runtime->info().endpoint + " answers GET /info"));
    } else {
      out.push_back(diskCheck("disk.runtime_root", underHostRoot(config.runtime.hostRoot, root.value()), runtimeNeed,
                              true, "Docker's data-root"));
    }
  }
  if (!config.sensor.storagePath.empty()) {
    out.push_back(diskCheck("disk.storage_path", underHostRoot(config.runtime.hostRoot, config.sensor.storagePath),
                            DiskNeed{kStorageFailBelow, kStorageWarnBelow, "the sensor's persistent data"}, true,
                            "sensor.storage_path"));
  }
  if (containerd) {
    out.push_back(
        diskCheck("disk.containerd_log_dir", underHostRoot(config.runtime.hostRoot, config.runtime.containerdLogDir),
                  containerdLogDirNeed(config.runtime.containerdLogMaxBytes), false, "runtime.containerd_log_dir"));
  }
  return out;
}

// ---- Secrets -----------------------------------------------------------------------------------------

CheckLine secretsCheck(const Config& config, std::vector<std::string>& secretValues) {
  auto activation =
      makeSecretSource("secrets.activation_id", config.secrets.activationId, config.secrets.refreshInterval);
  if (!activation) {
    return line("secrets", CheckResult::kFail, oneLine(activation.message()), "fix secrets.activation_id");
  }
  auto customer = makeSecretSource("secrets.customer_id", config.secrets.customerId, config.secrets.refreshInterval);
  if (!customer) return line("secrets", CheckResult::kFail, oneLine(customer.message()), "fix secrets.customer_id");
  auto values = readSensorSecrets(*activation.value(), *customer.value());
  if (!values) {
    return line("secrets", CheckResult::kFail, oneLine(values.message()),
                "make the secret readable by the agent and set it to the ID shown in the Qualys portal "
                "(Configuration > Activation Keys)");
  }
  secretValues.push_back(values->activationId);
  secretValues.push_back(values->customerId);
  return line("secrets", CheckResult::kPass,
              "secrets.activation_id (" + activation.value()->describe() + ") and secrets.customer_id (" +
                  customer.value()->describe() + ") are readable and UUID-shaped");
}

// ---- HTTPS reachability ------------------------------------------------------------------------------

struct HttpsAnswer {
  long status = 0;
  std::string date;
};

size_t discardBody(char*, size_t size, size_t count, void*) { return size * count; }

size_t collectDate(char* data, size_t size, size_t count, void* user) {
  std::string header(data, size * count);
  auto* answer = static_cast<HttpsAnswer*>(user);
  // A new status line (after a proxy's CONNECT answer or a 100) starts a new set of headers.
  if (header.rfind("HTTP/", 0) == 0) answer->date.clear();
  auto colon = header.find(':');
  if (colon != std::string::npos) {
    std::string name = header.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    if (name == "date") {
      std::string value = header.substr(colon + 1);
      auto first = value.find_first_not_of(" \t");
      auto last = value.find_last_not_of(" \t\r\n");
      answer->date = first == std::string::npos ? "" : value.substr(first, last - first + 1);
    }
  }
  return size * count;
}

struct HttpsProbe {
  std::string url;
  std::string proxy;   // "" = libcurl's choice from the environment
  std::string caFile;  // "" = the system store
};

// One GET; any HTTP answer counts. Errors are a CheckLine-ready (detail, remediation) pair.
Result<HttpsAnswer> probeHttps(const HttpsProbe& probe, std::string& remediation) {
  runtime::docker::ensureCurlInitialized();
  runtime::docker::CurlEasyPtr easy(curl_easy_init());
  if (!easy) return makeError(ErrorCode::kInternal, "curl_easy_init failed");
  HttpsAnswer answer;
  char errorBuffer[CURL_ERROR_SIZE] = {};
  CURL* h = easy.get();
  curl_easy_setopt(h, CURLOPT_URL, probe.url.c_str());
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(kHttpsConnectTimeout.count()));
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(kHttpsTotalTimeout.count()));
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errorBuffer);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discardBody);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, collectDate);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &answer);
  if (!probe.proxy.empty()) curl_easy_setopt(h, CURLOPT_PROXY, probe.proxy.c_str());
  if (!probe.caFile.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, probe.caFile.c_str());
  CURLcode code = curl_easy_perform(h);
  if (code == CURLE_OK) {
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &answer.status);
    return answer;
  }
  std::string why = errorBuffer[0] ? errorBuffer : curl_easy_strerror(code);
  // curl's message may quote the proxy URL, credentials included.
  if (!probe.proxy.empty()) {
    for (auto pos = why.find(probe.proxy); pos != std::string::npos; pos = why.find(probe.proxy)) {
      why.replace(pos, probe.proxy.size(), withoutUserinfo(probe.proxy));
    }
  }
  const std::string via = probe.proxy.empty() ? "" : " through proxy " + withoutUserinfo(probe.proxy);
  std::string what;
  switch (code) {
    case CURLE_PEER_FAILED_VERIFICATION:
      what = "TLS verification failed";
      remediation = probe.caFile.empty()
                        ? "the server's certificate is not trusted by the system CA store; behind a TLS-inspecting "
                          "proxy, set sensor.proxy.ca_file to the proxy's CA certificate"
                        : "the server's certificate is not signed by " + probe.caFile +
                              "; set sensor.proxy.ca_file to the CA that signed it";
      break;
    case CURLE_SSL_CACERT_BADFILE:
      what = "TLS verification failed: cannot use the CA file";
      remediation = "sensor.proxy.ca_file (" + probe.caFile + ") must be a readable PEM CA certificate";
      break;
    case CURLE_SSL_CONNECT_ERROR:
      what = "TLS handshake failed";
      remediation = "check that the URL speaks HTTPS and that no proxy or firewall interferes with TLS";
      break;
    case CURLE_COULDNT_RESOLVE_PROXY:
      what = "cannot resolve the proxy";
      remediation = "check the proxy host in sensor.proxy or HTTPS_PROXY";
      break;
#if LIBCURL_VERSION_NUM >= 0x074900
    case CURLE_PROXY:
      what = "the proxy refused the connection";
      remediation = "check the proxy's address, credentials and that it allows CONNECT to the POD_URL host";
      break;
#endif
    case CURLE_COULDNT_RESOLVE_HOST:
      what = "cannot resolve the host";
      remediation = "check sensor.pod_url and the node's DNS; behind a proxy, set sensor.proxy.https_proxy";
      break;
    case CURLE_COULDNT_CONNECT:
      what = probe.proxy.empty() ? "cannot connect" : "cannot connect (to the proxy or through it)";
      remediation =
          "check sensor.pod_url, the firewall and the proxy settings (sensor.proxy.https_proxy or "
          "HTTPS_PROXY)";
      break;
    case CURLE_OPERATION_TIMEDOUT:
      what = "timed out";
      remediation = "check the network path to the host and the proxy settings";
      break;
    default: what = "request failed"; remediation = "check sensor.pod_url and the network path to it";
  }
  return makeError(ErrorCode::kUnavailable, what + via + ": " + why);
}

struct PodUrlOutcome {
  CheckLine line;
  std::string date;  // the answer's Date header, if it answered with one
};

PodUrlOutcome podUrlCheck(const Config& config) {
  PodUrlOutcome out;
  const std::string& url = config.sensor.podUrl;
  if (url.rfind("https://", 0) != 0) {
    out.line = line("pod_url", CheckResult::kFail, "sensor.pod_url " + url + " is not an https:// URL",
                    "set sensor.pod_url to https://cmsqagpublic.<platform>/ContainerSensor for your Qualys platform");
    return out;
  }
  HttpsProbe probe{url, podUrlProxy(config), config.sensor.proxy.caFile};
  std::string remediation;
  auto answer = probeHttps(probe, remediation);
  const std::string via = probe.proxy.empty() ? "" : " through proxy " + withoutUserinfo(probe.proxy);
  if (!answer) {
    out.line = line("pod_url", CheckResult::kFail, url + ": " + answer.message(), remediation);
    return out;
  }
  out.date = answer->date;
  out.line = line("pod_url", CheckResult::kPass,
                  url + " answered HTTP " + std::to_string(answer->status) + via + " (TLS verified" +
                      (probe.caFile.empty() ? "" : " against " + probe.caFile) + ")");
  return out;
}

// ---- Image -------------------------------------------------------------------------------------------

struct ImageOutcome {
  CheckLine line;
  std::string registryDate;
};

std::string registryRemediation(const Error& error, const std::string& authKind) {
  switch (error.code) {
    case ErrorCode::kUnauthenticated:
    case ErrorCode::kPermissionDenied:
      return "the registry refused the credentials of registry_auth (kind " + authKind +
             "): check the username and password, or the role/identity allowed to pull";
    case ErrorCode::kNotFound: return "check sensor.image: the repository or tag does not exist in that registry";
    default: return "check that the registry is reachable from this node (DNS, firewall, the Docker/containerd proxy)";
  }
}

ImageOutcome imageCheck(const Config& config, const RuntimeFacts& facts, std::vector<std::string>& secretValues) {
  ImageOutcome out;
  const std::string& image = config.sensor.image;
  if (!facts.runtime) {
    out.line = skipped("image", "no runtime to pull " + image + " into", "runtime");
    return out;
  }
  auto present = facts.runtime->imagePresent(image);
  if (config.sensor.pullPolicy == "never") {
    if (!present) {
      out.line =
          line("image", CheckResult::kFail, "cannot ask the runtime for " + image + ": " + oneLine(present.message()),
               "check the runtime's health");
    } else if (present.value()) {
      out.line = line("image", CheckResult::kPass, image + " is present locally (pull_policy never)");
    } else {
      out.line = line("image", CheckResult::kFail, image + " is not present locally and pull_policy is never",
                      "load the image onto the node (docker load / ctr -n " + config.runtime.containerdNamespace +
                          " images import) or set sensor.pull_policy to if-not-present");
    }
    return out;
  }
  const bool presentLocally = present.ok() && present.value();
  auto ref = runtime::parseImageReference(image);
  if (!ref) {
    out.line = line("image", CheckResult::kFail, oneLine(ref.message()), "fix sensor.image");
    return out;
  }
  // A registry failure is fatal only when the sensor cannot start without a pull.
  auto failOrWarn = [&](const std::string& detail, const std::string& remediation) {
    if (presentLocally && config.sensor.pullPolicy == "if-not-present") {
      return line("image", CheckResult::kWarn, detail + " (present locally, so the sensor can start)", remediation);
    }
    return line("image", CheckResult::kFail, detail, remediation);
  };
  auto auth = makeRegistryAuth(config);
  if (!auth) {
    out.line = failOrWarn("registry_auth: " + oneLine(auth.message()), "fix registry_auth");
    return out;
  }
  auto credentials = auth.value()->credentialsFor(ref.value());
  if (!credentials) {
    out.line = failOrWarn("registry_auth (" + auth.value()->kind() + "): " + oneLine(credentials.message()),
                          "fix registry_auth so that it yields credentials for " + ref->registry);
    return out;
  }
  if (credentials.value()) {
    secretValues.push_back(credentials.value()->password);
    secretValues.push_back(credentials.value()->identityToken);
  }
  runtime::registry::RegistryClientOptions options;
  options.registry = ref->registry;
  options.credentials = credentials.value();
  options.connectTimeout = kHttpsConnectTimeout;
  options.requestTimeout = kHttpsTotalTimeout;
  runtime::registry::RegistryClient client(options);
  auto resolved = client.resolve(ref.value());

  // The registry's clock is a second opinion for the clock check; any answer to /v2/ has a Date.
  std::string ignored;
  if (auto pinged = probeHttps(HttpsProbe{client.baseUrl() + "/v2/", "", ""}, ignored)) {
    out.registryDate = pinged->date;
  }

  if (!resolved) {
    out.line = failOrWarn(image + ": " + oneLine(resolved.message()),
                          registryRemediation(resolved.error(), auth.value()->kind()));
    return out;
  }
  out.line =
      line("image", CheckResult::kPass,
           image + " resolves to " + resolved->digest + " for " + runtime::registry::hostPlatform().toString() +
               " with registry_auth " + auth.value()->kind() + (presentLocally ? " (also present locally)" : ""));
  return out;
}

// ---- Clock -------------------------------------------------------------------------------------------

CheckLine clockCheck(const PodUrlOutcome& pod, const std::string& registryDate) {
  const auto now = std::chrono::system_clock::now();
  std::optional<CheckLine> worst;
  auto consider = [&](const std::string& date, const std::string& source) {
    auto when = parseHttpDate(date);
    if (!when) return;
    auto skew = std::chrono::duration_cast<std::chrono::seconds>(now - *when);
    CheckLine candidate = classifyClockSkew(skew, source);
    if (!worst || static_cast<int>(candidate.result) > static_cast<int>(worst->result)) worst = candidate;
  };
  consider(pod.date, "POD_URL");
  consider(registryDate, "the registry");
  if (worst) return *worst;
  if (pod.line.result != CheckResult::kPass) return skipped("clock", "POD_URL did not answer", "pod_url");
  return line("clock", CheckResult::kSkip, "skipped: no server answered with a usable Date header",
              "verify the clock yourself (timedatectl, chronyc tracking)");
}

}  // namespace

// ---- Public ------------------------------------------------------------------------------------------

const char* checkResultName(CheckResult result) {
  switch (result) {
    case CheckResult::kPass: return "pass";
    case CheckResult::kWarn: return "warn";
    case CheckResult::kFail: return "fail";
    case CheckResult::kSkip: return "skip";
  }
  return "fail";
}

bool CheckReport::ok() const {
  return std::none_of(checks.begin(), checks.end(), [](const CheckLine& c) { return c.result == CheckResult::kFail; });
}

std::string formatCheckText(const CheckReport& report) {
  std::ostringstream out;
  int counts[4] = {0, 0, 0, 0};
  for (const auto& c : report.checks) {
    std::string tag = checkResultName(c.result);
    std::transform(tag.begin(), tag.end(), tag.begin(), [](unsigned char ch) { return std::toupper(ch); });
    out << "[" << tag << "] " << c.name << ": " << c.detail << "\n";
    if (c.result != CheckResult::kPass && !c.remediation.empty()) out << "       fix: " << c.remediation << "\n";
    ++counts[static_cast<int>(c.result)];
  }
  out << (report.ok() ? "OK" : "FAILED") << ": " << counts[0] << " passed, " << counts[1] << " warnings, " << counts[2]
      << " failed, " << counts[3] << " skipped\n";
  return out.str();
}

nlohmann::json checkReportJson(const CheckReport& report) {
  nlohmann::json checks = nlohmann::json::array();
  for (const auto& c : report.checks) {
    checks.push_back({{"name", c.name},
                      {"result", checkResultName(c.result)},
                      {"detail", c.detail},
                      {"remediation", c.remediation}});
  }
  return {{"checks", checks}, {"ok", report.ok()}};
}

int checkExitCode(const CheckReport& report) { return report.ok() ? 0 : 1; }

std::string scrubSecrets(std::string text, const std::vector<std::string>& secrets) {
  for (const auto& secret : secrets) {
    if (secret.empty()) continue;
    for (auto pos = text.find(secret); pos != std::string::npos; pos = text.find(secret, pos)) {
      text.replace(pos, secret.size(), "<redacted>");
    }
  }
  return text;
}

CheckLine classifyClockSkew(std::chrono::seconds skew, const std::string& source) {
  const auto magnitude = skew.count() < 0 ? -skew : skew;
  const std::string direction = skew.count() < 0 ? "behind" : "ahead of";
  const std::string detail = "the system clock is " + std::to_string(magnitude.count()) + "s " + direction + " " +
                             source + "'s Date header (warn past " + std::to_string(kClockSkewWarn.count()) +
                             "s, fail past " + std::to_string(kClockSkewFail.count()) + "s)";
  const std::string fix = "synchronise the clock (enable chrony or systemd-timesyncd; timedatectl set-ntp true)";
  if (magnitude > kClockSkewFail) return line("clock", CheckResult::kFail, detail, fix);
  if (magnitude > kClockSkewWarn) return line("clock", CheckResult::kWarn, detail, fix);
  return line("clock", CheckResult::kPass, detail);
}

DiskNeed containerdLogDirNeed(int64_t logMaxBytes) {
  // The capped log plus its copy while it is truncated, and never less than 64 MiB.
  uint64_t need = std::max<uint64_t>(2 * static_cast<uint64_t>(std::max<int64_t>(logMaxBytes, 0)), uint64_t{64} << 20);
  return DiskNeed{need, 2 * need, "the sensor's capped log and its copy during truncation"};
}

std::string humanBytes(uint64_t bytes) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  char buffer[32];
  if (unit == 0 || value >= 100 || value == static_cast<double>(static_cast<uint64_t>(value))) {
    std::snprintf(buffer, sizeof buffer, "%.0f %s", value, units[unit]);
  } else {
    std::snprintf(buffer, sizeof buffer, "%.1f %s", value, units[unit]);
  }
  return buffer;
}

CheckLine classifyFreeSpace(const std::string& name, const std::string& path, uint64_t freeBytes,
                            const DiskNeed& need) {
  const std::string detail = "free space on " + path + ": " + humanBytes(freeBytes) + " (fail below " +
                             humanBytes(need.failBelow) + ", warn below " + humanBytes(need.warnBelow) + ")";
  const std::string fix = "free space on " + path + " (" + humanBytes(freeBytes) + " free, need at least " +
                          humanBytes(freeBytes < need.failBelow ? need.failBelow : need.warnBelow) + " for " +
                          need.why + ")";
  if (freeBytes < need.failBelow) return line(name, CheckResult::kFail, detail, fix);
  if (freeBytes < need.warnBelow) return line(name, CheckResult::kWarn, detail, fix);
  return line(name, CheckResult::kPass, detail);
}

std::optional<std::chrono::system_clock::time_point> parseHttpDate(const std::string& text) {
  std::tm tm{};
  char weekday[4] = {}, month[4] = {}, zone[4] = {};
  int day = 0, year = 0, hour = 0, minute = 0, second = 0;
  int consumed = 0;
  if (std::sscanf(text.c_str(), "%3[A-Za-z], %d %3s %d %d:%d:%d %3s%n", weekday, &day, month, &year, &hour, &minute,
                  &second, zone, &consumed) != 8) {
    return std::nullopt;
  }
  if (std::string(zone) != "GMT" || static_cast<size_t>(consumed) != text.size()) return std::nullopt;
  static const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  int mon = -1;
  for (int i = 0; i < 12; ++i) {
    if (std::string(month) == months[i]) mon = i;
  }
  if (mon < 0 || day < 1 || day > 31 || year < 1970 || hour > 23 || minute > 59 || second > 60) return std::nullopt;
  tm.tm_year = year - 1900;
  tm.tm_mon = mon;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = second;
  time_t t = timegm(&tm);
  if (t == static_cast<time_t>(-1)) return std::nullopt;
  return std::chrono::system_clock::from_time_t(t);
}

CgroupVersion classifyCgroup(int64_t fsType, bool unifiedIsCgroup2) {
  if (fsType == kCgroup2Magic) return CgroupVersion::kV2;
  if (fsType == kTmpfsMagic) return unifiedIsCgroup2 ? CgroupVersion::kHybrid : CgroupVersion::kV1;
  return CgroupVersion::kUnknown;
}

CheckLine cgroupCheckLine(CgroupVersion version, const std::string& path) {
  switch (version) {
    case CgroupVersion::kV2: return line("cgroup", CheckResult::kPass, "cgroup v2 (unified hierarchy) at " + path);
    case CgroupVersion::kHybrid:
      return line("cgroup", CheckResult::kPass,
                  "cgroup v1 with the v2 unified hierarchy beside it (hybrid) at " + path);
    case CgroupVersion::kV1: return line("cgroup", CheckResult::kPass, "cgroup v1 (legacy hierarchy) at " + path);
    case CgroupVersion::kUnknown: break;
  }
  return line("cgroup", CheckResult::kFail, "no cgroup hierarchy is mounted at " + path,
              "mount cgroup2 at /sys/fs/cgroup; in a pod, mount the host's /sys/fs/cgroup under runtime.host_root");
}

std::string podUrlProxy(const Config& config) {
  if (!config.sensor.proxy.qualysHttpsProxy.empty()) return config.sensor.proxy.qualysHttpsProxy;
  return config.sensor.proxy.httpsProxy;
}

CheckReport runChecks(const Config& config, std::vector<std::string>* secretValues) {
  std::vector<std::string> ignored;
  if (!secretValues) secretValues = &ignored;
  CheckReport report;
  RuntimeFacts facts;
  for (auto& c : runtimeChecks(config, facts)) report.checks.push_back(std::move(c));
  report.checks.push_back(cgroupCheck(config));
  for (auto& c : diskChecks(config, facts)) report.checks.push_back(std::move(c));
  report.checks.push_back(secretsCheck(config, *secretValues));
  auto image = imageCheck(config, facts, *secretValues);
  report.checks.push_back(image.line);
  auto pod = podUrlCheck(config);
  report.checks.push_back(pod.line);
  report.checks.push_back(clockCheck(pod, image.registryDate));
  return report;
}

int commandCheck(const Config& config, const std::string& output) {
  auto redactor = std::make_shared<SecretRedactor>();
  // Library logs go to stderr (never into the report on stdout) and only when they matter.
  if (auto st = setupLogging("warn", "text", redactor); !st) {
    std::cerr << "qcs-agent check: " << st.message() << "\n";
    return kExitConfig;
  }
  std::vector<std::string> secretValues;
  CheckReport report = runChecks(config, &secretValues);
  for (const auto& s : secretValues) redactor->add(s);
  std::string text = output == "json" ? checkReportJson(report).dump(2) + "\n" : formatCheckText(report);
  std::cout << scrubSecrets(std::move(text), secretValues);
  std::cout.flush();
  return checkExitCode(report);
}

}  // namespace qcs::agent

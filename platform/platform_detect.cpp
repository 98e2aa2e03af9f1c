#include "platform/platform_detect.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/encoding.h"
#include "common/file_descriptor.h"
#include "runtime/json_fields.h"

namespace qcs::platform {

namespace {

using json = nlohmann::json;

constexpr const char* kLinkLocalMetadata = "http://169.254.169.254";
constexpr const char* kDefaultGcpMetadataHost = "metadata.google.internal";
// SMBIOS type 3's asset tag that Azure sets on every VM; Hyper-V elsewhere leaves it unset or
// sets its own, so it tells Azure from a plain Hyper-V VM where sys_vendor cannot.
constexpr const char* kAzureChassisAssetTag = "7783-7084-3265-9085-8269-3286-77";
constexpr const char* kAzureComputeApiVersion = "2021-02-01";
constexpr const char* kEcsConfigPath = "etc/ecs/ecs.config";
constexpr const char* kDmiDir = "sys/class/dmi/id/";
// The token is used for two GETs right away; a short TTL leaves nothing useful behind.
constexpr int kImdsTokenTtlSeconds = 60;
// DMI strings are at most a few dozen bytes; ecs.config is a handful of lines.
constexpr size_t kMaxDmiBytes = 256;
constexpr size_t kMaxEcsConfigBytes = 64 * 1024;
constexpr size_t kMaxQuoted = 200;

// The file's first maxBytes, or the errno that stopped it (ENOENT when absent; EISDIR, EACCES...).
Result<std::string> readSmallFile(const std::string& path, size_t maxBytes) {
  FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (fd.get() < 0) {
    const int err = errno;
    return makeError(err == ENOENT ? ErrorCode::kNotFound : ErrorCode::kPermissionDenied,
                     path + ": " + std::strerror(err));
  }
  std::string out;
  char buffer[4096];
  while (out.size() < maxBytes) {
    const ssize_t n = ::read(fd.get(), buffer, std::min(sizeof buffer, maxBytes - out.size()));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      return makeError(ErrorCode::kPermissionDenied, path + ": " + std::strerror(err));
    }
    if (n == 0) break;
    out.append(buffer, static_cast<size_t>(n));
  }
  return out;
}

std::string underRoot(const std::string& root, const std::string& relative) {
  std::string base = root.empty() ? "/" : root;
  if (base.back() != '/') base.push_back('/');
  return base + relative;
}

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return text;
}

bool startsWith(const std::string& text, const std::string& prefix) { return text.rfind(prefix, 0) == 0; }

std::string envValue(const GetEnvFn& getEnv, const std::string& name) {
  auto value = getEnv ? getEnv(name) : std::nullopt;
  return value ? std::string(trim(*value)) : std::string();
}

bool isTrue(const std::string& value) {
  const std::string v = lower(value);
  return v == "true" || v == "1";
}

std::string stripSlash(std::string url) {
  while (!url.empty() && url.back() == '/') url.pop_back();
  return url;
}

// A peer's text, short and on one line, fit to quote in a warning.
std::string quote(const std::string& text) {
  std::string out = text.substr(0, kMaxQuoted);
  for (char& c : out) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return std::string(trim(out));
}

struct CloudClue {
  std::string cloud;
  std::string evidence;
};

// DMI says which cloud built the VM; each file is optional (ARM boards and containers without
// /sys may have none) and one that cannot be read counts as silent.
std::vector<CloudClue> dmiClues(const std::string& hostRoot) {
  std::map<std::string, std::string> dmi;
  for (const char* name :
       {"sys_vendor", "product_name", "bios_vendor", "bios_version", "board_vendor", "chassis_asset_tag"}) {
    auto text = readSmallFile(underRoot(hostRoot, std::string(kDmiDir) + name), kMaxDmiBytes);
    if (text) dmi[name] = std::string(trim(text.value()));
  }
  std::vector<CloudClue> clues;
  auto is = [&](const char* name, const std::string& value) {
    auto it = dmi.find(name);
    return it != dmi.end() && it->second == value;
  };
  auto clue = [&](const std::string& cloud, const char* name) {
    clues.push_back({cloud, std::string("dmi ") + name + "=" + dmi[name]});
  };
  // Nitro instances say "Amazon EC2" in the system, BIOS and board vendor; Xen-era instances only
  // carry "amazon" in the BIOS version ("4.11.amazon").
  for (const char* name : {"sys_vendor", "bios_vendor", "board_vendor"}) {
    if (is(name, "Amazon EC2")) clue("aws", name);
  }
  if (auto it = dmi.find("bios_version"); it != dmi.end() && lower(it->second).find("amazon") != std::string::npos) {
    clue("aws", "bios_version");
  }
  if (is("chassis_asset_tag", kAzureChassisAssetTag)) clue("azure", "chassis_asset_tag");
  if (is("sys_vendor", "Google")) clue("gcp", "sys_vendor");
  if (is("product_name", "Google Compute Engine") || is("product_name", "Google")) clue("gcp", "product_name");
  if (is("bios_vendor", "Google")) clue("gcp", "bios_vendor");
  return clues;
}

struct EcsConfigFile {
  bool exists = false;
  std::map<std::string, std::string> settings;
  std::string readError;  // non-empty: it exists but could not be read
};

EcsConfigFile readEcsConfig(const std::string& hostRoot) {
  EcsConfigFile out;
  const std::string path = underRoot(hostRoot, kEcsConfigPath);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return out;
  out.exists = true;
  auto text = readSmallFile(path, kMaxEcsConfigBytes);
  if (!text) {
    out.readError = text.message();
    return out;
  }
  out.settings = parseEcsConfig(text.value());
  return out;
}

// ECS_CLUSTER takes a name or a cluster ARN ("arn:aws:ecs:<region>:<account>:cluster/<name>"); log
// groups and labels want the name.
std::string clusterName(const std::string& value) {
  if (startsWith(value, "arn:")) {
    if (auto slash = value.rfind('/'); slash != std::string::npos) return value.substr(slash + 1);
  }
  return value;
}

HttpRequest metadataRequest(const std::string& method, const std::string& url, std::chrono::milliseconds timeout) {
  HttpRequest request;
  request.method = method;
  request.url = url;
  request.connectTimeout = timeout;
  request.totalTimeout = timeout;
  return request;
}

struct Placement {
  std::string region;
  std::string zone;
  std::string problem;  // why region or zone is missing; empty when both arrived
};

Placement awsPlacement(const std::string& endpoint, std::chrono::milliseconds timeout, CloudHttpClient& http) {
  Placement out;
  HttpRequest tokenRequest = metadataRequest("PUT", endpoint + "/latest/api/token", timeout);
  tokenRequest.headers.emplace_back("X-aws-ec2-metadata-token-ttl-seconds", std::to_string(kImdsTokenTtlSeconds));
  auto token = http.send(tokenRequest);
  if (!token) {
    out.problem = "instance metadata did not answer (" + token.message() +
                  "; inside a container the instance's metadata hop limit must be 2 or more)";
    return out;
  }
  if (token->status != 200 || trim(token->body).empty()) {
    out.problem = "instance metadata refused a session token (PUT " + describeEndpoint(tokenRequest.url) +
                  " answered HTTP " + std::to_string(token->status) + ")";
    return out;
  }
  const std::string session(trim(token->body));
  auto get = [&](const std::string& leaf, std::string& into) {
    HttpRequest request = metadataRequest("GET", endpoint + "/latest/meta-data/placement/" + leaf, timeout);
    request.headers.emplace_back("X-aws-ec2-metadata-token", session);
    auto response = http.send(request);
    if (!response) return response.message();
    if (response->status != 200 || trim(response->body).empty()) {
      return describeEndpoint(request.url) + " answered HTTP " + std::to_string(response->status);
    }
    into = std::string(trim(response->body));
    return std::string();
  };
  std::string problem = get("region", out.region);
  if (problem.empty()) problem = get("availability-zone", out.zone);
  if (!problem.empty()) out.problem = "instance metadata: " + problem;
  return out;
}

Placement azurePlacement(const std::string& endpoint, std::chrono::milliseconds timeout, CloudHttpClient& http) {
  Placement out;
  HttpRequest request =
      metadataRequest("GET", endpoint + "/metadata/instance/compute?api-version=" + kAzureComputeApiVersion, timeout);
  request.headers.emplace_back("Metadata", "true");
  auto response = http.send(request);
  if (!response) {
    out.problem = "instance metadata did not answer (" + response.message() + ")";
    return out;
  }
  auto doc = json::parse(response->body, nullptr, false);
  auto str = [&](const char* key) { return std::string(trim(runtime::stringField(doc, key))); };
  if (response->status != 200) {
    const std::string error = str("error");
    out.problem = "instance metadata " + describeEndpoint(request.url) + " answered HTTP " +
                  std::to_string(response->status) + " (" + quote(error.empty() ? response->body : error) + ")";
    return out;
  }
  out.region = str("location");
  out.zone = str("zone");  // "" for a VM outside availability zones
  if (out.region.empty()) {
    out.problem = "instance metadata " + describeEndpoint(request.url) + " answered without a location";
  }
  return out;
}

Placement gcpPlacement(const std::string& host, std::chrono::milliseconds timeout, CloudHttpClient& http) {
  Placement out;
  HttpRequest request = metadataRequest("GET", "http://" + host + "/computeMetadata/v1/instance/zone", timeout);
  request.headers.emplace_back("Metadata-Flavor", "Google");
  auto response = http.send(request);
  if (!response) {
    out.problem = "metadata server did not answer (" + response.message() + ")";
    return out;
  }
  const std::string where = "metadata server " + describeEndpoint(request.url);
  // Google's metadata server marks every answer; a server that does not is something else
  // answering on that address (a captive proxy, another cloud's metadata service).
  if (response->header("Metadata-Flavor") != "Google") {
    out.problem = where + " answered without the Metadata-Flavor: Google header (HTTP " +
                  std::to_string(response->status) + "); it is not GCP's metadata server";
    return out;
  }
  if (response->status != 200) {
    out.problem = where + " answered HTTP " + std::to_string(response->status) + " (" + quote(response->body) + ")";
    return out;
  }
  // "projects/123456789/zones/us-central1-a"
  const std::string body(trim(response->body));
  const std::string zone = body.substr(body.rfind('/') + 1);
  const auto dash = zone.rfind('-');
  if (body.find("/zones/") == std::string::npos || zone.empty() || dash == std::string::npos || dash == 0) {
    out.problem = where + " answered an unexpected zone \"" + quote(body) + "\"";
    return out;
  }
  out.zone = zone;
  out.region = zone.substr(0, dash);
  return out;
}

// The region an operator or the ECS agent's configuration gives, into `region`; returns where it
// came from ("env AWS_REGION"), or "" when nothing does.
std::string localAwsRegion(const GetEnvFn& getEnv, const EcsConfigFile& ecsConfig, std::string& region) {
  for (const char* name : {"AWS_REGION", "AWS_DEFAULT_REGION"}) {
    if (std::string value = envValue(getEnv, name); !value.empty()) {
      region = value;
      return std::string("env ") + name;
    }
  }
  if (auto it = ecsConfig.settings.find("AWS_DEFAULT_REGION"); it != ecsConfig.settings.end() && !it->second.empty()) {
    region = it->second;
    return "ecs.config AWS_DEFAULT_REGION";
  }
  return "";
}

void addOnce(std::vector<std::string>& list, const std::string& item) {
  if (std::find(list.begin(), list.end(), item) == list.end()) list.push_back(item);
}

}  // namespace

std::map<std::string, std::string> parseEcsConfig(const std::string& text) {
  std::map<std::string, std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line(trim(std::string_view(text).substr(start, end - start)));
    start = end + 1;
    if (line.empty() || line.front() == '#') continue;
    if (startsWith(line, "export ")) line = std::string(trim(line.substr(7)));
    const auto eq = line.find('=');
    if (eq == std::string::npos || eq == 0) continue;
    const std::string key(trim(std::string_view(line).substr(0, eq)));
    std::string value(trim(std::string_view(line).substr(eq + 1)));
    if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') && value.back() == value.front()) {
      value = value.substr(1, value.size() - 2);
    } else if (auto hash = value.find(" #"); hash != std::string::npos) {
      // An unquoted value's trailing comment.
      value = std::string(trim(std::string_view(value).substr(0, hash)));
    }
    if (key.find_first_of(" \t") != std::string::npos) continue;
    out[key] = value;
  }
  return out;
}

PlatformInfo detectPlatform(const PlatformDetectOptions& options, const GetEnvFn& getEnv, CloudHttpClient& http) {
  PlatformInfo info;
  std::string mode = lower(std::string(trim(options.mode)));
  if (mode == "none") {
    info.evidence.push_back("platform.detect: none");
    return info;
  }
  if (mode != "auto" && mode != "aws" && mode != "azure" && mode != "gcp") {
    info.warnings.push_back("platform.detect: \"" + options.mode +
                            "\" is not one of auto, none, aws, azure, gcp; detecting as with auto");
    mode = "auto";
  }

  // Local evidence, all of it read before anything is contacted.
  std::vector<CloudClue> clues = dmiClues(options.hostRoot);
  std::vector<std::string> ecsEvidence;
  if (std::string executionEnv = envValue(getEnv, "AWS_EXECUTION_ENV"); startsWith(executionEnv, "AWS_ECS")) {
    ecsEvidence.push_back("env AWS_EXECUTION_ENV=" + executionEnv);
  }
  for (const char* name : {"ECS_CONTAINER_METADATA_URI_V4", "ECS_CONTAINER_METADATA_URI"}) {
    if (!envValue(getEnv, name).empty()) ecsEvidence.push_back(std::string("env ") + name);
  }
  // Task variables only exist inside an ECS task, and ECS tasks only run on AWS or ECS Anywhere;
  // ECS Anywhere hosts run the ECS agent (ecs.config) rather than being tasks, so these mean AWS.
  for (const auto& evidence : ecsEvidence) clues.push_back({"aws", evidence});
  const EcsConfigFile ecsConfig = readEcsConfig(options.hostRoot);
  const bool ecsAnywhere = ecsConfig.settings.count("ECS_EXTERNAL") && isTrue(ecsConfig.settings.at("ECS_EXTERNAL"));
  if (ecsConfig.exists) {
    ecsEvidence.push_back(std::string("file /") + kEcsConfigPath);
    if (!ecsAnywhere) clues.push_back({"aws", std::string("file /") + kEcsConfigPath});
  }

  if (mode != "auto") {
    info.cloud = mode;
    info.evidence.push_back("platform.detect: " + mode);
  } else {
    for (const char* cloud : {"aws", "azure", "gcp"}) {
      if (std::any_of(clues.begin(), clues.end(), [&](const CloudClue& c) { return c.cloud == cloud; })) {
        info.cloud = cloud;
        break;
      }
    }
  }
  // Evidence for another cloud is reported once per cloud, so the operator can settle it.
  std::map<std::string, std::string> contrary;
  for (const auto& clue : clues) {
    if (clue.cloud == info.cloud) {
      addOnce(info.evidence, clue.evidence);
    } else {
      std::string& list = contrary[clue.cloud];
      list += (list.empty() ? "" : ", ") + clue.evidence;
    }
  }
  for (const auto& [cloud, list] : contrary) {
    info.warnings.push_back(mode != "auto" ? "platform.detect says " + mode + " but local evidence says " + cloud +
                                                 " (" + list + "); using " + mode
                                           : "local evidence also says " + cloud + " (" + list + "); using " +
                                                 info.cloud + " (set platform.detect to choose)");
  }

  // Orchestrator, still from local evidence only.
  const std::string kubernetesHost = envValue(getEnv, "KUBERNETES_SERVICE_HOST");
  if (!ecsEvidence.empty()) {
    info.orchestrator = "ecs";
    for (const auto& evidence : ecsEvidence) addOnce(info.evidence, evidence);
    if (!ecsConfig.readError.empty()) {
      info.warnings.push_back("ecs: cannot read " + ecsConfig.readError + "; cluster name from ECS_CLUSTER or default");
    }
    if (auto it = ecsConfig.settings.find("ECS_CLUSTER"); it != ecsConfig.settings.end() && !it->second.empty()) {
      info.cluster = clusterName(it->second);
      info.evidence.push_back("ecs.config ECS_CLUSTER");
    } else if (std::string cluster = envValue(getEnv, "ECS_CLUSTER"); !cluster.empty()) {
      info.cluster = clusterName(cluster);
      info.evidence.push_back("env ECS_CLUSTER");
    } else {
      // The ECS agent registers with the cluster named "default" when none is configured.
      info.cluster = "default";
      info.evidence.push_back("ecs default cluster");
    }
    if (!kubernetesHost.empty()) {
      info.warnings.push_back("KUBERNETES_SERVICE_HOST is set too; orchestrator taken as ecs");
    }
  } else if (!kubernetesHost.empty()) {
    info.evidence.push_back("env KUBERNETES_SERVICE_HOST");
    info.orchestrator = info.cloud == "aws"     ? "eks"
                        : info.cloud == "azure" ? "aks"
                        : info.cloud == "gcp"   ? "gke"
                                                : "kubernetes";
  }

  // Only now, and only for the cloud the evidence named, the metadata service.
  const auto timeout = options.metadataTimeout;
  if (info.cloud == "aws") {
    Placement placement;
    if (isTrue(envValue(getEnv, "AWS_EC2_METADATA_DISABLED"))) {
      placement.problem = "AWS_EC2_METADATA_DISABLED is true, instance metadata not asked";
    } else {
      std::string endpoint = options.awsImdsEndpoint;
      if (endpoint.empty()) endpoint = envValue(getEnv, "AWS_EC2_METADATA_SERVICE_ENDPOINT");
      if (endpoint.empty()) endpoint = kLinkLocalMetadata;
      placement = awsPlacement(stripSlash(endpoint), timeout, http);
    }
    if (!placement.region.empty()) {
      info.region = placement.region;
      info.evidence.push_back("imds placement/region");
    }
    if (!placement.zone.empty()) {
      info.zone = placement.zone;
      info.evidence.push_back("imds placement/availability-zone");
    }
    std::string fallback;
    if (info.region.empty()) {
      fallback = localAwsRegion(getEnv, ecsConfig, info.region);
      if (!fallback.empty()) info.evidence.push_back(fallback);
    }
    if (!placement.problem.empty()) {
      const bool disabled = startsWith(placement.problem, "AWS_EC2_METADATA_DISABLED");
      if (!disabled || info.region.empty()) {
        info.warnings.push_back("aws: " + placement.problem + "; " +
                                (info.region.empty() ? std::string("region unknown (set AWS_REGION)")
                                 : !fallback.empty() ? "region from " + fallback + ", zone unknown"
                                                     : std::string("zone unknown")));
      }
    }
  } else if (info.cloud == "azure") {
    std::string endpoint = options.azureImdsEndpoint;
    if (endpoint.empty()) endpoint = envValue(getEnv, "QCS_AZURE_IMDS_ENDPOINT");
    if (endpoint.empty()) endpoint = kLinkLocalMetadata;
    const Placement placement = azurePlacement(stripSlash(endpoint), timeout, http);
    info.region = placement.region;
    info.zone = placement.zone;
    if (!info.region.empty()) info.evidence.push_back("azure imds compute/location");
    if (!info.zone.empty()) info.evidence.push_back("azure imds compute/zone");
    if (!placement.problem.empty()) info.warnings.push_back("azure: " + placement.problem + "; region unknown");
  } else if (info.cloud == "gcp") {
    std::string host = options.gcpMetadataHost;
    if (host.empty()) host = envValue(getEnv, "GCE_METADATA_HOST");
    if (host.empty()) host = kDefaultGcpMetadataHost;
    const Placement placement = gcpPlacement(host, timeout, http);
    info.region = placement.region;
    info.zone = placement.zone;
    if (!info.zone.empty()) info.evidence.push_back("gcp metadata instance/zone");
    if (!placement.problem.empty()) info.warnings.push_back("gcp: " + placement.problem + "; region unknown");
  }
  if (info.orchestrator == "ecs" && info.cloud != "aws" && info.region.empty()) {
    // ECS Anywhere: no AWS metadata, but the awslogs default still needs the cluster's region.
    if (std::string from = localAwsRegion(getEnv, ecsConfig, info.region); !from.empty()) {
      info.evidence.push_back(from);
    }
  }
  return info;
}

}  // namespace qcs::platform

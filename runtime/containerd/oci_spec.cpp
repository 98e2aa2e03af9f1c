#include "runtime/containerd/oci_spec.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <utility>

namespace qcs::runtime::containerd {
namespace {

// ordered_json keeps the runtime-spec's own field order, so `ctr containers info` reads like a
// spec a person would write; insertion order is fixed, so the output stays deterministic.
using Json = nlohmann::ordered_json;

// The same default containerd's oci package and Docker use when the image sets no PATH.
constexpr std::string_view kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

constexpr int64_t kCfsPeriodMicros = 100000;
// The kernel refuses a CFS quota below 1ms; Kubernetes clamps the same way.
constexpr int64_t kMinCfsQuotaMicros = 1000;
constexpr uint64_t kMinCpuShares = 2;
constexpr uint64_t kMaxCpuShares = 262144;

// containerd's identifier rule (identifiers.Validate): used in cgroupsPath, so it must not be
// able to escape the namespace's cgroup.
constexpr size_t kMaxIdentifierLength = 76;

Error invalid(std::string message) { return makeError(ErrorCode::kInvalidArgument, std::move(message)); }
Error protocol(std::string message) { return makeError(ErrorCode::kProtocol, std::move(message)); }

bool isAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

bool validIdentifier(const std::string& id) {
  if (id.empty() || id.size() > kMaxIdentifierLength || !isAlnum(id.front()) || !isAlnum(id.back())) return false;
  for (size_t i = 0; i < id.size(); ++i) {
    const char c = id[i];
    if (isAlnum(c)) continue;
    if (c != '.' && c != '_' && c != '-') return false;
    // A separator is always followed by an alphanumeric character.
    if (!isAlnum(id[i + 1])) return false;
  }
  return true;
}

std::string toUpperAscii(std::string text) {
  for (char& c : text) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return text;
}

std::string quoted(const std::string& text) { return "\"" + text + "\""; }

// ---------------------------------------------------------------------------------------------
// Image config parsing.

Result<std::vector<std::string>> stringArray(const Json& config, const char* key) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::vector<std::string>{};
  if (!it->is_array()) {
    return protocol(std::string("image config: config.") + key + " is " + it->type_name() +
                    ", expected an array of strings");
  }
  std::vector<std::string> values;
  values.reserve(it->size());
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& element = (*it)[i];
    if (!element.is_string()) {
      return protocol(std::string("image config: config.") + key + "[" + std::to_string(i) + "] is " +
                      element.type_name() + ", expected a string");
    }
    values.push_back(element.get<std::string>());
  }
  return values;
}

Result<std::string> stringField(const Json& config, const char* key) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::string{};
  if (!it->is_string()) {
    return protocol(std::string("image config: config.") + key + " is " + it->type_name() + ", expected a string");
  }
  return it->get<std::string>();
}

// ---------------------------------------------------------------------------------------------
// Process.

struct ProcessUser {
  uint32_t uid = 0;
  uint32_t gid = 0;
};

std::optional<uint32_t> parseId(std::string_view text) {
  if (text == "root") return 0u;
  if (text.empty() || !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  uint32_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// Resolving a user or group name would mean reading /etc/passwd and /etc/group out of the
// snapshot before the container exists; only forms that need no lookup are accepted. A bare uid
// gets gid 0, which is what containerd does when the uid has no passwd entry.
Result<ProcessUser> parseUser(const std::string& user) {
  if (user.empty()) return ProcessUser{};
  const size_t colon = user.find(':');
  const std::string_view userPart = std::string_view(user).substr(0, colon);
  const auto uid = parseId(userPart);
  std::optional<uint32_t> gid = 0u;
  if (colon != std::string::npos) gid = parseId(std::string_view(user).substr(colon + 1));
  if (!uid || !gid) {
    return invalid("the image's config.User " + quoted(user) +
                   " is not a numeric uid[:gid] or \"root\": the agent does not look names up in the image's "
                   "/etc/passwd; use an image whose USER is numeric (e.g. 0 or 1000:1000)");
  }
  return ProcessUser{*uid, *gid};
}

Result<std::vector<std::string>> processArgs(const ContainerSpec& spec, const ImageConfig& image) {
  // Docker's semantics: on Docker the agent sends spec.args as Cmd and keeps the image's Entrypoint.
  std::vector<std::string> args = image.entrypoint;
  const auto& tail = spec.args.empty() ? image.cmd : spec.args;
  args.insert(args.end(), tail.begin(), tail.end());
  if (args.empty()) return invalid("the image has no entrypoint or cmd and sensor.args is empty");
  return args;
}

std::string envName(const std::string& entry) { return entry.substr(0, entry.find('=')); }

// Image env first, then spec env; a later entry of the same name replaces the earlier one where it
// stands, so the order is stable.
Result<std::vector<std::string>> processEnv(const ContainerSpec& spec, const ImageConfig& image) {
  std::vector<std::string> env;
  std::vector<std::string> names;
  auto put = [&](const std::string& name, std::string entry) {
    const auto it = std::find(names.begin(), names.end(), name);
    if (it != names.end()) {
      env[static_cast<size_t>(it - names.begin())] = std::move(entry);
    } else {
      names.push_back(name);
      env.push_back(std::move(entry));
    }
  };
  for (const std::string& entry : image.env) {
    if (entry.find('=') == std::string::npos || entry.front() == '=') {
      return invalid("the image's config.Env entry " + quoted(entry) +
                     " is not NAME=value; runc refuses such an environment");
    }
    put(envName(entry), entry);
  }
  for (const EnvVar& var : spec.env) {
    if (var.name.empty() || var.name.find('=') != std::string::npos) {
      return invalid("environment variable name " + quoted(var.name) + " is empty or contains '='; fix sensor.env");
    }
    put(var.name, var.name + "=" + var.value);
  }
  if (std::find(names.begin(), names.end(), "PATH") == names.end()) {
    env.insert(env.begin(), "PATH=" + std::string(kDefaultPath));
  }
  return env;
}

Result<std::vector<std::string>> capabilitySet(const ContainerSpec& spec) {
  const auto& known = knownCapabilities();
  std::set<std::string> capabilities;
  std::vector<std::string> unknown;
  for (const std::string& requested : spec.capAdd) {
    std::string name = toUpperAscii(requested);
    if (!name.starts_with("CAP_")) name = "CAP_" + name;
    if (!std::binary_search(known.begin(), known.end(), name)) {
      unknown.push_back(quoted(requested));
      continue;
    }
    capabilities.insert(std::move(name));
  }
  if (!unknown.empty()) {
    std::string list;
    for (const auto& name : unknown) list += (list.empty() ? "" : ", ") + name;
    return invalid("sensor.capabilities: unknown capabilit" + std::string(unknown.size() == 1 ? "y " : "ies ") + list +
                   " (use names from capabilities(7), e.g. SYS_ADMIN or CAP_SYS_ADMIN)");
  }
  if (spec.privileged) return known;
  capabilities.insert(defaultCapabilities().begin(), defaultCapabilities().end());
  return std::vector<std::string>(capabilities.begin(), capabilities.end());
}

// ---------------------------------------------------------------------------------------------
// Mounts.

// Lexically cleaned absolute path ("/a//b/./c/" -> "/a/b/c"), so "/dev/shm/" replaces "/dev/shm".
std::string cleanPath(const std::string& path) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    const std::string part = path.substr(start, end - start);
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!part.empty() && part != ".") {
      parts.push_back(part);
    }
    start = end + 1;
  }
  std::string cleaned;
  for (const auto& part : parts) cleaned += "/" + part;
  return cleaned.empty() ? "/" : cleaned;
}

size_t pathDepth(const std::string& cleanedPath) {
  return cleanedPath == "/" ? 0 : static_cast<size_t>(std::count(cleanedPath.begin(), cleanedPath.end(), '/'));
}

struct OciMount {
  std::string destination;
  std::string type;
  std::string source;
  std::vector<std::string> options;
};

std::vector<OciMount> defaultMounts(const ContainerSpec& spec) {
  // A privileged container gets /sys and its cgroup tree writable, as ctr --privileged does.
  const std::string sysMode = spec.privileged ? "rw" : "ro";
  std::vector<OciMount> mounts{
      {"/proc", "proc", "proc", {"nosuid", "noexec", "nodev"}},
      {"/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"}},
      {"/dev/pts", "devpts", "devpts", {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
      {"/dev/shm", "tmpfs", "shm", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
      {"/dev/mqueue", "mqueue", "mqueue", {"nosuid", "noexec", "nodev"}},
      {"/sys", "sysfs", "sysfs", {"nosuid", "noexec", "nodev", sysMode}},
      {"/sys/fs/cgroup", "cgroup", "cgroup", {"nosuid", "noexec", "nodev", "relatime", sysMode}},
  };
  // containerd's defaults also mount a tmpfs on /run; Docker does not, and the sensor finds the
  // image's own /run on Docker, so it is left out here to run the same on both runtimes.
  if (spec.hostNetwork) {
    // Sharing the host's network stack without its name resolution would leave the sensor with
    // the image's files; ctr --net-host binds the host's, read-only.
    mounts.push_back({"/etc/hosts", "bind", "/etc/hosts", {"rbind", "rprivate", "ro"}});
    mounts.push_back({"/etc/resolv.conf", "bind", "/etc/resolv.conf", {"rbind", "rprivate", "ro"}});
  }
  return mounts;
}

Result<std::vector<OciMount>> allMounts(const ContainerSpec& spec) {
  std::vector<OciMount> mounts = defaultMounts(spec);
  std::set<std::string> specTargets;
  for (size_t i = 0; i < spec.mounts.size(); ++i) {
    const Mount& mount = spec.mounts[i];
    const std::string where =
        "mount " + std::to_string(i) + " (" + quoted(mount.source) + " -> " + quoted(mount.target) + ")";
    if (!mount.source.starts_with("/")) return invalid(where + ": the source must be an absolute host path");
    if (!mount.target.starts_with("/")) return invalid(where + ": the target must be an absolute path");
    const std::string destination = cleanPath(mount.target);
    if (destination == "/") return invalid(where + ": cannot mount over the container's root");
    if (!specTargets.insert(destination).second) {
      return invalid(where + ": another mount already targets " + destination + "; keep one of them");
    }
    OciMount oci{destination, "bind", mount.source, {"rbind", "rprivate", mount.readOnly ? "ro" : "rw"}};
    const auto replaced = std::find_if(mounts.begin(), mounts.end(),
                                       [&](const OciMount& existing) { return existing.destination == destination; });
    if (replaced != mounts.end()) {
      *replaced = std::move(oci);
    } else {
      mounts.push_back(std::move(oci));
    }
  }
  // Mounts are made in order: a parent must come before what is mounted inside it (the storage
  // dir at /usr/local/qualys/qpa/data before /etc/qualys at .../data/conf/agent-data), whatever
  // order they were listed in. A stable sort by depth guarantees that and keeps the rest in place.
  std::stable_sort(mounts.begin(), mounts.end(), [](const OciMount& a, const OciMount& b) {
    return pathDepth(a.destination) < pathDepth(b.destination);
  });
  return mounts;
}

// ---------------------------------------------------------------------------------------------
// Linux.

Json allowCharDevice(int64_t major, std::optional<int64_t> minor) {
  Json rule{{"allow", true}, {"type", "c"}, {"major", major}};
  if (minor) rule["minor"] = *minor;  // absent: every minor number
  rule["access"] = "rwm";
  return rule;
}

Json deviceRules(bool privileged) {
  if (privileged) return Json::array({Json{{"allow", true}, {"access", "rwm"}}});
  // Deny everything, then containerd's WithDefaultUnixDevices allow list, in its order.
  return Json::array({
      Json{{"allow", false}, {"access", "rwm"}}, allowCharDevice(1, 3),  // /dev/null
      allowCharDevice(1, 8),                                             // /dev/random
      allowCharDevice(1, 7),                                             // /dev/full
      allowCharDevice(5, 0),                                             // /dev/tty
      allowCharDevice(1, 5),                                             // /dev/zero
      allowCharDevice(1, 9),                                             // /dev/urandom
      allowCharDevice(5, 1),                                             // /dev/console
      allowCharDevice(136, std::nullopt),                                // /dev/pts/*
      allowCharDevice(5, 2),                                             // /dev/ptmx
  });
}

Result<Json> resources(const ContainerSpec& spec) {
  const Resources& r = spec.resources;
  if (r.cpuRequestMilli < 0) return invalid("sensor.resources.cpu_request is negative");
  if (r.cpuLimitMilli < 0) return invalid("sensor.resources.cpu_limit is negative");
  if (r.memoryRequestBytes < 0) return invalid("sensor.resources.memory_request is negative");
  if (r.memoryLimitBytes < 0) return invalid("sensor.resources.memory_limit is negative");
  if (r.cpuLimitMilli > std::numeric_limits<int64_t>::max() / 100) {
    return invalid("sensor.resources.cpu_limit is too large to express as a CFS quota");
  }

  Json json{{"devices", deviceRules(spec.privileged)}};
  Json memory = Json::object();
  if (r.memoryLimitBytes > 0) memory["limit"] = r.memoryLimitBytes;
  if (r.memoryRequestBytes > 0) memory["reservation"] = r.memoryRequestBytes;
  if (!memory.empty()) json["memory"] = std::move(memory);

  Json cpu = Json::object();
  if (r.cpuRequestMilli > 0) {
    // Kubernetes' and Docker's conversion: 1024 shares per core, within the kernel's bounds.
    const uint64_t request = static_cast<uint64_t>(r.cpuRequestMilli);
    const uint64_t shares = request >= kMaxCpuShares * 1000 / 1024 ? kMaxCpuShares : request * 1024 / 1000;
    cpu["shares"] = std::max(kMinCpuShares, shares);
  }
  if (r.cpuLimitMilli > 0) {
    cpu["quota"] = std::max(kMinCfsQuotaMicros, r.cpuLimitMilli * kCfsPeriodMicros / 1000);
    cpu["period"] = static_cast<uint64_t>(kCfsPeriodMicros);
  }
  if (!cpu.empty()) json["cpu"] = std::move(cpu);
  return json;
}

}  // namespace

const std::vector<std::string>& defaultCapabilities() {
  // containerd's oci.defaultUnixCaps(), which ctr and nerdctl start from (Docker's default set too).
  static const std::vector<std::string> capabilities = [] {
    std::vector<std::string> caps{"CAP_CHOWN",   "CAP_DAC_OVERRIDE", "CAP_FSETID",           "CAP_FOWNER",
                                  "CAP_MKNOD",   "CAP_NET_RAW",      "CAP_SETGID",           "CAP_SETUID",
                                  "CAP_SETFCAP", "CAP_SETPCAP",      "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
                                  "CAP_KILL",    "CAP_AUDIT_WRITE"};
    std::sort(caps.begin(), caps.end());
    return caps;
  }();
  return capabilities;
}

const std::vector<std::string>& knownCapabilities() {
  static const std::vector<std::string> capabilities = [] {
    std::vector<std::string> caps{"CAP_CHOWN",
                                  "CAP_DAC_OVERRIDE",
                                  "CAP_DAC_READ_SEARCH",
                                  "CAP_FOWNER",
                                  "CAP_FSETID",
                                  "CAP_KILL",
                                  "CAP_SETGID",
                                  "CAP_SETUID",
                                  "CAP_SETPCAP",
                                  "CAP_LINUX_IMMUTABLE",
                                  "CAP_NET_BIND_SERVICE",
                                  "CAP_NET_BROADCAST",
                                  "CAP_NET_ADMIN",
                                  "CAP_NET_RAW",
                                  "CAP_IPC_LOCK",
                                  "CAP_IPC_OWNER",
                                  "CAP_SYS_MODULE",
                                  "CAP_SYS_RAWIO",
                                  "CAP_SYS_CHROOT",
                                  "CAP_SYS_PTRACE",
                                  "CAP_SYS_PACCT",
                                  "CAP_SYS_ADMIN",
                                  "CAP_SYS_BOOT",
                                  "CAP_SYS_NICE",
                                  "CAP_SYS_RESOURCE",
                                  "CAP_SYS_TIME",
                                  "CAP_SYS_TTY_CONFIG",
                                  "CAP_MKNOD",
                                  "CAP_LEASE",
                                  "CAP_AUDIT_WRITE",
                                  "CAP_AUDIT_CONTROL",
                                  "CAP_SETFCAP",
                                  "CAP_MAC_OVERRIDE",
                                  "CAP_MAC_ADMIN",
                                  "CAP_SYSLOG",
                                  "CAP_WAKE_ALARM",
                                  "CAP_BLOCK_SUSPEND",
                                  "CAP_AUDIT_READ",
                                  "CAP_PERFMON",
                                  "CAP_BPF",
                                  "CAP_CHECKPOINT_RESTORE"};
    std::sort(caps.begin(), caps.end());
    return caps;
  }();
  return capabilities;
}

Result<ImageConfig> parseImageConfig(std::string_view configBlob) {
  const Json blob = Json::parse(configBlob.begin(), configBlob.end(), nullptr, /*allow_exceptions=*/false);
  if (blob.is_discarded()) return protocol("image config: the config blob is not valid JSON");
  if (!blob.is_object()) {
    return protocol(std::string("image config: the config blob is ") + blob.type_name() + ", expected an object");
  }
  ImageConfig image;
  const auto config = blob.find("config");
  // An image built FROM scratch with nothing set may have no config object at all.
  if (config == blob.end() || config->is_null()) return image;
  if (!config->is_object()) {
    return protocol(std::string("image config: config is ") + config->type_name() + ", expected an object");
  }
  auto entrypoint = stringArray(*config, "Entrypoint");
  if (!entrypoint.ok()) return entrypoint.error();
  auto cmd = stringArray(*config, "Cmd");
  if (!cmd.ok()) return cmd.error();
  auto env = stringArray(*config, "Env");
  if (!env.ok()) return env.error();
  auto workingDir = stringField(*config, "WorkingDir");
  if (!workingDir.ok()) return workingDir.error();
  auto user = stringField(*config, "User");
  if (!user.ok()) return user.error();
  image.entrypoint = std::move(*entrypoint);
  image.cmd = std::move(*cmd);
  image.env = std::move(*env);
  image.workingDir = std::move(*workingDir);
  image.user = std::move(*user);
  return image;
}

Result<std::string> buildOciSpec(const ContainerSpec& spec, const ImageConfig& image, const OciSpecOptions& options) {
  if (!validIdentifier(options.containerId)) {
    return invalid("container id " + quoted(options.containerId) +
                   " is not a containerd identifier (letters, digits and single '.', '_', '-' between them)");
  }
  if (!validIdentifier(options.nameSpace)) {
    return invalid("containerd namespace " + quoted(options.nameSpace) +
                   " is not a containerd identifier (letters, digits and single '.', '_', '-' between them); fix "
                   "runtime.containerd_namespace");
  }
  auto args = processArgs(spec, image);
  if (!args.ok()) return args.error();
  auto env = processEnv(spec, image);
  if (!env.ok()) return env.error();
  auto user = parseUser(image.user);
  if (!user.ok()) return user.error();
  if (!image.workingDir.empty() && !image.workingDir.starts_with("/")) {
    return invalid("the image's config.WorkingDir " + quoted(image.workingDir) + " is not an absolute path");
  }
  auto capabilities = capabilitySet(spec);
  if (!capabilities.ok()) return capabilities.error();
  auto mounts = allMounts(spec);
  if (!mounts.ok()) return mounts.error();
  auto linuxResources = resources(spec);
  if (!linuxResources.ok()) return linuxResources.error();

  const Json capabilityList(*capabilities);
  Json process{
      {"terminal", false},
      {"user", Json{{"uid", user->uid}, {"gid", user->gid}}},
      {"args", *args},
      {"env", *env},
      {"cwd", image.workingDir.empty() ? std::string("/") : image.workingDir},
      // Inheritable and ambient stay empty (as containerd has done since CVE-2022-24769): a
      // program the sensor executes gets capabilities only through the usual root rules.
      {"capabilities", Json{{"bounding", capabilityList},
                            {"effective", capabilityList},
                            {"inheritable", Json::array()},
                            {"permitted", capabilityList},
                            {"ambient", Json::array()}}},
      // containerd's default spec sets noNewPrivileges and ctr keeps it unless --allow-new-privs.
      // The sensor runs as root with every capability it needs already effective, so it never
      // needs an exec to grant more, and no_new_privs makes sure a setuid or file-capability binary
      // (say, one inside an image being scanned) cannot. Docker leaves it off by default, which only
      // matters to a container that relies on setuid helpers; the sensor does not. A privileged
      // container asks for no restrictions: docker --privileged runs without it and Kubernetes
      // refuses allowPrivilegeEscalation: false with privileged, so it is off there.
      {"noNewPrivileges", !spec.privileged},
  };
  if (options.openFilesLimit > 0) {
    process["rlimits"] = Json::array(
        {Json{{"type", "RLIMIT_NOFILE"}, {"hard", options.openFilesLimit}, {"soft", options.openFilesLimit}}});
  }
  // No apparmorProfile and no linux.seccomp: ctr applies neither unless asked (--seccomp,
  // --apparmor-default-profile), and the agent ships no profile of its own for the sensor.

  Json mountList = Json::array();
  for (const OciMount& mount : *mounts) {
    mountList.push_back(Json{{"destination", mount.destination},
                             {"type", mount.type},
                             {"source", mount.source},
                             {"options", mount.options}});
  }

  Json namespaces = Json::array();
  for (const char* type : {"pid", "ipc", "uts", "mount"}) namespaces.push_back(Json{{"type", type}});
  if (!spec.hostNetwork) namespaces.push_back(Json{{"type", "network"}});

  Json linuxSection{
      {"resources", std::move(*linuxResources)},
      {"cgroupsPath", "/" + options.nameSpace + "/" + options.containerId},
      {"namespaces", std::move(namespaces)},
  };
  if (!spec.privileged) {
    // containerd's populateDefaultUnixSpec lists, unchanged.
    linuxSection["maskedPaths"] =
        Json::array({"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                     "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"});
    linuxSection["readonlyPaths"] =
        Json::array({"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"});
  }

  Json document{
      {"ociVersion", "1.0.2"},
      {"process", std::move(process)},
      // The shim mounts the container's snapshot at <bundle>/rootfs.
      {"root", Json{{"path", "rootfs"}, {"readonly", false}}},
      {"mounts", std::move(mountList)},
      {"linux", std::move(linuxSection)},
  };
  return document.dump();
}

}  // namespace qcs::runtime::containerd

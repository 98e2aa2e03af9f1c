// `qcs-agent check`: the preflight report (README "qcs-agent check").
//
// Contract:
// - Every check yields one line: a name, pass | warn | fail | skip, a one-line detail, and a
//   remediation whenever the result is not pass. A check whose prerequisite failed is skip and
//   says which prerequisite.
// - The exit code is 0 when no check failed (warnings allowed) and 1 otherwise; a bad
//   configuration never gets here (the caller exits 78 as for every command).
// - Secret values (the sensor IDs, registry passwords) never appear in the report: checks only say
//   where a secret comes from, and the final text is scrubbed of every value that was read.
// - Checks only read: nothing is pulled, created or started, and no container is touched.
#pragma once

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "agent/config.h"
#include "common/result.h"

namespace qcs::agent {

enum class CheckResult { kPass, kWarn, kFail, kSkip };
const char* checkResultName(CheckResult result);  // "pass" | "warn" | "fail" | "skip"

struct CheckLine {
  std::string name;  // "runtime", "disk.runtime_root", ...
  CheckResult result = CheckResult::kSkip;
  std::string detail;       // one line
  std::string remediation;  // empty only when result is pass
};

struct CheckReport {
  std::vector<CheckLine> checks;
  // True when no check failed.
  bool ok() const;
};

// `[PASS] runtime: docker 24.0.7 at /var/run/docker.sock`, remediation indented on the next line,
// then a summary line.
std::string formatCheckText(const CheckReport& report);
// {"checks": [{"name","result","detail","remediation"}], "ok": bool}
nlohmann::json checkReportJson(const CheckReport& report);
// 0 when ok(), 1 otherwise.
int checkExitCode(const CheckReport& report);
// Replaces every occurrence of each non-empty secret in text with "<redacted>".
std::string scrubSecrets(std::string text, const std::vector<std::string>& secrets);

// ---- Thresholds and pure classifications, exposed for tests ----------------------------------------

// Clock skew against a server's Date header: warn past 60 s, fail past 5 min (TLS certificates,
// SigV4 signatures and registry tokens start failing around there).
inline constexpr std::chrono::seconds kClockSkewWarn{60};
inline constexpr std::chrono::seconds kClockSkewFail{5 * 60};
// skew = local clock - server clock; source names the server ("POD_URL", "registry").
CheckLine classifyClockSkew(std::chrono::seconds skew, const std::string& source);

// Free space thresholds of one directory.
struct DiskNeed {
  uint64_t failBelow = 0;  // bytes
  uint64_t warnBelow = 0;  // bytes
  std::string why;         // "the sensor image and the images it unpacks"
};
// The runtime's root holds the sensor image (several hundred MiB) and what it unpacks while scanning.
inline constexpr uint64_t kRuntimeRootFailBelow = uint64_t{1} << 30;  // 1 GiB
inline constexpr uint64_t kRuntimeRootWarnBelow = uint64_t{2} << 30;  // 2 GiB
// The persistent storage path holds the sensor's database and scan results.
inline constexpr uint64_t kStorageFailBelow = uint64_t{512} << 20;  // 512 MiB
inline constexpr uint64_t kStorageWarnBelow = uint64_t{1} << 30;    // 1 GiB
// The containerd log directory needs room for the capped log and its copy during truncation.
DiskNeed containerdLogDirNeed(int64_t logMaxBytes);

CheckLine classifyFreeSpace(const std::string& name, const std::string& path, uint64_t freeBytes, const DiskNeed& need);
// "120 MiB", "1.5 GiB": sizes for people.
std::string humanBytes(uint64_t bytes);

// An HTTP-date (RFC 9110 IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT"); nullopt otherwise.
std::optional<std::chrono::system_clock::time_point> parseHttpDate(const std::string& text);

// The cgroup hierarchy of a host, from what is mounted at <host_root>/sys/fs/cgroup.
enum class CgroupVersion { kUnknown, kV1, kHybrid, kV2 };
// fsType is statfs(2)'s f_type of <root>/sys/fs/cgroup; unifiedIsCgroup2 whether
// <root>/sys/fs/cgroup/unified is a cgroup2 mount (systemd's hybrid layout).
CgroupVersion classifyCgroup(int64_t fsType, bool unifiedIsCgroup2);
CheckLine cgroupCheckLine(CgroupVersion version, const std::string& path);

// The proxy the POD_URL check goes through: sensor.proxy.qualys_https_proxy, else
// sensor.proxy.https_proxy; "" means libcurl's own choice from the environment (HTTPS_PROXY).
std::string podUrlProxy(const Config& config);

// ---- The command -----------------------------------------------------------------------------------

// Runs every check against the real node. The secret values it read (sensor IDs, registry
// credentials) are appended to secretValues when given, so callers can scrub what they print.
CheckReport runChecks(const Config& config, std::vector<std::string>* secretValues = nullptr);
// `qcs-agent check`: prints the report ("text" or "json") on stdout; returns the exit code.
int commandCheck(const Config& config, const std::string& output);

}  // namespace qcs::agent

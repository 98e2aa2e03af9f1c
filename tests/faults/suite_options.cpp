#include "faults/suite_options.h"

#include <algorithm>
#include <charconv>
#include <set>
#include <sstream>

namespace qcs::faults {

namespace {

const std::vector<std::string> kAllRuntimes = {"docker", "containerd"};

Error invalid(const std::string& message) { return makeError(ErrorCode::kInvalidArgument, message); }

template <typename Int>
bool parseInteger(const std::string& text, Int& out) {
  const char* begin = text.data();
  const char* end = begin + text.size();
  auto [ptr, ec] = std::from_chars(begin, end, out);
  return ec == std::errc() && ptr == end && !text.empty();
}

std::string joined(const std::vector<std::string>& items, const char* separator) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : separator) + item;
  return out;
}

// Keeps the canonical order and drops repeats.
std::vector<std::string> inCanonicalOrder(const std::set<std::string>& chosen, const std::vector<std::string>& all) {
  std::vector<std::string> out;
  for (const auto& item : all) {
    if (chosen.count(item)) out.push_back(item);
  }
  return out;
}

}  // namespace

const std::vector<std::pair<std::string, std::string>>& faultDescriptions() {
  static const std::vector<std::pair<std::string, std::string>> descriptions = {
      {"sensor-sigkill", "SIGKILL the sensor's process"},
      {"exit-24", "the sensor exits 24 (recoverable)"},
      {"exit-1", "the sensor exits 1 (irrecoverable: the agent waits backoff.max)"},
      {"oom", "the sensor is OOM-killed by its memory limit"},
      {"container-removed", "the sensor's container is force-removed"},
      {"image-removed", "the sensor's image and container are removed: recovery needs a pull"},
      {"registry-down", "image and container removed while the registry refuses connections"},
      {"secret-source-down", "the sensor is killed while Secrets Manager drops every connection"},
      {"daemon-restart", "the runtime daemon is stopped and started again"},
      {"socket-gone", "the daemon stops, its socket file is removed, then it comes back"},
      {"agent-sigkill", "the agent is SIGKILLed at a random point of pull/create/start, then started again"},
      {"two-agents", "two agents start at the same instant for the same sensor"},
      {"disk-full", "the filesystem of the sensor's log is filled, the sensor killed, then space freed"},
  };
  return descriptions;
}

const std::vector<std::string>& allFaults() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const auto& [name, what] : faultDescriptions()) out.push_back(name);
    return out;
  }();
  return names;
}

std::string suiteUsage() {
  std::ostringstream out;
  out << "usage: qcs_fault_suite --runtime docker|containerd|both --iterations N [--faults a,b,...]\n"
         "                       --report PATH [--seed S] [--verbose]\n\n"
         "Starts private daemons, a registry and a Secrets Manager emulator, runs the real qcs-agent,\n"
         "injects every fault N times per runtime and writes a markdown report to PATH. Exits 0 only\n"
         "when every injected fault recovered with no duplicate sensor, no leak and no secret seen\n"
         "outside the sensor. Needs root.\n\nfaults (default: all):\n";
  for (const auto& [name, what] : faultDescriptions())
    out << "  " << name << std::string(20 - name.size(), ' ') << what << "\n";
  return out.str();
}

Result<SuiteOptions> parseSuiteOptions(const std::vector<std::string>& args, uint64_t defaultSeed) {
  SuiteOptions options;
  options.seed = defaultSeed;
  std::set<std::string> runtimes;
  std::set<std::string> faults;
  bool iterationsGiven = false;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string flag = args[i];
    std::string value;
    bool hasValue = false;
    if (auto eq = flag.find('='); flag.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag = flag.substr(0, eq);
      hasValue = true;
    }
    auto needValue = [&]() -> Result<std::string> {
      if (hasValue) return value;
      if (i + 1 >= args.size()) return invalid(flag + " needs a value");
      return args[++i];
    };
    if (flag == "--help" || flag == "-h") {
      options.help = true;
      return options;
    }
    if (flag == "--verbose" || flag == "-v") {
      options.verbose = true;
    } else if (flag == "--runtime") {
      auto v = needValue();
      if (!v) return v.error();
      if (*v == "both") {
        runtimes.insert(kAllRuntimes.begin(), kAllRuntimes.end());
      } else if (std::find(kAllRuntimes.begin(), kAllRuntimes.end(), *v) != kAllRuntimes.end()) {
        runtimes.insert(*v);
      } else {
        return invalid("--runtime " + *v + ": use docker, containerd or both");
      }
    } else if (flag == "--iterations") {
      auto v = needValue();
      if (!v) return v.error();
      if (!parseInteger(*v, options.iterations) || options.iterations < 1 || options.iterations > 10000) {
        return invalid("--iterations " + *v + ": use a whole number from 1 to 10000");
      }
      iterationsGiven = true;
    } else if (flag == "--faults") {
      auto v = needValue();
      if (!v) return v.error();
      std::istringstream list(*v);
      for (std::string name; std::getline(list, name, ',');) {
        if (name.empty()) continue;
        if (std::find(allFaults().begin(), allFaults().end(), name) == allFaults().end()) {
          return invalid("--faults: unknown fault '" + name + "'; known: " + joined(allFaults(), ", "));
        }
        faults.insert(name);
      }
      if (faults.empty()) return invalid("--faults " + *v + ": name at least one fault");
    } else if (flag == "--report") {
      auto v = needValue();
      if (!v) return v.error();
      if (v->empty()) return invalid("--report needs a file path");
      options.reportPath = *v;
    } else if (flag == "--seed") {
      auto v = needValue();
      if (!v) return v.error();
      if (!parseInteger(*v, options.seed)) return invalid("--seed " + *v + ": use a non-negative whole number");
    } else {
      return invalid("unknown argument '" + args[i] + "' (see --help)");
    }
  }
  if (runtimes.empty()) return invalid("--runtime is required: docker, containerd or both");
  if (!iterationsGiven) return invalid("--iterations is required (e.g. --iterations 20)");
  if (options.reportPath.empty()) return invalid("--report PATH is required");
  options.runtimes = inCanonicalOrder(runtimes, kAllRuntimes);
  options.faults = faults.empty() ? allFaults() : inCanonicalOrder(faults, allFaults());
  return options;
}

}  // namespace qcs::faults

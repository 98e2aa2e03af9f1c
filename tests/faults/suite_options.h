// The fault suite's command line.
//
//   qcs_fault_suite --runtime docker|containerd|both --iterations N [--faults a,b,...]
//                   --report PATH [--seed S] [--verbose]
//
// Contract: parseSuiteOptions never exits or prints; a bad argument is a kInvalidArgument error that
// names the argument and what is accepted. Runtimes and faults run in the order of kAllRuntimes and
// allFaults(), whatever order they were given in; a fault or runtime named twice runs once.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/result.h"

namespace qcs::faults {

// Every fault the suite knows, in the order it runs them.
const std::vector<std::string>& allFaults();
// A line per fault: its name and what it does (for --help and the report).
const std::vector<std::pair<std::string, std::string>>& faultDescriptions();

struct SuiteOptions {
  std::vector<std::string> runtimes;  // "docker", "containerd"
  int iterations = 20;
  std::vector<std::string> faults;
  std::string reportPath;
  uint64_t seed = 0;
  bool verbose = false;
  bool help = false;  // --help: print suiteUsage() and exit 0; nothing else is checked
};

// args excludes the program name. defaultSeed is used when --seed is absent.
Result<SuiteOptions> parseSuiteOptions(const std::vector<std::string>& args, uint64_t defaultSeed);
std::string suiteUsage();

}  // namespace qcs::faults

// qcs_fault_suite: the fault-injection run of issue 7 (see fault_suite.h and README.md).
#include <chrono>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "faults/fault_suite.h"
#include "faults/suite_options.h"

int main(int argc, char** argv) {
  try {
    const std::vector<std::string> args(argv + 1, argv + argc);
    const auto defaultSeed = static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count());
    auto options = qcs::faults::parseSuiteOptions(args, defaultSeed);
    if (!options) {
      std::cerr << "qcs_fault_suite: " << options.message() << "\n\n" << qcs::faults::suiteUsage();
      return 2;
    }
    if (options->help) {
      std::cout << qcs::faults::suiteUsage();
      return 0;
    }
    return qcs::faults::runFaultSuite(options.value());
  } catch (const std::exception& e) {
    std::cerr << "qcs_fault_suite: " << e.what() << "\n";
    return 2;
  }
}

#include <gtest/gtest.h>

#include "faults/suite_options.h"

namespace qcs::faults {
namespace {

Result<SuiteOptions> parse(std::vector<std::string> args) { return parseSuiteOptions(args, 42); }

TEST(SuiteOptions, BothRuntimesEveryFaultByDefault) {
  auto o = parse({"--runtime", "both", "--iterations", "3", "--report", "/tmp/r.md"});
  ASSERT_TRUE(o.ok()) << o.message();
  EXPECT_EQ(o->runtimes, (std::vector<std::string>{"docker", "containerd"}));
  EXPECT_EQ(o->faults, allFaults());
  EXPECT_EQ(o->iterations, 3);
  EXPECT_EQ(o->reportPath, "/tmp/r.md");
  EXPECT_EQ(o->seed, 42u) << "the default seed when none is given";
}

TEST(SuiteOptions, FaultsRunInTheSuitesOrderOnceEach) {
  auto o = parse(
      {"--runtime=containerd", "--iterations=1", "--report=r.md", "--faults", "oom,sensor-sigkill,oom", "--seed", "7"});
  ASSERT_TRUE(o.ok()) << o.message();
  EXPECT_EQ(o->runtimes, (std::vector<std::string>{"containerd"}));
  EXPECT_EQ(o->faults, (std::vector<std::string>{"sensor-sigkill", "oom"}));
  EXPECT_EQ(o->seed, 7u);
}

TEST(SuiteOptions, EveryFaultOfTheIssueIsThere) {
  for (const char* fault :
       {"sensor-sigkill", "exit-24", "exit-1", "oom", "container-removed", "image-removed", "daemon-restart",
        "socket-gone", "registry-down", "secret-source-down", "agent-sigkill", "two-agents", "disk-full"}) {
    EXPECT_NE(std::find(allFaults().begin(), allFaults().end(), fault), allFaults().end()) << fault;
  }
  EXPECT_EQ(allFaults().size(), faultDescriptions().size());
}

TEST(SuiteOptions, BadArgumentsAreNamed) {
  struct Case {
    std::vector<std::string> args;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {{"--iterations", "2", "--report", "r"}, "--runtime is required"},
      {{"--runtime", "podman", "--iterations", "2", "--report", "r"}, "--runtime podman"},
      {{"--runtime", "docker", "--report", "r"}, "--iterations is required"},
      {{"--runtime", "docker", "--iterations", "0", "--report", "r"}, "--iterations 0"},
      {{"--runtime", "docker", "--iterations", "2x", "--report", "r"}, "--iterations 2x"},
      {{"--runtime", "docker", "--iterations", "2"}, "--report PATH is required"},
      {{"--runtime", "docker", "--iterations", "2", "--report", "r", "--faults", "oom,meteor"},
       "unknown fault 'meteor'"},
      {{"--runtime", "docker", "--iterations", "2", "--report", "r", "--faults", ","}, "name at least one fault"},
      {{"--runtime", "docker", "--iterations", "2", "--report", "r", "--seed", "-1"}, "--seed -1"},
      {{"--runtime", "docker", "--iterations", "2", "--report", "r", "--loud"}, "unknown argument '--loud'"},
      {{"--runtime"}, "--runtime needs a value"},
  };
  for (const auto& c : cases) {
    auto o = parse(c.args);
    ASSERT_FALSE(o.ok()) << c.needle;
    EXPECT_EQ(o.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(o.message().find(c.needle), std::string::npos) << o.message();
  }
}

TEST(SuiteOptions, HelpNeedsNothingElse) {
  auto o = parse({"--help"});
  ASSERT_TRUE(o.ok());
  EXPECT_TRUE(o->help);
  EXPECT_NE(suiteUsage().find("two-agents"), std::string::npos);
}

}  // namespace
}  // namespace qcs::faults

// The stale-lease sweep's dispatch: the agent's connector calls it for whatever runtime it opened,
// and only containerd's has leases. (The sweep itself runs against a real containerd in
// tests/integration/containerd_pull_test.cpp.)
#include <gtest/gtest.h>

#include "common/clock.h"
#include "fake_runtime.h"
#include "runtime/containerd/containerd_runtime.h"

namespace qcs::runtime::containerd {
namespace {

TEST(ContainerdLeaseSweep, ARuntimeThatIsNotContainerdsHasNothingToSweepAndIsNotCalled) {
  FakeClock clock;
  testing::FakeRuntime docker(clock);

  const StaleLeaseSweep sweep = deleteStaleLeases(docker);

  EXPECT_TRUE(sweep.deleted.empty());
  EXPECT_TRUE(sweep.failures.empty());
  EXPECT_EQ(docker.pulls + docker.creates + docker.removes + docker.stops, 0);
}

}  // namespace
}  // namespace qcs::runtime::containerd

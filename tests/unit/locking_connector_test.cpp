// The locking connector: the instance lock before anything touches a container, and the cleanup of
// what an earlier agent left only under that lock. (The cleanup itself, containerd's lease sweep,
// runs against a real containerd in tests/integration/containerd_pull_test.cpp; the whole agent in
// ContainerdAgentTest.TheNextAgentDeletesTheLeasesAKilledOneLeftThoughItPullsNothing.)
#include <gtest/gtest.h>

#include <unistd.h>
#include <memory>
#include <string>

#include "agent/components.h"
#include "agent/config.h"
#include "common/clock.h"
#include "fake_runtime.h"

namespace qcs::agent {
namespace {

class FakeConnector final : public RuntimeConnector {
 public:
  explicit FakeConnector(Clock& clock) : runtime(clock) {}
  Result<std::unique_ptr<runtime::ContainerRuntime>> connect() override {
    ++connects;
    return std::unique_ptr<runtime::ContainerRuntime>(std::make_unique<testing::ForwardingRuntime>(runtime));
  }
  testing::FakeRuntime runtime;
  int connects = 0;
};

class NoObserver final : public RuntimeObserver {
 public:
  void runtimeCall(const std::string&, const char*, double, bool) override {}
};

Config configFor(const std::string& sensor) {
  Config config;
  // Abstract lock names are per network namespace: a name of this process's own.
  config.sensor.name = sensor + "-" + std::to_string(::getpid());
  return config;
}

TEST(LockingConnectorTest, EveryConnectionRemovesTheLeftoversOnceUnderTheLock) {
  FakeClock clock;
  FakeConnector inner(clock);
  inner.runtime.leftovers.removed = {"lease qcs-agent-pull-1-2-3-deadbeef"};
  inner.runtime.leftovers.failures = {makeError(ErrorCode::kUnavailable, "deleting lease x: gone")};
  auto locking = makeLockingConnector(inner, configFor("sweeps"), [](const std::string&) { FAIL() << "no conflict"; });

  auto first = locking->connect();
  ASSERT_TRUE(first) << first.message();
  EXPECT_EQ(inner.runtime.leftoverSweeps, 1);
  EXPECT_EQ(inner.runtime.creates + inner.runtime.removes + inner.runtime.pulls + inner.runtime.stops, 0);
  // A reconnect (the runtime came back) is a new connection: what an agent left before it, too.
  auto second = locking->connect();
  ASSERT_TRUE(second) << second.message();
  EXPECT_EQ(inner.runtime.leftoverSweeps, 2);
}

TEST(LockingConnectorTest, AnAgentThatDoesNotGetTheLockRemovesNothing) {
  FakeClock clock;
  FakeConnector holderInner(clock);
  FakeConnector otherInner(clock);
  const Config config = configFor("contended");
  auto holder = makeLockingConnector(holderInner, config, [](const std::string&) { FAIL() << "no conflict"; });
  ASSERT_TRUE(holder->connect());

  std::string conflict;
  auto other = makeLockingConnector(otherInner, config, [&](const std::string& why) { conflict = why; });
  auto refused = other->connect();
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.code(), ErrorCode::kConflict);
  EXPECT_FALSE(conflict.empty());
  // The holder's leases are live: the loser must not sweep them.
  EXPECT_EQ(otherInner.runtime.leftoverSweeps, 0);
  EXPECT_EQ(holderInner.runtime.leftoverSweeps, 1);
}

TEST(LockingConnectorTest, TheInstrumentingConnectorOnTopStillReachesTheRuntimesCleanup) {
  FakeClock clock;
  FakeConnector inner(clock);
  NoObserver observer;
  auto locking = makeLockingConnector(inner, configFor("decorated"), [](const std::string&) {});
  auto instrumenting = makeInstrumentingConnector(*locking, observer, clock);
  auto connected = instrumenting->connect();
  ASSERT_TRUE(connected) << connected.message();
  EXPECT_EQ(inner.runtime.leftoverSweeps, 1);
  // And a decorated runtime forwards the call rather than answering for the runtime.
  inner.runtime.leftovers.removed = {"lease a"};
  EXPECT_EQ(connected.value()->removeLeftovers().removed, std::vector<std::string>{"lease a"});
  EXPECT_EQ(inner.runtime.leftoverSweeps, 2);
}

}  // namespace
}  // namespace qcs::agent

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "agent/components.h"
#include "fake_runtime.h"

namespace qcs::agent {
namespace {

struct RecordedCall {
  std::string runtime;
  std::string op;
  bool failed;
};

class RecordingObserver final : public RuntimeObserver {
 public:
  void runtimeCall(const std::string& runtime, const char* op, double /*seconds*/, bool failed) override {
    calls.push_back({runtime, op, failed});
  }
  std::vector<RecordedCall> calls;
};

class ScriptedConnector final : public RuntimeConnector {
 public:
  explicit ScriptedConnector(Clock& clock) : runtime(clock) {}
  Result<std::unique_ptr<runtime::ContainerRuntime>> connect() override {
    if (fail) return makeError(ErrorCode::kUnavailable, "no container runtime answered");
    return std::unique_ptr<runtime::ContainerRuntime>(std::make_unique<testing::ForwardingRuntime>(runtime));
  }
  testing::FakeRuntime runtime;
  bool fail = true;
};

TEST(InstrumentingConnectorTest, AFailedConnectIsCountedAsAnErrorOfTheUnknownRuntime) {
  FakeClock clock;
  RecordingObserver observer;
  ScriptedConnector inner(clock);
  auto connector = makeInstrumentingConnector(inner, observer, clock);

  auto failed = connector->connect();
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.message(), "no container runtime answered");
  ASSERT_EQ(observer.calls.size(), 1u);
  EXPECT_EQ(observer.calls[0].runtime, "unknown");
  EXPECT_EQ(observer.calls[0].op, "connect");
  EXPECT_TRUE(observer.calls[0].failed);

  inner.fail = false;
  auto connected = connector->connect();
  ASSERT_TRUE(connected) << connected.message();
  ASSERT_EQ(observer.calls.size(), 2u);
  EXPECT_EQ(observer.calls[1].runtime, "docker");
  EXPECT_EQ(observer.calls[1].op, "connect");
  EXPECT_FALSE(observer.calls[1].failed);

  // The runtime it hands out is instrumented too.
  ASSERT_TRUE(connected.value()->ping());
  ASSERT_EQ(observer.calls.size(), 3u);
  EXPECT_EQ(observer.calls[2].op, "ping");
}

}  // namespace
}  // namespace qcs::agent

#include "agent/backoff.h"

#include <gtest/gtest.h>

namespace qcs::agent {
namespace {

using namespace std::chrono_literals;

class SequenceRandom final : public Random {
 public:
  double value = 0.5;
  double uniform() override { return value; }
};

TEST(RestartBackoffTest, DoublesFromInitialUpToTheCap) {
  SequenceRandom random;
  RestartBackoff backoff({1000ms, 10000ms, 2.0, 0.1, 600000ms}, random);
  std::vector<int64_t> delays;
  for (int i = 0; i < 7; ++i) delays.push_back(backoff.nextDelay(false).count());
  EXPECT_EQ(delays, (std::vector<int64_t>{1000, 2000, 4000, 8000, 10000, 10000, 10000}));
  EXPECT_EQ(backoff.failures(), 7);
}

TEST(RestartBackoffTest, JitterSpreadsWithinTheConfiguredFraction) {
  SequenceRandom random;
  RestartBackoff low({1000ms, 300000ms, 2.0, 0.1, 600000ms}, random);
  random.value = 0.0;
  EXPECT_EQ(low.nextDelay(false), 900ms);
  random.value = 0.999999;
  RestartBackoff high({1000ms, 300000ms, 2.0, 0.1, 600000ms}, random);
  EXPECT_EQ(high.nextDelay(false), 1100ms);
}

TEST(RestartBackoffTest, JitterNeverExceedsTheMaximum) {
  SequenceRandom random;
  random.value = 0.999999;
  RestartBackoff backoff({1000ms, 4000ms, 2.0, 0.1, 600000ms}, random);
  for (int i = 0; i < 10; ++i) EXPECT_LE(backoff.nextDelay(false), 4000ms);
}

TEST(RestartBackoffTest, IrrecoverableFailuresWaitTheMaximum) {
  SequenceRandom random;
  RestartBackoff backoff({1000ms, 300000ms, 2.0, 0.1, 600000ms}, random);
  EXPECT_EQ(backoff.nextDelay(true), 300000ms);
  EXPECT_EQ(backoff.nextDelay(true), 300000ms);
}

TEST(RestartBackoffTest, ResetStartsOver) {
  SequenceRandom random;
  RestartBackoff backoff({500ms, 300000ms, 3.0, 0.0, 600000ms}, random);
  EXPECT_EQ(backoff.nextDelay(false), 500ms);
  EXPECT_EQ(backoff.nextDelay(false), 1500ms);
  backoff.reset();
  EXPECT_EQ(backoff.failures(), 0);
  EXPECT_EQ(backoff.nextDelay(false), 500ms);
}

}  // namespace
}  // namespace qcs::agent

// RestartBackoff: capped exponential backoff with jitter, per SPEC "Supervision".
//
// The n-th consecutive failure waits initial * multiplier^(n-1), capped at max, spread by
// ±jitter. An irrecoverable failure (the sensor said it needs a configuration change) waits the
// maximum each time. reset() starts over; the supervisor calls it once the sensor has stayed up
// for reset_after.
#pragma once

#include <chrono>

#include "common/random.h"

namespace qcs::agent {

struct BackoffPolicy {
  std::chrono::milliseconds initial{1000};
  std::chrono::milliseconds max{300000};
  double multiplier = 2.0;
  double jitter = 0.1;
  std::chrono::milliseconds resetAfter{600000};
};

class RestartBackoff {
 public:
  RestartBackoff(BackoffPolicy policy, Random& random) : policy_(policy), random_(random) {}

  // Records one more failure and returns how long to wait before the next attempt.
  std::chrono::milliseconds nextDelay(bool irrecoverable);
  void reset() { failures_ = 0; }
  int failures() const { return failures_; }
  const BackoffPolicy& policy() const { return policy_; }

 private:
  BackoffPolicy policy_;
  Random& random_;
  int failures_ = 0;
};

}  // namespace qcs::agent

// Clock: the only source of time for logic that waits or measures (backoff, reconcile timers).
//
// Production code uses SystemClock; unit tests use FakeClock and advance simulated time, so no
// test sleeps. now() is monotonic; wallNow() is calendar time for reports and timestamps only.
#pragma once

#include <chrono>
#include <mutex>

namespace qcs {

using SteadyTime = std::chrono::steady_clock::time_point;
using WallTime = std::chrono::system_clock::time_point;
using Duration = std::chrono::steady_clock::duration;
using Millis = std::chrono::milliseconds;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual SteadyTime now() const = 0;
  virtual WallTime wallNow() const = 0;
};

class SystemClock final : public Clock {
 public:
  SteadyTime now() const override { return std::chrono::steady_clock::now(); }
  WallTime wallNow() const override { return std::chrono::system_clock::now(); }
};

// Simulated time for tests: starts at an arbitrary fixed point and moves only when told.
class FakeClock final : public Clock {
 public:
  SteadyTime now() const override {
    std::lock_guard lock(mu_);
    return steady_;
  }
  WallTime wallNow() const override {
    std::lock_guard lock(mu_);
    return wall_;
  }
  void advance(Duration d) {
    std::lock_guard lock(mu_);
    steady_ += d;
    wall_ += std::chrono::duration_cast<std::chrono::system_clock::duration>(d);
  }

 private:
  mutable std::mutex mu_;
  SteadyTime steady_{std::chrono::hours(1000)};
  WallTime wall_{std::chrono::seconds(1'800'000'000)};
};

}  // namespace qcs

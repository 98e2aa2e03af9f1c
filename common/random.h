// Random: injected randomness (backoff jitter). Tests use a fixed sequence.
#pragma once

#include <mutex>
#include <random>

namespace qcs {

class Random {
 public:
  virtual ~Random() = default;
  // A uniformly distributed value in [0, 1).
  virtual double uniform() = 0;
};

class SystemRandom final : public Random {
 public:
  SystemRandom() : engine_(std::random_device{}()) {}
  double uniform() override {
    std::lock_guard lock(mu_);
    return std::uniform_real_distribution<double>(0.0, 1.0)(engine_);
  }

 private:
  std::mutex mu_;
  std::mt19937_64 engine_;
};

}  // namespace qcs

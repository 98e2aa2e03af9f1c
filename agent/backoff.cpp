#include "agent/backoff.h"

#include <algorithm>
#include <cmath>

namespace qcs::agent {

std::chrono::milliseconds RestartBackoff::nextDelay(bool irrecoverable) {
  ++failures_;
  const double maxMs = static_cast<double>(policy_.max.count());
  if (irrecoverable) return policy_.max;
  double base = static_cast<double>(policy_.initial.count()) * std::pow(policy_.multiplier, failures_ - 1);
  base = std::min(base, maxMs);
  double spread = 1.0 + policy_.jitter * (2.0 * random_.uniform() - 1.0);
  double delay = std::clamp(base * spread, 0.0, maxMs);
  return std::chrono::milliseconds(static_cast<int64_t>(std::llround(delay)));
}

}  // namespace qcs::agent

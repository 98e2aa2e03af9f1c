// FUZZ_CHECK: the invariant check of the harnesses. A broken invariant is a finding, so it aborts
// (libFuzzer saves the input as a crash artifact; the replay test fails) after saying which
// invariant broke and where.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace qcs::fuzz {

[[noreturn]] inline void invariantFailed(const char* file, int line, const char* condition, std::string_view detail) {
  std::fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n  %.*s\n", file, line, condition, int(detail.size()),
               detail.data());
  std::abort();
}

}  // namespace qcs::fuzz

#define FUZZ_CHECK(condition, detail)                                                         \
  do {                                                                                        \
    if (!(condition)) ::qcs::fuzz::invariantFailed(__FILE__, __LINE__, #condition, (detail)); \
  } while (false)

# Compiler and hardening flags live on an INTERFACE target that every project target links,
# never on the global CMAKE_CXX_FLAGS.
add_library(qcs_build_flags INTERFACE)
add_library(qcs::build_flags ALIAS qcs_build_flags)
target_compile_options(qcs_build_flags INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wcast-align -Wunused -Woverloaded-virtual
  -Wimplicit-fallthrough -Wformat=2
  -fstack-protector-strong
  $<$<NOT:$<CONFIG:Debug>>:-D_FORTIFY_SOURCE=2>)
target_link_options(qcs_build_flags INTERFACE -Wl,-z,relro,-z,now -Wl,--as-needed)
if(QCS_WARNINGS_AS_ERRORS)
  target_compile_options(qcs_build_flags INTERFACE -Werror)
endif()
if(QCS_SANITIZE)
  target_compile_options(qcs_build_flags INTERFACE -fsanitize=${QCS_SANITIZE} -fno-omit-frame-pointer)
  target_link_options(qcs_build_flags INTERFACE -fsanitize=${QCS_SANITIZE})
endif()
if(QCS_FUZZ)
  # Every project library gets libFuzzer's coverage instrumentation; only the harnesses link the
  # fuzzer runtime (-fsanitize=fuzzer, in tests/fuzz). UBSan findings abort so the fuzzer sees them.
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "QCS_FUZZ=ON needs clang (libFuzzer); configure with `cmake --preset sanitize`")
  endif()
  target_compile_options(qcs_build_flags INTERFACE -fsanitize=fuzzer-no-link -fno-sanitize-recover=all)
endif()

# The revision is the git commit the binary was built from ("unknown" outside a checkout).
execute_process(COMMAND git rev-parse --short=12 HEAD
  WORKING_DIRECTORY ${CMAKE_SOURCE_DIR} OUTPUT_VARIABLE QCS_REVISION
  OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE _qcs_rev_rc)
if(NOT _qcs_rev_rc EQUAL 0 OR QCS_REVISION STREQUAL "")
  set(QCS_REVISION "unknown")
endif()
set(QCS_VERSION ${PROJECT_VERSION})

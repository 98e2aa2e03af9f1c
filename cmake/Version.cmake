# The version comes from project(); the revision is the git commit the binary is built from,
# refreshed on every build (not only at configure time) by cmake/WriteRevision.cmake.
set(QCS_VERSION ${PROJECT_VERSION})
set(QCS_GENERATED_DIR ${CMAKE_BINARY_DIR}/generated)
add_custom_target(qcs_revision
  COMMAND ${CMAKE_COMMAND} -DSOURCE_DIR=${CMAKE_SOURCE_DIR} -DOUTPUT=${QCS_GENERATED_DIR}/qcs_revision.h
          -DVERSION=${QCS_VERSION} -P ${CMAKE_SOURCE_DIR}/cmake/WriteRevision.cmake
  BYPRODUCTS ${QCS_GENERATED_DIR}/qcs_revision.h
  COMMENT "Recording the git revision")

// ImageReference: a Docker/OCI image reference split into its parts, with Docker's defaults
// (docker.io registry, library/ namespace, tag latest).
#pragma once

#include <string>

#include "common/result.h"

namespace qcs::runtime {

struct ImageReference {
  std::string registry;    // "docker.io", "123.dkr.ecr.eu-west-1.amazonaws.com", "127.0.0.1:5000"
  std::string repository;  // "qualys/qcs-sensor" (with "library/" added for docker.io single names)
  std::string tag;         // "latest" when neither tag nor digest was given
  std::string digest;      // "sha256:..." or ""

  // The repository as Docker names it, without tag or digest ("busybox", "127.0.0.1:5000/x").
  std::string name() const;
  // registry/repository[:tag][@digest] as Docker would print it.
  std::string canonical() const;
  // The reference the operator would recognise: without "docker.io/library/".
  std::string familiar() const;
  bool isDockerHub() const { return registry == "docker.io"; }
};

Result<ImageReference> parseImageReference(const std::string& text);

}  // namespace qcs::runtime

// Cloud platform and orchestrator detection.
//
// Contract: detectPlatform() never fails and never throws; what it cannot learn becomes a warning.
// It looks at local evidence first — DMI identity files under <hostRoot>/sys/class/dmi/id/, the
// environment, <hostRoot>/etc/ecs/ecs.config — and contacts a cloud's metadata service ONLY when
// that evidence (or an explicit mode aws/azure/gcp) says the node runs on that cloud; with no
// evidence it sends no request at all. Each metadata request uses options.metadataTimeout for both
// connecting and the whole exchange, and is tried once (no retries: a metadata service that does
// not answer quickly is not going to). Every endpoint is overridable, by option or by the standard
// variables AWS_EC2_METADATA_SERVICE_ENDPOINT, QCS_AZURE_IMDS_ENDPOINT and GCE_METADATA_HOST;
// AWS_EC2_METADATA_DISABLED=true keeps it away from AWS IMDS.
//
// Decisions:
//   - cloud: aws from DMI "Amazon EC2" (sys_vendor, bios_vendor or board_vendor), a bios_version
//     naming amazon (Xen-era instances), ECS task variables, or an ecs.config that is not ECS
//     Anywhere (ECS_EXTERNAL=true); azure from Azure's chassis asset tag only (a plain Hyper-V VM
//     also says "Microsoft Corporation"); gcp from "Google" in sys_vendor, product_name or
//     bios_vendor. Two clouds' evidence at once: the first of aws, azure, gcp wins, with a warning.
//   - region: the metadata service's answer, else AWS_REGION / AWS_DEFAULT_REGION (aws), else the
//     AWS_DEFAULT_REGION of an ECS Anywhere ecs.config; zone only from the metadata service.
//   - orchestrator: ecs from ecs.config or the ECS task variables (cluster from ecs.config's
//     ECS_CLUSTER, else the ECS_CLUSTER variable, else "default"); otherwise, with
//     KUBERNETES_SERVICE_HOST set, eks/aks/gke by cloud or plain "kubernetes".
//   - mode none: nothing is read or contacted. Mode aws/azure/gcp: the cloud is taken as given
//     (DMI that names another cloud adds a warning); orchestrator detection still runs.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "platform/cloud_http.h"
#include "platform/secrets.h"

namespace qcs::platform {

struct PlatformInfo {
  std::string cloud = "none";         // aws | azure | gcp | none
  std::string orchestrator = "none";  // ecs | eks | aks | gke | kubernetes | none
  std::string region;                 // "us-east-1", "westeurope", "us-central1"; empty when unknown
  std::string zone;                   // "us-east-1a", "us-central1-a", Azure "1"; empty when unknown
  std::string cluster;                // ECS cluster name (ECS only); empty elsewhere
  std::vector<std::string> evidence;  // what decided it: "dmi sys_vendor=Amazon EC2", "imds placement/region"
  std::vector<std::string> warnings;  // what could not be learned, and why
  bool operator==(const PlatformInfo&) const = default;
};

struct PlatformDetectOptions {
  std::string mode = "auto";      // auto | none | aws | azure | gcp (config platform.detect)
  std::string hostRoot = "/";     // DMI files and /etc/ecs/ecs.config are read under it
  std::string awsImdsEndpoint;    // "" = AWS_EC2_METADATA_SERVICE_ENDPOINT or http://169.254.169.254
  std::string azureImdsEndpoint;  // "" = QCS_AZURE_IMDS_ENDPOINT or http://169.254.169.254
  std::string gcpMetadataHost;    // "" = GCE_METADATA_HOST or metadata.google.internal (host[:port])
  std::chrono::milliseconds metadataTimeout{2000};
};

// The project's environment lookup (platform/secrets.h): nullopt when the variable is unset.
using GetEnvFn = EnvLookup;

PlatformInfo detectPlatform(const PlatformDetectOptions& options, const GetEnvFn& getEnv, CloudHttpClient& http);

// The KEY=VALUE settings of an ecs.config text: blank lines and # comments skipped, an "export "
// prefix and matching single or double quotes around the value removed, whitespace trimmed. A
// key given twice keeps the last (as systemd's EnvironmentFile does).
std::map<std::string, std::string> parseEcsConfig(const std::string& text);

}  // namespace qcs::platform

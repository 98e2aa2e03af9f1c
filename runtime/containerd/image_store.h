// ImageStore: the sensor image in containerd's stores — pulled by qcs-agent itself, because
// containerd 1.6 has no server-side pull without its CRI plugin.
//
// Contract:
// - Names: an image record is named by the fully qualified reference (imageName()), as `ctr` and
//   the CRI plugin name theirs, so operators see the same name in `ctr -n qualys images ls`.
// - pull(): resolves with the registry client (digests verified), writes every blob through the
//   Content service (a blob already present is not fetched again; a partial write left by an
//   interrupted pull is resumed), unpacks the layers into snapshots and only then creates or
//   updates the image record: a record written by pull() always has complete content. Its target
//   is the platform manifest, also when the tag names an index; find() and unpack() also handle
//   records that point at an index (`ctr images pull/import`), using this node's platform.
// - GC: all writes happen under a lease (containerd-lease header, id kAgentLeasePrefix + "pull-...")
//   that is deleted when pull() or unpack() returns, success or not. If the agent dies first, the
//   next agent deletes it when it connects (removeLeftovers, containerd_runtime.cpp), else it
//   expires after 24h. The manifest carries
//   containerd.io/gc.ref.content.config and .l.<i>; the config carries containerd.io/gc.ref.snapshot.<snapshotter> =
//   the top chain id. So the image record keeps its manifest, config, layers and snapshots alive, and nothing else.
// - Errors: the registry's (kUnauthenticated with its message, kNotFound naming the reference),
//   the containerd client's (socket, timeout), kProtocol for a layer whose unpacked digest is not
//   its diff id. Credentials never appear in a message.
// - Memory stays bounded: blobs stream from the registry into containerd in chunks of at most
//   kWriteChunkBytes; only manifests and configs are held whole.
// - Thread-safe: no mutable state besides the client's channel; concurrent pulls of the same image
//   are tolerated (an ALREADY_EXISTS from containerd is the other puller's success).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "runtime/container_runtime.h"
#include "runtime/containerd/containerd_client.h"
#include "runtime/registry/registry_client.h"

namespace qcs::runtime::containerd {

namespace detail {
struct ImageServices;  // the gRPC stubs and call plumbing, inside image_store.cpp
}

inline constexpr std::string_view kDefaultSnapshotter = "overlayfs";
// Every lease the agent makes is named with this prefix ("qcs-agent-pull-...", "qcs-agent-create-..."):
// the stale-lease sweep at connect (containerd_runtime.h) knows the agent's own leases by it.
inline constexpr std::string_view kAgentLeasePrefix = "qcs-agent-";
inline constexpr std::size_t kWriteChunkBytes = 1024 * 1024;

struct LocalImage {
  std::string name;            // the containerd image name ("docker.io/qualys/qcs-sensor:latest")
  std::string targetDigest;    // the image record's target: the manifest, or the index it was resolved through
  std::string manifestDigest;  // the platform manifest (== targetDigest unless the target is an index)
  std::string configDigest;
  std::vector<registry::Descriptor> layers;  // the manifest's layers, compressed, bottom first
  std::vector<std::string> diffIds;          // from the config's rootfs.diff_ids, bottom first
  std::string chainId;                       // of the top layer: the snapshot a container's rootfs is prepared from
  bool unpacked = false;                     // the chain's top snapshot exists in the snapshotter
};

// chainID(0) = diffID(0); chainID(n) = sha256(chainID(n-1) + " " + diffID(n)). Empty in, "" out.
std::string chainIdOf(const std::vector<std::string>& diffIds);

class ImageStore {
 public:
  // client: the connection and namespace; snapshotter: kDefaultSnapshotter unless configured;
  // registryOptions: CA bundle and timeouts (registry and credentials are set per pull).
  ImageStore(ContainerdClient& client, std::string snapshotter, registry::RegistryClientOptions registryOptions = {});
  ~ImageStore();
  ImageStore(const ImageStore&) = delete;
  ImageStore& operator=(const ImageStore&) = delete;

  const std::string& snapshotter() const { return snapshotter_; }

  // The containerd image name for a reference as the operator wrote it: "qualys/qcs-sensor" ->
  // "docker.io/qualys/qcs-sensor:latest". A reference with a digest is named by the digest only
  // ("docker.io/library/busybox@sha256:..."), as containerd's ParseDockerRef does.
  static Result<std::string> imageName(const std::string& reference);

  // The image record, its manifest and config, and whether it is unpacked; kNotFound when there is
  // no record (or its content is gone).
  Result<LocalImage> find(const std::string& reference);

  // Resolves and pulls reference (see the contract above). progress may be empty.
  Status pull(const std::string& reference, const std::optional<RegistryCredentials>& credentials,
              const PullProgressFn& progress);

  // Unpacks an image whose content is present but whose snapshots are missing (imported with
  // --no-unpack, or a snapshot was removed), and labels its config for GC. No-op when unpacked.
  Status unpack(const LocalImage& image);

  // A content blob's bytes (Content.Read), e.g. the image config; kNotFound if absent. Meant for
  // manifests and configs: blobs over kMaxReadBlobBytes are refused with kInvalidArgument.
  static constexpr int64_t kMaxReadBlobBytes = 64 * 1024 * 1024;
  Result<std::string> readBlob(const std::string& digest);

 private:
  Status unpackLayers(const LocalImage& image, const std::string& leaseId, const PullProgressFn& progress);

  ContainerdClient& client_;
  std::string snapshotter_;
  registry::RegistryClientOptions registryOptions_;
  std::unique_ptr<detail::ImageServices> services_;
};

}  // namespace qcs::runtime::containerd

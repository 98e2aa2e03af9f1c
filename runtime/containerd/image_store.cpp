#include "runtime/containerd/image_store.h"

#include <google/protobuf/field_mask.pb.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <ctime>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "common/encoding.h"
#include "github.com/containerd/containerd/api/services/content/v1/content.grpc.pb.h"
#include "github.com/containerd/containerd/api/services/diff/v1/diff.grpc.pb.h"
#include "github.com/containerd/containerd/api/services/images/v1/images.grpc.pb.h"
#include "github.com/containerd/containerd/api/services/leases/v1/leases.grpc.pb.h"
#include "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.grpc.pb.h"
#include "runtime/containerd/grpc_support.h"
#include "runtime/image_reference.h"

namespace qcs::runtime::containerd {

namespace {

using detail::mapStatus;
using detail::prepareContext;
using std::chrono::milliseconds;

namespace content_v1 = ::containerd::services::content::v1;
namespace diff_v1 = ::containerd::services::diff::v1;
namespace images_v1 = ::containerd::services::images::v1;
namespace leases_v1 = ::containerd::services::leases::v1;
namespace snapshots_v1 = ::containerd::services::snapshots::v1;

using Labels = std::map<std::string, std::string>;

// containerd's names (leases/grpc.go, metadata/gc.go, unpacker.go).
constexpr const char* kLeaseHeader = "containerd-lease";
constexpr const char* kGcExpireLabel = "containerd.io/gc.expire";
constexpr const char* kGcConfigLabel = "containerd.io/gc.ref.content.config";
constexpr const char* kGcLayerLabelPrefix = "containerd.io/gc.ref.content.l.";
constexpr const char* kGcSnapshotLabelPrefix = "containerd.io/gc.ref.snapshot.";
constexpr const char* kUncompressedLabel = "containerd.io/uncompressed";

// As containerd's own client: long enough for any pull, short enough that the content of a pull
// whose agent died is collected the next day.
constexpr auto kLeaseExpiry = std::chrono::hours(24);

// Extracting a large layer on a slow disk takes minutes; the node's call timeout is for quick calls.
constexpr milliseconds kApplyTimeout = std::chrono::minutes(30);
constexpr milliseconds kSnapshotTimeout = std::chrono::minutes(5);
constexpr int kPrepareAttempts = 3;

std::string shortId(const std::string& digest) {
  const auto colon = digest.find(':');
  return digest.substr(colon == std::string::npos ? 0 : colon + 1, 12);
}

// Unique per process and call without a shared random source: pid, time and a counter, plus a
// few random bits against pid reuse across agent restarts.
std::string uniqueSuffix() {
  static std::atomic<uint64_t> counter{0};
  const auto nanos =
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  std::random_device device;
  char buffer[96];
  std::snprintf(buffer, sizeof(buffer), "%d-%lld-%llu-%08x", int(::getpid()), static_cast<long long>(nanos),
                static_cast<unsigned long long>(counter.fetch_add(1)), unsigned(device()));
  return buffer;
}

std::string rfc3339(std::chrono::system_clock::time_point at) {
  const std::time_t seconds = std::chrono::system_clock::to_time_t(at);
  std::tm utc{};
  ::gmtime_r(&seconds, &utc);
  char buffer[32];
  std::strftime(buffer, sizeof(buffer), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buffer;
}

void report(const PullProgressFn& progress, const std::string& status, const std::string& layer = {}) {
  if (progress) progress(PullProgress{status, layer});
}

void setDescriptor(::containerd::types::Descriptor& out, const registry::Descriptor& in) {
  out.set_media_type(in.mediaType);
  out.set_digest(in.digest);
  out.set_size(in.size);
}

Result<std::vector<std::string>> parseDiffIds(const std::string& config, const std::string& configDigest) {
  const auto json = nlohmann::json::parse(config, nullptr, false);
  const auto bad = [&](const std::string& why) {
    return makeError(ErrorCode::kProtocol, "image config " + configDigest + ": " + why);
  };
  if (!json.is_object()) return bad("not a JSON object");
  const auto rootfs = json.find("rootfs");
  if (rootfs == json.end() || !rootfs->is_object()) return bad("no rootfs object");
  const auto ids = rootfs->find("diff_ids");
  if (ids == rootfs->end() || !ids->is_array()) return bad("no rootfs.diff_ids array");
  std::vector<std::string> diffIds;
  for (const auto& id : *ids) {
    if (!id.is_string() || !registry::isSha256Digest(id.get<std::string>())) {
      return bad("rootfs.diff_ids holds something that is not a sha256 digest");
    }
    diffIds.push_back(id.get<std::string>());
  }
  return diffIds;
}

}  // namespace

std::string chainIdOf(const std::vector<std::string>& diffIds) {
  std::string chain;
  for (const auto& diffId : diffIds) chain = chain.empty() ? diffId : "sha256:" + sha256Hex(chain + " " + diffId);
  return chain;
}

// The stubs and the plumbing every call shares: contexts (namespace, lease, deadline) and errors.
struct detail::ImageServices {
  ImageServices(ContainerdClient& client, std::string snapshotterName)
      : socketPath(client.socketPath()),
        nameSpace(client.nameSpace()),
        callTimeout(client.callTimeout()),
        snapshotter(std::move(snapshotterName)),
        content(content_v1::Content::NewStub(client.channel())),
        diff(diff_v1::Diff::NewStub(client.channel())),
        images(images_v1::Images::NewStub(client.channel())),
        leases(leases_v1::Leases::NewStub(client.channel())),
        snapshots(snapshots_v1::Snapshots::NewStub(client.channel())) {}

  void prepare(grpc::ClientContext& context, const std::string& leaseId, milliseconds timeout) const {
    prepareContext(context, nameSpace, timeout);
    if (!leaseId.empty()) context.AddMetadata(kLeaseHeader, leaseId);
  }
  Error error(const grpc::Status& status, const std::string& what, milliseconds timeout) const {
    return mapStatus(status, what, socketPath, timeout);
  }

  // --- leases

  Result<std::string> createLease() {
    grpc::ClientContext context;
    prepare(context, {}, callTimeout);
    leases_v1::CreateRequest request;
    request.set_id(std::string(kAgentLeasePrefix) + "pull-" + uniqueSuffix());
    (*request.mutable_labels())[kGcExpireLabel] = rfc3339(std::chrono::system_clock::now() + kLeaseExpiry);
    leases_v1::CreateResponse response;
    const grpc::Status status = leases->Create(&context, request, &response);
    if (!status.ok()) return error(status, "creating a lease", callTimeout);
    return response.lease().id();
  }

  Status deleteLease(const std::string& id) {
    grpc::ClientContext context;
    prepare(context, {}, callTimeout);
    leases_v1::DeleteRequest request;
    request.set_id(id);
    google::protobuf::Empty response;
    const grpc::Status status = leases->Delete(&context, request, &response);
    if (!status.ok() && status.error_code() != grpc::StatusCode::NOT_FOUND) {
      return error(status, "deleting lease " + id, callTimeout);
    }
    return okStatus();
  }

  // --- content

  Result<bool> contentExists(const std::string& digest) {
    grpc::ClientContext context;
    prepare(context, {}, callTimeout);
    content_v1::InfoRequest request;
    request.set_digest(digest);
    content_v1::InfoResponse response;
    const grpc::Status status = content->Info(&context, request, &response);
    if (status.error_code() == grpc::StatusCode::NOT_FOUND) return false;
    if (!status.ok()) return error(status, "looking up content " + digest, callTimeout);
    return true;
  }

  Result<int64_t> contentSize(const std::string& digest) {
    grpc::ClientContext context;
    prepare(context, {}, callTimeout);
    content_v1::InfoRequest request;
    request.set_digest(digest);
    content_v1::InfoResponse response;
    const grpc::Status status = content->Info(&context, request, &response);
    if (!status.ok()) return error(status, "looking up content " + digest, callTimeout);
    return response.info().size();
  }

  // Sets (adds or replaces) only these labels; the blob's other labels stay.
  Status updateContentLabels(const std::string& digest, const Labels& labels, const std::string& leaseId) {
    grpc::ClientContext context;
    prepare(context, leaseId, callTimeout);
    content_v1::UpdateRequest request;
    request.mutable_info()->set_digest(digest);
    for (const auto& [key, value] : labels) {
      (*request.mutable_info()->mutable_labels())[key] = value;
      request.mutable_update_mask()->add_paths("labels." + key);
    }
    content_v1::UpdateResponse response;
    const grpc::Status status = content->Update(&context, request, &response);
    if (!status.ok()) return error(status, "labelling content " + digest, callTimeout);
    return okStatus();
  }

  void abortWrite(const std::string& ref) {
    grpc::ClientContext context;
    prepare(context, {}, callTimeout);
    content_v1::AbortRequest request;
    request.set_ref(ref);
    google::protobuf::Empty response;
    // Best effort: a partial write that cannot be aborted is truncated by the next write anyway.
    (void)content->Abort(&context, request, &response);
  }

  Result<std::string> read(const std::string& digest) {
    auto size = contentSize(digest);
    if (!size.ok()) return size.error();
    if (*size > ImageStore::kMaxReadBlobBytes) {
      return makeError(ErrorCode::kInvalidArgument, "containerd: content " + digest + " is " + std::to_string(*size) +
                                                        " bytes, more than a manifest or config can be (" +
                                                        std::to_string(ImageStore::kMaxReadBlobBytes) + ")");
    }
    grpc::ClientContext context;
    prepare(context, {}, callTimeout);
    content_v1::ReadContentRequest request;
    request.set_digest(digest);
    auto reader = content->Read(&context, request);
    std::string data;
    data.reserve(size_t(*size));
    content_v1::ReadContentResponse chunk;
    while (reader->Read(&chunk)) {
      if (chunk.offset() != int64_t(data.size()) || int64_t(data.size() + chunk.data().size()) > *size) {
        context.TryCancel();
        (void)reader->Finish();
        return makeError(ErrorCode::kProtocol, "containerd: reading content " + digest + " returned data at offset " +
                                                   std::to_string(chunk.offset()) + " past what was expected");
      }
      data += chunk.data();
    }
    const grpc::Status status = reader->Finish();
    if (!status.ok()) return error(status, "reading content " + digest, callTimeout);
    if (int64_t(data.size()) != *size) {
      return makeError(ErrorCode::kProtocol, "containerd: reading content " + digest + " returned " +
                                                 std::to_string(data.size()) + " of its " + std::to_string(*size) +
                                                 " bytes");
    }
    return data;
  }

  // --- snapshots, diff

  Result<bool> snapshotExists(const std::string& key) {
    grpc::ClientContext context;
    prepare(context, {}, callTimeout);
    snapshots_v1::StatSnapshotRequest request;
    request.set_snapshotter(snapshotter);
    request.set_key(key);
    snapshots_v1::StatSnapshotResponse response;
    const grpc::Status status = snapshots->Stat(&context, request, &response);
    if (status.error_code() == grpc::StatusCode::NOT_FOUND) return false;
    if (!status.ok()) return error(status, "looking up snapshot " + key + " (" + snapshotter + ")", callTimeout);
    return true;
  }

  void removeSnapshot(const std::string& key, const std::string& leaseId) {
    grpc::ClientContext context;
    prepare(context, leaseId, kSnapshotTimeout);
    snapshots_v1::RemoveSnapshotRequest request;
    request.set_snapshotter(snapshotter);
    request.set_key(key);
    google::protobuf::Empty response;
    // Best effort: an extraction snapshot left behind belongs to the lease and goes with it.
    (void)snapshots->Remove(&context, request, &response);
  }

  // --- images

  Result<images_v1::Image> getImage(const std::string& name) {
    grpc::ClientContext context;
    prepare(context, {}, callTimeout);
    images_v1::GetImageRequest request;
    request.set_name(name);
    images_v1::GetImageResponse response;
    const grpc::Status status = images->Get(&context, request, &response);
    if (!status.ok()) return error(status, "looking up image " + name, callTimeout);
    return response.image();
  }

  Status putImage(const std::string& name, const registry::Descriptor& target, const std::string& leaseId) {
    images_v1::Image image;
    image.set_name(name);
    setDescriptor(*image.mutable_target(), target);
    {
      grpc::ClientContext context;
      prepare(context, leaseId, callTimeout);
      images_v1::CreateImageRequest request;
      *request.mutable_image() = image;
      images_v1::CreateImageResponse response;
      const grpc::Status status = images->Create(&context, request, &response);
      if (status.ok()) return okStatus();
      if (status.error_code() != grpc::StatusCode::ALREADY_EXISTS) {
        return error(status, "creating image " + name, callTimeout);
      }
    }
    grpc::ClientContext context;
    prepare(context, leaseId, callTimeout);
    images_v1::UpdateImageRequest request;
    *request.mutable_image() = image;
    // Only the target: labels someone else put on the record stay.
    request.mutable_update_mask()->add_paths("target");
    images_v1::UpdateImageResponse response;
    const grpc::Status status = images->Update(&context, request, &response);
    if (!status.ok()) return error(status, "updating image " + name, callTimeout);
    return okStatus();
  }

  std::string socketPath;
  std::string nameSpace;
  milliseconds callTimeout;
  std::string snapshotter;
  std::unique_ptr<content_v1::Content::Stub> content;
  std::unique_ptr<diff_v1::Diff::Stub> diff;
  std::unique_ptr<images_v1::Images::Stub> images;
  std::unique_ptr<leases_v1::Leases::Stub> leases;
  std::unique_ptr<snapshots_v1::Snapshots::Stub> snapshots;
};

namespace {

// A lease for the duration of a pull or unpack, deleted on every way out.
class ScopedLease {
 public:
  explicit ScopedLease(detail::ImageServices& services) : services_(services) {}
  ~ScopedLease() {
    // Failing to delete it only delays GC until the expiry label; nothing to report to the caller.
    if (!id_.empty()) (void)services_.deleteLease(id_);
  }
  ScopedLease(const ScopedLease&) = delete;
  ScopedLease& operator=(const ScopedLease&) = delete;

  Status create() {
    auto created = services_.createLease();
    if (!created.ok()) return created.error();
    id_ = std::move(created.value());
    return okStatus();
  }
  const std::string& id() const { return id_; }

 private:
  detail::ImageServices& services_;
  std::string id_;
};

// One Content.Write session for one blob: STAT to learn what a previous attempt left, WRITE chunks
// in order, COMMIT with the expected size, digest and labels. containerd answers every request, so
// the session runs in lock-step, which also keeps at most one chunk in flight.
class ContentWriter {
 public:
  ContentWriter(detail::ImageServices& services, registry::Descriptor blob, std::string leaseId, milliseconds deadline)
      : services_(services), blob_(std::move(blob)), ref_("qcs-agent-" + blob_.digest), deadline_(deadline) {
    context_.AddMetadata(kNamespaceHeader, services_.nameSpace);
    if (!leaseId.empty()) context_.AddMetadata(kLeaseHeader, leaseId);
    if (deadline.count() > 0) context_.set_deadline(std::chrono::system_clock::now() + deadline);
  }
  ~ContentWriter() { cancel(); }
  ContentWriter(const ContentWriter&) = delete;
  ContentWriter& operator=(const ContentWriter&) = delete;

  const std::string& ref() const { return ref_; }
  // Set when containerd said the blob exists (someone committed it meanwhile): nothing to write.
  bool alreadyExists() const { return alreadyExists_; }

  // Starts the session. Afterwards resumeOffset() bytes of the blob are already in containerd.
  Status open() {
    stream_ = services_.content->Write(&context_);
    content_v1::WriteContentRequest request;
    request.set_action(content_v1::STAT);
    request.set_ref(ref_);
    request.set_total(blob_.size);
    request.set_expected(blob_.digest);
    content_v1::WriteContentResponse response;
    if (auto sent = exchange(request, response); !sent.ok() || alreadyExists_) return sent;
    // A partial write longer than the blob cannot be ours to continue: start again from zero
    // (a WRITE at offset 0 makes containerd truncate).
    resumeOffset_ = response.offset() <= blob_.size ? response.offset() : 0;
    written_ = resumeOffset_;
    return okStatus();
  }
  int64_t resumeOffset() const { return resumeOffset_; }

  // Feeds the blob's bytes from its start; the part containerd already has is skipped.
  Status feed(std::string_view chunk) {
    if (alreadyExists_) return okStatus();
    const int64_t start = received_;
    received_ += int64_t(chunk.size());
    if (received_ <= resumeOffset_) return okStatus();
    if (start < resumeOffset_) chunk.remove_prefix(size_t(resumeOffset_ - start));
    while (!chunk.empty()) {
      const size_t take = std::min(chunk.size(), kWriteChunkBytes - buffer_.size());
      buffer_.append(chunk.substr(0, take));
      chunk.remove_prefix(take);
      if (buffer_.size() == kWriteChunkBytes) {
        if (auto flushed = flush(content_v1::WRITE, {}); !flushed.ok() || alreadyExists_) return flushed;
      }
    }
    return okStatus();
  }

  // Ends the session without committing; containerd keeps what it has for a later resume.
  void cancel() {
    if (!stream_ || finished_) return;
    finished_ = true;
    context_.TryCancel();
    (void)stream_->Finish();
  }

  // Sends what is buffered with the COMMIT, then ends the session.
  Status commit(const Labels& labels) {
    if (alreadyExists_) return finish();
    if (auto committed = flush(content_v1::COMMIT, labels); !committed.ok()) return committed;
    return finish();
  }

 private:
  Status flush(content_v1::WriteAction action, const Labels& labels) {
    content_v1::WriteContentRequest request;
    request.set_action(action);
    request.set_offset(written_);
    request.set_data(buffer_);
    if (action == content_v1::COMMIT) {
      request.set_total(blob_.size);
      request.set_expected(blob_.digest);
      for (const auto& [key, value] : labels) (*request.mutable_labels())[key] = value;
    }
    content_v1::WriteContentResponse response;
    if (auto sent = exchange(request, response); !sent.ok() || alreadyExists_) return sent;
    const int64_t expected = written_ + int64_t(buffer_.size());
    if (response.offset() != expected) {
      return makeError(ErrorCode::kProtocol, "containerd: writing " + blob_.digest + ": containerd is at offset " +
                                                 std::to_string(response.offset()) + ", expected " +
                                                 std::to_string(expected));
    }
    written_ = expected;
    buffer_.clear();
    return okStatus();
  }

  // One request, one response. A broken stream's status is the error; ALREADY_EXISTS is the
  // other writer's success.
  Status exchange(const content_v1::WriteContentRequest& request, content_v1::WriteContentResponse& response) {
    if (stream_->Write(request) && stream_->Read(&response)) return okStatus();
    finished_ = true;
    const grpc::Status status = drainAndFinish();
    if (status.error_code() == grpc::StatusCode::ALREADY_EXISTS) {
      alreadyExists_ = true;
      return okStatus();
    }
    if (status.ok()) {
      return makeError(ErrorCode::kProtocol,
                       "containerd: writing " + blob_.digest + ": the write stream ended without an answer");
    }
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE &&
        status.error_message().find("locked") != std::string::npos) {
      return makeError(ErrorCode::kConflict, "containerd: writing " + blob_.digest + ": another writer holds " + ref_ +
                                                 " (" + status.error_message() +
                                                 "); another pull of this image is running, retry when it is done");
    }
    return services_.error(status, "writing " + blob_.digest, deadline_);
  }

  // Finish() waits for every message to be read, and containerd sends the COMMIT's answer twice.
  grpc::Status drainAndFinish() {
    content_v1::WriteContentResponse ignored;
    while (stream_->Read(&ignored)) {
    }
    return stream_->Finish();
  }

  Status finish() {
    if (finished_) return okStatus();
    finished_ = true;
    stream_->WritesDone();
    const grpc::Status status = drainAndFinish();
    if (status.ok() || status.error_code() == grpc::StatusCode::ALREADY_EXISTS) return okStatus();
    return services_.error(status, "committing " + blob_.digest, deadline_);
  }

  detail::ImageServices& services_;
  registry::Descriptor blob_;
  std::string ref_;
  milliseconds deadline_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<content_v1::WriteContentRequest, content_v1::WriteContentResponse>> stream_;
  bool finished_ = false;
  bool alreadyExists_ = false;
  int64_t resumeOffset_ = 0;
  int64_t received_ = 0;  // bytes of the blob fed so far, skipped ones included
  int64_t written_ = 0;   // bytes containerd has confirmed
  std::string buffer_;
};

// Writes blob into containerd, its bytes produced by source (which calls the sink it is given
// with the blob's bytes from the start, in order). *retry is set when containerd refused the commit
// of a write resumed from an earlier attempt's leftovers, which are now aborted.
Status writeBlobOnce(detail::ImageServices& services, const registry::Descriptor& blob, const Labels& labels,
                     const std::string& leaseId, milliseconds deadline,
                     const std::function<Status(const registry::BlobSink&)>& source, bool* retry) {
  ContentWriter writer(services, blob, leaseId, deadline);
  if (auto opened = writer.open(); !opened.ok()) return opened;
  *retry = false;
  if (!writer.alreadyExists()) {
    std::optional<Error> sinkError;
    auto produced = source([&](std::string_view chunk) -> Status {
      auto fed = writer.feed(chunk);
      if (!fed.ok()) sinkError = fed.error();
      return fed;
    });
    if (!produced.ok()) {
      // Bytes that failed verification must not be resumed from; a broken transfer may be.
      if (produced.code() == ErrorCode::kProtocol && !sinkError) {
        writer.cancel();  // containerd holds the ref locked while the session lasts
        services.abortWrite(writer.ref());
      }
      return sinkError ? *sinkError : produced.error();
    }
  }
  auto committed = writer.commit(labels);
  if (!committed.ok() && committed.code() != ErrorCode::kUnavailable && committed.code() != ErrorCode::kTimeout) {
    // containerd refused the commit (digest or size mismatch): what was written is useless.
    services.abortWrite(writer.ref());
    *retry = writer.resumeOffset() > 0;
  }
  return committed;
}

Status writeBlob(detail::ImageServices& services, const registry::Descriptor& blob, const Labels& labels,
                 const std::string& leaseId, milliseconds deadline,
                 const std::function<Status(const registry::BlobSink&)>& source) {
  bool retry = false;
  auto written = writeBlobOnce(services, blob, labels, leaseId, deadline, source, &retry);
  // The leftovers were bad: one more attempt from the first byte.
  if (!written.ok() && retry) written = writeBlobOnce(services, blob, labels, leaseId, deadline, source, &retry);
  return written;
}

}  // namespace

ImageStore::ImageStore(ContainerdClient& client, std::string snapshotter,
                       registry::RegistryClientOptions registryOptions)
    : client_(client),
      snapshotter_(snapshotter.empty() ? std::string(kDefaultSnapshotter) : std::move(snapshotter)),
      registryOptions_(std::move(registryOptions)),
      services_(std::make_unique<detail::ImageServices>(client, snapshotter_)) {}

ImageStore::~ImageStore() = default;

Result<std::string> ImageStore::imageName(const std::string& reference) {
  auto parsed = parseImageReference(reference);
  if (!parsed.ok()) return parsed.error();
  const std::string repository = parsed->registry + "/" + parsed->repository;
  if (!parsed->digest.empty()) return repository + "@" + parsed->digest;
  return repository + ":" + parsed->tag;
}

Result<std::string> ImageStore::readBlob(const std::string& digest) { return services_->read(digest); }

Result<LocalImage> ImageStore::find(const std::string& reference) {
  auto name = imageName(reference);
  if (!name.ok()) return name.error();
  auto record = services_->getImage(*name);
  if (!record.ok()) {
    if (record.code() == ErrorCode::kNotFound) {
      return makeError(ErrorCode::kNotFound,
                       "containerd: no image " + *name + " in namespace " + client_.nameSpace() + " (pull it first)");
    }
    return record.error();
  }
  LocalImage image;
  image.name = *name;
  image.targetDigest = record->target().digest();
  const auto missing = [&](const Error& error, const std::string& what) {
    if (error.code != ErrorCode::kNotFound) return error;
    return makeError(ErrorCode::kNotFound,
                     "containerd: image " + *name + " has no " + what + " in the content store (pull it again)");
  };

  auto manifestBytes = readBlob(image.targetDigest);
  if (!manifestBytes.ok()) return missing(manifestBytes.error(), "manifest " + image.targetDigest);
  auto manifest = registry::parseManifest(*manifestBytes, record->target().media_type());
  if (!manifest.ok()) return withContext(manifest.error(), "containerd: image " + *name);
  image.manifestDigest = image.targetDigest;
  if (manifest->isIndex) {
    // Records made by `ctr images pull/import` point at the index; use this node's entry.
    auto entry = registry::selectPlatform(manifest->manifests, registry::hostPlatform());
    if (!entry.ok()) return withContext(entry.error(), "containerd: image " + *name);
    manifestBytes = readBlob(entry->digest);
    if (!manifestBytes.ok()) return missing(manifestBytes.error(), "manifest " + entry->digest);
    manifest = registry::parseManifest(*manifestBytes, entry->mediaType);
    if (!manifest.ok()) return withContext(manifest.error(), "containerd: image " + *name);
    if (manifest->isIndex) {
      return makeError(ErrorCode::kProtocol, "containerd: image " + *name + ": the index entry " + entry->digest +
                                                 " is itself an index (nested indexes are not supported)");
    }
    image.manifestDigest = entry->digest;
  }
  image.configDigest = manifest->config.digest;
  image.layers = manifest->layers;

  auto config = readBlob(image.configDigest);
  if (!config.ok()) return missing(config.error(), "config " + image.configDigest);
  auto diffIds = parseDiffIds(*config, image.configDigest);
  if (!diffIds.ok()) return withContext(diffIds.error(), "containerd: image " + *name);
  image.diffIds = std::move(diffIds.value());
  if (image.diffIds.size() != image.layers.size()) {
    return makeError(ErrorCode::kProtocol, "containerd: image " + *name + ": the manifest has " +
                                               std::to_string(image.layers.size()) + " layers but the config " +
                                               std::to_string(image.diffIds.size()) + " diff ids");
  }
  image.chainId = chainIdOf(image.diffIds);
  if (image.chainId.empty()) {
    image.unpacked = true;  // no layers: nothing to unpack (a container needs none either)
    return image;
  }
  auto unpacked = services_->snapshotExists(image.chainId);
  if (!unpacked.ok()) return unpacked.error();
  image.unpacked = *unpacked;
  return image;
}

Status ImageStore::unpack(const LocalImage& image) {
  if (image.unpacked) return okStatus();
  ScopedLease lease(*services_);
  if (auto created = lease.create(); !created.ok()) return withContext(created.error(), "unpacking " + image.name);
  return unpackLayers(image, lease.id(), {});
}

Status ImageStore::unpackLayers(const LocalImage& image, const std::string& leaseId, const PullProgressFn& progress) {
  const std::string context = "unpacking " + image.name;
  if (image.layers.size() != image.diffIds.size()) {
    return makeError(ErrorCode::kProtocol, context + ": the manifest has " + std::to_string(image.layers.size()) +
                                               " layers but the config " + std::to_string(image.diffIds.size()) +
                                               " diff ids");
  }
  if (image.layers.empty()) return okStatus();
  detail::ImageServices& services = *services_;

  std::vector<std::string> chain;
  auto topExists = services.snapshotExists(chainIdOf(image.diffIds));
  if (!topExists.ok()) return withContext(topExists.error(), context);
  for (size_t i = 0; i < image.layers.size() && !*topExists; ++i) {
    const registry::Descriptor& layer = image.layers[i];
    const std::string& diffId = image.diffIds[i];
    const std::string parent = chainIdOf(chain);
    chain.push_back(diffId);
    const std::string chainId = chainIdOf(chain);
    const std::string layerContext = context + ": layer " + layer.digest;

    auto exists = services.snapshotExists(chainId);
    if (!exists.ok()) return withContext(exists.error(), layerContext);
    if (*exists) continue;
    report(progress, "Unpacking", shortId(layer.digest));

    // containerd's own key format ("extract-<unique> <chain id>"), which its tools recognise.
    std::string key;
    snapshots_v1::PrepareSnapshotResponse prepared;
    bool committedByOther = false;
    for (int attempt = 1;; ++attempt) {
      key = "extract-" + uniqueSuffix() + " " + chainId;
      grpc::ClientContext prepareCall;
      services.prepare(prepareCall, leaseId, kSnapshotTimeout);
      snapshots_v1::PrepareSnapshotRequest request;
      request.set_snapshotter(services.snapshotter);
      request.set_key(key);
      request.set_parent(parent);
      const grpc::Status status = services.snapshots->Prepare(&prepareCall, request, &prepared);
      if (status.ok()) break;
      if (status.error_code() != grpc::StatusCode::ALREADY_EXISTS || attempt == kPrepareAttempts) {
        return withContext(services.error(status, "preparing snapshot " + key, kSnapshotTimeout), layerContext);
      }
      // Another puller may have finished this layer in the meantime.
      auto nowExists = services.snapshotExists(chainId);
      if (!nowExists.ok()) return withContext(nowExists.error(), layerContext);
      if (*nowExists) {
        committedByOther = true;
        break;
      }
    }
    if (committedByOther) continue;

    {
      grpc::ClientContext applyContext;
      services.prepare(applyContext, leaseId, kApplyTimeout);
      diff_v1::ApplyRequest request;
      setDescriptor(*request.mutable_diff(), layer);
      *request.mutable_mounts() = prepared.mounts();
      diff_v1::ApplyResponse response;
      const grpc::Status status = services.diff->Apply(&applyContext, request, &response);
      if (!status.ok()) {
        services.removeSnapshot(key, leaseId);
        return withContext(services.error(status, "applying the layer", kApplyTimeout), layerContext);
      }
      if (response.applied().digest() != diffId) {
        services.removeSnapshot(key, leaseId);
        return makeError(ErrorCode::kProtocol, layerContext + ": it unpacks to " + response.applied().digest() +
                                                   " but the image config names diff id " + diffId +
                                                   "; the image is corrupt or was pushed wrongly, push it again");
      }
    }
    {
      grpc::ClientContext commitContext;
      services.prepare(commitContext, leaseId, kSnapshotTimeout);
      snapshots_v1::CommitSnapshotRequest request;
      request.set_snapshotter(services.snapshotter);
      request.set_name(chainId);
      request.set_key(key);
      google::protobuf::Empty response;
      const grpc::Status status = services.snapshots->Commit(&commitContext, request, &response);
      if (!status.ok()) {
        services.removeSnapshot(key, leaseId);
        // Another puller committed the same chain first: the snapshot exists, which is all we need.
        if (status.error_code() != grpc::StatusCode::ALREADY_EXISTS) {
          return withContext(services.error(status, "committing snapshot " + chainId, kSnapshotTimeout), layerContext);
        }
      }
    }
    // As containerd's unpacker: the uncompressed digest is known good once apply verified it.
    if (auto labelled = services.updateContentLabels(layer.digest, {{kUncompressedLabel, diffId}}, leaseId);
        !labelled.ok()) {
      return withContext(labelled.error(), layerContext);
    }
    report(progress, "Pull complete", shortId(layer.digest));
  }

  // The config keeps the top snapshot (and through its parents, the chain) alive for GC.
  const Labels snapshotLabel{{kGcSnapshotLabelPrefix + services.snapshotter, chainIdOf(image.diffIds)}};
  if (auto labelled = services.updateContentLabels(image.configDigest, snapshotLabel, leaseId); !labelled.ok()) {
    return withContext(labelled.error(), context);
  }
  return okStatus();
}

Status ImageStore::pull(const std::string& reference, const std::optional<RegistryCredentials>& credentials,
                        const PullProgressFn& progress) {
  const std::string context = "pulling " + reference;
  auto parsed = parseImageReference(reference);
  if (!parsed.ok()) return withContext(parsed.error(), context);
  auto name = imageName(reference);
  if (!name.ok()) return withContext(name.error(), context);

  registry::RegistryClientOptions options = registryOptions_;
  options.registry = parsed->registry;
  options.credentials = credentials;
  registry::RegistryClient registryClient(options);
  auto resolved = registryClient.resolve(*parsed);
  if (!resolved.ok()) return withContext(resolved.error(), context);
  report(progress, "Resolved");
  report(progress, "Digest: " + resolved->digest);

  ScopedLease lease(*services_);
  if (auto created = lease.create(); !created.ok()) return withContext(created.error(), context);
  // Blob transfers have no deadline of their own unless the registry side has one: a stalled
  // registry is caught by its stall timeout, and containerd answers every chunk.
  const milliseconds blobDeadline =
      options.blobTimeout.count() > 0 ? options.blobTimeout + services_->callTimeout : milliseconds(0);
  bool fetchedAny = false;

  const auto fetchBlob = [&](const registry::Descriptor& blob, bool isLayer) -> Status {
    auto exists = services_->contentExists(blob.digest);
    if (!exists.ok()) return exists.error();
    if (*exists) {
      if (isLayer) report(progress, "Already exists", shortId(blob.digest));
      return okStatus();
    }
    fetchedAny = true;
    if (isLayer) report(progress, "Downloading", shortId(blob.digest));
    auto written = writeBlob(*services_, blob, {}, lease.id(), blobDeadline, [&](const registry::BlobSink& sink) {
      return registryClient.fetchBlob(parsed->repository, blob, sink);
    });
    if (!written.ok()) return written;
    if (isLayer) report(progress, "Download complete", shortId(blob.digest));
    return okStatus();
  };

  if (auto fetched = fetchBlob(resolved->config, false); !fetched.ok()) return withContext(fetched.error(), context);
  for (const auto& layer : resolved->layers) {
    if (auto fetched = fetchBlob(layer, true); !fetched.ok()) return withContext(fetched.error(), context);
  }

  // The manifest last, with the labels that make it keep its config and layers.
  Labels manifestLabels{{kGcConfigLabel, resolved->config.digest}};
  for (size_t i = 0; i < resolved->layers.size(); ++i) {
    manifestLabels[kGcLayerLabelPrefix + std::to_string(i)] = resolved->layers[i].digest;
  }
  const registry::Descriptor manifest{resolved->mediaType, resolved->digest, int64_t(resolved->raw.size()), {}};
  auto manifestExists = services_->contentExists(manifest.digest);
  if (!manifestExists.ok()) return withContext(manifestExists.error(), context);
  if (*manifestExists) {
    // Present from an earlier pull or an import: make sure it holds its children all the same.
    if (auto labelled = services_->updateContentLabels(manifest.digest, manifestLabels, lease.id()); !labelled.ok()) {
      return withContext(labelled.error(), context);
    }
  } else {
    fetchedAny = true;
    auto written = writeBlob(*services_, manifest, manifestLabels, lease.id(), services_->callTimeout,
                             [&](const registry::BlobSink& sink) { return sink(resolved->raw); });
    if (!written.ok()) return withContext(written.error(), context);
  }

  LocalImage image;
  image.name = *name;
  image.targetDigest = resolved->digest;
  image.manifestDigest = resolved->digest;
  image.configDigest = resolved->config.digest;
  image.layers = resolved->layers;
  auto config = readBlob(resolved->config.digest);
  if (!config.ok()) return withContext(config.error(), context);
  auto diffIds = parseDiffIds(*config, resolved->config.digest);
  if (!diffIds.ok()) return withContext(diffIds.error(), context);
  image.diffIds = std::move(diffIds.value());
  image.chainId = chainIdOf(image.diffIds);

  if (auto unpacked = unpackLayers(image, lease.id(), progress); !unpacked.ok()) {
    return withContext(unpacked.error(), context);
  }
  if (auto recorded = services_->putImage(*name, manifest, lease.id()); !recorded.ok()) {
    return withContext(recorded.error(), context);
  }
  report(progress,
         fetchedAny ? "Status: Downloaded newer image for " + *name : "Status: Image is up to date for " + *name);
  return okStatus();
}

}  // namespace qcs::runtime::containerd

#include "runtime/containerd/containerd_client.h"

#include "runtime/containerd/grpc_support.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>

#include "github.com/containerd/containerd/api/events/container.pb.h"
#include "github.com/containerd/containerd/api/events/task.pb.h"
#include "github.com/containerd/containerd/api/services/containers/v1/containers.grpc.pb.h"
#include "github.com/containerd/containerd/api/services/events/v1/events.grpc.pb.h"
#include "github.com/containerd/containerd/api/services/version/v1/version.grpc.pb.h"

namespace qcs::runtime::containerd {

namespace {

using detail::mapStatus;
using detail::prepareContext;
using detail::toTimePoint;
using detail::unpackAny;

namespace containers_v1 = ::containerd::services::containers::v1;
namespace events_v1 = ::containerd::services::events::v1;
namespace version_v1 = ::containerd::services::version::v1;

constexpr const char* kStartTopic = "/tasks/start";
constexpr const char* kExitTopic = "/tasks/exit";
constexpr const char* kOomTopic = "/tasks/oom";
constexpr const char* kContainerDeleteTopic = "/containers/delete";
// containerd's own limit for messages it sends (a container list carries every OCI spec).
constexpr int kMaxMessageBytes = 16 * 1024 * 1024;

class GrpcTaskEventSubscription final : public TaskEventSubscription {
 public:
  GrpcTaskEventSubscription(std::shared_ptr<grpc::Channel> channel, std::string socketPath, std::string nameSpace,
                            std::chrono::milliseconds startTimeout, TaskEventFn onEvent, SubscriptionEndFn onEnd)
      : stub_(events_v1::Events::NewStub(channel)),
        socketPath_(std::move(socketPath)),
        nameSpace_(std::move(nameSpace)),
        onEvent_(std::move(onEvent)),
        onEnd_(std::move(onEnd)) {
    context_.AddMetadata(kNamespaceHeader, nameSpace_);
    // The call starts on the thread: starting it blocks until the request is sent, which on a
    // socket that never answers is forever, and only the destructor's TryCancel may end that.
    thread_ = std::thread([this] {
      try {
        run();
      } catch (const std::exception& e) {
        // A throwing callback must not take the process down; the stream ends with it.
        active_ = false;
        if (!stopping_ && onEnd_) {
          onEnd_(makeError(ErrorCode::kInternal, std::string("containerd: event handling failed: ") + e.what()));
        }
      }
    });
    std::unique_lock lock(mutex_);
    startedCondition_.wait_for(lock, startTimeout, [this] { return started_; });
  }

  ~GrpcTaskEventSubscription() override {
    stopping_ = true;
    context_.TryCancel();
    if (thread_.joinable()) thread_.join();
  }

  bool active() const override { return active_; }

 private:
  void run() {
    events_v1::SubscribeRequest request;
    // Filters are OR-ed; the conditions inside one filter are AND-ed.
    for (const char* topic : {kStartTopic, kExitTopic, kOomTopic, kContainerDeleteTopic}) {
      request.add_filters("namespace==\"" + nameSpace_ + "\",topic==\"" + topic + "\"");
    }
    // No deadline: the stream lives until cancelled.
    std::unique_ptr<grpc::ClientReader<events_v1::Envelope>> reader = stub_->Subscribe(&context_, request);
    {
      std::lock_guard lock(mutex_);
      started_ = true;
    }
    startedCondition_.notify_all();
    events_v1::Envelope envelope;
    while (reader->Read(&envelope)) deliver(envelope);
    const grpc::Status status = reader->Finish();
    active_ = false;
    if (stopping_ || !onEnd_) return;
    if (status.ok()) {
      onEnd_(makeError(ErrorCode::kUnavailable,
                       "containerd: the event stream from " + socketPath_ + " ended (containerd is shutting down?)"));
      return;
    }
    Error error = mapStatus(status, "Events.Subscribe", socketPath_, std::chrono::milliseconds(0));
    const std::string prefix = "containerd: ";
    if (error.message.rfind(prefix, 0) == 0) error.message.erase(0, prefix.size());
    onEnd_(withContext(error, "containerd: the event stream from " + socketPath_ + " ended"));
  }

  void deliver(const events_v1::Envelope& envelope) {
    if (!onEvent_) return;
    TaskEvent event;
    event.nameSpace = envelope.namespace_();
    event.at = toTimePoint(envelope.timestamp());
    // An envelope whose payload is not the topic's message is skipped: the filters asked for these
    // topics only, and a periodic reconcile covers anything missed.
    if (envelope.topic() == kExitTopic) {
      ::containerd::events::TaskExit exit;
      if (!unpackAny(envelope.event(), exit)) return;
      event.kind = TaskEvent::Kind::kExit;
      event.containerId = exit.container_id();
      event.processId = exit.id();
      event.pid = exit.pid();
      event.exitStatus = exit.exit_status();
      if (exit.has_exited_at()) event.at = toTimePoint(exit.exited_at());
    } else if (envelope.topic() == kStartTopic) {
      ::containerd::events::TaskStart start;
      if (!unpackAny(envelope.event(), start)) return;
      event.kind = TaskEvent::Kind::kStart;
      event.containerId = start.container_id();
      event.processId = start.container_id();
      event.pid = start.pid();
    } else if (envelope.topic() == kContainerDeleteTopic) {
      ::containerd::events::ContainerDelete deleted;
      if (!unpackAny(envelope.event(), deleted)) return;
      event.kind = TaskEvent::Kind::kContainerDelete;
      event.containerId = deleted.id();
    } else if (envelope.topic() == kOomTopic) {
      ::containerd::events::TaskOOM oom;
      if (!unpackAny(envelope.event(), oom)) return;
      event.kind = TaskEvent::Kind::kOom;
      event.containerId = oom.container_id();
    } else {
      return;
    }
    onEvent_(event);
  }

  std::unique_ptr<events_v1::Events::Stub> stub_;
  std::string socketPath_;
  std::string nameSpace_;
  TaskEventFn onEvent_;
  SubscriptionEndFn onEnd_;
  grpc::ClientContext context_;
  std::mutex mutex_;
  std::condition_variable startedCondition_;
  bool started_ = false;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> active_{true};
  std::thread thread_;
};

}  // namespace

struct ContainerdClient::Channel {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<version_v1::Version::Stub> version;
  std::unique_ptr<containers_v1::Containers::Stub> containers;
};

ContainerdClient::ContainerdClient(std::string socketPath, std::string nameSpace, std::chrono::milliseconds callTimeout)
    : socketPath_(std::move(socketPath)),
      nameSpace_(std::move(nameSpace)),
      callTimeout_(callTimeout),
      channel_(std::make_shared<Channel>()) {
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(kMaxMessageBytes);
  // After containerd restarts, reconnect within a second or two rather than gRPC's default of
  // backing off towards two minutes.
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  arguments.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  channel_->channel = grpc::CreateCustomChannel("unix://" + socketPath_, grpc::InsecureChannelCredentials(), arguments);
  channel_->version = version_v1::Version::NewStub(channel_->channel);
  channel_->containers = containers_v1::Containers::NewStub(channel_->channel);
}

ContainerdClient::~ContainerdClient() = default;

std::shared_ptr<grpc::Channel> ContainerdClient::channel() const { return channel_->channel; }

Result<VersionInfo> ContainerdClient::version() {
  grpc::ClientContext context;
  prepareContext(context, nameSpace_, callTimeout_);
  google::protobuf::Empty request;
  version_v1::VersionResponse response;
  const grpc::Status status = channel_->version->Version(&context, request, &response);
  if (!status.ok()) return mapStatus(status, "Version", socketPath_, callTimeout_);
  return VersionInfo{response.version(), response.revision()};
}

Result<std::vector<std::string>> ContainerdClient::listContainerIds() {
  grpc::ClientContext context;
  prepareContext(context, nameSpace_, callTimeout_);
  containers_v1::ListContainersRequest request;
  containers_v1::ListContainersResponse response;
  const grpc::Status status = channel_->containers->List(&context, request, &response);
  if (!status.ok())
    return mapStatus(status, "listing containers in namespace " + nameSpace_, socketPath_, callTimeout_);
  std::vector<std::string> ids;
  ids.reserve(size_t(response.containers_size()));
  for (const auto& container : response.containers()) ids.push_back(container.id());
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::unique_ptr<TaskEventSubscription> ContainerdClient::subscribeTaskEvents(TaskEventFn onEvent,
                                                                             SubscriptionEndFn onEnd) {
  return std::make_unique<GrpcTaskEventSubscription>(channel_->channel, socketPath_, nameSpace_, callTimeout_,
                                                     std::move(onEvent), std::move(onEnd));
}

ProbeOutcome probeContainerd(const std::string& socketPath, std::chrono::milliseconds timeout, std::string& detail) {
  // The namespace does not matter to Version; the SPEC's default keeps the header meaningful.
  ContainerdClient client(socketPath, "qualys", timeout);
  auto version = client.version();
  if (version.ok()) {
    detail = "containerd " + (version->version.empty() ? std::string("(version unknown)") : version->version);
    return ProbeOutcome::kAnswered;
  }
  detail = version.message();
  switch (version.code()) {
    case ErrorCode::kPermissionDenied: return ProbeOutcome::kPermissionDenied;
    case ErrorCode::kProtocol: return ProbeOutcome::kBadAnswer;
    default: return ProbeOutcome::kNotAnswering;
  }
}

}  // namespace qcs::runtime::containerd

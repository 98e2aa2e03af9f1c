// ImageStore against real daemons: the stand-in image built by a private dockerd and pushed to a
// private registry with htpasswd auth, pulled into a private containerd (a fresh one per test).
// Every check is on containerd's own state (ctr) or on what a container run from the image does.
#include "runtime/containerd/image_store.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>

#include "common/encoding.h"
#include "harness/harness.h"
#include "runtime/containerd/containerd_runtime.h"

namespace qcs::runtime::containerd {
namespace {

using namespace std::chrono_literals;
using qcs::testing::Containerd;
using qcs::testing::Dockerd;
using qcs::testing::nonEmptyLines;
using qcs::testing::Registry;
using qcs::testing::waitFor;

constexpr const char* kNamespace = "qualys";
constexpr const char* kSnapshotter = "overlayfs";
constexpr const char* kUser = "qcs";
constexpr const char* kPassword = "right-password";

bool containsLine(const std::string& text, const std::string& wanted) {
  for (const auto& line : nonEmptyLines(text)) {
    if (line == wanted) return true;
  }
  return false;
}

// The first column of each line (ctr's table output).
std::set<std::string> firstColumn(const std::string& text) {
  std::set<std::string> out;
  for (const auto& line : nonEmptyLines(text)) out.insert(line.substr(0, line.find_first_of(" \t")));
  return out;
}

// Collects progress lines per layer, thread-safe because the contract does not promise a thread.
class ProgressLog {
 public:
  PullProgressFn fn() {
    return [this](const PullProgress& p) {
      std::lock_guard lock(mutex_);
      all_.push_back(p);
    };
  }
  std::map<std::string, std::vector<std::string>> byLayer() const {
    std::lock_guard lock(mutex_);
    std::map<std::string, std::vector<std::string>> out;
    for (const auto& p : all_) {
      if (!p.layer.empty()) out[p.layer].push_back(p.status);
    }
    return out;
  }
  std::vector<std::string> overall() const {
    std::lock_guard lock(mutex_);
    std::vector<std::string> out;
    for (const auto& p : all_) {
      if (p.layer.empty()) out.push_back(p.status);
    }
    return out;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<PullProgress> all_;
};

class ContainerdPullTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dockerd_ = Dockerd::start();
    if (!dockerd_) {
      setupError_ = "dockerd did not start";
      return;
    }
    auto image = qcs::testing::buildStandinImage(*dockerd_, "qcs-standin:containerd-pull");
    if (!image.ok()) {
      setupError_ = "building the stand-in failed: " + image.message();
      return;
    }
    registry_ = Registry::start(kUser, kPassword);
    if (!registry_) {
      setupError_ = "the registry did not start";
      return;
    }
    auto pushed = registry_->push(*dockerd_, *image, "qcs/standin:1");
    if (!pushed.ok()) {
      setupError_ = "pushing the stand-in failed: " + pushed.message();
      return;
    }
    // The digest as Docker recorded it from the registry's answer to the push.
    auto repoDigest =
        dockerd_->cli("image inspect --format '{{index .RepoDigests 0}}' " + registry_->address() + "/qcs/standin:1");
    if (!repoDigest.ok() || repoDigest->find('@') == std::string::npos) {
      setupError_ = "no repo digest after the push: " + (repoDigest.ok() ? *repoDigest : repoDigest.message());
      return;
    }
    manifestDigest_ = repoDigest->substr(repoDigest->find('@') + 1);
  }
  static void TearDownTestSuite() {
    registry_.reset();
    dockerd_.reset();
  }

  void SetUp() override {
    ASSERT_TRUE(setupError_.empty()) << setupError_;
    containerd_ = Containerd::start();
    ASSERT_NE(containerd_, nullptr) << "containerd did not start";
    client_ = std::make_unique<ContainerdClient>(containerd_->socketPath(), kNamespace, 10s);
    registry::RegistryClientOptions options;
    options.connectTimeout = 5s;
    options.requestTimeout = 30s;
    options.blobTimeout = 120s;
    store_ = std::make_unique<ImageStore>(*client_, kSnapshotter, options);
  }
  void TearDown() override {
    store_.reset();
    client_.reset();
    containerd_.reset();
  }

  std::string reference(const std::string& tag = "1") const { return registry_->address() + "/qcs/standin:" + tag; }
  static RegistryCredentials credentials(const std::string& password) {
    return RegistryCredentials{kUser, password, "", registry_->address()};
  }

  // `ctr -n qualys <args>`; a failure fails the test.
  std::string ctr(const std::string& args) {
    auto out = containerd_->cli(std::string("-n ") + kNamespace + " " + args);
    EXPECT_TRUE(out.ok()) << out.message();
    return out.ok() ? *out : std::string();
  }
  // A ContainerdRuntime on the same containerd and namespace: what the next agent connects.
  std::unique_ptr<ContainerRuntime> connectRuntime() {
    ContainerdRuntimeOptions options;
    options.socketPath = containerd_->socketPath();
    options.nameSpace = kNamespace;
    options.snapshotter = kSnapshotter;
    options.timeout = 10s;
    auto connected = connectContainerd(options);
    EXPECT_TRUE(connected.ok()) << connected.message();
    return connected.ok() ? std::move(connected.value()) : nullptr;
  }
  std::string imageNames() { return ctr("images ls -q"); }
  std::string contentDigests() { return ctr("content ls -q"); }
  std::set<std::string> snapshotKeys() {
    return firstColumn(ctr(std::string("snapshots --snapshotter ") + kSnapshotter + " ls"));
  }

  // Runs the stand-in from the image in the foreground (exits at once with exitCode): the exit code
  // of `ctr run`, which is the container's.
  int runStandin(const std::string& name, const std::string& id, int exitCode) {
    auto run = qcs::testing::runCommand(
        {"/usr/bin/ctr", "--address", containerd_->socketPath(), "-n", kNamespace, "run", "--rm", "--net-host", "--env",
         "STANDIN_MODE=exit", "--env", "STANDIN_EXIT_CODE=" + std::to_string(exitCode), name, id},
        {}, 2min);
    EXPECT_TRUE(run.ok()) << run.message();
    if (!run.ok()) return -1;
    if (run->exitCode != exitCode) ADD_FAILURE() << "ctr run: " << run->err << run->out;
    return run->exitCode;
  }

  static std::unique_ptr<Dockerd> dockerd_;
  static std::unique_ptr<Registry> registry_;
  static std::string manifestDigest_;
  static std::string setupError_;
  std::unique_ptr<Containerd> containerd_;
  std::unique_ptr<ContainerdClient> client_;
  std::unique_ptr<ImageStore> store_;
};

std::unique_ptr<Dockerd> ContainerdPullTest::dockerd_;
std::unique_ptr<Registry> ContainerdPullTest::registry_;
std::string ContainerdPullTest::manifestDigest_;
std::string ContainerdPullTest::setupError_;

TEST_F(ContainerdPullTest, PullsWithTheRightPasswordIntoAUsableImage) {
  ProgressLog progress;
  auto pulled = store_->pull(reference(), credentials(kPassword), progress.fn());
  ASSERT_TRUE(pulled.ok()) << pulled.message();

  const std::string name = registry_->address() + "/qcs/standin:1";
  EXPECT_TRUE(containsLine(imageNames(), name)) << imageNames();
  // The record's target is the manifest the registry holds for the tag.
  bool found = false;
  for (const auto& line : nonEmptyLines(ctr("images ls"))) {
    if (line.rfind(name + " ", 0) == 0) {
      found = true;
      EXPECT_NE(line.find(manifestDigest_), std::string::npos) << line;
    }
  }
  EXPECT_TRUE(found);

  auto image = store_->find(reference());
  ASSERT_TRUE(image.ok()) << image.message();
  EXPECT_EQ(image->name, name);
  EXPECT_EQ(image->targetDigest, manifestDigest_);
  EXPECT_EQ(image->manifestDigest, manifestDigest_);
  EXPECT_TRUE(image->unpacked);
  ASSERT_FALSE(image->layers.empty());
  ASSERT_EQ(image->diffIds.size(), image->layers.size());
  EXPECT_EQ(image->chainId, chainIdOf(image->diffIds));
  EXPECT_EQ(snapshotKeys().count(image->chainId), 1u);

  // Every blob is in the content store: manifest, config, layers.
  const std::string digests = contentDigests();
  EXPECT_TRUE(containsLine(digests, manifestDigest_)) << digests;
  EXPECT_TRUE(containsLine(digests, image->configDigest)) << digests;
  for (const auto& layer : image->layers) EXPECT_TRUE(containsLine(digests, layer.digest)) << digests;
  // The config is the stand-in's.
  auto config = store_->readBlob(image->configDigest);
  ASSERT_TRUE(config.ok()) << config.message();
  EXPECT_EQ("sha256:" + sha256Hex(*config), image->configDigest);

  // Each layer was downloaded and unpacked.
  const auto perLayer = progress.byLayer();
  for (const auto& layer : image->layers) {
    const auto it = perLayer.find(layer.digest.substr(7, 12));
    ASSERT_NE(it, perLayer.end()) << "no progress for layer " << layer.digest;
    EXPECT_NE(std::find(it->second.begin(), it->second.end(), "Downloading"), it->second.end());
    EXPECT_NE(std::find(it->second.begin(), it->second.end(), "Pull complete"), it->second.end());
  }

  // The snapshot is a real root filesystem: the stand-in runs from it, and its exit code comes back.
  EXPECT_EQ(runStandin(name, "qcs-pull-t1", 0), 0);
  EXPECT_EQ(runStandin(name, "qcs-pull-t2", 3), 3);
}

TEST_F(ContainerdPullTest, ASecondPullFetchesNothingNew) {
  auto first = store_->pull(reference(), credentials(kPassword), {});
  ASSERT_TRUE(first.ok()) << first.message();
  const std::string contentBefore = contentDigests();
  const std::set<std::string> snapshotsBefore = snapshotKeys();

  ProgressLog progress;
  auto second = store_->pull(reference(), credentials(kPassword), progress.fn());
  ASSERT_TRUE(second.ok()) << second.message();

  auto image = store_->find(reference());
  ASSERT_TRUE(image.ok()) << image.message();
  EXPECT_TRUE(image->unpacked);
  const auto perLayer = progress.byLayer();
  EXPECT_EQ(perLayer.size(), image->layers.size());
  for (const auto& layer : image->layers) {
    const auto it = perLayer.find(layer.digest.substr(7, 12));
    ASSERT_NE(it, perLayer.end()) << "no progress for layer " << layer.digest;
    EXPECT_EQ(it->second, std::vector<std::string>{"Already exists"}) << layer.digest;
  }
  EXPECT_EQ(contentDigests(), contentBefore);
  EXPECT_EQ(snapshotKeys(), snapshotsBefore);
  EXPECT_TRUE(ctr("leases ls -q").empty()) << "the pull's lease outlived it";
}

TEST_F(ContainerdPullTest, APullLeaseAnEarlierAgentLeftIsDeletedWhenTheNextAgentConnects) {
  // What an agent SIGKILLed mid-pull leaves: its lease (named for its pid), holding whatever it wrote.
  const std::string leftover = "qcs-agent-pull-999999-1-0-deadbeef";
  ASSERT_FALSE(ctr("leases create --id " + leftover).empty());
  // Someone else's lease is not the agent's to delete.
  ASSERT_FALSE(ctr("leases create --id someone-elses-lease").empty());

  // The agent that comes next connects after both were made (and, in the agent, takes the lock).
  auto runtime = connectRuntime();
  ASSERT_NE(runtime, nullptr);
  const LeftoverCleanup sweep = runtime->removeLeftovers();
  EXPECT_TRUE(sweep.failures.empty()) << sweep.failures.front().message;
  EXPECT_EQ(sweep.removed, std::vector<std::string>{"lease " + leftover});
  EXPECT_EQ(ctr("leases ls -q"), "someone-elses-lease");

  // Its own pull then runs as usual and leaves no lease of its own behind.
  auto pulled = runtime->pullImage(reference(), credentials(kPassword), {});
  ASSERT_TRUE(pulled.ok()) << pulled.message();
  EXPECT_EQ(ctr("leases ls -q"), "someone-elses-lease");
  ctr("leases delete someone-elses-lease");
}

TEST_F(ContainerdPullTest, ALeftoverPullLeaseIsDeletedAtConnectWhenTheImageIsAlreadyStored) {
  // An agent killed after its pull stored the image but before it deleted the pull's lease: the next
  // agent finds the image and pulls nothing, so only the sweep at connect can delete that lease.
  auto pulled = store_->pull(reference(), credentials(kPassword), {});
  ASSERT_TRUE(pulled.ok()) << pulled.message();
  const std::string leftover = "qcs-agent-pull-999999-2-0-0badf00d";
  ASSERT_FALSE(ctr("leases create --id " + leftover).empty());
  // And one a create left (killed between preparing the rootfs snapshot and recording the container).
  const std::string leftoverCreate = "qcs-agent-create-0123456789ab";
  ASSERT_FALSE(ctr("leases create --id " + leftoverCreate).empty());
  const std::string contentBefore = contentDigests();
  const std::set<std::string> snapshotsBefore = snapshotKeys();

  auto runtime = connectRuntime();
  ASSERT_NE(runtime, nullptr);
  auto present = runtime->imagePresent(reference());
  ASSERT_TRUE(present.ok()) << present.message();
  ASSERT_TRUE(present.value()) << "the stored image must not need a pull";
  const LeftoverCleanup sweep = runtime->removeLeftovers();
  EXPECT_TRUE(sweep.failures.empty()) << sweep.failures.front().message;
  EXPECT_EQ(std::set<std::string>(sweep.removed.begin(), sweep.removed.end()),
            (std::set<std::string>{"lease " + leftover, "lease " + leftoverCreate}));
  EXPECT_TRUE(ctr("leases ls -q").empty());

  // The image keeps what it references: the leases were all that went.
  auto image = store_->find(reference());
  ASSERT_TRUE(image.ok()) << image.message();
  EXPECT_TRUE(image->unpacked);
  EXPECT_EQ(contentDigests(), contentBefore);
  EXPECT_EQ(snapshotKeys(), snapshotsBefore);
}

TEST_F(ContainerdPullTest, ALeaseMadeAfterConnectIsNotDeletedBySweep) {
  const std::string older = "qcs-agent-create-00000000000a";
  ASSERT_FALSE(ctr("leases create --id " + older).empty());
  auto runtime = connectRuntime();
  ASSERT_NE(runtime, nullptr);
  // As a pull of this agent running at the time of the sweep would hold.
  const std::string concurrent = "qcs-agent-pull-" + std::to_string(::getpid()) + "-1-0-00000001";
  ASSERT_FALSE(ctr("leases create --id " + concurrent).empty());

  const LeftoverCleanup sweep = runtime->removeLeftovers();
  EXPECT_TRUE(sweep.failures.empty()) << sweep.failures.front().message;
  EXPECT_EQ(sweep.removed, std::vector<std::string>{"lease " + older});
  EXPECT_EQ(ctr("leases ls -q"), concurrent);
  ctr("leases delete " + concurrent);
}

TEST_F(ContainerdPullTest, ASweepThatCannotReachContainerdReportsAndLeavesTheRuntimeUsable) {
  const std::string leftover = "qcs-agent-pull-999999-3-0-00c0ffee";
  ASSERT_FALSE(ctr("leases create --id " + leftover).empty());
  auto runtime = connectRuntime();
  ASSERT_NE(runtime, nullptr);
  containerd_->stop();

  const LeftoverCleanup sweep = runtime->removeLeftovers();
  EXPECT_TRUE(sweep.removed.empty());
  ASSERT_EQ(sweep.failures.size(), 1u);
  EXPECT_NE(sweep.failures.front().message.find("listing leases"), std::string::npos) << sweep.failures.front().message;

  // The lease is still there for the next sweep (or its expiry), and the runtime works once
  // containerd is back.
  ASSERT_TRUE(containerd_->restart());
  EXPECT_TRUE(waitFor([&] { return runtime->ping().ok(); }, 30s));
  EXPECT_EQ(ctr("leases ls -q"), leftover);
}

TEST_F(ContainerdPullTest, AWrongPasswordIsUnauthenticatedAndCreatesNothing) {
  auto pulled = store_->pull(reference(), credentials("wrong-password"), {});
  ASSERT_FALSE(pulled.ok());
  EXPECT_EQ(pulled.code(), ErrorCode::kUnauthenticated) << pulled.message();
  EXPECT_NE(pulled.message().find(reference()), std::string::npos) << pulled.message();
  EXPECT_EQ(pulled.message().find("wrong-password"), std::string::npos) << "the password leaked into the message";
  EXPECT_TRUE(imageNames().empty());
  EXPECT_TRUE(contentDigests().empty());
  EXPECT_TRUE(ctr("leases ls -q").empty());
  auto image = store_->find(reference());
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.code(), ErrorCode::kNotFound);
}

TEST_F(ContainerdPullTest, AnAnonymousPullFromAnAuthRegistryIsUnauthenticated) {
  auto pulled = store_->pull(reference(), std::nullopt, {});
  ASSERT_FALSE(pulled.ok());
  EXPECT_EQ(pulled.code(), ErrorCode::kUnauthenticated) << pulled.message();
  EXPECT_TRUE(imageNames().empty());
  EXPECT_TRUE(contentDigests().empty());
}

TEST_F(ContainerdPullTest, AnUnknownTagIsNotFoundAndCreatesNothing) {
  auto pulled = store_->pull(reference("no-such-tag"), credentials(kPassword), {});
  ASSERT_FALSE(pulled.ok());
  EXPECT_EQ(pulled.code(), ErrorCode::kNotFound) << pulled.message();
  EXPECT_NE(pulled.message().find(reference("no-such-tag")), std::string::npos) << pulled.message();
  EXPECT_TRUE(imageNames().empty());
  EXPECT_TRUE(contentDigests().empty());
}

TEST_F(ContainerdPullTest, UnpackRecreatesRemovedSnapshots) {
  auto pulled = store_->pull(reference(), credentials(kPassword), {});
  ASSERT_TRUE(pulled.ok()) << pulled.message();
  auto image = store_->find(reference());
  ASSERT_TRUE(image.ok()) << image.message();
  ASSERT_TRUE(image->unpacked);

  // Remove the whole chain, top first (a snapshot with children cannot go).
  std::vector<std::string> chain;
  std::vector<std::string> chainIds;
  for (const auto& diffId : image->diffIds) {
    chain.push_back(diffId);
    chainIds.push_back(chainIdOf(chain));
  }
  for (auto it = chainIds.rbegin(); it != chainIds.rend(); ++it) {
    ctr(std::string("snapshots --snapshotter ") + kSnapshotter + " rm " + *it);
  }
  for (const auto& id : chainIds) EXPECT_EQ(snapshotKeys().count(id), 0u) << id;

  auto stale = store_->find(reference());
  ASSERT_TRUE(stale.ok()) << stale.message();
  EXPECT_FALSE(stale->unpacked);

  auto unpacked = store_->unpack(*stale);
  ASSERT_TRUE(unpacked.ok()) << unpacked.message();
  auto fresh = store_->find(reference());
  ASSERT_TRUE(fresh.ok()) << fresh.message();
  EXPECT_TRUE(fresh->unpacked);
  for (const auto& id : chainIds) EXPECT_EQ(snapshotKeys().count(id), 1u) << id;
  // No extraction snapshot is left behind, and no lease.
  for (const auto& key : snapshotKeys()) EXPECT_EQ(key.rfind("extract-", 0), std::string::npos) << key;
  EXPECT_TRUE(ctr("leases ls -q").empty());
  EXPECT_EQ(runStandin(fresh->name, "qcs-pull-unpacked", 0), 0);

  // A second unpack of an unpacked image changes nothing.
  const auto before = snapshotKeys();
  EXPECT_TRUE(store_->unpack(*fresh).ok());
  EXPECT_EQ(snapshotKeys(), before);
}

TEST_F(ContainerdPullTest, GarbageCollectionKeepsWhatTheImageReferencesAndNothingMore) {
  auto pulled = store_->pull(reference(), credentials(kPassword), {});
  ASSERT_TRUE(pulled.ok()) << pulled.message();
  auto image = store_->find(reference());
  ASSERT_TRUE(image.ok()) << image.message();
  EXPECT_TRUE(ctr("leases ls -q").empty()) << "the pull's lease outlived it";

  // The config names the top snapshot for GC; the manifest its config and layers.
  auto configLabels = ctr("content ls");
  for (const auto& line : nonEmptyLines(configLabels)) {
    if (line.rfind(image->configDigest, 0) == 0) {
      EXPECT_NE(line.find(std::string("containerd.io/gc.ref.snapshot.") + kSnapshotter + "=" + image->chainId),
                std::string::npos)
          << line;
    }
    if (line.rfind(image->manifestDigest, 0) == 0) {
      EXPECT_NE(line.find("containerd.io/gc.ref.content.config=" + image->configDigest), std::string::npos) << line;
      EXPECT_NE(line.find("containerd.io/gc.ref.content.l.0=" + image->layers[0].digest), std::string::npos) << line;
    }
  }

  // A blob nobody references, so that a collection is seen to have happened.
  const std::string control = "sha256:" + sha256Hex("qcs unreferenced control blob");
  auto ingested = containerd_->cli(std::string("-n ") + kNamespace + " content ingest qcs-control",
                                   "qcs unreferenced control blob");
  // Committed (ctr succeeded); not listed here, because a collection the pull's lease deletion
  // scheduled may already take it.
  ASSERT_TRUE(ingested.ok()) << ingested.message();

  // Deleting a lease with --sync runs a full collection before it returns.
  const std::string lease = ctr("leases create");
  ASSERT_FALSE(lease.empty());
  ctr("leases delete --sync " + nonEmptyLines(lease).front());

  std::string digests = contentDigests();
  EXPECT_FALSE(containsLine(digests, control)) << "no collection ran: the control blob is still there";
  EXPECT_TRUE(containsLine(digests, image->manifestDigest)) << digests;
  EXPECT_TRUE(containsLine(digests, image->configDigest)) << digests;
  for (const auto& layer : image->layers) EXPECT_TRUE(containsLine(digests, layer.digest)) << digests;
  EXPECT_EQ(snapshotKeys().count(image->chainId), 1u);
  auto still = store_->find(reference());
  ASSERT_TRUE(still.ok()) << still.message();
  EXPECT_TRUE(still->unpacked);

  // Without the image record, the labels keep nothing alive.
  ctr("images rm --sync " + image->name);
  digests = contentDigests();
  EXPECT_FALSE(containsLine(digests, image->manifestDigest)) << digests;
  EXPECT_FALSE(containsLine(digests, image->configDigest)) << digests;
  for (const auto& layer : image->layers) EXPECT_FALSE(containsLine(digests, layer.digest)) << digests;
  EXPECT_EQ(snapshotKeys().count(image->chainId), 0u);
}

// Leaves what an interrupted write leaves: an ingest under the pull's ref for a layer, holding `leftover` (shorter than
// the layer).
void leaveIngest(Containerd& containerd, const registry::Descriptor& layer, const std::string& leftover) {
  // An ingest whose commit fails (the size is short) stays in containerd, as after a crash.
  auto ingested = containerd.cli(std::string("-n ") + kNamespace + " content ingest --expected-size " +
                                     std::to_string(layer.size) + " qcs-agent-" + layer.digest,
                                 leftover);
  EXPECT_FALSE(ingested.ok()) << "a short ingest was committed";
  auto active = containerd.cli(std::string("-n ") + kNamespace + " content active");
  EXPECT_TRUE(active.ok() && active->find("qcs-agent-" + layer.digest) != std::string::npos)
      << (active.ok() ? *active : active.message());
}

TEST_F(ContainerdPullTest, ResumesOverWhatAnInterruptedWriteLeft) {
  for (const bool corrupt : {false, true}) {
    SCOPED_TRACE(corrupt ? "bad leftovers" : "good leftovers");
    registry::RegistryClientOptions options;
    options.registry = registry_->address();
    options.credentials = credentials(kPassword);
    registry::RegistryClient registryClient(options);
    auto resolved = registryClient.resolve(ImageReference{registry_->address(), "qcs/standin", "1", ""});
    ASSERT_TRUE(resolved.ok()) << resolved.message();
    const registry::Descriptor layer = resolved->layers.front();
    std::string bytes;
    ASSERT_TRUE(registryClient
                    .fetchBlob("qcs/standin", layer,
                               [&](std::string_view chunk) {
                                 bytes.append(chunk);
                                 return okStatus();
                               })
                    .ok());
    std::string leftover = bytes.substr(0, bytes.size() / 2);
    if (corrupt) leftover.assign(leftover.size(), 'x');
    leaveIngest(*containerd_, layer, leftover);

    auto pulled = store_->pull(reference(), credentials(kPassword), {});
    ASSERT_TRUE(pulled.ok()) << pulled.message();
    EXPECT_TRUE(containsLine(contentDigests(), layer.digest));
    EXPECT_TRUE(ctr("content active").find("qcs-agent-") == std::string::npos) << ctr("content active");
    auto image = store_->find(reference());
    ASSERT_TRUE(image.ok()) << image.message();
    EXPECT_TRUE(image->unpacked);

    ctr("images rm --sync " + image->name);
    ASSERT_FALSE(containsLine(contentDigests(), layer.digest)) << "the next round needs the layer gone";
  }
}

TEST_F(ContainerdPullTest, ALayerThatDoesNotUnpackToItsDiffIdIsAProtocolError) {
  auto pulled = store_->pull(reference(), credentials(kPassword), {});
  ASSERT_TRUE(pulled.ok()) << pulled.message();
  auto image = store_->find(reference());
  ASSERT_TRUE(image.ok()) << image.message();
  ctr(std::string("snapshots --snapshotter ") + kSnapshotter + " rm " + image->chainId);
  const auto before = snapshotKeys();

  LocalImage corrupt = *image;
  corrupt.unpacked = false;
  corrupt.diffIds.back() = "sha256:" + std::string(64, '0');
  corrupt.chainId = chainIdOf(corrupt.diffIds);
  auto unpacked = store_->unpack(corrupt);
  ASSERT_FALSE(unpacked.ok());
  EXPECT_EQ(unpacked.code(), ErrorCode::kProtocol) << unpacked.message();
  EXPECT_NE(unpacked.message().find(corrupt.layers.back().digest), std::string::npos) << unpacked.message();
  // Neither the wrong chain nor the extraction snapshot is left.
  EXPECT_EQ(snapshotKeys(), before);
  EXPECT_TRUE(ctr("leases ls -q").empty());
}

TEST_F(ContainerdPullTest, AnUnreachableContainerdIsUnavailable) {
  qcs::testing::TempDir dir;
  ContainerdClient absent(dir.file("no.sock"), kNamespace, 2s);
  ImageStore store(absent, kSnapshotter);
  auto pulled = store.pull(reference(), credentials(kPassword), {});
  ASSERT_FALSE(pulled.ok());
  EXPECT_EQ(pulled.code(), ErrorCode::kUnavailable) << pulled.message();
  EXPECT_NE(pulled.message().find(dir.file("no.sock")), std::string::npos) << pulled.message();
  auto found = store.find(reference());
  ASSERT_FALSE(found.ok());
  EXPECT_EQ(found.code(), ErrorCode::kUnavailable) << found.message();
}

TEST_F(ContainerdPullTest, FindsAndUnpacksAnImageImportedWithCtr) {
  auto imported = qcs::testing::importStandinImage(*containerd_, "docker.io/library/qcs-standin:imported", kNamespace);
  ASSERT_TRUE(imported.ok()) << imported.message();
  auto image = store_->find("qcs-standin:imported");
  ASSERT_TRUE(image.ok()) << image.message();
  EXPECT_EQ(image->name, "docker.io/library/qcs-standin:imported");
  ASSERT_EQ(image->layers.size(), 1u);
  ASSERT_EQ(image->diffIds.size(), 1u);
  EXPECT_EQ(image->chainId, image->diffIds.front());
  EXPECT_TRUE(containsLine(contentDigests(), image->manifestDigest));

  ctr(std::string("snapshots --snapshotter ") + kSnapshotter + " rm " + image->chainId);
  auto stale = store_->find("qcs-standin:imported");
  ASSERT_TRUE(stale.ok()) << stale.message();
  ASSERT_FALSE(stale->unpacked);
  auto unpacked = store_->unpack(*stale);
  ASSERT_TRUE(unpacked.ok()) << unpacked.message();
  EXPECT_EQ(snapshotKeys().count(image->chainId), 1u);
  EXPECT_EQ(runStandin(image->name, "qcs-pull-imported", 0), 0);
}

TEST_F(ContainerdPullTest, FindWithoutARecordIsNotFound) {
  auto image = store_->find(reference());
  ASSERT_FALSE(image.ok());
  EXPECT_EQ(image.code(), ErrorCode::kNotFound);
  EXPECT_NE(image.message().find(registry_->address() + "/qcs/standin:1"), std::string::npos) << image.message();
}

// ---- Names and chain ids: no daemons ----------------------------------------------------------

TEST(ContainerdPullImageName, NormalisesLikeContainerd) {
  const std::map<std::string, std::string> cases = {
      {"qualys/qcs-sensor", "docker.io/qualys/qcs-sensor:latest"},
      {"qualys/qcs-sensor:1.2.3", "docker.io/qualys/qcs-sensor:1.2.3"},
      {"busybox", "docker.io/library/busybox:latest"},
      {"docker.io/library/busybox:1", "docker.io/library/busybox:1"},
      {"127.0.0.1:5000/qcs/standin:1", "127.0.0.1:5000/qcs/standin:1"},
      {"localhost:5000/standin", "localhost:5000/standin:latest"},
      {"123456789012.dkr.ecr.eu-west-1.amazonaws.com/qualys/sensor:2",
       "123456789012.dkr.ecr.eu-west-1.amazonaws.com/qualys/sensor:2"},
  };
  for (const auto& [reference, expected] : cases) {
    auto name = ImageStore::imageName(reference);
    ASSERT_TRUE(name.ok()) << reference << ": " << name.message();
    EXPECT_EQ(*name, expected) << reference;
  }
}

TEST(ContainerdPullImageName, ADigestReferenceIsNamedByItsDigestOnly) {
  const std::string digest = "sha256:" + std::string(64, 'a');
  auto pinned = ImageStore::imageName("qualys/qcs-sensor@" + digest);
  ASSERT_TRUE(pinned.ok()) << pinned.message();
  EXPECT_EQ(*pinned, "docker.io/qualys/qcs-sensor@" + digest);
  // containerd's ParseDockerRef drops the tag when a digest pins the image.
  auto both = ImageStore::imageName("127.0.0.1:5000/qcs/standin:1@" + digest);
  ASSERT_TRUE(both.ok()) << both.message();
  EXPECT_EQ(*both, "127.0.0.1:5000/qcs/standin@" + digest);
}

TEST(ContainerdPullImageName, RejectsWhatIsNotAReference) {
  for (const std::string bad : {"", "UPPER/case", "qualys/qcs-sensor:", "a b"}) {
    EXPECT_FALSE(ImageStore::imageName(bad).ok()) << "'" << bad << "'";
  }
}

TEST(ContainerdPullChainId, FollowsTheOciDefinition) {
  // Digests of "a", "b", "c"; the expected chain ids computed with sha256sum(1).
  const std::string a = "sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb";
  const std::string b = "sha256:3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d";
  const std::string c = "sha256:2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6";
  EXPECT_EQ(chainIdOf({}), "");
  EXPECT_EQ(chainIdOf({a}), a);
  EXPECT_EQ(chainIdOf({a, b}), "sha256:51c0c8ace48498d6f5fee6b0592cc06f2da0f3cbe09c5a34a97dce85c3889676");
  EXPECT_EQ(chainIdOf({a, b, c}), "sha256:2fce7f8ce91bcf0a1428b36e1024639fdbd9469eea762dba98aa749631885106");
}

}  // namespace
}  // namespace qcs::runtime::containerd

#include "runtime/image_reference.h"

#include <cctype>

namespace qcs::runtime {

namespace {

bool looksLikeRegistry(const std::string& component) {
  return component.find('.') != std::string::npos || component.find(':') != std::string::npos ||
         component == "localhost";
}

bool validPathComponent(const std::string& c) {
  if (c.empty()) return false;
  if (!std::islower(static_cast<unsigned char>(c.front())) && !std::isdigit(static_cast<unsigned char>(c.front())))
    return false;
  for (char ch : c) {
    bool ok = std::islower(static_cast<unsigned char>(ch)) || std::isdigit(static_cast<unsigned char>(ch)) ||
              ch == '.' || ch == '_' || ch == '-';
    if (!ok) return false;
  }
  return true;
}

bool validTag(const std::string& t) {
  if (t.empty() || t.size() > 128) return false;
  for (char ch : t) {
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_' && ch != '.' && ch != '-') return false;
  }
  return t.front() != '.' && t.front() != '-';
}

bool validDigest(const std::string& d) {
  const std::string prefix = "sha256:";
  if (d.rfind(prefix, 0) != 0 || d.size() != prefix.size() + 64) return false;
  for (size_t i = prefix.size(); i < d.size(); ++i) {
    if (!std::isxdigit(static_cast<unsigned char>(d[i])) || std::isupper(static_cast<unsigned char>(d[i])))
      return false;
  }
  return true;
}

}  // namespace

Result<ImageReference> parseImageReference(const std::string& text) {
  auto bad = [&](const std::string& why) {
    return makeError(ErrorCode::kInvalidArgument, "image reference \"" + text + "\": " + why);
  };
  if (text.empty()) return bad("is empty");
  ImageReference ref;
  std::string rest = text;
  if (auto at = rest.find('@'); at != std::string::npos) {
    ref.digest = rest.substr(at + 1);
    rest = rest.substr(0, at);
    if (!validDigest(ref.digest)) return bad("digest must be sha256: followed by 64 lower-case hex digits");
  }
  auto slash = rest.find('/');
  if (slash != std::string::npos && looksLikeRegistry(rest.substr(0, slash))) {
    ref.registry = rest.substr(0, slash);
    rest = rest.substr(slash + 1);
  } else {
    ref.registry = "docker.io";
  }
  auto lastSlash = rest.rfind('/');
  auto colon = rest.rfind(':');
  if (colon != std::string::npos && (lastSlash == std::string::npos || colon > lastSlash)) {
    ref.tag = rest.substr(colon + 1);
    rest = rest.substr(0, colon);
    if (!validTag(ref.tag)) return bad("tag \"" + ref.tag + "\" is not valid (letters, digits, _ . -)");
  }
  if (rest.empty()) return bad("has no repository name");
  size_t start = 0;
  while (start <= rest.size()) {
    auto end = rest.find('/', start);
    std::string component = rest.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (!validPathComponent(component)) {
      return bad("repository component \"" + component + "\" must be lower-case letters, digits, . _ -");
    }
    if (end == std::string::npos) break;
    start = end + 1;
  }
  if (ref.registry == "docker.io" && rest.find('/') == std::string::npos) rest = "library/" + rest;
  ref.repository = rest;
  if (ref.tag.empty() && ref.digest.empty()) ref.tag = "latest";
  return ref;
}

std::string ImageReference::canonical() const {
  std::string out = registry + "/" + repository;
  if (!tag.empty()) out += ":" + tag;
  if (!digest.empty()) out += "@" + digest;
  return out;
}

std::string ImageReference::name() const {
  if (registry != "docker.io") return registry + "/" + repository;
  if (repository.rfind("library/", 0) == 0) return repository.substr(8);
  return repository;
}

std::string ImageReference::familiar() const {
  std::string out = name();
  if (!tag.empty()) out += ":" + tag;
  if (!digest.empty()) out += "@" + digest;
  return out;
}

}  // namespace qcs::runtime

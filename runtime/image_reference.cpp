#include "runtime/image_reference.h"

#include <cctype>

namespace qcs::runtime {

namespace {

bool looksLikeRegistry(const std::string& component) {
  return component.find('.') != std::string::npos || component.find(':') != std::string::npos ||
         component == "localhost";
}

bool isLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// Docker's path component: [a-z0-9]+ joined by ".", "_", "__" or runs of "-".
bool validPathComponent(const std::string& component) {
  if (component.empty() || !isLowerAlnum(component.front()) || !isLowerAlnum(component.back())) return false;
  size_t i = 0;
  while (i < component.size()) {
    if (isLowerAlnum(component[i])) {
      ++i;
      continue;
    }
    size_t start = i;
    while (i < component.size() && !isLowerAlnum(component[i])) ++i;
    std::string separator = component.substr(start, i - start);
    bool dashes = separator.find_first_not_of('-') == std::string::npos;
    if (!(separator == "." || separator == "_" || separator == "__" || dashes)) return false;
  }
  return true;
}

// host[:port] with RFC 1123 labels (IPv4 addresses pass as labels of digits).
bool validRegistryHost(const std::string& hostPort) {
  std::string host = hostPort;
  if (auto colon = host.rfind(':'); colon != std::string::npos) {
    std::string port = host.substr(colon + 1);
    if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
        std::stoi(port) > 65535) {
      return false;
    }
    host = host.substr(0, colon);
  }
  if (host.empty() || host.size() > 253) return false;
  size_t start = 0;
  while (start <= host.size()) {
    size_t dot = host.find('.', start);
    std::string label = host.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return false;
    for (char c : label) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-') return false;
    }
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return true;
}

bool validTag(const std::string& t) {
  if (t.empty() || t.size() > 128) return false;
  if (!std::isalnum(static_cast<unsigned char>(t.front())) && t.front() != '_') return false;
  for (char ch : t) {
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_' && ch != '.' && ch != '-') return false;
  }
  return true;
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
    if (!validDigest(ref.digest)) return bad("the digest must be sha256: and 64 lowercase hex digits");
  }
  auto slash = rest.find('/');
  if (slash != std::string::npos && looksLikeRegistry(rest.substr(0, slash))) {
    ref.registry = rest.substr(0, slash);
    rest = rest.substr(slash + 1);
    if (!validRegistryHost(ref.registry)) return bad("\"" + ref.registry + "\" is not a registry host[:port]");
  } else {
    ref.registry = "docker.io";
  }
  auto lastSlash = rest.rfind('/');
  auto colon = rest.rfind(':');
  if (colon != std::string::npos && (lastSlash == std::string::npos || colon > lastSlash)) {
    ref.tag = rest.substr(colon + 1);
    rest = rest.substr(0, colon);
    if (!validTag(ref.tag)) return bad("the tag \"" + ref.tag + "\" must be letters, digits, _ . - (at most 128)");
  }
  if (rest.empty()) return bad("has no repository name");
  if (rest.size() > 255) return bad("the name is longer than 255 characters");
  size_t start = 0;
  while (start <= rest.size()) {
    auto end = rest.find('/', start);
    std::string component = rest.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (!validPathComponent(component)) {
      return bad("path component \"" + component + "\" must be lowercase letters and digits, separated by . _ __ or -");
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

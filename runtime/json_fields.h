// Reading fields of JSON that a peer (a runtime, a registry, a token server, a cloud's metadata or
// credential service) or a local file (a Docker config) sent: a field of the wrong type is read as
// absent, never an exception (nlohmann's value() throws for a present key of another type, e.g. a
// key sent twice with the last of another type).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace qcs::runtime {

// object[key] when object is an object and that field a string, else "".
inline std::string stringField(const nlohmann::json& object, const char* key) {
  if (!object.is_object()) return {};
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace qcs::runtime

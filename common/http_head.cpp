#include "common/http_head.h"

#include <cctype>

#include "common/encoding.h"

namespace qcs {

bool applyHttpHeadLine(std::string_view line, long& status, std::map<std::string, std::string>& headers) {
  if (line.rfind("HTTP/", 0) == 0) {
    headers.clear();
    status = 0;
    const auto space = line.find(' ');
    if (space != std::string_view::npos) {
      for (size_t i = space + 1; i < line.size() && std::isdigit(static_cast<unsigned char>(line[i])); ++i) {
        status = status * 10 + (line[i] - '0');
      }
    }
    return true;
  }
  const auto colon = line.find(':');
  if (colon != std::string_view::npos) {
    std::string name(trim(line.substr(0, colon)));
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    headers[name] = std::string(trim(line.substr(colon + 1)));
  }
  return false;
}

}  // namespace qcs

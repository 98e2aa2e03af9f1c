// Parsing of an HTTP/1.x response head, one line at a time, as libcurl's header callback gets it.
#pragma once

#include <map>
#include <string>
#include <string_view>

namespace qcs {

// Feeds one line of a response head. A status line ("HTTP/1.1 200 OK") starts a new head — after
// a redirect or a 100 Continue — so it resets `headers` and sets `status`; a "Name: value" line is
// stored under the lower-cased name (the last value wins). Returns true for a status line.
bool applyHttpHeadLine(std::string_view line, long& status, std::map<std::string, std::string>& headers);

}  // namespace qcs

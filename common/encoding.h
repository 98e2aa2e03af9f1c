// Small encodings shared by every module: hex SHA-256, base64 (standard and URL-safe).
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"

namespace qcs {

std::string sha256Hex(std::string_view data);
std::string base64Encode(std::string_view data);
std::string base64UrlEncode(std::string_view data);
Result<std::string> base64Decode(std::string_view text);
// Percent-encodes everything but RFC 3986 unreserved characters (for URL paths and queries).
std::string urlEncode(std::string_view text);

// Trims ASCII whitespace at both ends.
std::string_view trim(std::string_view text);

// The offset of the first byte that does not belong to well-formed UTF-8 (RFC 3629: no overlong
// forms, no surrogates, nothing above U+10FFFF, no truncated sequence), or npos when all is.
size_t invalidUtf8Offset(std::string_view text);

}  // namespace qcs

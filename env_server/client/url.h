// The one parser of http:// URLs in the codebase (feedback endpoints, remote teachers).
#pragma once

#include <string>

namespace distil::http {

struct HttpUrl {
  std::string host;  // without brackets for IPv6 ("::1")
  std::string port;  // "80" when absent
  std::string path;  // "" when absent; otherwise starts with '/', without a trailing '/'
  // "http://host:port" (IPv6 hosts in brackets), the path left off.
  std::string base() const;
};

// Parses "http://host[:port][/path]" ("host:port" without a scheme is taken as http). IPv6
// literals go in brackets ("http://[::1]:8080"). Throws std::invalid_argument naming `field`
// and the problem: another scheme (https needs a TLS proxy in front), no host, a bad port, a
// path where allow_path is false, a query or fragment, spaces or control characters.
HttpUrl parse_http_url(const std::string& url, const std::string& field, bool allow_path);

}  // namespace distil::http

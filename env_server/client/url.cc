#include "env_server/client/url.h"

#include <algorithm>
#include <stdexcept>

namespace distil::http {

std::string HttpUrl::base() const {
  const bool ipv6 = host.find(':') != std::string::npos;
  return "http://" + (ipv6 ? "[" + host + "]" : host) + ":" + port;
}

HttpUrl parse_http_url(const std::string& url, const std::string& field, bool allow_path) {
  auto fail = [&](const std::string& problem) {
    throw std::invalid_argument(field + ": '" + url + "': " + problem);
  };
  if (url.empty()) fail("empty; give http://host:port");
  for (unsigned char c : url)
    if (c <= 0x20 || c == 0x7f) fail("contains a space or control character");
  std::string rest = url;
  const std::string scheme = "http://";
  if (rest.rfind(scheme, 0) == 0) {
    rest = rest.substr(scheme.size());
  } else if (const auto sep = rest.find("://"); sep != std::string::npos) {
    fail("only http:// is supported (scheme '" + rest.substr(0, sep) + "'; put a TLS proxy in front for https)");
  }
  if (rest.find_first_of("?#") != std::string::npos) fail("a query or fragment is not supported");
  const auto slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  std::string path = slash == std::string::npos ? "" : rest.substr(slash);
  while (!path.empty() && path.back() == '/') path.pop_back();
  if (!path.empty() && !allow_path) fail("give a base URL without a path (http://host:port)");
  if (authority.find('@') != std::string::npos) fail("user information in the URL is not supported");

  HttpUrl out;
  out.path = path;
  out.port = "80";
  if (!authority.empty() && authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string::npos) fail("unterminated [IPv6] host");
    out.host = authority.substr(1, close - 1);
    if (out.host.find(':') == std::string::npos) fail("brackets are for IPv6 literals only");
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') fail("expected :port after ]");
      out.port = authority.substr(close + 2);
    }
  } else {
    if (std::count(authority.begin(), authority.end(), ':') > 1) fail("an IPv6 literal must be in brackets");
    const auto colon = authority.find(':');
    out.host = authority.substr(0, colon);
    if (colon != std::string::npos) out.port = authority.substr(colon + 1);
  }
  if (out.host.empty()) fail("no host");
  const std::string& port = out.port;
  if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      std::stoi(port) == 0 || std::stoi(port) > 65535)
    fail("bad port '" + port + "'");
  return out;
}

}  // namespace distil::http

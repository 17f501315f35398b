// base64 -> zlib -> pickle for LiveCodeBench's compressed private tests. The pickle is only ever
// a str (pickle.dumps(json.dumps(tests))), so a tiny reader of the opcodes that can appear around
// one string is enough, and nothing in the stream can execute code.
#include <zlib.h>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "tasks/converters.h"

namespace distil::tasks {
namespace {

constexpr std::size_t kMaxDecompressedBytes = 512u << 20;

std::string base64_decode(const std::string& in) {
  static const auto table = [] {
    std::array<int, 256> t{};
    t.fill(-1);
    const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (std::size_t i = 0; i < alphabet.size(); ++i) t[static_cast<unsigned char>(alphabet[i])] = static_cast<int>(i);
    t['-'] = 62;  // URL-safe alphabet too
    t['_'] = 63;
    return t;
  }();
  std::string out;
  out.reserve(in.size() * 3 / 4);
  unsigned buffer = 0;
  int bits = 0;
  for (unsigned char c : in) {
    if (c == '=' || c == '\n' || c == '\r' || c == ' ') continue;
    int v = table[c];
    if (v < 0) throw std::runtime_error("not base64 (byte " + std::to_string(static_cast<int>(c)) + ")");
    buffer = (buffer << 6) | static_cast<unsigned>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((buffer >> bits) & 0xFF);
    }
  }
  return out;
}

std::string zlib_inflate(const std::string& in) {
  z_stream stream{};
  if (inflateInit(&stream) != Z_OK) throw std::runtime_error("zlib: cannot initialise");
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  stream.avail_in = static_cast<uInt>(in.size());
  std::string out;
  char chunk[1 << 16];
  int status = Z_OK;
  while (status != Z_STREAM_END) {
    stream.next_out = reinterpret_cast<Bytef*>(chunk);
    stream.avail_out = sizeof chunk;
    status = inflate(&stream, Z_NO_FLUSH);
    if (status != Z_OK && status != Z_STREAM_END) {
      inflateEnd(&stream);
      throw std::runtime_error("zlib: corrupt data");
    }
    out.append(chunk, sizeof chunk - stream.avail_out);
    if (out.size() > kMaxDecompressedBytes) {
      inflateEnd(&stream);
      throw std::runtime_error("zlib: decompresses to more than 512 MiB");
    }
    if (status == Z_OK && stream.avail_in == 0 && stream.avail_out != 0) {
      inflateEnd(&stream);
      throw std::runtime_error("zlib: truncated data");
    }
  }
  inflateEnd(&stream);
  return out;
}

std::uint64_t little_endian(const std::string& s, std::size_t at, int bytes) {
  if (at + bytes > s.size()) throw std::runtime_error("pickle: truncated");
  std::uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(s[at + i]);
  return v;
}

// The one str a pickle stream holds.
std::string unpickle_string(const std::string& p) {
  std::size_t i = 0;
  std::string value;
  bool have = false;
  while (i < p.size()) {
    const unsigned char op = static_cast<unsigned char>(p[i++]);
    switch (op) {
      case 0x80: ++i; break;        // PROTO n
      case 0x95: i += 8; break;     // FRAME length
      case 0x94: break;             // MEMOIZE
      case 'q': ++i; break;         // BINPUT
      case 'r': i += 4; break;      // LONG_BINPUT
      case 0x8c: {                  // SHORT_BINUNICODE
        std::size_t n = little_endian(p, i, 1);
        i += 1;
        if (i + n > p.size()) throw std::runtime_error("pickle: truncated string");
        value = p.substr(i, n);
        i += n;
        have = true;
        break;
      }
      case 'X': {                   // BINUNICODE
        std::size_t n = little_endian(p, i, 4);
        i += 4;
        if (i + n > p.size()) throw std::runtime_error("pickle: truncated string");
        value = p.substr(i, n);
        i += n;
        have = true;
        break;
      }
      case 0x8d: {                  // BINUNICODE8
        std::uint64_t n = little_endian(p, i, 8);
        i += 8;
        if (n > p.size() || i + n > p.size()) throw std::runtime_error("pickle: truncated string");
        value = p.substr(i, n);
        i += n;
        have = true;
        break;
      }
      case '.':                     // STOP
        if (!have) throw std::runtime_error("pickle: holds no string");
        return value;
      default:
        throw std::runtime_error("pickle: unsupported opcode " + std::to_string(op) + " (only a pickled str is accepted)");
    }
  }
  throw std::runtime_error("pickle: no STOP opcode");
}

}  // namespace

std::string decode_lcb_compressed(const std::string& encoded) {
  return unpickle_string(zlib_inflate(base64_decode(encoded)));
}

}  // namespace distil::tasks

// safetensors reader (mmap) and writer. Validation follows the Python/Rust `safetensors` rules:
// header length within the file, header is a JSON object, each tensor has a known dtype, a
// non-negative shape whose byte size equals its offsets, offsets in order, contiguous from 0 and
// ending exactly at the end of the file.
#include "trainer/text/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

namespace distil::text {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the Python implementation's limit

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::BOOL, "BOOL", 1}, {DType::U8, "U8", 1},   {DType::I8, "I8", 1},     {DType::I16, "I16", 2},
    {DType::U16, "U16", 2},   {DType::I32, "I32", 4}, {DType::U32, "U32", 4},   {DType::I64, "I64", 8},
    {DType::U64, "U64", 8},   {DType::F16, "F16", 2}, {DType::BF16, "BF16", 2}, {DType::F32, "F32", 4},
    {DType::F64, "F64", 8},   {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E5M2, "F8_E5M2", 1}};

const DTypeInfo& info(DType d) {
  for (const auto& i : kDTypes)
    if (i.dtype == d) return i;
  throw SafetensorsError("unknown dtype");
}

// numel * element size, or nullopt on overflow / negative dims.
std::optional<uint64_t> byte_size(const std::vector<int64_t>& shape, size_t element) {
  uint64_t n = element;
  for (int64_t d : shape) {
    if (d < 0) return std::nullopt;
    if (d != 0 && n > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(d)) return std::nullopt;
    n *= static_cast<uint64_t>(d);
  }
  return n;
}

}  // namespace

size_t dtype_size(DType d) { return info(d).size; }
std::string_view dtype_name(DType d) { return info(d).name; }
DType parse_dtype(std::string_view name) {
  for (const auto& i : kDTypes)
    if (name == i.name) return i.dtype;
  throw SafetensorsError("unknown safetensors dtype \"" + std::string(name) + "\"");
}

int64_t TensorView::numel() const {
  return std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<>());
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& path) {
  const std::string where = path.string();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw SafetensorsError(where + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw SafetensorsError(where + ": cannot stat: " + std::strerror(err));
  }
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    throw SafetensorsError(where + ": truncated: " + std::to_string(size) + " bytes, the 8-byte header length is missing");
  }
  void* mapping = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int map_err = errno;
  ::close(fd);
  if (mapping == MAP_FAILED) throw SafetensorsError(where + ": mmap failed: " + std::strerror(map_err));
  std::shared_ptr<SafetensorsFile> file(new SafetensorsFile());
  file->path_ = path;
  file->mapping_ = mapping;
  file->mapping_size_ = size;

  const auto* bytes = static_cast<const unsigned char*>(mapping);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > kMaxHeaderBytes) throw SafetensorsError(where + ": header length " + std::to_string(header_len) + " is too large");
  if (8 + header_len > size)
    throw SafetensorsError(where + ": truncated: header needs " + std::to_string(header_len) + " bytes, file has " +
                           std::to_string(size - 8));
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(reinterpret_cast<const char*>(bytes + 8), reinterpret_cast<const char*>(bytes + 8 + header_len));
  } catch (const nlohmann::json::exception& e) {
    throw SafetensorsError(where + ": header is not valid JSON: " + e.what());
  }
  if (!header.is_object()) throw SafetensorsError(where + ": header must be a JSON object");
  const uint64_t buffer_size = size - 8 - header_len;
  const std::byte* buffer = reinterpret_cast<const std::byte*>(bytes + 8 + header_len);
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  std::vector<std::string> range_names;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) throw SafetensorsError(where + ": __metadata__ must be an object of strings");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) throw SafetensorsError(where + ": __metadata__[\"" + k + "\"] must be a string");
        file->metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string what = where + ": tensor \"" + name + "\"";
    if (!entry.is_object() || !entry.contains("dtype") || !entry["dtype"].is_string() || !entry.contains("shape") ||
        !entry["shape"].is_array() || !entry.contains("data_offsets") || !entry["data_offsets"].is_array() ||
        entry["data_offsets"].size() != 2)
      throw SafetensorsError(what + ": needs \"dtype\" (string), \"shape\" (array) and \"data_offsets\" ([begin, end])");
    TensorView view;
    try {
      view.dtype = parse_dtype(entry["dtype"].get<std::string>());
    } catch (const SafetensorsError& e) {
      throw SafetensorsError(what + ": " + e.what());
    }
    for (const auto& d : entry["shape"]) {
      if (!d.is_number_unsigned()) throw SafetensorsError(what + ": shape entries must be non-negative integers");
      view.shape.push_back(static_cast<int64_t>(std::min<uint64_t>(d.get<uint64_t>(), uint64_t{1} << 62)));
    }
    const auto& offsets = entry["data_offsets"];
    if (!offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned())
      throw SafetensorsError(what + ": data_offsets must be non-negative integers");
    const uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
    if (end < begin) throw SafetensorsError(what + ": data_offsets end < begin");
    if (end > buffer_size)
      throw SafetensorsError(what + ": truncated: data ends at " + std::to_string(end) + " but the buffer has " +
                             std::to_string(buffer_size) + " bytes");
    const auto expected = byte_size(view.shape, dtype_size(view.dtype));
    if (!expected || *expected != end - begin)
      throw SafetensorsError(what + ": shape and dtype need " + (expected ? std::to_string(*expected) : "too many") +
                             " bytes but data_offsets span " + std::to_string(end - begin));
    view.data = std::span<const std::byte>(buffer + begin, end - begin);
    ranges.emplace_back(begin, end);
    range_names.push_back(name);
    file->tensors_.emplace(name, std::move(view));
  }
  // Tensors must tile the buffer exactly: no gaps, no overlaps, nothing trailing.
  std::vector<size_t> order(ranges.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ranges[a] < ranges[b]; });
  uint64_t cursor = 0;
  for (size_t i : order) {
    if (ranges[i].first != cursor)
      throw SafetensorsError(where + ": tensor \"" + range_names[i] + "\" starts at " + std::to_string(ranges[i].first) +
                             ", expected " + std::to_string(cursor) + " (overlapping or non-contiguous data)");
    cursor = ranges[i].second;
  }
  if (cursor != buffer_size)
    throw SafetensorsError(where + ": " + std::to_string(buffer_size - cursor) + " trailing bytes after the last tensor");
  return file;
}

SafetensorsFile::~SafetensorsFile() {
  if (mapping_) ::munmap(mapping_, mapping_size_);
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& [name, _] : tensors_) out.push_back(name);
  return out;
}
bool SafetensorsFile::contains(std::string_view name) const { return tensors_.find(name) != tensors_.end(); }
const TensorView& SafetensorsFile::tensor(std::string_view name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw SafetensorsError(path_.string() + ": no tensor \"" + std::string(name) + "\"");
  return it->second;
}

SafetensorsCheckpoint SafetensorsCheckpoint::open(const std::filesystem::path& dir) {
  SafetensorsCheckpoint ckpt;
  const auto index_path = dir / "model.safetensors.index.json";
  const auto single = dir / "model.safetensors";
  if (std::filesystem::exists(index_path)) {
    nlohmann::json index;
    {
      std::ifstream in(index_path);
      try {
        index = nlohmann::json::parse(in);
      } catch (const nlohmann::json::exception& e) {
        throw SafetensorsError(index_path.string() + ": invalid JSON: " + e.what());
      }
    }
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      throw SafetensorsError(index_path.string() + ": needs an object \"weight_map\"");
    std::map<std::string, const SafetensorsFile*> by_file;
    for (const auto& [name, file] : index["weight_map"].items()) {
      if (!file.is_string()) throw SafetensorsError(index_path.string() + ": weight_map[\"" + name + "\"] must be a file name");
      const std::string shard = file.get<std::string>();
      if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
        throw SafetensorsError(index_path.string() + ": weight_map[\"" + name + "\"] is not a plain file name");
      auto it = by_file.find(shard);
      if (it == by_file.end()) {
        ckpt.files_.push_back(SafetensorsFile::open(dir / shard));
        it = by_file.emplace(shard, ckpt.files_.back().get()).first;
      }
      if (!it->second->contains(name))
        throw SafetensorsError(index_path.string() + ": tensor \"" + name + "\" is not in " + shard);
      ckpt.owner_.emplace(name, it->second);
    }
  } else if (std::filesystem::exists(single)) {
    ckpt.files_.push_back(SafetensorsFile::open(single));
    for (const auto& name : ckpt.files_.back()->names()) ckpt.owner_.emplace(name, ckpt.files_.back().get());
  } else {
    throw SafetensorsError(dir.string() + ": neither model.safetensors nor model.safetensors.index.json exists");
  }
  return ckpt;
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [name, _] : owner_) out.push_back(name);
  return out;
}
bool SafetensorsCheckpoint::contains(std::string_view name) const { return owner_.find(name) != owner_.end(); }
const TensorView& SafetensorsCheckpoint::tensor(std::string_view name) const {
  auto it = owner_.find(name);
  if (it == owner_.end()) throw SafetensorsError("checkpoint has no tensor \"" + std::string(name) + "\"");
  return it->second->tensor(name);
}

void write_safetensors(const std::filesystem::path& path, std::span<const TensorToWrite> tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::set<std::string> seen;
  for (const auto& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__") throw SafetensorsError("invalid tensor name \"" + t.name + "\"");
    if (!seen.insert(t.name).second) throw SafetensorsError("duplicate tensor name \"" + t.name + "\"");
    const auto expected = byte_size(t.shape, dtype_size(t.dtype));
    if (!expected || *expected != t.data.size())
      throw SafetensorsError("tensor \"" + t.name + "\": " + std::to_string(t.data.size()) +
                             " bytes given, shape and dtype need " + (expected ? std::to_string(*expected) : "overflow"));
    header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + *expected}}};
    offset += *expected;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  const auto tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw SafetensorsError("cannot write " + tmp);
    unsigned char len[8];
    uint64_t n = text.size();
    for (int i = 0; i < 8; ++i, n >>= 8) len[i] = static_cast<unsigned char>(n & 0xFF);
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const auto& t : tensors) out.write(reinterpret_cast<const char*>(t.data.data()), static_cast<std::streamsize>(t.data.size()));
    out.flush();
    if (!out) throw SafetensorsError("write failed for " + tmp);
  }
  std::filesystem::rename(tmp, path);
}

std::vector<std::filesystem::path> write_safetensors_checkpoint(const std::filesystem::path& dir,
                                                                std::span<const TensorToWrite> tensors,
                                                                size_t max_shard_bytes,
                                                                const std::map<std::string, std::string>& metadata) {
  std::filesystem::create_directories(dir);
  std::vector<std::vector<size_t>> shards(1);
  size_t shard_bytes = 0;
  uint64_t total = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const size_t n = tensors[i].data.size();
    if (!shards.back().empty() && shard_bytes + n > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(i);
    shard_bytes += n;
    total += n;
  }
  // Remove the files of a previous save so the directory holds exactly one checkpoint.
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name == "model.safetensors" || name == "model.safetensors.index.json" ||
        (name.rfind("model-", 0) == 0 && name.size() > 12 && name.substr(name.size() - 12) == ".safetensors"))
      std::filesystem::remove(entry.path());
  }
  std::vector<std::filesystem::path> written;
  if (shards.size() == 1) {
    written.push_back(dir / "model.safetensors");
    write_safetensors(written.back(), tensors, metadata);
    return written;
  }
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
    std::vector<TensorToWrite> part;
    for (size_t i : shards[s]) {
      part.push_back(tensors[i]);
      weight_map[tensors[i].name] = name;
    }
    written.push_back(dir / name);
    write_safetensors(written.back(), part, metadata);
  }
  nlohmann::ordered_json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  std::ofstream out(dir / "model.safetensors.index.json", std::ios::trunc);
  out << index.dump(2) << '\n';
  if (!out) throw SafetensorsError("cannot write " + (dir / "model.safetensors.index.json").string());
  written.push_back(dir / "model.safetensors.index.json");
  return written;
}

}  // namespace distil::text

// safetensors: reader (memory-mapped, zero copy) and writer (single file or sharded with
// model.safetensors.index.json). Format: u64 little-endian header length N, N bytes of JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the data
// buffer; offsets are relative to the buffer, tensors are contiguous, non-overlapping and cover
// the buffer exactly. Every violation is reported as SafetensorsError naming file and tensor.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace distil::text {

class SafetensorsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class DType { BOOL, U8, I8, I16, U16, I32, U32, I64, U64, F16, BF16, F32, F64, F8_E4M3, F8_E5M2 };
size_t dtype_size(DType dtype);
std::string_view dtype_name(DType dtype);  // "F32", "BF16", ...
DType parse_dtype(std::string_view name);  // throws SafetensorsError

struct TensorView {
  DType dtype;
  std::vector<int64_t> shape;
  std::span<const std::byte> data;  // valid while the file that produced it is alive
  int64_t numel() const;
};

// One mapped .safetensors file.
class SafetensorsFile {
 public:
  static std::shared_ptr<SafetensorsFile> open(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  std::vector<std::string> names() const;  // sorted
  bool contains(std::string_view name) const;
  const TensorView& tensor(std::string_view name) const;  // throws SafetensorsError if missing
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  void* mapping_ = nullptr;
  size_t mapping_size_ = 0;
  std::map<std::string, TensorView, std::less<>> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A checkpoint directory: model.safetensors, or shards listed by model.safetensors.index.json.
class SafetensorsCheckpoint {
 public:
  static SafetensorsCheckpoint open(const std::filesystem::path& dir);
  std::vector<std::string> names() const;  // sorted
  bool contains(std::string_view name) const;
  const TensorView& tensor(std::string_view name) const;

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*, std::less<>> owner_;
};

struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::span<const std::byte> data;  // exactly numel * dtype_size bytes
};

// Writes one file (atomically: temp file + rename). The header is padded with spaces to a
// multiple of 8 bytes so every tensor starts 8-byte aligned, as the Python writer does.
void write_safetensors(const std::filesystem::path& path, std::span<const TensorToWrite> tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Writes DIR/model.safetensors if everything fits in one shard of max_shard_bytes, else
// DIR/model-0000i-of-0000N.safetensors plus DIR/model.safetensors.index.json. Stale checkpoint
// files of the other layout are removed. Returns the files written.
std::vector<std::filesystem::path> write_safetensors_checkpoint(
    const std::filesystem::path& dir, std::span<const TensorToWrite> tensors,
    size_t max_shard_bytes = size_t{5} << 30, const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace distil::text

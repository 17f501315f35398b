// The CPU projection kernel choice without LibTorch: the per-machine cache file (round trip,
// corrupt and hostile files), its key, and the environment that forces a kernel. The
// measurement itself and the kernels' agreement are in model_test.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "trainer/model/linear_kernel.h"

namespace distil::model {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir()
      : path_(fs::temp_directory_path() / ("distil_linear_kernel_" + std::to_string(::getpid()) +
                                           "_" + std::to_string(counter_++))) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

GetEnv fake_env(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  };
}

void write_text(const fs::path& file, const std::string& text) {
  std::ofstream(file, std::ios::binary) << text;
}

const std::string kKey = "v2|cpu=Test CPU|threads=1";

TEST(LinearKernelCache, RoundTripsAndMergesShapesAndMachines) {
  TempDir dir;
  const fs::path file = dir.path() / "sub/dir/cpu_kernels.json";  // directories are created
  std::string error, note;
  ASSERT_TRUE(write_kernel_cache(file, kKey,
                                 {{"256x128x768", {LinearKernel::onednn, 1.5e-3, 1.0e-3}},
                                  {"128x64x128", {LinearKernel::blas, 6.5e-5, 1.2e-4}}},
                                 &error))
      << error;
  auto read = read_kernel_cache(file, kKey, &note);
  EXPECT_TRUE(note.empty()) << note;
  ASSERT_EQ(read.size(), 2u);
  EXPECT_EQ(read["256x128x768"].kernel, LinearKernel::onednn);
  EXPECT_DOUBLE_EQ(read["256x128x768"].blas_seconds, 1.5e-3);
  EXPECT_DOUBLE_EQ(read["256x128x768"].onednn_seconds, 1.0e-3);
  EXPECT_EQ(read["128x64x128"].kernel, LinearKernel::blas);

  // Another shape for the same machine is merged in; another machine's key is kept apart.
  ASSERT_TRUE(
      write_kernel_cache(file, kKey, {{"512x384x128", {LinearKernel::onednn, 2e-3, 1e-3}}}, &error))
      << error;
  ASSERT_TRUE(write_kernel_cache(file, "v2|cpu=Other CPU|threads=1",
                                 {{"256x128x768", {LinearKernel::blas, 1, 2}}}, &error))
      << error;
  read = read_kernel_cache(file, kKey, &note);
  EXPECT_EQ(read.size(), 3u);
  EXPECT_EQ(read["256x128x768"].kernel, LinearKernel::onednn);
  EXPECT_EQ(read_kernel_cache(file, "v2|cpu=Other CPU|threads=1", &note)["256x128x768"].kernel,
            LinearKernel::blas);
  // A machine not in the file, or no file at all: nothing, and nothing to report.
  EXPECT_TRUE(read_kernel_cache(file, "v2|cpu=Unknown", &note).empty());
  EXPECT_TRUE(note.empty());
  EXPECT_TRUE(read_kernel_cache(dir.path() / "missing.json", kKey, &note).empty());
  EXPECT_TRUE(note.empty());
  // No temporary files left behind.
  int files = 0;
  for (const auto& entry : fs::directory_iterator(file.parent_path()))
    files += entry.is_regular_file();
  EXPECT_EQ(files, 1);
}

TEST(LinearKernelCache, CorruptOrHostileFilesAreIgnoredWithAReason) {
  TempDir dir;
  const fs::path file = dir.path() / "cpu_kernels.json";
  std::string note;
  const auto expect_ignored = [&](const std::string& text, const std::string& reason) {
    write_text(file, text);
    EXPECT_TRUE(read_kernel_cache(file, kKey, &note).empty()) << text.substr(0, 80);
    EXPECT_NE(note.find(reason), std::string::npos) << "note: " << note;
  };
  expect_ignored("{ not json", "not JSON");
  expect_ignored("", "not JSON");
  expect_ignored("[1, 2, 3]", "not a distil-cpu-kernels file");
  expect_ignored(R"({"format": 7, "entries": {}})", "not a distil-cpu-kernels file");
  expect_ignored(R"({"format": "something-else", "entries": {}})", "not a distil-cpu-kernels file");
  expect_ignored(R"({"format": "distil-cpu-kernels", "entries": []})",
                 "not a distil-cpu-kernels file");
  expect_ignored(R"({"format": "distil-cpu-kernels", "entries": {")" + kKey + R"(": "onednn"}})",
                 "no \"shapes\"");
  expect_ignored(std::string(2 << 20, ' '), "larger than 1 MiB");

  // Bad shape entries are skipped one by one (with the reason); good ones are kept.
  nlohmann::json j = {
      {"format", "distil-cpu-kernels"},
      {"entries",
       {{kKey,
         {{"shapes",
           {{"256x128x768",
             {{"linear", "onednn"}, {"blas_seconds", 2e-3}, {"onednn_seconds", 1e-3}}},
            {"256x128x256", {{"linear", "rm -rf /"}, {"blas_seconds", 1}, {"onednn_seconds", 1}}},
            {"256x128x128", {{"linear", "blas"}, {"blas_seconds", -1}, {"onednn_seconds", 1}}},
            {"256x384x128", {{"linear", "blas"}, {"blas_seconds", "fast"}, {"onednn_seconds", 1}}},
            {"512x128x128", {{"linear", 3}, {"blas_seconds", 1}, {"onednn_seconds", 1}}},
            {"../../etc/passwd", {{"linear", "blas"}, {"blas_seconds", 1}, {"onednn_seconds", 1}}},
            {"1x2", {{"linear", "blas"}, {"blas_seconds", 1}, {"onednn_seconds", 1}}},
            {"512x384x128", "onednn"}}}}}}}};
  write_text(file, j.dump());
  auto read = read_kernel_cache(file, kKey, &note);
  ASSERT_EQ(read.size(), 1u);
  EXPECT_EQ(read.begin()->first, "256x128x768");
  for (const char* reason : {"unknown kernel name", "timings missing, negative or not finite",
                             "malformed shape", "no \"linear\" kernel name"})
    EXPECT_NE(note.find(reason), std::string::npos) << reason << " not in: " << note;

  // A directory where the file should be, and a non-finite timing that JSON text can still hold.
  const fs::path as_dir = dir.path() / "is_a_dir.json";
  fs::create_directories(as_dir);
  EXPECT_TRUE(read_kernel_cache(as_dir, kKey, &note).empty());
  EXPECT_NE(note.find("not a regular file"), std::string::npos) << note;
  write_text(
      file,
      R"({"format": "distil-cpu-kernels", "entries": {")" + kKey +
          R"(": {"shapes": {"256x128x768": {"linear": "onednn", "blas_seconds": 1e999, "onednn_seconds": 1}}}}})");
  EXPECT_TRUE(read_kernel_cache(file, kKey, &note).empty());

  // Writing over a corrupt file replaces it with a good one.
  write_text(file, "\x01\x02 garbage");
  std::string error;
  ASSERT_TRUE(
      write_kernel_cache(file, kKey, {{"256x128x768", {LinearKernel::blas, 1e-3, 2e-3}}}, &error))
      << error;
  read = read_kernel_cache(file, kKey, &note);
  EXPECT_TRUE(note.empty()) << note;
  EXPECT_EQ(read.size(), 1u);
}

TEST(LinearKernelCache, WriteFailuresAreReportedNotThrown) {
  TempDir dir;
  write_text(dir.path() / "plain_file", "x");
  std::string error;
  // The parent "directory" is a regular file: cannot be created.
  EXPECT_FALSE(write_kernel_cache(dir.path() / "plain_file/cpu_kernels.json", kKey,
                                  {{"256x128x768", {LinearKernel::blas, 1, 2}}}, &error));
  EXPECT_NE(error.find("cannot write"), std::string::npos) << error;
  // The target is a directory: the rename fails.
  fs::create_directories(dir.path() / "target_dir/inner");
  error.clear();
  EXPECT_FALSE(write_kernel_cache(dir.path() / "target_dir", kKey,
                                  {{"256x128x768", {LinearKernel::blas, 1, 2}}}, &error));
  EXPECT_FALSE(error.empty());
}

TEST(LinearKernelCache, KeyChangesWithCpuTorchThreadsAndKernelEnvironment) {
  KernelCacheKeyInputs base;
  base.cpu = common::parse_cpuinfo(
      "processor : 0\nvendor_id : AuthenticAMD\ncpu family : 26\nmodel : 2\nmodel name : AMD "
      "EPYC\nstepping : 1\n"
      "flags : avx avx2 fma avx512f\n");
  base.torch_version = "1.13.0";
  base.threads = 1;
  base.blas_threads = 1;
  const std::string key = kernel_cache_key(base);
  EXPECT_EQ(key, kernel_cache_key(base));  // deterministic
  EXPECT_NE(key.find("AMD EPYC"), std::string::npos);
  EXPECT_NE(key.find("avx512f"), std::string::npos);
  const auto differs = [&](auto change) {
    KernelCacheKeyInputs other = base;
    change(other);
    return kernel_cache_key(other) != key;
  };
  EXPECT_TRUE(
      differs([](auto& k) { k.cpu.model = "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"; }));
  EXPECT_TRUE(
      differs([](auto& k) { k.cpu.model_number = "17"; }));  // same name, another generation
  EXPECT_TRUE(differs([](auto& k) { k.cpu.isa.push_back("avx512_bf16"); }));
  EXPECT_TRUE(differs([](auto& k) { k.torch_version = "2.5.1"; }));
  EXPECT_TRUE(differs([](auto& k) { k.threads = 2; }));
  EXPECT_TRUE(differs([](auto& k) { k.blas_threads = 2; }));
  EXPECT_TRUE(differs([](auto& k) { k.kernel_env = "OPENBLAS_CORETYPE=Haswell"; }));
  EXPECT_TRUE(differs([](auto& k) { k.freed_memory_kept = true; }));
  EXPECT_EQ(
      kernel_env_of(fake_env(
          {{"OPENBLAS_CORETYPE", "Haswell"}, {"UNRELATED", "1"}, {"ONEDNN_MAX_CPU_ISA", "AVX2"}})),
      "OPENBLAS_CORETYPE=Haswell,ONEDNN_MAX_CPU_ISA=AVX2");
  EXPECT_EQ(kernel_env_of(fake_env({})), "");
}

TEST(LinearKernelChoice, TheEnvironmentForcesAKernelAndReproducibleModeForcesBlas) {
  std::string warning;
  EXPECT_FALSE(forced_linear_kernel(fake_env({}), &warning));
  EXPECT_FALSE(forced_linear_kernel(fake_env({{"DISTIL_LINEAR_KERNEL", "auto"}}), &warning));
  EXPECT_TRUE(warning.empty());
  auto forced = forced_linear_kernel(fake_env({{"DISTIL_LINEAR_KERNEL", "onednn"}}), &warning);
  ASSERT_TRUE(forced);
  EXPECT_EQ(forced->kernel, LinearKernel::onednn);
  EXPECT_EQ(forced->reason, "DISTIL_LINEAR_KERNEL=onednn");
  forced = forced_linear_kernel(fake_env({{"DISTIL_LINEAR_KERNEL", "blas"}}), &warning);
  ASSERT_TRUE(forced);
  EXPECT_EQ(forced->kernel, LinearKernel::blas);
  // The older switch wins over DISTIL_LINEAR_KERNEL, and reproducible mode over both.
  forced = forced_linear_kernel(
      fake_env({{"DISTIL_BLAS_LINEAR", "1"}, {"DISTIL_LINEAR_KERNEL", "onednn"}}), &warning);
  ASSERT_TRUE(forced);
  EXPECT_EQ(forced->kernel, LinearKernel::blas);
  forced = forced_linear_kernel(fake_env({{"DISTIL_REPRODUCIBLE", "pinned:avx2-haswell"},
                                          {"DISTIL_LINEAR_KERNEL", "onednn"}}),
                                &warning);
  ASSERT_TRUE(forced);
  EXPECT_EQ(forced->kernel, LinearKernel::blas);
  EXPECT_NE(forced->reason.find("reproducible"), std::string::npos);
  // DISTIL_REPRODUCIBLE=1 only asks for pinning (the program re-executes pinned); it forces nothing
  // itself.
  EXPECT_FALSE(forced_linear_kernel(fake_env({{"DISTIL_REPRODUCIBLE", "1"}}), &warning));
  EXPECT_FALSE(forced_linear_kernel(fake_env({{"DISTIL_BLAS_LINEAR", "0"}}), &warning));
  // An unknown name measures, with a warning.
  EXPECT_FALSE(forced_linear_kernel(fake_env({{"DISTIL_LINEAR_KERNEL", "mkl"}}), &warning));
  EXPECT_NE(warning.find("mkl"), std::string::npos);
}

TEST(LinearKernelChoice, CachePathFollowsTheEnvironment) {
  EXPECT_EQ(
      kernel_cache_path(fake_env({{"DISTIL_KERNEL_CACHE", "/tmp/x.json"}, {"HOME", "/home/u"}})),
      fs::path("/tmp/x.json"));
  EXPECT_FALSE(kernel_cache_path(fake_env({{"DISTIL_KERNEL_CACHE", "off"}, {"HOME", "/home/u"}})));
  EXPECT_EQ(kernel_cache_path(fake_env({{"XDG_CACHE_HOME", "/xdg"}, {"HOME", "/home/u"}})),
            fs::path("/xdg/distil/cpu_kernels.json"));
  EXPECT_EQ(kernel_cache_path(fake_env({{"HOME", "/home/u"}})),
            fs::path("/home/u/.cache/distil/cpu_kernels.json"));
  EXPECT_EQ(kernel_cache_path(fake_env({{"XDG_CACHE_HOME", "relative"}, {"HOME", "/home/u"}})),
            fs::path("/home/u/.cache/distil/cpu_kernels.json"));
  EXPECT_FALSE(kernel_cache_path(fake_env({})));
}

TEST(LinearKernelChoice, ShapesAreBucketedByPowersOfTwoOfRows) {
  EXPECT_EQ(calibration_rows(1), 1);
  EXPECT_EQ(calibration_rows(200), 256);
  EXPECT_EQ(calibration_rows(256), 256);
  EXPECT_EQ(calibration_rows(257), 512);
  EXPECT_EQ(calibration_rows(100000), 4096);
  EXPECT_EQ(shape_name(256, 128, 768), "256x128x768");
  EXPECT_EQ(linear_kernel_from_name("onednn"), LinearKernel::onednn);
  EXPECT_EQ(linear_kernel_from_name(linear_kernel_name(LinearKernel::blas)), LinearKernel::blas);
  EXPECT_FALSE(linear_kernel_from_name("ONEDNN"));
}

TEST(LinearKernelChoice, KeepingFreedMemoryHonoursTheEnvironment) {
  setenv("DISTIL_KEEP_FREED_MEMORY", "0", 1);
  EXPECT_FALSE(keep_freed_cpu_memory());
  EXPECT_FALSE(freed_cpu_memory_kept());
  unsetenv("DISTIL_KEEP_FREED_MEMORY");
#if defined(__GLIBC__)
  EXPECT_TRUE(keep_freed_cpu_memory());
  EXPECT_TRUE(freed_cpu_memory_kept());
#endif
}

}  // namespace
}  // namespace distil::model
